//! `peerlite demo`: two devices on loopback, TLS and Basic auth, a generated data set,
//! then conflicting edits on both sides and a second sync that resolves them.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use peerlite_proto::{Body, CollectionName, DocId};
use peerlite_smol::{
    Credentials, Listener, ListenerAuthenticator, ListenerConfig, ListenerTls, Replicator,
    ReplicatorConfiguration, ServerTrust, User,
};
use peerlite_storage::{Database, Expected};

const USER: &str = "demo";
const PASSWORD: &str = "demo-password";

pub(crate) fn run(n: usize) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let dir = tempfile::tempdir().map_err(|x| e(&x))?;
    let phone = Database::open(dir.path().join("phone")).map_err(|x| e(&x))?;
    let laptop = Database::open(dir.path().join("laptop")).map_err(|x| e(&x))?;
    let c = CollectionName::default();
    let docs = peerlite_storage::sample::documents(n, 12345);
    let avg = docs
        .iter()
        .map(|(_, b)| b.to_json_string().len())
        .sum::<usize>()
        / n.max(1);
    for chunk in docs.chunks(1000) {
        phone
            .save_batch(&c, chunk.iter().cloned())
            .map_err(|x| e(&x))?;
    }
    println!("phone: generated {n} documents ({avg} bytes of JSON on average)");

    smol::block_on(async {
        let listener = Listener::start(
            laptop.clone(),
            ListenerConfig {
                network_interface: IpAddr::V4(Ipv4Addr::LOCALHOST),
                tls: ListenerTls::SelfSigned {
                    label: "peerlite-demo".into(),
                    attributes: peerlite_smol::IdentityAttributes::common_name("laptop"),
                    expiration: None,
                },
                authenticator: Some(ListenerAuthenticator::Basic(vec![User::new(
                    USER, PASSWORD,
                )])),
                ..ListenerConfig::default()
            },
        )
        .await
        .map_err(|x| e(&x))?;
        let identity = listener.tls_identity().ok_or("TLS is on")?;
        let url = format!("wss://127.0.0.1:{}/db", listener.port());
        println!(
            "laptop: listening on {url} (TLS, certificate sha256 {}…, Basic auth)",
            &identity.sha256_fingerprint()[..16]
        );
        let pin = identity.certificate().clone();

        println!("\nround 1: first sync (push and pull)");
        let (secs, counts) = sync(&phone, &url, &pin).await?;
        println!(
            "  pushed {}, pulled {} in {secs:.2} s ({:.0} documents/s)",
            counts.0,
            counts.1,
            n as f64 / secs.max(1e-9)
        );

        println!("\nround 2: both devices edit the same documents, the laptop deletes some");
        let edits = n.min(10);
        for i in 0..edits {
            let id = DocId::new(format!("doc-{i:06}")).map_err(|x| e(&x))?;
            for (db, who, times) in [(&phone, "phone", 1), (&laptop, "laptop", 2)] {
                for t in 0..times {
                    let body =
                        Body::from_json_str(&format!(r#"{{"edited_by": "{who}", "edit": {t}}}"#))
                            .map_err(|x| e(&x))?;
                    db.save(&c, &id, body).map_err(|x| e(&x))?;
                }
            }
        }
        let deletes = n.saturating_sub(edits).min(5);
        for i in edits..edits + deletes {
            let id = DocId::new(format!("doc-{i:06}")).map_err(|x| e(&x))?;
            laptop.delete(&c, &id, Expected::Any).map_err(|x| e(&x))?;
        }
        println!(
            "  {edits} documents edited on both sides (conflicts), {deletes} deleted on the laptop"
        );
        let (secs, counts) = sync(&phone, &url, &pin).await?;
        println!(
            "  pushed {}, pulled {}, conflicts resolved {} in {:.1} ms (the laptop's longer history wins)",
            counts.0,
            counts.1,
            counts.2,
            secs * 1000.0
        );
        listener.stop().await;
        Ok::<(), String>(())
    })?;

    let (a, b) = (export(&phone, &c)?, export(&laptop, &c)?);
    if a != b {
        return Err("the devices disagree after syncing".into());
    }
    println!("\nboth devices hold the same {} documents", a.len());
    Ok(())
}

/// One one-shot sync from the phone; returns seconds and (pushed, pulled, resolved).
async fn sync(
    phone: &Database,
    url: &str,
    pin: &rustls::pki_types::CertificateDer<'static>,
) -> Result<(f64, (u64, u64, u64)), String> {
    let mut config = ReplicatorConfiguration::new(url);
    config.credentials = Some(Credentials::new(USER, PASSWORD));
    config.server_trust = ServerTrust::Pinned(pin.clone());
    let replicator = Replicator::new(phone.clone(), config).map_err(|x| x.to_string())?;
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let c = counts.clone();
    replicator.add_document_listener(move |docs| {
        for d in docs.iter().filter(|d| d.error.is_none()) {
            let i = match d.direction {
                peerlite_proto::Direction::Push => 0,
                peerlite_proto::Direction::Pull => 1,
            };
            c[i].fetch_add(1, Ordering::Relaxed);
            if d.conflict_resolved {
                c[2].fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let bar = crate::net::progress_bar();
    if let Some(bar) = bar.clone() {
        replicator.add_change_listener(move |s| {
            if s.progress.total > 0 {
                bar.set_length(s.progress.total);
            }
            bar.set_position(s.progress.completed);
        });
    }
    let start = Instant::now();
    replicator.start();
    let status = replicator.wait_until_stopped().await;
    let secs = start.elapsed().as_secs_f64();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Some(err) = status.error {
        return Err(err.to_string());
    }
    let get = |i: usize| counts[i].load(Ordering::Relaxed);
    Ok((secs, (get(0), get(1), get(2))))
}

fn export(db: &Database, c: &CollectionName) -> Result<Vec<(String, String, String)>, String> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = db
            .documents(c, after.as_ref(), 1000)
            .map_err(|e| e.to_string())?;
        out.extend(
            page.documents
                .iter()
                .map(|d| (d.id.to_string(), d.rev.to_string(), d.body.to_json_string())),
        );
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(out),
        }
    }
}
