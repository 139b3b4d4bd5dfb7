//! Tests of the cluster PKI, with real TLS handshakes over 127.0.0.1.

use std::sync::Arc;
use std::time::Duration;

use rcgen::string::Ia5String;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData, SanType};
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::ca::{csr_for_key_pem, generate_key_and_csr, CaPin, ClusterCa, Validity};
use super::files::{self, PkiPaths};
use super::join::{
    check_ca_pin, finish_join, handle_join, needs_renewal, pinned_client_config, prepare_join,
    renew, JoinCommand, JoinError, JoinRequest, JoinResponse,
};
use super::revocation::{
    RevocationList, RevocationsFull, Serial, SharedRevocations, REVOCATIONS_MAX,
};
use super::role::{inspect, role_of, CertInfo, Role};
use super::tls::{
    client_config, join_server_config, peer_info, placeholder_server_name, rejection_of,
    server_config, ClusterTrust, Identity, Rejection, CONTROL_API, NODE_ONLY,
};
use super::token::{JoinToken, TokenBook, TokenError};
use super::{now_unix_ms, PkiError};

const HOUR_MS: u64 = 3600 * 1000;
const TTL: Duration = Duration::from_secs(3600);

/// A CA in its own temp data dir, with a trust that shares its revocations.
struct Cluster {
    dir: tempfile::TempDir,
    ca: ClusterCa,
    revocations: SharedRevocations,
    trust: ClusterTrust,
}

fn cluster() -> Cluster {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ClusterCa::init(dir.path()).expect("cluster init");
    let revocations = SharedRevocations::default();
    let trust = ClusterTrust::new(ca.ca_cert_pem(), revocations.clone()).expect("trust");
    Cluster {
        dir,
        ca,
        revocations,
        trust,
    }
}

/// A node identity made the real way: local key, CSR, signed by the CA.
fn node_identity(c: &Cluster, id: &str, validity: Validity) -> Identity {
    node_identity_and_key(c, id, validity).0
}

/// [`node_identity`] and its private key (PEM).
fn node_identity_and_key(c: &Cluster, id: &str, validity: Validity) -> (Identity, String) {
    let (key_pem, csr_pem) = generate_key_and_csr(id).expect("csr");
    let cert =
        c.ca.sign_csr_with_validity(&csr_pem, Role::Node, id, validity)
            .expect("sign");
    let identity =
        Identity::from_pem(&cert.cert_pem, &key_pem, c.ca.ca_cert_pem()).expect("identity");
    (identity, key_pem)
}

fn fresh(id: &str, c: &Cluster) -> Identity {
    node_identity(c, id, Validity::for_ttl(now_unix_ms(), TTL))
}

/// CLI credentials (`cert create --client` / `--admin`).
fn cli_identity(c: &Cluster, role: Role, id: &str) -> Identity {
    let creds = c.ca.issue_with_new_key(role, id, TTL).expect("issue");
    Identity::from_pem(&creds.cert.cert_pem, &creds.key_pem, c.ca.ca_cert_pem()).expect("identity")
}

/// Outcome of one handshake + one-byte exchange, seen from both ends.
struct Outcome {
    /// What the server learned about the client, or why it failed.
    server: Result<Option<CertInfo>, std::io::Error>,
    /// What the client learned about the server, or why it failed.
    client: Result<Option<CertInfo>, std::io::Error>,
}

async fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = TlsAcceptor::from(server);
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        let info = peer_info(tls.get_ref().1.peer_certificates());
        tls.write_all(b"k").await?;
        tls.flush().await?;
        let mut buf = [0u8; 1];
        // Wait for the client's byte so the connection is fully used.
        tls.read_exact(&mut buf).await?;
        Ok::<_, std::io::Error>(info)
    });
    let client_result = async {
        let tcp = TcpStream::connect(addr).await?;
        let mut tls = TlsConnector::from(client)
            .connect(placeholder_server_name(), tcp)
            .await?;
        let info = peer_info(tls.get_ref().1.peer_certificates());
        let mut buf = [0u8; 1];
        tls.read_exact(&mut buf).await?;
        tls.write_all(b"k").await?;
        tls.flush().await?;
        Ok::<_, std::io::Error>(info)
    };
    let client = tokio::time::timeout(Duration::from_secs(10), client_result)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("client timed out")));
    let server = match tokio::time::timeout(Duration::from_secs(10), server_task).await {
        Ok(Ok(r)) => r,
        Ok(Err(join)) => Err(std::io::Error::other(join.to_string())),
        Err(_) => Err(std::io::Error::other("server timed out")),
    };
    Outcome { server, client }
}

fn rejection(r: &Result<Option<CertInfo>, std::io::Error>) -> Rejection {
    match r {
        Ok(info) => panic!("expected a refusal, handshake succeeded with {info:?}"),
        Err(e) => rejection_of(e)
            .cloned()
            .unwrap_or_else(|| panic!("error without a Rejection inside: {e}")),
    }
}

#[tokio::test]
async fn node_to_node_mtls_succeeds() {
    let c = cluster();
    let n1 = fresh("n1", &c);
    let n2 = fresh("n2", &c);
    let out = handshake(
        server_config(&n1, &c.trust, NODE_ONLY).unwrap(),
        client_config(&n2, &c.trust).unwrap(),
    )
    .await;
    let seen_by_server = out.server.expect("server side").expect("client cert");
    let seen_by_client = out.client.expect("client side").expect("server cert");
    assert_eq!(
        (seen_by_server.role, seen_by_server.id.as_str()),
        (Role::Node, "n2")
    );
    assert_eq!(
        (seen_by_client.role, seen_by_client.id.as_str()),
        (Role::Node, "n1")
    );
}

