// Identities made by `openssl`, seen by `openssl s_client` and `curl`; client
// certificates; per-user limits; slow handshakes. (`.ci/run` installs openssl and curl.)



use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use peerlite_proto::{
    Body, CollectionConfig, CollectionName, DocId, ReplicationError, ReplicatorType,
};
use rt::{
    AuthFailureLimit, ClientCertificateProblem, ConnectError, Credentials, IdentityAttributes,
    IdentityError, Listener, ListenerAuthenticator, ListenerConfig, ListenerTls, Replicator,
    ReplicatorConfiguration, ReplicatorError, ServerTrust, TlsIdentity, User,
};
use peerlite_storage::Database;

fn run(tool: &str, args: &[&str], dir: &Path) -> std::process::Output {
    let out = Command::new(tool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool} ({e}); install it (apt-get install {tool})"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn loopback(tls: ListenerTls) -> ListenerConfig {
    ListenerConfig {
        network_interface: IpAddr::V4(Ipv4Addr::LOCALHOST),
        tls,
        ..ListenerConfig::default()
    }
}

/// A self-signed EC certificate and key made by openssl, as Sync Gateway's docs describe.
fn openssl_identity(dir: &Path) {
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "30",
            "-subj",
            "/CN=localhost/O=Peerlite Tests/OU=CI/emailAddress=ci@example.com",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        dir,
    );
}

async fn sync_with(
    db: &Database,
    config: ReplicatorConfiguration,
) -> rt::ReplicatorStatus {
    let r = Replicator::new(db.clone(), config).unwrap();
    r.start();
    r.wait_until_stopped().await
}

fn client_config(listener: &Listener, trust: ServerTrust) -> ReplicatorConfiguration {
    let mut c = ReplicatorConfiguration::new(format!("wss://127.0.0.1:{}/db", listener.port()));
    c.server_trust = trust;
    c.max_attempts = 1;
    c
}

#[test]
fn pem_files_made_by_openssl_serve_tls() {
    block_on(async {
        let dir = tempfile::tempdir().unwrap();
        openssl_identity(dir.path());
        let identity =
            TlsIdentity::from_pem_files(dir.path().join("cert.pem"), dir.path().join("key.pem"))
                .unwrap();
        let server = Database::in_memory().unwrap();
        server
            .save(
                &CollectionName::default(),
                &DocId::new("hello").unwrap(),
                Body::from_json_str("{}").unwrap(),
            )
            .unwrap();
        let listener = Listener::start(server, loopback(ListenerTls::Identity(identity)))
            .await
            .unwrap();
        // openssl req -x509 makes a CA:TRUE certificate; "accept only self-signed" takes it.
        let client = Database::in_memory().unwrap();
        let status = sync_with(
            &client,
            client_config(&listener, ServerTrust::SelfSignedOnly),
        )
        .await;
        assert_eq!(status.error, None);
        assert!(
            client
                .get(&CollectionName::default(), &DocId::new("hello").unwrap())
                .unwrap()
                .is_some()
        );
        // Mismatched files are refused clearly.
        let other = tempfile::tempdir().unwrap();
        openssl_identity(other.path());
        let mismatch =
            TlsIdentity::from_pem_files(dir.path().join("cert.pem"), other.path().join("key.pem"));
        assert!(
            matches!(mismatch, Err(IdentityError::KeyMismatch(_))),
            "{mismatch:?}"
        );
        let missing =
            TlsIdentity::from_pem_files(dir.path().join("nope.pem"), dir.path().join("key.pem"));
        assert!(matches!(missing, Err(IdentityError::Io { .. })));
        assert!(matches!(
            TlsIdentity::from_pem(b"not pem", b"not pem"),
            Err(IdentityError::NoCertificate(_))
        ));
        listener.stop().await;
    });
}

