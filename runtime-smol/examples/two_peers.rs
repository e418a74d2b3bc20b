//! Two peers syncing over TLS with Basic authentication.
//!
//! ```text
//! cargo run -p peerlite-smol --example two_peers
//! ```

use peerlite_proto::{Body, CollectionName, DocId};
use peerlite_smol::{
    Credentials, Listener, ListenerAuthenticator, ListenerConfig, Replicator,
    ReplicatorConfiguration, ServerTrust, User,
};
use peerlite_storage::Database;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    smol::block_on(async {
        let notes = CollectionName::default();
        let (laptop, phone) = (Database::in_memory()?, Database::in_memory()?);
        laptop.save(
            &notes,
            &DocId::new("agenda")?,
            Body::from_json_str(r#"{"item": "standup"}"#)?,
        )?;
        phone.save(
            &notes,
            &DocId::new("groceries")?,
            Body::from_json_str(r#"{"item": "milk"}"#)?,
        )?;

        // The laptop listens: TLS with a self-signed identity, one user.
        let listener = Listener::start(
            laptop.clone(),
            ListenerConfig {
                authenticator: Some(ListenerAuthenticator::Basic(vec![User::new(
                    "phone", "s3cret",
                )])),
                ..ListenerConfig::default()
            },
        )
        .await?;
        let identity = listener.tls_identity().expect("TLS is on by default");
        println!(
            "listening on {:?}, certificate sha256 {}",
            listener.urls(),
            identity.sha256_fingerprint()
        );

        // The phone replicates with it, pinning the laptop's certificate.
        let mut config =
            ReplicatorConfiguration::new(format!("wss://127.0.0.1:{}/db", listener.port()));
        config.credentials = Some(Credentials::new("phone", "s3cret"));
        config.server_trust = ServerTrust::Pinned(identity.certificate().clone());
        let replicator = Replicator::new(phone.clone(), config)?;
        replicator.add_document_listener(|docs| {
            for d in docs {
                println!("{:?} {} {}", d.direction, d.doc_id, d.rev);
            }
        });
        replicator.start();
        let status = replicator.wait_until_stopped().await;
        println!(
            "done: {:?} {:?} error: {:?}",
            status.activity, status.progress, status.error
        );

        for db in [&laptop, &phone] {
            assert!(db.get(&notes, &DocId::new("agenda")?)?.is_some());
            assert!(db.get(&notes, &DocId::new("groceries")?)?.is_some());
        }
        listener.stop().await;
        Ok(())
    })
}