#[tokio::test]
async fn cli_client_and_admin_accepted_on_control_api() {
    let c = cluster();
    let n1 = fresh("n1", &c);
    for (role, id) in [(Role::Client, "alice"), (Role::Admin, "root")] {
        let cli = cli_identity(&c, role, id);
        let out = handshake(
            server_config(&n1, &c.trust, CONTROL_API).unwrap(),
            client_config(&cli, &c.trust).unwrap(),
        )
        .await;
        let seen = out.server.expect("server side").expect("client cert");
        assert_eq!((seen.role, seen.id.as_str()), (role, id));
        out.client.expect("client side");
    }
}

#[tokio::test]
async fn peer_from_another_ca_is_refused() {
    let ours = cluster();
    let theirs = cluster();
    let n1 = fresh("n1", &ours);
    let intruder = fresh("n2", &theirs);

    // The intruder trusts our CA (so it gets past its own check) but its
    // certificate is from another CA: our server refuses it.
    let out = handshake(
        server_config(&n1, &ours.trust, NODE_ONLY).unwrap(),
        client_config(&intruder, &ours.trust).unwrap(),
    )
    .await;
    assert!(
        matches!(rejection(&out.server), Rejection::OtherCa(_)),
        "{:?}",
        out.server.err()
    );
    assert!(out.client.is_err());

    // Our client refuses a server of another cluster.
    let mine = fresh("n3", &ours);
    let out = handshake(
        server_config(&intruder, &theirs.trust, NODE_ONLY).unwrap(),
        client_config(&mine, &ours.trust).unwrap(),
    )
    .await;
    let r = rejection(&out.client);
    assert!(matches!(r, Rejection::OtherCa(_)), "{r:?}");
    assert!(
        r.to_string().contains("not issued by this cluster's CA"),
        "{r}"
    );
}

#[tokio::test]
async fn expired_certificate_is_refused() {
    let c = cluster();
    let n1 = fresh("n1", &c);
    let now = now_unix_ms();
    let old = node_identity(
        &c,
        "n2",
        Validity::between(now - 3 * HOUR_MS, now - HOUR_MS),
    );
    let out = handshake(
        server_config(&n1, &c.trust, NODE_ONLY).unwrap(),
        client_config(&old, &c.trust).unwrap(),
    )
    .await;
    let r = rejection(&out.server);
    assert!(matches!(r, Rejection::Expired { .. }), "{r:?}");
    assert!(r.to_string().contains("expired"), "{r}");

    // And a server with an expired certificate is refused by the client.
    let out = handshake(
        server_config(&old, &c.trust, NODE_ONLY).unwrap(),
        client_config(&n1, &c.trust).unwrap(),
    )
    .await;
    assert!(matches!(rejection(&out.client), Rejection::Expired { .. }));
}

#[tokio::test]
async fn not_yet_valid_certificate_is_refused() {
    let c = cluster();
    let n1 = fresh("n1", &c);
    let now = now_unix_ms();
    let future = node_identity(
        &c,
        "n2",
        Validity::between(now + HOUR_MS, now + 3 * HOUR_MS),
    );
    let out = handshake(
        server_config(&n1, &c.trust, NODE_ONLY).unwrap(),
        client_config(&future, &c.trust).unwrap(),
    )
    .await;
    assert!(matches!(
        rejection(&out.server),
        Rejection::NotYetValid { .. }
    ));
}

#[tokio::test]
async fn revoked_serial_is_refused_on_the_next_handshake() {
    let c = cluster();
    let n1 = fresh("n1", &c);
    let n2 = fresh("n2", &c);
    let server = server_config(&n1, &c.trust, NODE_ONLY).unwrap();
    let client = client_config(&n2, &c.trust).unwrap();

    let out = handshake(server.clone(), client.clone()).await;
    out.server.expect("accepted before revocation");

    // The replicated list changes; the configs are not rebuilt (and the
    // same client config is reused: no session resumption may skip the check).
    let info = n2.info().clone();
    let mut list = c.revocations.snapshot();
    assert_eq!(
        list.revoke_serial(
            info.serial.clone(),
            now_unix_ms(),
            "node removed",
            Some(info.not_after_unix_ms)
        ),
        Ok(true)
    );
    c.revocations.replace(list);

    let out = handshake(server.clone(), client.clone()).await;
    let r = rejection(&out.server);
    assert!(
        matches!(&r, Rejection::Revoked { serial, .. } if *serial == info.serial),
        "{r:?}"
    );
    assert!(r.to_string().contains("revoked"), "{r}");

    // A revoked *server* is refused by clients too.
    let out = handshake(
        server_config(&n2, &c.trust, NODE_ONLY).unwrap(),
        client_config(&n1, &c.trust).unwrap(),
    )
    .await;
    assert!(matches!(rejection(&out.client), Rejection::Revoked { .. }));
}

#[tokio::test]
async fn removed_node_identity_is_refused_but_a_later_rejoin_is_not() {
    let c = cluster();
    let n1 = fresh("n1", &c);
    let now = now_unix_ms();
    let n2 = node_identity(&c, "n2", Validity::between(now - HOUR_MS, now + HOUR_MS));
    let generation = c
        .revocations
        .update(|l| l.revoke_identity(Role::Node, "n2", now, "shoal node remove"))
        .unwrap();
    assert_eq!(generation, 1);
    let out = handshake(
        server_config(&n1, &c.trust, NODE_ONLY).unwrap(),
        client_config(&n2, &c.trust).unwrap(),
    )
    .await;
    assert!(matches!(rejection(&out.server), Rejection::Revoked { .. }));

    // Re-joined later: issued at the identity's new generation.
    let (key_pem, csr_pem) = generate_key_and_csr("n2").unwrap();
    let g = c.revocations.snapshot().generation(Role::Node, "n2");
    let cert =
        c.ca.sign_csr_for(&csr_pem, Role::Node, "n2", g, Validity::for_ttl(now, TTL))
            .unwrap();
    let later = Identity::from_pem(&cert.cert_pem, &key_pem, c.ca.ca_cert_pem()).unwrap();
    assert_eq!(later.info().generation, 1);
    assert!(c.revocations.check(later.info()).is_none());
    let out = handshake(
        server_config(&n1, &c.trust, NODE_ONLY).unwrap(),
        client_config(&later, &c.trust).unwrap(),
    )
    .await;
    assert!(out.server.is_ok(), "{:?}", out.server);
}

