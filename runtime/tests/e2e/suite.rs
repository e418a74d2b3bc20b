// End-to-end replication over real sockets on 127.0.0.1.



use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime};

use peerlite_proto::{Activity, Body, CollectionName, DocId, ReplicatorType};
use rt::{
    AuthFailureLimit, ConnectError, Credentials, IdentityAttributes, Listener,
    ListenerAuthenticator, ListenerConfig, ListenerTls, Replicator, ReplicatorConfiguration,
    ReplicatorError, ServerTrust, TlsIdentity, User,
};
use peerlite_storage::Database;

fn dc() -> CollectionName {
    CollectionName::default()
}

fn id(s: &str) -> DocId {
    DocId::new(s).unwrap()
}

fn put(db: &Database, doc: &str, json: &str) {
    db.save(&dc(), &id(doc), Body::from_json_str(json).unwrap())
        .unwrap();
}

fn has(db: &Database, doc: &str) -> bool {
    db.get(&dc(), &id(doc)).unwrap().is_some()
}

fn loopback() -> ListenerConfig {
    ListenerConfig {
        network_interface: IpAddr::V4(Ipv4Addr::LOCALHOST),
        ..ListenerConfig::default()
    }
}

/// A loopback listener speaking plain WebSockets.
fn plain() -> ListenerConfig {
    ListenerConfig {
        disable_tls: true,
        ..loopback()
    }
}

fn basic(users: &[(&str, &str)]) -> Option<ListenerAuthenticator> {
    Some(ListenerAuthenticator::Basic(
        users.iter().map(|(u, p)| User::new(*u, p)).collect(),
    ))
}

fn url(listener: &Listener, scheme: &str) -> String {
    format!("{scheme}://127.0.0.1:{}/db", listener.port())
}

/// A one-shot replication; returns its final status.
async fn sync(db: &Database, config: ReplicatorConfiguration) -> rt::ReplicatorStatus {
    let r = Replicator::new(db.clone(), config).unwrap();
    r.start();
    r.wait_until_stopped().await
}

fn pinned_config(listener: &Listener, user: &str, pass: &str) -> ReplicatorConfiguration {
    let mut c = ReplicatorConfiguration::new(url(listener, "wss"));
    c.credentials = Some(Credentials::new(user, pass));
    c.server_trust = ServerTrust::Pinned(listener.tls_identity().unwrap().certificate().clone());
    c.max_attempts = 2;
    c.max_attempt_wait = Duration::from_millis(100);
    c
}

fn connect_error(status: &rt::ReplicatorStatus) -> Option<ConnectError> {
    match &status.error {
        Some(ReplicatorError::Connect(e)) => Some(e.clone()),
        _ => None,
    }
}

