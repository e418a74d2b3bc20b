//! Replication over a transport the application supplies (`Replicator::over`,
//! `Listener::serve_transport`): a Unix domain socket with length-prefixed frames, on
//! tokio. Push and pull, continuous replication through a dropped connection, a peer's
//! over-long frame, and a transport that cannot connect.

#![allow(clippy::unwrap_used)]

mod common;

use common::{contents, has, put, wait_for};

use std::path::PathBuf;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_lite::StreamExt;
use peerlite_proto::Activity;
use peerlite_runtime::{ConnectError, ReplicatorError};
use peerlite_storage::Database;
use peerlite_tokio::{Listener, ListenerConfig, Replicator, ReplicatorConfiguration, Transport};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(64 << 20)
        .new_codec()
}

fn transport(socket: UnixStream) -> Transport {
    let (read, write) = socket.into_split();
    let frames_in = FramedRead::new(read, codec()).map(|r| r.map(BytesMut::freeze));
    Transport::new(FramedWrite::new(write, codec()), frames_in)
}

/// Serves `db` on a Unix socket in `dir`, each connection on its own task; returns the
/// socket's path and the accept task (abort it to stop serving new connections).
fn serve(db: &Database, dir: &tempfile::TempDir, config: ListenerConfig) -> (PathBuf, Server) {
    let path = dir.path().join("peer.sock");
    let socket = UnixListener::bind(&path).unwrap();
    let db = db.clone();
    let (conns_tx, conns_rx) = std::sync::mpsc::channel();
    let task = tokio::spawn(async move {
        while let Ok((conn, _)) = socket.accept().await {
            let (db, config) = (db.clone(), config.clone());
            let served = tokio::spawn(async move {
                Listener::serve_transport(db, &config, transport(conn))
                    .await
                    .unwrap();
            });
            let _ = conns_tx.send(served);
        }
    });
    (
        path,
        Server {
            accept: task,
            conns: conns_rx,
        },
    )
}

struct Server {
    accept: tokio::task::JoinHandle<()>,
    conns: std::sync::mpsc::Receiver<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Cuts every connection served so far.
    fn drop_connections(&self) {
        while let Ok(c) = self.conns.try_recv() {
            c.abort();
        }
    }
}

fn over(db: &Database, path: PathBuf, config: ReplicatorConfiguration) -> Replicator {
    Replicator::over(db.clone(), config, move || {
        let path = path.clone();
        async move { Ok(transport(UnixStream::connect(path).await?)) }
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_pull_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = (
        Database::in_memory().unwrap(),
        Database::in_memory().unwrap(),
    );
    for i in 0..300 {
        put(&server, &format!("s{i}"), r#"{"side": "server"}"#);
        put(&client, &format!("c{i}"), r#"{"side": "client"}"#);
    }
    let (path, srv) = serve(&server, &dir, ListenerConfig::default());
    let r = over(&client, path, ReplicatorConfiguration::new("unix:server"));
    r.start();
    let status = r.wait_until_stopped().await;
    assert_eq!(status.error, None, "{status:?}");
    assert_eq!(status.progress.completed, 600);
    assert_eq!(contents(&server), contents(&client));
    srv.accept.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_replication_reconnects_after_the_transport_drops() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = (
        Database::in_memory().unwrap(),
        Database::in_memory().unwrap(),
    );
    let (path, srv) = serve(&server, &dir, ListenerConfig::default());
    let mut config = ReplicatorConfiguration::new("unix:server");
    config.continuous = true;
    config.max_attempt_wait = Duration::from_millis(200);
    let r = over(&client, path, config);
    r.start();
    put(&client, "a", "{}");
    put(&server, "b", "{}");
    wait_for("live changes", || has(&server, "a") && has(&client, "b")).await;
    srv.drop_connections();
    wait_for("offline", || r.status().activity == Activity::Offline).await;
    put(&client, "after-drop", "{}");
    put(&server, "after-drop-too", "{}");
    wait_for("after reconnecting", || {
        has(&server, "after-drop") && has(&client, "after-drop-too")
    })
    .await;
    r.stop();
    assert_eq!(r.wait_until_stopped().await.error, None);
    assert_eq!(contents(&server), contents(&client));
    srv.accept.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_limit_ends_that_connection_and_stores_nothing() {
    use futures_lite::future::poll_fn;
    use futures_sink::Sink;
    let dir = tempfile::tempdir().unwrap();
    let server = Database::in_memory().unwrap();
    let config = ListenerConfig {
        max_frame_bytes: 1 << 20,
        ..ListenerConfig::default()
    };
    let (path, srv) = serve(&server, &dir, config);
    let socket = UnixStream::connect(&path).await.unwrap();
    let (read, write) = socket.into_split();
    let mut frames_out = std::pin::pin!(FramedWrite::new(write, codec()));
    poll_fn(|cx| Sink::<Bytes>::poll_ready(frames_out.as_mut(), cx))
        .await
        .unwrap();
    frames_out
        .as_mut()
        .start_send(Bytes::from(vec![0u8; 2 << 20]))
        .unwrap();
    poll_fn(|cx| Sink::<Bytes>::poll_flush(frames_out.as_mut(), cx))
        .await
        .unwrap();
    // The listener ends the connection: the read side sees the end.
    let mut frames_in = FramedRead::new(read, codec());
    let end = tokio::time::timeout(Duration::from_secs(10), frames_in.next()).await;
    assert!(matches!(end, Ok(None) | Ok(Some(Err(_)))), "{end:?}");
    assert!(contents(&server).is_empty());
    srv.accept.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transport_that_cannot_connect_is_retried_then_reported() {
    let dir = tempfile::tempdir().unwrap();
    let client = Database::in_memory().unwrap();
    let mut config = ReplicatorConfiguration::new("unix:nobody");
    config.max_attempts = 2;
    config.max_attempt_wait = Duration::from_millis(50);
    let r = over(&client, dir.path().join("absent.sock"), config);
    r.start();
    let status = r.wait_until_stopped().await;
    match status.error {
        Some(ReplicatorError::Connect(ConnectError::Unreachable { address, message })) => {
            assert_eq!(address, "unix:nobody");
            assert!(message.contains("No such file"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}