/// Issue #11 item 3: revocation compared `not_before`, so a certificate
/// signed before the revocation but valid from later passed, and so did a
/// renewal made over a connection still open more than the 60 s skew
/// allowance after it. By generation, neither does.
#[test]
fn a_certificate_from_before_a_revocation_never_passes_whatever_its_dates() {
    let c = cluster();
    let now = now_unix_ms();
    // Signed now, valid from an hour later.
    let early = node_identity(
        &c,
        "n2",
        Validity::between(now + HOUR_MS, now + 2 * HOUR_MS),
    );
    let (current, key_pem) = node_identity_and_key(&c, "n2", Validity::for_ttl(now, TTL));
    c.revocations
        .update(|l| l.revoke_identity(Role::Node, "n2", now, "removed"))
        .unwrap();
    assert!(c.revocations.check(early.info()).is_some());
    assert!(c.revocations.check(current.info()).is_some());
    // A renewal of the revoked certificate, 61 s later: refused, and were
    // it signed anyway (it raced the revocation) it carries the old
    // generation, so it is revoked too.
    let csr = csr_for_key_pem(&key_pem, "n2").unwrap();
    let later = now + 61_000;
    let renewed = renew(&c.ca, &c.trust, current.cert_der(), &csr, later, TTL);
    assert!(
        matches!(renewed, Err(JoinError::Rejected(Rejection::Revoked { .. }))),
        "{renewed:?}"
    );
    let raced =
        c.ca.sign_csr_for(
            &csr,
            Role::Node,
            "n2",
            current.info().generation,
            Validity::for_ttl(later, TTL),
        )
        .unwrap();
    let raced = inspect(raced.cert_der().unwrap().as_ref()).unwrap();
    assert!(raced.not_before_unix_ms > now);
    assert!(c.revocations.check(&raced).is_some());
}

#[test]
fn renewal_keeps_role_id_and_generation_and_needs_the_same_key() {
    let c = cluster();
    let now = now_unix_ms();
    c.revocations
        .update(|l| l.revoke_identity(Role::Client, "alice", now, "lost laptop"))
        .unwrap();
    let creds =
        c.ca.issue_with_new_key_for(Role::Client, "alice", 1, Validity::for_ttl(now, TTL))
            .unwrap();
    let alice =
        Identity::from_pem(&creds.cert.cert_pem, &creds.key_pem, c.ca.ca_cert_pem()).unwrap();
    let csr = csr_for_key_pem(&creds.key_pem, "alice").unwrap();
    let renewed = renew(&c.ca, &c.trust, alice.cert_der(), &csr, now + 1000, TTL).unwrap();
    assert_eq!(
        (renewed.role, renewed.id.as_str(), renewed.generation),
        (Role::Client, "alice", 1)
    );
    // A CSR for another key (someone holding only the public certificate).
    let (_, other_csr) = generate_key_and_csr("alice").unwrap();
    let stolen = renew(
        &c.ca,
        &c.trust,
        alice.cert_der(),
        &other_csr,
        now + 1000,
        TTL,
    );
    assert!(
        matches!(stolen, Err(JoinError::KeyMismatch { .. })),
        "{stolen:?}"
    );
    // The generation travels in the role SAN.
    let info = inspect(renewed.cert_der().unwrap().as_ref()).unwrap();
    assert_eq!(info.generation, 1);
    // Revoked again: the renewal goes with it.
    c.revocations
        .update(|l| l.revoke_identity(Role::Client, "alice", now + 2000, "again"))
        .unwrap();
    assert!(c.revocations.check(&info).is_some());
}

#[tokio::test]
async fn client_certificate_on_node_endpoint_is_refused() {
    let c = cluster();
    let n1 = fresh("n1", &c);
    let cli = cli_identity(&c, Role::Client, "alice");
    let out = handshake(
        server_config(&n1, &c.trust, NODE_ONLY).unwrap(),
        client_config(&cli, &c.trust).unwrap(),
    )
    .await;
    let r = rejection(&out.server);
    assert!(
        matches!(
            &r,
            Rejection::WrongRole {
                role: Role::Client,
                ..
            }
        ),
        "{r:?}"
    );
    assert!(r.to_string().contains("accepts only node"), "{r}");

    // An admin certificate is no node either.
    let admin = cli_identity(&c, Role::Admin, "root");
    let out = handshake(
        server_config(&n1, &c.trust, NODE_ONLY).unwrap(),
        client_config(&admin, &c.trust).unwrap(),
    )
    .await;
    assert!(matches!(
        rejection(&out.server),
        Rejection::WrongRole {
            role: Role::Admin,
            ..
        }
    ));
}

#[tokio::test]
async fn client_certificate_posing_as_a_server_is_refused() {
    let c = cluster();
    let n1 = fresh("n1", &c);
    let cli = cli_identity(&c, Role::Client, "mallory");
    let out = handshake(
        server_config(&cli, &c.trust, CONTROL_API).unwrap(),
        client_config(&n1, &c.trust).unwrap(),
    )
    .await;
    let r = rejection(&out.client);
    assert!(
        matches!(
            &r,
            Rejection::WrongRole {
                role: Role::Client,
                ..
            }
        ),
        "{r:?}"
    );
}