#[test]
fn pkcs12_archives_import_with_their_password() {
    block_on(async {
        let dir = tempfile::tempdir().unwrap();
        openssl_identity(dir.path());
        let base = [
            "pkcs12", "-export", "-inkey", "key.pem", "-in", "cert.pem", "-name", "peerlite",
        ];
        run(
            "openssl",
            &[
                &base[..],
                &["-out", "modern.p12", "-passout", "pass:changeit"],
            ]
            .concat(),
            dir.path(),
        );
        run(
            "openssl",
            &[
                &base[..],
                &["-legacy", "-out", "legacy.p12", "-passout", "pass:changeit"],
            ]
            .concat(),
            dir.path(),
        );
        let db = Database::in_memory().unwrap();
        use base64::Engine as _;
        for file in ["modern.p12", "legacy.p12"] {
            let b64 = base64::engine::general_purpose::STANDARD
                .encode(std::fs::read(dir.path().join(file)).unwrap());
            let identity =
                TlsIdentity::import_pkcs12_base64(&db, "my-imported-identity", &b64, "changeit")
                    .unwrap();
            let stored = TlsIdentity::load(&db, "my-imported-identity")
                .unwrap()
                .unwrap();
            assert_eq!(
                stored.sha256_fingerprint(),
                identity.sha256_fingerprint(),
                "{file}"
            );
            let wrong = TlsIdentity::import_pkcs12_base64(&db, "x", &b64, "wrong");
            match wrong {
                Err(IdentityError::Pkcs12(msg)) => {
                    assert!(msg.contains("wrong password"), "{file}: {msg}")
                }
                other => panic!("{file}: expected a wrong-password error, got {other:?}"),
            }
        }
        // Serve with the imported identity; the client pins its certificate.
        let identity = TlsIdentity::load(&db, "my-imported-identity")
            .unwrap()
            .unwrap();
        let pin = identity.certificate().clone();
        let listener = Listener::start(
            Database::in_memory().unwrap(),
            loopback(ListenerTls::Identity(identity)),
        )
        .await
        .unwrap();
        let status = sync_with(
            &Database::in_memory().unwrap(),
            client_config(&listener, ServerTrust::Pinned(pin)),
        )
        .await;
        assert_eq!(status.error, None);
        listener.stop().await;
    });
}