#[test]
fn push_and_pull_over_tls_with_basic_auth_and_pinning() {
    block_on(async {
        let server = Database::in_memory().unwrap();
        let client = Database::in_memory().unwrap();
        for i in 0..300 {
            put(&server, &format!("s{i}"), r#"{"side": "server"}"#);
            put(&client, &format!("c{i}"), r#"{"side": "client"}"#);
        }
        let listener = Listener::start(
            server.clone(),
            ListenerConfig {
                authenticator: basic(&[("alice", "s3cret")]),
                ..loopback()
            },
        )
        .await
        .unwrap();
        let status = sync(&client, pinned_config(&listener, "alice", "s3cret")).await;
        assert_eq!(status.activity, Activity::Stopped);
        assert_eq!(status.error, None, "{status:?}");
        assert_eq!(status.progress.completed, status.progress.total);
        for i in 0..300 {
            assert!(has(&server, &format!("c{i}")) && has(&client, &format!("s{i}")));
        }
        listener.stop().await;
    });
}

#[test]
fn push_only_and_pull_only() {
    block_on(async {
        let server = Database::in_memory().unwrap();
        let client = Database::in_memory().unwrap();
        put(&server, "from-server", "{}");
        put(&client, "from-client", "{}");
        let listener = Listener::start(server.clone(), plain()).await.unwrap();
        let mut push = ReplicatorConfiguration::new(url(&listener, "ws"));
        push.replicator_type = ReplicatorType::Push;
        assert_eq!(sync(&client, push).await.error, None);
        assert!(has(&server, "from-client") && !has(&client, "from-server"));
        let mut pull = ReplicatorConfiguration::new(url(&listener, "ws"));
        pull.replicator_type = ReplicatorType::Pull;
        assert_eq!(sync(&client, pull).await.error, None);
        assert!(has(&client, "from-server"));
        listener.stop().await;
    });
}

#[test]
fn wrong_credentials_are_refused_before_any_frame() {
    block_on(async {
        let server = Database::in_memory().unwrap();
        let listener = Listener::start(
            server,
            ListenerConfig {
                authenticator: basic(&[("alice", "s3cret")]),
                ..loopback()
            },
        )
        .await
        .unwrap();
        let client = Database::in_memory().unwrap();
        for (user, pass) in [("alice", "wrong"), ("mallory", "s3cret")] {
            let status = sync(&client, pinned_config(&listener, user, pass)).await;
            assert_eq!(
                connect_error(&status),
                Some(ConnectError::Unauthorized),
                "{status:?}"
            );
        }
        let mut anonymous = pinned_config(&listener, "x", "y");
        anonymous.credentials = None;
        assert_eq!(
            connect_error(&sync(&client, anonymous).await),
            Some(ConnectError::Unauthorized)
        );
        wait_for(|| listener.status().rejected_connection_count >= 3).await;
        listener.stop().await;
    });
}

#[test]
fn repeated_failed_authentications_lock_the_address_out_for_a_while() {
    block_on(async {
        let server = Database::in_memory().unwrap();
        let listener = Listener::start(
            server,
            ListenerConfig {
                authenticator: basic(&[("alice", "s3cret")]),
                auth_failure_limit: Some(AuthFailureLimit {
                    max_failures: 2,
                    window: Duration::from_secs(60),
                    lockout: Duration::from_secs(2),
                }),
                ..loopback()
            },
        )
        .await
        .unwrap();
        let client = Database::in_memory().unwrap();
        for _ in 0..2 {
            let status = sync(&client, pinned_config(&listener, "alice", "guess")).await;
            assert_eq!(connect_error(&status), Some(ConnectError::Unauthorized));
        }
        // The third failure starts the lockout; during it even the right password is
        // refused, with the time to wait.
        let status = sync(&client, pinned_config(&listener, "alice", "guess")).await;
        assert_eq!(
            connect_error(&status),
            Some(ConnectError::TooManyFailedAttempts {
                retry_after_secs: 2
            })
        );
        let status = sync(&client, pinned_config(&listener, "alice", "s3cret")).await;
        assert!(
            matches!(
                connect_error(&status),
                Some(ConnectError::TooManyFailedAttempts {
                    retry_after_secs: 1..=2
                })
            ),
            "{status:?}"
        );
        // Once it is over, the right password works (and clears the count).
        smol::Timer::after(Duration::from_millis(2100)).await;
        let status = sync(&client, pinned_config(&listener, "alice", "s3cret")).await;
        assert_eq!(status.error, None);
        let status = sync(&client, pinned_config(&listener, "alice", "guess")).await;
        assert_eq!(connect_error(&status), Some(ConnectError::Unauthorized));
        listener.stop().await;
    });
}

/// A raw WebSocket connection to the listener, speaking the subprotocol.
async fn raw_ws(listener: &Listener) -> async_tungstenite::WebSocketStream<smol::net::TcpStream> {
    use async_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url(listener, "ws").into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        peerlite_proto::SUBPROTOCOL.parse().unwrap(),
    );
    let tcp = smol::net::TcpStream::connect(("127.0.0.1", listener.port()))
        .await
        .unwrap();
    async_tungstenite::client_async(request, tcp)
        .await
        .unwrap()
        .0
}

/// True when the listener closes the connection within 5 s.
async fn closed_by_listener(
    ws: &mut async_tungstenite::WebSocketStream<smol::net::TcpStream>,
) -> bool {
    use async_tungstenite::tungstenite::Message;
    use smol::stream::StreamExt;
    let read = async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return true,
                Some(Ok(_)) => {}
            }
        }
    };
    smol::future::or(read, async {
        smol::Timer::after(Duration::from_secs(5)).await;
        false
    })
    .await
}

/// The close code the listener sends within 5 s (`None`: no close frame).
async fn close_code(
    ws: &mut async_tungstenite::WebSocketStream<smol::net::TcpStream>,
) -> Option<u16> {
    use async_tungstenite::tungstenite::Message;
    use smol::stream::StreamExt;
    let read = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    };
    smol::future::or(read, async {
        smol::Timer::after(Duration::from_secs(5)).await;
        None
    })
    .await
}