#[test]
fn tokens_give_distinct_errors() {
    let mut book = TokenBook::new();
    let now = 1_000_000;
    let (token, record) = book
        .create(Duration::from_secs(60), Role::Node, now)
        .unwrap();
    let text = token.to_string();

    // Form: [a-z0-9]{6}.[a-z0-9]{16}
    let (id, secret) = text.split_once('.').unwrap();
    assert_eq!((id.len(), secret.len()), (6, 16));
    assert!(text
        .bytes()
        .all(|b| b == b'.' || b.is_ascii_lowercase() || b.is_ascii_digit()));
    // The book keeps only the hash of the secret.
    assert_eq!(record.id, id);
    let json = serde_json::to_string(&book).unwrap();
    assert!(
        !json.contains(secret),
        "secret leaked into the replicated state: {json}"
    );
    assert!(!format!("{token:?}").contains(secret));

    for bad in [
        "",
        "abcdef",
        "abcdef.0123456789abcde",
        "ABCDEF.0123456789abcdef",
        "abc-ef.0123456789abcdef",
        "abcdef.0123456789abcdef0",
    ] {
        assert_eq!(book.redeem(bad, now), Err(TokenError::Malformed), "{bad:?}");
    }
    // Wrong secret, and an id that does not exist: both Unknown.
    let wrong_secret = format!(
        "{id}.{}",
        if secret == "aaaaaaaaaaaaaaaa" {
            "bbbbbbbbbbbbbbbb"
        } else {
            "aaaaaaaaaaaaaaaa"
        }
    );
    assert_eq!(book.redeem(&wrong_secret, now), Err(TokenError::Unknown));
    let other_id = if id == "zzzzzz" { "yyyyyy" } else { "zzzzzz" };
    assert_eq!(
        book.redeem(&format!("{other_id}.{secret}"), now),
        Err(TokenError::Unknown)
    );

    // Expired (a copy of the book, so the original token stays fresh).
    let mut later = book.clone();
    assert!(matches!(
        later.redeem(&text, now + 60_000),
        Err(TokenError::Expired { .. })
    ));

    // First use succeeds, second is a replay.
    assert_eq!(book.redeem(&text, now + 1), Ok(Role::Node));
    assert!(matches!(
        book.redeem(&text, now + 2),
        Err(TokenError::AlreadyUsed { .. })
    ));

    // Replicated state round-trips and prunes.
    let back: TokenBook = serde_json::from_str(&serde_json::to_string(&book).unwrap()).unwrap();
    assert_eq!(back, book);
    assert_eq!(book.prune_expired(now + 60_000), 1);
    assert_eq!(
        JoinToken::generate()
            .unwrap()
            .to_string()
            .parse::<JoinToken>()
            .map(|t| t.id().len()),
        Ok(6)
    );
}

#[tokio::test]
async fn join_over_pinned_tls_then_mtls_with_the_new_certificate() {
    let c = cluster();
    let seed = fresh("n1", &c);
    let mut book = TokenBook::new();
    let now = now_unix_ms();
    let (token, _) = book
        .create(Duration::from_secs(600), Role::Node, now)
        .unwrap();
    let cmd = JoinCommand {
        addr: "127.0.0.1:7400".into(),
        token: token.clone(),
        ca_pin: c.ca.ca_pin(),
    };
    assert!(cmd
        .to_string()
        .contains(&format!("--ca-pin {}", c.ca.ca_pin())));

    // Join endpoint: server reads one JSON line request, answers one line.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(join_server_config(&seed).unwrap());
    let ca_pem = c.ca.ca_cert_pem().to_string();
    let dir = c.dir.path().to_path_buf();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while tls.read_exact(&mut byte).await.is_ok() && byte[0] != b'\n' {
            buf.push(byte[0]);
        }
        let req: JoinRequest = serde_json::from_slice(&buf).unwrap();
        let ca = ClusterCa::load(&dir).unwrap();
        let resp = handle_join(&mut book, &ca, &req, now_unix_ms(), TTL).unwrap();
        let mut line = serde_json::to_vec(&resp).unwrap();
        line.push(b'\n');
        tls.write_all(&line).await.unwrap();
        tls.shutdown().await.unwrap();
        // The token is spent.
        assert!(matches!(
            book.check(&req.token, now_unix_ms()),
            Err(TokenError::AlreadyUsed { .. })
        ));
        ca_pem
    });

    let (config, pinned) = pinned_client_config(cmd.ca_pin).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = TlsConnector::from(config)
        .connect(placeholder_server_name(), tcp)
        .await
        .unwrap();
    assert_eq!(pinned.ca_cert_der().as_ref(), Some(c.ca.ca_cert_der()));
    let (req, key_pem) = prepare_join(&cmd.token.to_string(), "n7").unwrap();
    let mut line = serde_json::to_vec(&req).unwrap();
    line.push(b'\n');
    tls.write_all(&line).await.unwrap();
    let mut buf = Vec::new();
    tls.read_to_end(&mut buf).await.unwrap();
    let resp: JoinResponse = serde_json::from_slice(buf.trim_ascii_end()).unwrap();
    assert_eq!(server.await.unwrap(), c.ca.ca_cert_pem());

    let joined = finish_join(&resp, &key_pem, &cmd.ca_pin, "n7", now_unix_ms()).unwrap();
    assert_eq!(
        (joined.info().role, joined.info().id.as_str()),
        (Role::Node, "n7")
    );

    // Saved with the right modes and usable for mTLS with the seed node.
    let data = tempfile::tempdir().unwrap();
    Identity::save_pem(data.path(), &resp.cert.cert_pem, &key_pem, &resp.ca_pem).unwrap();
    assert_eq!(
        files::file_mode(&PkiPaths::new(data.path()).node_key()).unwrap(),
        0o600
    );
    let loaded = Identity::load(data.path()).unwrap();
    let out = handshake(
        server_config(&seed, &c.trust, NODE_ONLY).unwrap(),
        client_config(&loaded, &c.trust).unwrap(),
    )
    .await;
    assert_eq!(out.server.unwrap().map(|i| i.id), Some("n7".to_string()));
}