#[test]
fn openssl_s_client_sees_the_identity_attributes_and_curl_gets_401_then_429() {
    block_on(async {
        let attributes = IdentityAttributes {
            common_name: "My Server".into(),
            organization: Some("My Company".into()),
            organization_unit: Some("Mobile".into()),
            email: Some("admin@mycompany.com".into()),
        };
        let tls = ListenerTls::SelfSigned {
            label: "attrs".into(),
            attributes,
            expiration: Some(SystemTime::now() + Duration::from_secs(7 * 24 * 3600)),
        };
        let listener = Listener::start(
            Database::in_memory().unwrap(),
            ListenerConfig {
                authenticator: Some(ListenerAuthenticator::Basic(vec![User::new(
                    "alice", "s3cret",
                )])),
                auth_failure_limit: Some(AuthFailureLimit {
                    max_failures: 1,
                    window: Duration::from_secs(60),
                    lockout: Duration::from_secs(30),
                }),
                ..loopback(tls)
            },
        )
        .await
        .unwrap();
        let port = listener.port().to_string();
        let dir = tempfile::tempdir().unwrap();
        let s_client = smol::unblock({
            let dir = dir.path().to_owned();
            let port = port.clone();
            move || {
                let out = Command::new("openssl")
                    .args([
                        "s_client",
                        "-connect",
                        &format!("127.0.0.1:{port}"),
                        "-showcerts",
                    ])
                    .stdin(std::process::Stdio::null())
                    .current_dir(dir)
                    .output()
                    .expect("install openssl");
                String::from_utf8_lossy(&out.stdout).into_owned()
            }
        })
        .await;
        for part in [
            "CN = My Server",
            "O = My Company",
            "OU = Mobile",
            "emailAddress = admin@mycompany.com",
        ] {
            assert!(
                s_client.contains(part),
                "s_client output lacks {part:?}:\n{s_client}"
            );
        }
        let upgrade = move || {
            let out = Command::new("curl")
                .args([
                    "-sk",
                    "-i",
                    "--http1.1",
                    "-H",
                    "Connection: Upgrade",
                    "-H",
                    "Upgrade: websocket",
                    "-H",
                    "Sec-WebSocket-Version: 13",
                    "-H",
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                    "-H",
                    "Sec-WebSocket-Protocol: peerlite.v1",
                    &format!("https://127.0.0.1:{port}/db"),
                ])
                .output()
                .expect("install curl");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let curl = smol::unblock(upgrade.clone()).await;
        assert!(curl.starts_with("HTTP/1.1 401"), "{curl}");
        assert!(
            curl.to_ascii_lowercase()
                .contains("www-authenticate: basic"),
            "{curl}"
        );
        // One failure allowed: the second starts a 30 s lockout.
        let curl = smol::unblock(upgrade).await;
        assert!(curl.starts_with("HTTP/1.1 429"), "{curl}");
        assert!(
            curl.to_ascii_lowercase().contains("retry-after: 30"),
            "{curl}"
        );
        listener.stop().await;
    });
}

/// A CA and a certificate it issued (for `cn`), as a client identity.
fn issued(ca: &(rcgen::CertificateParams, rcgen::KeyPair), cn: &str) -> TlsIdentity {
    issued_with(ca, cn, |_| {})
}

/// Like [`issued`], with the certificate's parameters changed by `edit`.
fn issued_with(
    ca: &(rcgen::CertificateParams, rcgen::KeyPair),
    cn: &str,
    edit: impl FnOnce(&mut rcgen::CertificateParams),
) -> TlsIdentity {
    let issuer = rcgen::Issuer::new(ca.0.clone(), &ca.1);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    edit(&mut params);
    let cert = params.signed_by(&key, &issuer).unwrap();
    TlsIdentity::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap()
}

fn ca(
    name: &str,
) -> (
    (rcgen::CertificateParams, rcgen::KeyPair),
    rustls::pki_types::CertificateDer<'static>,
) {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap();
    let der = p.clone().self_signed(&key).unwrap().der().clone();
    ((p, key), der)
}

#[test]
fn client_certificates_are_required_and_checked() {
    block_on(async {
        let (trusted, trusted_der) = ca("Trusted Clients CA");
        let (stranger, _) = ca("Someone Else");
        let listener = Listener::start(
            Database::in_memory().unwrap(),
            ListenerConfig {
                authenticator: Some(ListenerAuthenticator::ClientCertificate {
                    roots: vec![trusted_der],
                }),
                ..loopback(ListenerTls::default())
            },
        )
        .await
        .unwrap();
        let pin = ServerTrust::Pinned(listener.tls_identity().unwrap().certificate().clone());
        let client = Database::in_memory().unwrap();

        let mut good = client_config(&listener, pin.clone());
        good.client_identity = Some(issued(&trusted, "device-42"));
        assert_eq!(sync_with(&client, good).await.error, None);

        // Each refusal is named for what is wrong, with what to do.
        let past = time::OffsetDateTime::now_utc() - time::Duration::days(2);
        let cases = [
            (None, ClientCertificateProblem::Required, "--client-cert"),
            (
                Some(issued(&stranger, "intruder")),
                ClientCertificateProblem::UntrustedIssuer,
                "not issued by a CA the listener trusts",
            ),
            (
                Some(issued_with(&trusted, "old-device", |p| {
                    p.not_before = past - time::Duration::days(30);
                    p.not_after = past;
                })),
                ClientCertificateProblem::Expired,
                "expired",
            ),
            (
                Some(issued_with(&trusted, "a-server", |p| {
                    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
                })),
                ClientCertificateProblem::WrongPurpose,
                "extendedKeyUsage=clientAuth",
            ),
        ];
        let count = cases.len() as u64;
        for (identity, problem, says) in cases {
            let mut config = client_config(&listener, pin.clone());
            config.client_identity = identity;
            let status = sync_with(&client, config).await;
            match status.error {
                Some(ReplicatorError::Connect(ConnectError::ClientCertificateRejected(p))) => {
                    assert_eq!(p, problem);
                    let message = ConnectError::ClientCertificateRejected(p).to_string();
                    assert!(message.contains(says), "{message}");
                }
                other => panic!("expected {problem:?}, got {other:?}"),
            }
        }
        // The listener counts a rejection just after the client sees it.
        for _ in 0..500 {
            if listener.status().rejected_connection_count >= count {
                break;
            }
            smol::Timer::after(Duration::from_millis(10)).await;
        }
        assert!(listener.status().rejected_connection_count >= count);
        listener.stop().await;
    });
}

#[test]
fn users_may_be_read_only_or_limited_to_collections() {
    block_on(async {
        let a: CollectionName = "app.a".parse().unwrap();
        let b: CollectionName = "app.b".parse().unwrap();
        let server = Database::in_memory().unwrap();
        let listener = Listener::start(
            server.clone(),
            ListenerConfig {
                collections: vec![a.clone(), b.clone()],
                authenticator: Some(ListenerAuthenticator::Basic(vec![
                    User::new("reader", "pw").read_only(),
                    User::new("a-only", "pw").only_collections([a.clone()]),
                ])),
                ..loopback(ListenerTls::default())
            },
        )
        .await
        .unwrap();
        let pin = ServerTrust::Pinned(listener.tls_identity().unwrap().certificate().clone());
        let client = Database::in_memory().unwrap();
        client.create_collection(&a).unwrap();
        client
            .save(
                &a,
                &DocId::new("x").unwrap(),
                Body::from_json_str("{}").unwrap(),
            )
            .unwrap();

        let mut push = client_config(&listener, pin.clone());
        push.credentials = Some(Credentials::new("reader", "pw"));
        push.collections = vec![CollectionConfig::new(a.clone())];
        push.replicator_type = ReplicatorType::Push;
        match sync_with(&client, push).await.error {
            Some(ReplicatorError::Replication(ReplicationError::ReadOnly(why))) => {
                assert!(why.contains("read-only"), "{why}")
            }
            other => panic!("expected a read-only refusal, got {other:?}"),
        }
        let mut pull = client_config(&listener, pin.clone());
        pull.credentials = Some(Credentials::new("reader", "pw"));
        pull.collections = vec![CollectionConfig::new(a.clone())];
        pull.replicator_type = ReplicatorType::Pull;
        assert_eq!(sync_with(&client, pull).await.error, None);

        let mut other = client_config(&listener, pin.clone());
        other.credentials = Some(Credentials::new("a-only", "pw"));
        other.collections = vec![CollectionConfig::new(b.clone())];
        match sync_with(&client, other).await.error {
            Some(ReplicatorError::Replication(ReplicationError::Remote(e))) => {
                assert_eq!(e.code, 404)
            }
            other => panic!("expected 404, got {other:?}"),
        }
        let mut own = client_config(&listener, pin);
        own.credentials = Some(Credentials::new("a-only", "pw"));
        own.collections = vec![CollectionConfig::new(a.clone())];
        assert_eq!(sync_with(&client, own).await.error, None);
        assert!(server.get(&a, &DocId::new("x").unwrap()).unwrap().is_some());
        listener.stop().await;
    });
}

#[test]
fn a_silent_connection_is_dropped_after_the_handshake_timeout() {
    block_on(async {
        let listener = Listener::start(
            Database::in_memory().unwrap(),
            ListenerConfig {
                handshake_timeout: Duration::from_millis(300),
                ..loopback(ListenerTls::default())
            },
        )
        .await
        .unwrap();
        let mut slow = smol::net::TcpStream::connect(("127.0.0.1", listener.port()))
            .await
            .unwrap();
        use smol::io::AsyncReadExt;
        let mut buf = [0u8; 16];
        let started = std::time::Instant::now();
        let n = smol::future::or(async { slow.read(&mut buf).await.unwrap_or(0) }, async {
            smol::Timer::after(Duration::from_secs(5)).await;
            usize::MAX
        })
        .await;
        assert_eq!(
            n, 0,
            "the listener should close a connection that never handshakes"
        );
        assert!(started.elapsed() >= Duration::from_millis(250));
        // The socket closes just before the listener counts the rejection.
        for _ in 0..500 {
            if listener.status().rejected_connection_count == 1 {
                break;
            }
            smol::Timer::after(Duration::from_millis(10)).await;
        }
        assert_eq!(listener.status().rejected_connection_count, 1);
        assert_eq!(listener.status().connection_count, 0);
        // An expiration in the past is refused.
        let now = SystemTime::now();
        let past = TlsIdentity::self_signed(
            &IdentityAttributes::common_name("x"),
            now - Duration::from_secs(1),
            now,
            &[],
        );
        assert!(matches!(past, Err(IdentityError::ExpirationInPast(_))));
        listener.stop().await;
    });
}