#[test]
fn hostile_connections_are_closed_while_others_are_served_and_the_store_is_unchanged() {
    use async_tungstenite::tungstenite::Message;
    block_on(async {
        let server = Database::in_memory().unwrap();
        for i in 0..10 {
            put(&server, &format!("doc-{i}"), r#"{"v": 1}"#);
        }
        let before = server.changes(&dc(), Default::default(), 1000).unwrap();
        let listener = Listener::start(
            server.clone(),
            ListenerConfig {
                max_frame_bytes: 1 << 20,
                ..plain()
            },
        )
        .await
        .unwrap();
        // A connection that never speaks stays open meanwhile.
        let _idle = raw_ws(&listener).await;
        // Garbage in a binary frame.
        let mut garbage = raw_ws(&listener).await;
        garbage
            .send(Message::Binary(vec![0xff; 64].into()))
            .await
            .unwrap();
        assert!(closed_by_listener(&mut garbage).await, "garbage frame");
        // A message over the listener's size limit.
        let mut oversized = raw_ws(&listener).await;
        let _ = oversized
            .send(Message::Binary(vec![0u8; 2 << 20].into()))
            .await;
        assert_eq!(
            close_code(&mut oversized).await,
            Some(1009),
            "oversized frame"
        );
        // A well-formed frame out of order: a checkpoint request before Hello.
        let mut early = raw_ws(&listener).await;
        let frame = peerlite_proto::Frame::Request(
            1,
            peerlite_proto::Request::GetCheckpoint { id: "x".into() },
        )
        .encode();
        early
            .send(Message::Binary(frame.to_vec().into()))
            .await
            .unwrap();
        assert!(closed_by_listener(&mut early).await, "frame before Hello");

        // Others are still served.
        let client = Database::in_memory().unwrap();
        let mut c = ReplicatorConfiguration::new(url(&listener, "ws"));
        c.max_attempts = 2;
        assert_eq!(sync(&client, c).await.error, None);
        assert!((0..10).all(|i| has(&client, &format!("doc-{i}"))));
        // And the store is unchanged.
        assert_eq!(
            server.changes(&dc(), Default::default(), 1000).unwrap(),
            before
        );
        listener.stop().await;
    });
}

#[test]
fn certificate_checks_fail_with_distinct_errors() {
    block_on(async {
        let server = Database::in_memory().unwrap();
        let listener = Listener::start(server, loopback()).await.unwrap();
        let client = Database::in_memory().unwrap();

        // Pinned to some other certificate.
        let now = SystemTime::now();
        let other = TlsIdentity::self_signed(
            &IdentityAttributes::common_name("other"),
            now + Duration::from_secs(3600),
            now,
            &[],
        )
        .unwrap();
        let mut c = pinned_config(&listener, "u", "p");
        c.server_trust = ServerTrust::Pinned(other.certificate().clone());
        assert_eq!(
            connect_error(&sync(&client, c).await),
            Some(ConnectError::PinMismatch)
        );

        // Nothing configured to trust it.
        let mut c = pinned_config(&listener, "u", "p");
        c.server_trust = ServerTrust::default();
        assert!(matches!(
            connect_error(&sync(&client, c).await),
            Some(ConnectError::UntrustedCertificate(_))
        ));

        // Self-signed only: the listener's self-signed identity is accepted.
        let mut c = pinned_config(&listener, "u", "p");
        c.server_trust = ServerTrust::SelfSignedOnly;
        assert_eq!(sync(&client, c).await.error, None);
        listener.stop().await;
    });
}

#[test]
fn self_signed_only_refuses_a_ca_issued_certificate() {
    block_on(async {
        let (ca_key, ca_params) = {
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            p.distinguished_name
                .push(rcgen::DnType::CommonName, "Test CA");
            (rcgen::KeyPair::generate().unwrap(), p)
        };
        let ca_cert = ca_params.clone().self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, &ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let identity = TlsIdentity::from_pem(
            format!("{}{}", leaf.pem(), ca_cert.pem()).as_bytes(),
            leaf_key.serialize_pem().as_bytes(),
        )
        .unwrap();
        let server = Database::in_memory().unwrap();
        let listener = Listener::start(
            server,
            ListenerConfig {
                tls: ListenerTls::Identity(identity),
                ..loopback()
            },
        )
        .await
        .unwrap();
        let client = Database::in_memory().unwrap();
        let mut c = pinned_config(&listener, "u", "p");
        c.server_trust = ServerTrust::SelfSignedOnly;
        assert_eq!(
            connect_error(&sync(&client, c).await),
            Some(ConnectError::NotSelfSigned)
        );
        // Trusting the CA works, and so does pinning the CA certificate (any cert in the chain).
        let mut c = pinned_config(&listener, "u", "p");
        c.server_trust = ServerTrust::TrustedRoots(vec![ca_cert.der().clone()]);
        assert_eq!(sync(&client, c).await.error, None);
        let mut c = pinned_config(&listener, "u", "p");
        c.server_trust = ServerTrust::Pinned(ca_cert.der().clone());
        assert_eq!(sync(&client, c).await.error, None);
        listener.stop().await;
    });
}

#[test]
fn tls_mode_mismatches_and_unreachable_listeners() {
    block_on(async {
        let client = Database::in_memory().unwrap();
        let tls = Listener::start(Database::in_memory().unwrap(), loopback())
            .await
            .unwrap();
        let mut c = pinned_config(&tls, "u", "p");
        c.endpoint = url(&tls, "ws");
        assert_eq!(
            connect_error(&sync(&client, c).await),
            Some(ConnectError::TlsRequired)
        );

        let plain = Listener::start(Database::in_memory().unwrap(), plain())
            .await
            .unwrap();
        let mut c = pinned_config(&tls, "u", "p");
        c.endpoint = url(&plain, "wss");
        assert_eq!(
            connect_error(&sync(&client, c).await),
            Some(ConnectError::TlsRefused)
        );

        let port = plain.port();
        plain.stop().await;
        let mut c = ReplicatorConfiguration::new(format!("ws://127.0.0.1:{port}/db"));
        c.max_attempts = 3;
        c.max_attempt_wait = Duration::from_millis(50);
        let status = sync(&client, c).await;
        assert_eq!(status.activity, Activity::Stopped);
        assert!(
            matches!(
                connect_error(&status),
                Some(ConnectError::Unreachable { .. })
            ),
            "{status:?}"
        );
        tls.stop().await;
    });
}

#[test]
fn self_signed_identity_is_kept_by_label_across_restarts() {
    block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path()).unwrap();
        let config = ListenerConfig {
            tls: ListenerTls::SelfSigned {
                label: "my-server-identity".into(),
                attributes: IdentityAttributes {
                    common_name: "My Server".into(),
                    organization: Some("My Company".into()),
                    organization_unit: Some("Mobile".into()),
                    email: Some("admin@mycompany.com".into()),
                },
                expiration: Some(SystemTime::now() + Duration::from_secs(30 * 24 * 3600)),
            },
            ..loopback()
        };
        let first = Listener::start(db.clone(), config.clone()).await.unwrap();
        let fingerprint = first.tls_identity().unwrap().sha256_fingerprint();
        first.stop().await;
        let second = Listener::start(db.clone(), config.clone()).await.unwrap();
        assert_eq!(
            second.tls_identity().unwrap().sha256_fingerprint(),
            fingerprint
        );
        second.stop().await;
        assert!(TlsIdentity::delete(&db, "my-server-identity").unwrap());
        let third = Listener::start(db, config).await.unwrap();
        assert_ne!(
            third.tls_identity().unwrap().sha256_fingerprint(),
            fingerprint
        );
        third.stop().await;
    });
}