#[tokio::test]
async fn wrong_ca_pin_is_refused() {
    let ours = cluster();
    let impostor = cluster();
    let pin = ours.ca.ca_pin();

    // Pure check on a fetched CA certificate.
    let err = check_ca_pin(impostor.ca.ca_cert_pem(), &pin).unwrap_err();
    assert!(matches!(err, JoinError::WrongCaPin { .. }), "{err}");
    check_ca_pin(ours.ca.ca_cert_pem(), &pin).unwrap();

    // In the bootstrap handshake: an impostor's join endpoint is refused.
    let fake = fresh("n1", &impostor);
    let (config, pinned) = pinned_client_config(pin).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(join_server_config(&fake).unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        acceptor.accept(tcp).await.map(|_| ())
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let err = TlsConnector::from(config)
        .connect(placeholder_server_name(), tcp)
        .await
        .expect_err("handshake must fail");
    let r = rejection_of(&err).cloned().expect("a Rejection");
    assert!(
        matches!(&r, Rejection::WrongCaPin { expected, .. } if *expected == pin),
        "{r:?}"
    );
    assert!(r.to_string().contains("CA pin mismatch"), "{r}");
    assert!(pinned.ca_cert_der().is_none());
    assert!(server.await.unwrap().is_err());

    // A response whose CA does not match the pin is refused by finish_join.
    let mut book = TokenBook::new();
    let (token, _) = book.create(TTL, Role::Node, now_unix_ms()).unwrap();
    let (req, key_pem) = prepare_join(&token.to_string(), "n2").unwrap();
    let resp = handle_join(&mut book, &impostor.ca, &req, now_unix_ms(), TTL).unwrap();
    let err = finish_join(&resp, &key_pem, &pin, "n2", now_unix_ms()).unwrap_err();
    assert!(matches!(err, JoinError::WrongCaPin { .. }), "{err}");
}

#[test]
fn handle_join_refuses_bad_tokens_without_issuing() {
    let c = cluster();
    let mut book = TokenBook::new();
    let now = now_unix_ms();
    let (token, _) = book
        .create(Duration::from_secs(60), Role::Node, now)
        .unwrap();
    let (mut req, _) = prepare_join(&token.to_string(), "n2").unwrap();

    // A broken CSR does not spend the token.
    let good_csr = std::mem::replace(&mut req.csr_pem, "garbage".into());
    assert!(matches!(
        handle_join(&mut book, &c.ca, &req, now, TTL),
        Err(JoinError::Pki(PkiError::BadCsr(_)))
    ));
    req.csr_pem = good_csr;
    // A bad node name neither.
    let name = std::mem::replace(&mut req.node_name, "../etc".into());
    assert!(matches!(
        handle_join(&mut book, &c.ca, &req, now, TTL),
        Err(JoinError::Pki(PkiError::InvalidId(_)))
    ));
    req.node_name = name;

    let expired = handle_join(&mut book.clone(), &c.ca, &req, now + 61_000, TTL);
    assert!(matches!(
        expired,
        Err(JoinError::Token(TokenError::Expired { .. }))
    ));
    handle_join(&mut book, &c.ca, &req, now, TTL).unwrap();
    let reused = handle_join(&mut book, &c.ca, &req, now, TTL);
    assert!(matches!(
        reused,
        Err(JoinError::Token(TokenError::AlreadyUsed { .. }))
    ));
    req.token = "nope".into();
    assert!(matches!(
        handle_join(&mut book, &c.ca, &req, now, TTL),
        Err(JoinError::Token(TokenError::Malformed))
    ));
}

#[test]
fn ca_key_is_0600_and_init_never_overwrites() {
    let c = cluster();
    let paths = PkiPaths::new(c.dir.path());
    assert_eq!(files::file_mode(&paths.ca_key()).unwrap(), 0o600);
    assert_eq!(files::file_mode(&paths.ca_cert()).unwrap() & 0o600, 0o600);
    assert_eq!(files::file_mode(paths.dir()).unwrap() & 0o077, 0);
    let key_before = std::fs::read(paths.ca_key()).unwrap();

    assert!(matches!(
        ClusterCa::init(c.dir.path()),
        Err(PkiError::CaExists(_))
    ));
    assert_eq!(std::fs::read(paths.ca_key()).unwrap(), key_before);
    // No temp files left behind.
    let names: Vec<_> = std::fs::read_dir(paths.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    let loaded = ClusterCa::load(c.dir.path()).unwrap();
    assert_eq!(loaded.ca_pin(), c.ca.ca_pin());

    // A key file others can read is refused.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(paths.ca_key(), std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        ClusterCa::load(c.dir.path()),
        Err(PkiError::InsecureKeyFile { .. })
    ));

    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        ClusterCa::load(empty.path()),
        Err(PkiError::CaMissing(_))
    ));
}

#[test]
fn sign_csr_ignores_names_asked_for_in_the_csr() {
    let c = cluster();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "admin");
    params.distinguished_name = dn;
    params.subject_alt_names = vec![
        SanType::URI(Ia5String::try_from("shoal://admin/root").unwrap()),
        SanType::DnsName(Ia5String::try_from("evil.example").unwrap()),
    ];
    let csr_pem = params.serialize_request(&key).unwrap().pem().unwrap();

    let issued = c.ca.sign_csr(&csr_pem, Role::Node, "n5", TTL).unwrap();
    let der = issued.cert_der().unwrap();
    assert_eq!(role_of(&der).unwrap(), (Role::Node, "n5".to_string()));
    assert_eq!((issued.role, issued.id.as_str()), (Role::Node, "n5"));
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
    let sans = format!(
        "{:?}",
        parsed.subject_alternative_name().unwrap().unwrap().value
    );
    assert!(!sans.contains("admin") && !sans.contains("evil"), "{sans}");
    assert!(!format!("{}", parsed.subject()).contains("admin"));
    // The certificate does carry the CSR's key.
    assert_eq!(
        parsed.public_key().raw,
        key.subject_public_key_info().as_slice()
    );

    // A CSR whose signature does not verify is refused.
    let mut tampered = csr_pem.clone();
    let pos = tampered.len() / 2;
    let ch = if &tampered[pos..pos + 1] == "A" {
        "B"
    } else {
        "A"
    };
    tampered.replace_range(pos..pos + 1, ch);
    assert!(matches!(
        c.ca.sign_csr(&tampered, Role::Node, "n5", TTL),
        Err(PkiError::BadCsr(_))
    ));
    // Ids are validated.
    assert!(matches!(
        c.ca.sign_csr(&csr_pem, Role::Node, "a/b", TTL),
        Err(PkiError::InvalidId(_))
    ));
}

