//! Replication over a transport Peerlite does not know: a Unix domain socket, each frame
//! sent with a length prefix (tokio-util's `LengthDelimitedCodec`). No TCP, no TLS, no
//! WebSocket — the socket file's permissions are the access control.
//!
//! ```text
//! cargo run -p peerlite-tokio --example unix_socket
//! ```

use std::path::PathBuf;

use bytes::BytesMut;
use futures_lite::StreamExt;
use peerlite_proto::{Body, CollectionName, DocId};
use peerlite_storage::Database;
use peerlite_tokio::{Listener, ListenerConfig, Replicator, ReplicatorConfiguration, Transport};
use tokio::net::UnixStream;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

/// Frames up to Peerlite's default limit (16 MiB; the codec's own default is 8 MiB).
fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(16 << 20)
        .new_codec()
}

/// A connected socket as a Peerlite transport: one frame per length-prefixed message.
fn transport(socket: UnixStream) -> Transport {
    let (read, write) = socket.into_split();
    let frames_in = FramedRead::new(read, codec()).map(|r| r.map(BytesMut::freeze));
    let frames_out = FramedWrite::<_, LengthDelimitedCodec>::new(write, codec());
    Transport::new(frames_out, frames_in)
}

async fn connect(path: PathBuf) -> std::io::Result<Transport> {
    Ok(transport(UnixStream::connect(path).await?))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
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

    // The laptop serves each connection on the socket.
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("peerlite.sock");
    let socket = tokio::net::UnixListener::bind(&path)?;
    let served = laptop.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = socket.accept().await {
            let db = served.clone();
            tokio::spawn(async move {
                let config = ListenerConfig::default();
                let _ = Listener::serve_transport(db, &config, transport(conn)).await;
            });
        }
    });

    // The phone replicates over it; the endpoint only names the peer (for checkpoints).
    let config = ReplicatorConfiguration::new("unix:laptop");
    let replicator = Replicator::over(phone.clone(), config, move || connect(path.clone()))?;
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
    println!("both peers hold both documents");
    Ok(())
}