#[test]
fn continuous_replication_survives_a_listener_restart() {
    block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let server = Database::open(dir.path()).unwrap();
        let client = Database::in_memory().unwrap();
        let listener = Listener::start(server.clone(), plain()).await.unwrap();
        let port = listener.port();
        let mut c = ReplicatorConfiguration::new(url(&listener, "ws"));
        c.continuous = true;
        c.max_attempt_wait = Duration::from_millis(200);
        let r = Replicator::new(client.clone(), c).unwrap();
        r.start();
        put(&client, "a", r#"{"n": 1}"#);
        put(&server, "b", r#"{"n": 2}"#);
        wait_for(|| has(&server, "a") && has(&client, "b")).await;
        listener.stop().await;
        put(&client, "while-down", "{}");
        wait_for(|| r.status().activity == Activity::Offline).await;
        let listener = Listener::start(server.clone(), ListenerConfig { port, ..plain() })
            .await
            .unwrap();
        put(&server, "after", "{}");
        wait_for(|| has(&server, "while-down") && has(&client, "after")).await;
        wait_for(|| r.status().activity == Activity::Idle).await;
        r.stop();
        assert_eq!(r.wait_until_stopped().await.activity, Activity::Stopped);
        listener.stop().await;
    });
}

#[test]
fn twenty_concurrent_replicators_converge() {
    block_on(async {
        let server = Database::in_memory().unwrap();
        let listener = Listener::start(
            server.clone(),
            ListenerConfig {
                authenticator: basic(&[("sync", "pw")]),
                ..loopback()
            },
        )
        .await
        .unwrap();
        let clients: Vec<Database> = (0..20).map(|_| Database::in_memory().unwrap()).collect();
        let mut replicators = Vec::new();
        for (i, db) in clients.iter().enumerate() {
            for j in 0..10 {
                put(db, &format!("c{i}-{j}"), &format!(r#"{{"client": {i}}}"#));
            }
            put(db, "shared", &format!(r#"{{"client": {i}}}"#));
            let mut c = pinned_config(&listener, "sync", "pw");
            c.continuous = true;
            c.max_attempts = 0;
            let r = Replicator::new(db.clone(), c).unwrap();
            r.start();
            replicators.push(r);
        }
        let expected = 20 * 10 + 1;
        wait_for(|| {
            clients
                .iter()
                .chain([&server])
                .all(|db| db.changes(&dc(), Default::default(), 1000).unwrap().len() == expected)
        })
        .await;
        wait_for(|| {
            let winner = server.get(&dc(), &id("shared")).unwrap().map(|d| d.rev);
            clients
                .iter()
                .all(|db| db.get(&dc(), &id("shared")).unwrap().map(|d| d.rev) == winner)
        })
        .await;
        assert!(listener.status().connection_count >= 20);
        for r in &replicators {
            r.stop();
        }
        listener.stop().await;
    });
}

/// Polls `cond` until it holds (at most 30 s).
async fn wait_for(mut cond: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if cond() {
            return;
        }
        smol::Timer::after(Duration::from_millis(10)).await;
    }
    panic!("condition not reached within 30 s");
}

#[test]
fn an_expired_certificate_is_reported_as_expired() {
    block_on(async {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        let identity =
            TlsIdentity::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap();
        let listener = Listener::start(
            Database::in_memory().unwrap(),
            ListenerConfig {
                tls: ListenerTls::Identity(identity),
                ..loopback()
            },
        )
        .await
        .unwrap();
        let mut c = pinned_config(&listener, "u", "p");
        c.server_trust = ServerTrust::SelfSignedOnly;
        assert_eq!(
            connect_error(&sync(&Database::in_memory().unwrap(), c).await),
            Some(ConnectError::CertificateExpired)
        );
        listener.stop().await;
    });
}

#[test]
fn connections_over_the_limit_are_turned_away() {
    block_on(async {
        let listener = Listener::start(
            Database::in_memory().unwrap(),
            ListenerConfig {
                max_connections: 2,
                ..plain()
            },
        )
        .await
        .unwrap();
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut c = ReplicatorConfiguration::new(url(&listener, "ws"));
            c.continuous = true;
            let r = Replicator::new(Database::in_memory().unwrap(), c).unwrap();
            r.start();
            held.push(r);
        }
        wait_for(|| listener.status().connection_count == 2).await;
        let mut c = ReplicatorConfiguration::new(url(&listener, "ws"));
        c.max_attempts = 1;
        let status = sync(&Database::in_memory().unwrap(), c).await;
        let Some(ReplicatorError::Connect(e)) = status.error else {
            panic!("{status:?}");
        };
        assert!(
            matches!(&e, ConnectError::ListenerBusy { retry_after_secs: 5, message } if message.contains("connection limit (2)")),
            "{e:?}"
        );
        assert!(e.is_retryable());
        assert!(e.to_string().contains("connection limit"), "{e}");
        wait_for(|| listener.status().rejected_connection_count >= 1).await;
        for r in &held {
            r.stop();
        }
        listener.stop().await;
    });
}

/// An in-memory store whose syncs wait until the test opens a gate: a slow disk.
struct SlowSyncKv {
    inner: peerlite_storage::MemKv,
    open: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
}

impl peerlite_storage::KvBackend for SlowSyncKv {
    fn get(
        &self,
        space: peerlite_storage::Space,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, peerlite_storage::KvError> {
        self.inner.get(space, key)
    }
    fn scan(
        &self,
        space: peerlite_storage::Space,
        range: (std::ops::Bound<Vec<u8>>, std::ops::Bound<Vec<u8>>),
        limit: usize,
    ) -> Result<Vec<peerlite_storage::KvPair>, peerlite_storage::KvError> {
        self.inner.scan(space, range, limit)
    }
    fn commit(
        &self,
        batch: peerlite_storage::WriteBatch,
        durability: peerlite_storage::Durability,
    ) -> Result<(), peerlite_storage::KvError> {
        self.inner.commit(batch, durability)
    }
    fn persist(&self) -> Result<(), peerlite_storage::KvError> {
        let open = self.open.lock().unwrap();
        drop(self.opened.wait_while(open, |open| !*open).unwrap());
        self.inner.persist()
    }
}

/// Continuous replication sends a local change as soon as it is readable: the peer has
/// it while the save that made it is still waiting for its sync, and the save returns
/// once the sync ends.
#[test]
fn a_live_change_reaches_the_peer_while_its_local_sync_runs() {
    block_on(async {
        let server = Database::in_memory().unwrap();
        let kv = std::sync::Arc::new(SlowSyncKv {
            inner: peerlite_storage::MemKv::new(),
            open: std::sync::Mutex::new(true),
            opened: std::sync::Condvar::new(),
        });
        let client = Database::with_backend(kv.clone(), Default::default()).unwrap();
        let listener = Listener::start(server.clone(), plain()).await.unwrap();
        let mut c = ReplicatorConfiguration::new(url(&listener, "ws"));
        c.continuous = true;
        c.replicator_type = ReplicatorType::Push;
        let r = Replicator::new(client.clone(), c).unwrap();
        r.start();
        put(&client, "before", "{}");
        wait_for(|| has(&server, "before") && r.status().activity == Activity::Idle).await;

        *kv.open.lock().unwrap() = false;
        let saver = {
            let client = client.clone();
            std::thread::spawn(move || put(&client, "live", r#"{"n": 1}"#))
        };
        wait_for(|| has(&server, "live")).await;
        assert!(
            !saver.is_finished(),
            "the peer had the change before the local save returned"
        );
        *kv.open.lock().unwrap() = true;
        kv.opened.notify_all();
        saver.join().unwrap();
        assert!(has(&client, "live"));
        r.stop();
        r.wait_until_stopped().await;
        listener.stop().await;
    });
}

/// Fails the test instead of hanging when `f` takes longer than `secs`.
async fn within<T>(secs: u64, what: &str, f: impl std::future::Future<Output = T>) -> T {
    smol::future::or(f, async {
        smol::Timer::after(Duration::from_secs(secs)).await;
        panic!("{what}: no result after {secs} s");
    })
    .await
}

#[test]
fn large_documents_sync_in_one_attempt_and_oversized_ones_are_reported() {
    block_on(async {
        // Six documents of 3 MiB each (under the 4 MiB body limit, 18 MiB together) over
        // TLS with default limits: the sync that used to retry forever.
        let server = Database::in_memory().unwrap();
        let client = Database::in_memory().unwrap();
        let big = format!(r#"{{"b": "{}"}}"#, "z".repeat(3 << 20));
        for i in 0..6 {
            put(&client, &format!("c{i}"), &big);
        }
        let listener = Listener::start(
            server.clone(),
            ListenerConfig {
                authenticator: basic(&[("u", "p")]),
                ..loopback()
            },
        )
        .await
        .unwrap();
        let mut push = pinned_config(&listener, "u", "p");
        push.replicator_type = ReplicatorType::Push;
        let status = within(60, "six 3 MiB documents", sync(&client, push)).await;
        assert_eq!(status.error, None, "{status:?}");
        assert_eq!(
            (status.progress.completed, status.progress.total),
            (6, 6),
            "{status:?}"
        );
        assert!((0..6).all(|i| has(&server, &format!("c{i}"))));
        listener.stop().await;

        // Both peers accept at most 1 MiB messages: documents of 300 KiB sync (several
        // messages), those of 3 MiB can never be sent and are reported, once, each.
        let server = Database::in_memory().unwrap();
        let client = Database::in_memory().unwrap();
        let mid = format!(r#"{{"b": "{}"}}"#, "m".repeat(300 << 10));
        for i in 0..10 {
            put(&client, &format!("up{i}"), &mid);
            put(&server, &format!("down{i}"), &mid);
        }
        put(&client, "up-huge", &big);
        put(&server, "down-huge", &big);
        let listener = Listener::start(
            server.clone(),
            ListenerConfig {
                max_frame_bytes: 1 << 20,
                ..plain()
            },
        )
        .await
        .unwrap();
        let mut config = ReplicatorConfiguration::new(url(&listener, "ws"));
        config.max_frame_bytes = 1 << 20;
        let r = Replicator::new(client.clone(), config).unwrap();
        let failures = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let f = failures.clone();
        r.add_document_listener(move |docs| {
            for d in docs.iter().filter(|d| d.error.is_some()) {
                f.lock()
                    .unwrap()
                    .push((d.doc_id.to_string(), d.error.clone().unwrap()));
            }
        });
        r.start();
        let status = within(60, "1 MiB limits", r.wait_until_stopped()).await;
        assert_eq!(status.error, None, "{status:?}");
        assert!(
            (0..10).all(|i| has(&server, &format!("up{i}")) && has(&client, &format!("down{i}")))
        );
        assert!(!has(&server, "up-huge") && !has(&client, "down-huge"));
        let mut failures = failures.lock().unwrap().clone();
        failures.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(failures.len(), 2, "{failures:?}");
        for ((doc, error), expected) in failures.iter().zip(["down-huge", "up-huge"]) {
            assert_eq!(doc, expected);
            assert!(
                matches!(error, peerlite_proto::DocumentError::TooLarge { bytes, limit }
                    if *bytes > 3 << 20 && *limit == 1 << 20),
                "{error:?}"
            );
        }
        listener.stop().await;
    });
}

#[test]
fn a_connection_dropped_during_the_tls_handshake_is_retried_and_said_so() {
    block_on(async {
        // Something that accepts and hangs up at once, as a listener past its limit does
        // once it cannot even answer "busy".
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in tcp.incoming() {
                drop(stream);
            }
        });
        let mut c = ReplicatorConfiguration::new(format!("wss://127.0.0.1:{port}/db"));
        c.server_trust = ServerTrust::SelfSignedOnly;
        c.max_attempts = 2;
        c.max_attempt_wait = Duration::from_millis(50);
        let r = Replicator::new(Database::in_memory().unwrap(), c).unwrap();
        let retried = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = retried.clone();
        r.add_change_listener(move |s| {
            if s.retry.is_some() {
                seen.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
        r.start();
        let status = r.wait_until_stopped().await;
        assert_eq!(
            connect_error(&status),
            Some(ConnectError::ClosedDuringTlsHandshake)
        );
        assert!(retried.load(std::sync::atomic::Ordering::SeqCst));
    });
}

#[test]
fn blobs_a_sender_lost_or_damaged_on_disk_are_refused_over_tls() {
    block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let server = Database::open(dir.path().join("server")).unwrap();
        let client = Database::open(dir.path().join("client")).unwrap();
        let blob_file =
            |d: &peerlite_proto::BlobDigest| dir.path().join("server/blobs").join(d.to_hex());
        let save = |doc: &str, bytes: &[u8]| {
            let blob = server.save_blob(bytes, Some("image/png")).unwrap();
            let body = serde_json::json!({ "photo": blob.to_json() });
            server
                .save(&dc(), &id(doc), Body::from_json(&body).unwrap())
                .unwrap();
            blob
        };
        let fine_bytes: Vec<u8> = (0..400_000u32).map(|i| (i % 253) as u8).collect();
        let fine = save("fine", &fine_bytes);
        let lost = save("lost", &[9u8; 100_000]);
        std::fs::remove_file(blob_file(&lost.digest)).unwrap();
        let listener = Listener::start(
            server.clone(),
            ListenerConfig {
                authenticator: basic(&[("u", "p")]),
                ..loopback()
            },
        )
        .await
        .unwrap();
        let mut pull = pinned_config(&listener, "u", "p");
        pull.replicator_type = ReplicatorType::Pull;

        // A blob the listener lost: that document is refused with the reason, the rest syncs.
        let r = Replicator::new(client.clone(), pull.clone()).unwrap();
        let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let e = errors.clone();
        r.add_document_listener(move |docs| {
            for d in docs.iter().filter(|d| d.error.is_some()) {
                e.lock()
                    .unwrap()
                    .push((d.doc_id.to_string(), d.error.clone().unwrap()));
            }
        });
        r.start();
        let status = within(60, "pull with a lost blob", r.wait_until_stopped()).await;
        assert_eq!(status.error, None, "{status:?}");
        let errors = errors.lock().unwrap().clone();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, "lost");
        assert!(
            format!("{:?}", errors[0].1).contains("does not hold this blob"),
            "{errors:?}"
        );
        assert!(has(&client, "fine") && !has(&client, "lost"));
        let mut back = Vec::new();
        std::io::Read::read_to_end(
            &mut client.open_blob(&fine.digest).unwrap().unwrap(),
            &mut back,
        )
        .unwrap();
        assert_eq!(back, fine_bytes);

        // A blob damaged on the listener's disk: the replicator closes the connection with
        // the violation and keeps nothing of it.
        let damaged = save("damaged", &[7u8; 300_000]);
        std::fs::write(blob_file(&damaged.digest), [8u8; 300_000]).unwrap();
        let status = within(60, "pull with a damaged blob", sync(&client, pull)).await;
        match &status.error {
            Some(ReplicatorError::Replication(peerlite_proto::ReplicationError::Protocol(v))) => {
                assert_eq!(
                    **v,
                    peerlite_proto::PeerMisbehaved::BlobMismatch(damaged.digest)
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(!has(&client, "damaged"));
        assert!(!client.has_blob(&damaged.digest).unwrap());
        assert_eq!(client.blobs().unwrap().len(), 1);
        listener.stop().await;
    });
}

#[test]
fn stats_count_documents_frames_bytes_sessions_refusals_and_storage_time() {
    block_on(async {
        let server = Database::in_memory().unwrap();
        let client = Database::in_memory().unwrap();
        for i in 0..120 {
            put(&client, &format!("c{i}"), r#"{"side": "client"}"#);
        }
        for i in 0..30 {
            put(&server, &format!("s{i}"), r#"{"side": "server"}"#);
        }
        let listener = Listener::start(
            server.clone(),
            ListenerConfig {
                authenticator: basic(&[("alice", "s3cret")]),
                ..loopback()
            },
        )
        .await
        .unwrap();
        let mut wrong = pinned_config(&listener, "alice", "nope");
        wrong.max_attempts = 1;
        assert!(sync(&client, wrong).await.error.is_some());
        let r = Replicator::new(client.clone(), pinned_config(&listener, "alice", "s3cret")).unwrap();
        r.start();
        assert_eq!(r.wait_until_stopped().await.error, None);
        let mine = r.stats();
        assert_eq!((mine.documents_sent, mine.documents_received), (120, 30));
        assert_eq!((mine.connections, mine.documents_failed), (1, 0));
        assert!(mine.storage_operations > 0 && mine.storage_max <= mine.storage_time);
        // The listener saw the same frames: wait for it to finish with the last ones.
        wait_for(|| listener.stats().frames_received == mine.frames_sent).await;
        let theirs = listener.stats();
        assert_eq!((theirs.documents_received, theirs.documents_sent), (120, 30));
        assert_eq!(theirs.bytes_received, mine.bytes_sent);
        assert!(mine.bytes_sent > 120 * 10, "{mine:?}");
        assert_eq!(theirs.connections, 1);
        assert_eq!(theirs.connections_failed, 1, "the refused login");
        listener.stop().await;
    });
}

#[test]
fn a_running_listener_or_replicator_purges_documents_as_they_expire() {
    block_on(async {
        let server = Database::in_memory().unwrap();
        let client = Database::in_memory().unwrap();
        put(&server, "short", "{}");
        put(&server, "kept", "{}");
        put(&client, "short", "{}");
        let soon = SystemTime::now() + Duration::from_millis(400);
        server.set_expiration(&dc(), &id("short"), Some(soon)).unwrap();
        let listener = Listener::start(server.clone(), plain()).await.unwrap();
        // A replicator that exists (not even started) purges its database too.
        let replicator = Replicator::new(
            client.clone(),
            ReplicatorConfiguration::new(url(&listener, "ws")),
        )
        .unwrap();
        client.set_expiration(&dc(), &id("short"), Some(soon)).unwrap();
        assert!(has(&server, "short") && has(&client, "short"));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while (has(&server, "short") || has(&client, "short"))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(SystemTime::now() >= soon, "not before its time");
        assert!(!has(&server, "short") && !has(&client, "short"));
        assert!(has(&server, "kept"));
        assert!(server.changes(&dc(), peerlite_proto::Seq::ZERO, 10).unwrap().len() == 1);
        drop(replicator);
        listener.stop().await;
    });
}