#[test]
fn serials_are_random_128_bit_and_recorded() {
    let c = cluster();
    let a = c.ca.issue_with_new_key(Role::Client, "a", TTL).unwrap();
    let b = c.ca.issue_with_new_key(Role::Client, "a", TTL).unwrap();
    assert_ne!(a.cert.serial, b.cert.serial);
    assert_eq!(a.cert.serial.to_bytes().len(), 16);
    assert_eq!(
        inspect(&a.cert.cert_der().unwrap()).unwrap().serial,
        a.cert.serial
    );
    assert!(!format!("{a:?}").contains("PRIVATE KEY"));
}

#[test]
fn renewal_at_two_thirds_keeps_role_and_id() {
    let c = cluster();
    let start = now_unix_ms() / 1000 * 1000 - 1000 * 1000;
    let (id, key_pem) =
        node_identity_and_key(&c, "n4", Validity::between(start, start + 3000 * 1000));
    let der = id.cert_der();
    assert!(!needs_renewal(der, start + 1999 * 1000).unwrap());
    assert!(needs_renewal(der, start + 2000 * 1000).unwrap());

    // Renewal keeps the key: the CSR is for the certificate's own key.
    let csr = csr_for_key_pem(&key_pem, "whatever").unwrap();
    let renewed = renew(&c.ca, &c.trust, der, &csr, now_unix_ms(), TTL).unwrap();
    assert_eq!((renewed.role, renewed.id.as_str()), (Role::Node, "n4"));
    assert_ne!(renewed.serial, id.info().serial);

    let creds = c.ca.issue_with_new_key(Role::Client, "alice", TTL).unwrap();
    let client =
        Identity::from_pem(&creds.cert.cert_pem, &creds.key_pem, c.ca.ca_cert_pem()).unwrap();
    let client_csr = csr_for_key_pem(&creds.key_pem, "alice").unwrap();
    let r = renew(
        &c.ca,
        &c.trust,
        client.cert_der(),
        &client_csr,
        now_unix_ms(),
        TTL,
    )
    .unwrap();
    assert_eq!(r.role, Role::Client);

    // A revoked certificate cannot renew itself.
    c.revocations
        .update(|l| l.revoke_serial(id.info().serial.clone(), now_unix_ms(), "removed", None))
        .expect("room in the list");
    let err = renew(&c.ca, &c.trust, der, &csr, now_unix_ms(), TTL).unwrap_err();
    assert!(
        matches!(err, JoinError::Rejected(Rejection::Revoked { .. })),
        "{err}"
    );
    // Nor one from another CA.
    let other = cluster();
    let foreign = fresh("n9", &other);
    let err = renew(
        &c.ca,
        &c.trust,
        foreign.cert_der(),
        &csr,
        now_unix_ms(),
        TTL,
    )
    .unwrap_err();
    assert!(
        matches!(err, JoinError::Rejected(Rejection::OtherCa(_))),
        "{err}"
    );
}

#[test]
fn ca_pin_format_round_trips() {
    let c = cluster();
    let pin = c.ca.ca_pin();
    let text = pin.to_string();
    assert!(
        text.starts_with("sha256:") && text.len() == 7 + 64,
        "{text}"
    );
    assert_eq!(text.parse::<CaPin>().unwrap(), pin);
    assert_eq!(
        text.to_uppercase()
            .replace("SHA256:", "sha256:")
            .parse::<CaPin>()
            .unwrap(),
        pin
    );
    assert_eq!(CaPin::of_cert_pem(c.ca.ca_cert_pem()).unwrap(), pin);
    for bad in [
        "",
        "sha256:",
        "sha1:00",
        &text[..text.len() - 1],
        &text.replace("sha256:", ""),
    ] {
        assert!(
            matches!(bad.parse::<CaPin>(), Err(PkiError::BadPin(_))),
            "{bad:?}"
        );
    }
    let json = serde_json::to_string(&pin).unwrap();
    assert_eq!(json, format!("\"{text}\""));
    assert_eq!(serde_json::from_str::<CaPin>(&json).unwrap(), pin);
}

#[test]
fn revocation_list_is_plain_replicated_data() {
    let mut list = RevocationList::new();
    let s: Serial = "4A:bc:01".parse().unwrap();
    assert_eq!(s.as_hex(), "4abc01");
    assert_eq!(
        list.revoke_serial(s.clone(), 10, "compromised", Some(100)),
        Ok(true)
    );
    assert_eq!(list.revoke_serial(s.clone(), 20, "again", None), Ok(false));
    assert_eq!(list.revoke_identity(Role::Node, "n3", 50, "removed"), Ok(1));
    assert_eq!(list.generation(Role::Node, "n3"), 1);
    assert_eq!(list.generation(Role::Node, "n4"), 0);
    let json = serde_json::to_string(&list).unwrap();
    let back: RevocationList = serde_json::from_str(&json).unwrap();
    assert_eq!(back, list);
    assert_eq!(
        list.get_serial(&s).map(|r| r.reason.as_str()),
        Some("compromised")
    );
    assert_eq!(list.prune_expired(100), 1);
    assert_eq!(list.len(), 1);
    // Each revocation is a new generation; entries are never dropped.
    assert_eq!(list.revoke_identity(Role::Node, "n3", 60, "again"), Ok(2));
    assert_eq!(list.prune_expired(u64::MAX), 0);
    assert_eq!(list.len(), 1);
}

