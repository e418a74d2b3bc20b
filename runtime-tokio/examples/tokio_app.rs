//! A tokio application embedding a listener and a continuous replicator: two peers on
//! loopback over TLS with Basic authentication, syncing as they change.
//!
//! ```text
//! cargo run -p peerlite-tokio --example tokio_app
//! ```

use std::time::Duration;

use peerlite_proto::{Activity, Body, CollectionName, DocId};
use peerlite_storage::Database;
use peerlite_tokio::{
    Credentials, Listener, ListenerAuthenticator, ListenerConfig, Replicator,
    ReplicatorConfiguration, ServerTrust, User,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let notes = CollectionName::default();
    let (laptop, phone) = (Database::in_memory()?, Database::in_memory()?);

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
    println!("listening on {:?}", listener.urls());

    // The phone replicates continuously, pinning the laptop's certificate.
    let mut config =
        ReplicatorConfiguration::new(format!("wss://127.0.0.1:{}/db", listener.port()));
    config.credentials = Some(Credentials::new("phone", "s3cret"));
    config.server_trust = ServerTrust::Pinned(identity.certificate().clone());
    config.continuous = true;
    let replicator = Replicator::new(phone.clone(), config)?;
    replicator.add_document_listener(|docs| {
        for d in docs {
            println!("{:?} {} {}", d.direction, d.doc_id, d.rev);
        }
    });
    replicator.start();

    // Changes on either side reach the other while the application goes on.
    let agenda = DocId::new("agenda")?;
    laptop.save(
        &notes,
        &agenda,
        Body::from_json_str(r#"{"item": "standup"}"#)?,
    )?;
    let groceries = DocId::new("groceries")?;
    phone.save(
        &notes,
        &groceries,
        Body::from_json_str(r#"{"item": "milk"}"#)?,
    )?;
    let synced = async {
        while phone.get(&notes, &agenda)?.is_none() || laptop.get(&notes, &groceries)?.is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok::<_, peerlite_storage::StorageError>(())
    };
    tokio::time::timeout(Duration::from_secs(30), synced).await??;
    println!("both peers hold both documents");

    replicator.stop();
    let status = replicator.wait_until_stopped().await;
    assert_eq!(status.activity, Activity::Stopped);
    assert!(status.error.is_none(), "{:?}", status.error);
    listener.stop().await;
    Ok(())
}
