//! A listener on one runtime and a replicator on the other, over real sockets with TLS,
//! Basic auth and pinning: one-shot push and pull, then continuous replication through a
//! listener restart; both databases end identical. Run both ways: smol listener with a
//! tokio replicator, tokio listener with a smol replicator.

#![allow(clippy::unwrap_used)]

mod common;

use common::{contents, has, put, wait_for};

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use peerlite_proto::{Activity, ReplicatorType};
use peerlite_runtime::{
    Credentials, Listener, ListenerAuthenticator, ListenerConfig, ListenerTls, Replicator,
    ReplicatorConfiguration, Runtime, ServerTrust, User,
};
use peerlite_smol::Smol;
use peerlite_storage::Database;
use peerlite_tokio::Tokio;

fn listener_config(port: u16) -> ListenerConfig {
    ListenerConfig {
        network_interface: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port,
        tls: ListenerTls::SelfSigned {
            label: "cross".into(),
            attributes: Default::default(),
            expiration: None,
        },
        authenticator: Some(ListenerAuthenticator::Basic(vec![User::new(
            "alice", "s3cret",
        )])),
        ..ListenerConfig::default()
    }
}

fn replicator_config<L: Runtime>(listener: &Listener<L>) -> ReplicatorConfiguration {
    let mut c = ReplicatorConfiguration::new(format!("wss://127.0.0.1:{}/db", listener.port()));
    c.credentials = Some(Credentials::new("alice", "s3cret"));
    c.server_trust = ServerTrust::Pinned(listener.tls_identity().unwrap().certificate().clone());
    c.max_attempt_wait = Duration::from_millis(200);
    c
}

async fn one_shot<P: Runtime>(db: &Database, config: ReplicatorConfiguration) {
    let r = Replicator::<P>::new(db.clone(), config).unwrap();
    r.start();
    let status = r.wait_until_stopped().await;
    assert_eq!(status.error, None, "{status:?}");
}

/// A listener on `L` and replicators on `P`.
async fn sync_across<L: Runtime, P: Runtime>() {
    let dir = tempfile::tempdir().unwrap();
    let server = Database::open(dir.path().join("server")).unwrap();
    let client = Database::open(dir.path().join("client")).unwrap();
    for i in 0..200 {
        put(&server, &format!("s{i}"), r#"{"side": "server"}"#);
        put(&client, &format!("c{i}"), r#"{"side": "client"}"#);
    }
    let listener = Listener::<L>::start(server.clone(), listener_config(0))
        .await
        .unwrap();
    let port = listener.port();

    // One-shot push, then pull.
    let mut push = replicator_config(&listener);
    push.replicator_type = ReplicatorType::Push;
    one_shot::<P>(&client, push).await;
    assert!(has(&server, "c199") && !has(&client, "s0"));
    let mut pull = replicator_config(&listener);
    pull.replicator_type = ReplicatorType::Pull;
    one_shot::<P>(&client, pull).await;
    assert!(has(&client, "s199"));

    // Continuous, both ways, through a listener restart.
    let mut live = replicator_config(&listener);
    live.continuous = true;
    let r = Replicator::<P>::new(client.clone(), live).unwrap();
    r.start();
    wait_for("idle", || r.status().activity == Activity::Idle).await;
    put(&client, "live-client", "{}");
    put(&server, "live-server", "{}");
    wait_for("live changes", || {
        has(&server, "live-client") && has(&client, "live-server")
    })
    .await;
    listener.stop().await;
    put(&client, "while-down", "{}");
    wait_for("offline", || r.status().activity == Activity::Offline).await;
    let listener = Listener::<L>::start(server.clone(), listener_config(port))
        .await
        .unwrap();
    put(&server, "after-restart", "{}");
    wait_for("after the restart", || {
        has(&server, "while-down") && has(&client, "after-restart")
    })
    .await;
    wait_for("idle again", || r.status().activity == Activity::Idle).await;
    r.stop();
    assert_eq!(r.wait_until_stopped().await.error, None);
    listener.stop().await;
    assert_eq!(contents(&server), contents(&client));
    assert_eq!(contents(&server).len(), 404);
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_tokio_replicator_syncs_with_a_smol_listener() {
    // The tokio side needs a tokio runtime; smol's tasks run on smol's own threads.
    tokio_runtime().block_on(sync_across::<Smol, Tokio>());
}

#[test]
fn a_smol_replicator_syncs_with_a_tokio_listener() {
    tokio_runtime().block_on(sync_across::<Tokio, Smol>());
}