#[test]
fn the_revocation_list_is_bounded() {
    let mut list = RevocationList::new();
    for i in 0..REVOCATIONS_MAX {
        list.revoke_identity(Role::Client, &format!("c{i}"), 1, "x")
            .unwrap();
    }
    assert_eq!(
        list.revoke_identity(Role::Client, "one-more", 1, "x"),
        Err(RevocationsFull {
            max: REVOCATIONS_MAX
        })
    );
    // An identity already listed can still be revoked again.
    assert_eq!(list.revoke_identity(Role::Client, "c0", 2, "x"), Ok(2));
    // A new serial is refused, not silently dropped.
    assert_eq!(
        list.revoke_serial(Serial::from_bytes(&[1]), 1, "x", None),
        Err(RevocationsFull {
            max: REVOCATIONS_MAX
        })
    );
}

#[test]
fn role_uri_and_ids() {
    assert_eq!(Role::Node.uri("n1"), "shoal://node/n1");
    assert_eq!(
        Role::parse_uri("shoal://admin/root"),
        Some((Role::Admin, "root".into()))
    );
    assert_eq!(Role::parse_uri("shoal://root/x"), None);
    assert_eq!(Role::parse_uri("shoal://node/a/b"), None);
    assert_eq!(Role::parse_uri("https://node/x"), None);
}

#[test]
fn an_identity_revoked_before_generations_stays_revoked() {
    // A list as stored before generations: the entry has no `generation`.
    let old = r#"{"serials":{},"identities":{"node/n3":{"revoked_unix_ms":50,"reason":"node 3 removed"}}}"#;
    let list: RevocationList = serde_json::from_str(old).unwrap();
    assert_eq!(list.generation(Role::Node, "n3"), 1);
    let cert = CertInfo {
        role: Role::Node,
        id: "n3".into(),
        serial: Serial::from_bytes(&[7]),
        not_before_unix_ms: 1_000_000,
        not_after_unix_ms: u64::MAX,
        generation: 0,
    };
    assert!(list.check(&cert).is_some());
}

/// A CA backup restores only onto a node of the same cluster, writes the
/// key 0600 beside the node's CA certificate, and is never used to replace
/// a trust root or to bring in a foreign one.
#[test]
fn a_ca_backup_restores_only_into_its_own_cluster() {
    use super::backup::{backup_ca, restore_ca};
    let ca_dir = tempfile::tempdir().expect("tempdir");
    let ca = ClusterCa::init(ca_dir.path()).expect("init");
    let out = ca_dir.path().join("backup.pem");
    assert_eq!(backup_ca(ca_dir.path(), &out).expect("backup"), ca.ca_pin());
    assert_eq!(files::file_mode(&out).expect("mode"), 0o600);
    assert!(backup_ca(ca_dir.path(), &out).is_err(), "never overwritten");

    // A member of the same cluster: it has the CA certificate, no key.
    let member = tempfile::tempdir().expect("tempdir");
    let paths = PkiPaths::new(member.path());
    paths.ensure_dir().expect("pki dir");
    files::write_certificate(&paths.ca_cert(), ca.ca_cert_pem(), files::Overwrite::Refuse)
        .expect("ca.crt");
    assert!(ClusterCa::load(member.path()).is_err(), "no CA before");
    assert_eq!(
        restore_ca(member.path(), &out).expect("restore"),
        ca.ca_pin()
    );
    assert_eq!(files::file_mode(&paths.ca_key()).expect("mode"), 0o600);
    let restored = ClusterCa::load(member.path()).expect("the CA loads after");
    assert_eq!(restored.ca_pin(), ca.ca_pin());
    // Again: nothing changes.
    restore_ca(member.path(), &out).expect("restoring the same key again");

    // Another cluster's node refuses it, naming both CAs.
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other = ClusterCa::init(other_dir.path()).expect("init");
    let stranger = tempfile::tempdir().expect("tempdir");
    let sp = PkiPaths::new(stranger.path());
    sp.ensure_dir().expect("pki dir");
    files::write_certificate(&sp.ca_cert(), other.ca_cert_pem(), files::Overwrite::Refuse)
        .expect("ca.crt");
    match restore_ca(stranger.path(), &out) {
        Err(PkiError::OtherCluster { ours, backup }) => {
            assert_eq!((ours, backup), (other.ca_pin(), ca.ca_pin()));
        }
        other => panic!("expected OtherCluster, got {other:?}"),
    }
    assert!(!sp.ca_key().exists());

    // A backup whose key is not the certificate's is refused: this
    // cluster's certificate with another CA's key.
    let other_key =
        files::read_private_key(&PkiPaths::new(other_dir.path()).ca_key()).expect("other key");
    let forged = member.path().join("forged.pem");
    std::fs::write(&forged, format!("{}{}", ca.ca_cert_pem(), other_key)).expect("write");
    let fresh = tempfile::tempdir().expect("tempdir");
    let fp = PkiPaths::new(fresh.path());
    fp.ensure_dir().expect("pki dir");
    files::write_certificate(&fp.ca_cert(), ca.ca_cert_pem(), files::Overwrite::Refuse)
        .expect("ca.crt");
    assert!(matches!(
        restore_ca(fresh.path(), &forged),
        Err(PkiError::BadKey(_))
    ));
    assert!(!fp.ca_key().exists());
    // Not a backup at all.
    let junk = member.path().join("junk.pem");
    std::fs::write(&junk, ca.ca_cert_pem()).expect("write");
    assert!(matches!(
        restore_ca(fresh.path(), &junk),
        Err(PkiError::BadBackup(_))
    ));
}

// ---- signed requests (proof.rs) ----

fn admin_signer(c: &Cluster, id: &str) -> crate::Signer {
    let creds =
        c.ca.issue_with_new_key(Role::Admin, id, TTL)
            .expect("admin credentials");
    crate::Signer::from_pem(&creds.cert.cert_pem, &creds.key_pem, c.ca.ca_cert_pem())
        .expect("signer")
}

fn remove_n3() -> crate::Intent {
    crate::Intent::RemoveNode {
        node: "n3".to_string(),
    }
}

#[test]
fn a_signed_intent_verifies_with_its_signer() {
    let c = cluster();
    let proof = admin_signer(&c, "root").sign(remove_n3()).unwrap();
    let info = crate::proof::verify(c.ca.ca_cert_der().as_ref(), &proof).unwrap();
    assert_eq!((info.role, info.id.as_str()), (Role::Admin, "root"));
    // Through a header and back.
    let back = crate::proof::from_header(crate::proof::to_header(&proof).as_bytes()).unwrap();
    assert_eq!(back, proof);
}

#[test]
fn a_proof_with_a_changed_intent_time_or_nonce_is_refused() {
    let c = cluster();
    let proof = admin_signer(&c, "root").sign(remove_n3()).unwrap();
    let ca = c.ca.ca_cert_der().as_ref().to_vec();
    let mut other = proof.clone();
    other.intent = crate::Intent::RemoveNode {
        node: "n1".to_string(),
    };
    assert_eq!(
        crate::proof::verify(&ca, &other),
        Err(crate::ProofError::Signature)
    );
    let mut other = proof.clone();
    other.issued_unix_ms += 1;
    assert_eq!(
        crate::proof::verify(&ca, &other),
        Err(crate::ProofError::Signature)
    );
    let mut other = proof.clone();
    other.nonce = "0".repeat(32);
    assert_eq!(
        crate::proof::verify(&ca, &other),
        Err(crate::ProofError::Signature)
    );
    // Another admin's certificate with this signature.
    let mut other = proof;
    let mallory = admin_signer(&c, "mallory").sign(remove_n3()).unwrap();
    other.cert_der_hex = mallory.cert_der_hex;
    assert_eq!(
        crate::proof::verify(&ca, &other),
        Err(crate::ProofError::Signature)
    );
}

#[test]
fn a_proof_from_another_clusters_ca_is_refused() {
    let ours = cluster();
    let theirs = cluster();
    let proof = admin_signer(&theirs, "root").sign(remove_n3()).unwrap();
    match crate::proof::verify(ours.ca.ca_cert_der().as_ref(), &proof) {
        Err(crate::ProofError::Certificate { .. }) => {}
        other => panic!("another CA's admin was accepted: {other:?}"),
    }
}

#[test]
fn a_proof_made_outside_its_certificates_validity_is_refused() {
    let c = cluster();
    let signer = admin_signer(&c, "root");
    let later = signer.info().not_after_unix_ms + 1000;
    let proof = signer.sign_at(remove_n3(), later).unwrap();
    match crate::proof::verify(c.ca.ca_cert_der().as_ref(), &proof) {
        Err(crate::ProofError::Certificate { .. }) => {}
        other => panic!("a proof after expiry was accepted: {other:?}"),
    }
}

#[test]
fn malformed_proofs_are_refused_before_decoding() {
    let c = cluster();
    let ca = c.ca.ca_cert_der().as_ref().to_vec();
    let good = admin_signer(&c, "root").sign(remove_n3()).unwrap();
    for bad in [
        crate::Proof {
            cert_der_hex: "ab".repeat(crate::proof::PROOF_CERT_BYTES_MAX + 1),
            ..good.clone()
        },
        crate::Proof {
            signature_hex: "ab".repeat(crate::proof::PROOF_SIGNATURE_BYTES_MAX + 1),
            ..good.clone()
        },
        crate::Proof {
            nonce: "xyz".into(),
            ..good.clone()
        },
        crate::Proof {
            cert_der_hex: "zz".into(),
            ..good.clone()
        },
    ] {
        match crate::proof::verify(&ca, &bad) {
            Err(crate::ProofError::Malformed { .. }) => {}
            other => panic!("accepted or misjudged: {other:?}"),
        }
    }
    assert!(
        crate::proof::from_header(&vec![b'a'; 3 * crate::proof::PROOF_TEXT_BYTES_MAX]).is_err()
    );
    assert!(
        crate::proof::check_fresh(&good, good.issued_unix_ms + crate::proof::PROOF_WINDOW_MS)
            .is_ok()
    );
    assert!(crate::proof::check_fresh(
        &good,
        good.issued_unix_ms + crate::proof::PROOF_WINDOW_MS + 1
    )
    .is_err());
}

#[test]
fn a_signer_refuses_a_key_that_is_not_its_certificates() {
    let c = cluster();
    let a = c.ca.issue_with_new_key(Role::Admin, "a", TTL).unwrap();
    let b = c.ca.issue_with_new_key(Role::Admin, "b", TTL).unwrap();
    assert!(crate::Signer::from_pem(&a.cert.cert_pem, &b.key_pem, c.ca.ca_cert_pem()).is_err());
}

/// The list counts its changes, so "did it change?" is O(1) for the state
/// machine and the daemon: every change bumps the version, a repeat or a
/// prune that drops nothing does not, and equal versions of one history
/// are equal lists.
#[test]
fn the_revocation_list_counts_its_changes() {
    let mut l = RevocationList::new();
    assert_eq!(l.version(), 0);
    let serial = Serial::from_bytes(&[1, 2, 3]);
    assert_eq!(
        l.revoke_serial(serial.clone(), 10, "leak", Some(100)),
        Ok(true)
    );
    assert_eq!(l.version(), 1);
    let before = l.clone();
    assert_eq!(l.revoke_serial(serial, 11, "again", Some(100)), Ok(false));
    assert_eq!(l.version(), 1);
    assert_eq!(l, before, "a repeat changes nothing");
    assert_eq!(l.revoke_identity(Role::Client, "alice", 12, "left"), Ok(1));
    assert_eq!(l.version(), 2);
    assert_eq!(l.prune_expired(50), 0);
    assert_eq!(l.version(), 2);
    assert_eq!(l.prune_expired(100), 1);
    assert_eq!(l.version(), 3);
    assert!(l.get_identity(Role::Client, "alice").is_some());
}
