//! Issue #11 item 3: removal and revocation stick.
//!
//! On real nodes over mTLS on loopback:
//! - removing a node, or revoking a client, closes the connections its
//!   certificate holds open at every node, at once (no timeout), and a
//!   request that races the close is refused;
//! - a removed node cannot renew over a connection it still holds, and a
//!   revoked client cannot renew either; renewals keep the generation, so
//!   one signed before the revocation is revoked with it;
//! - `POST /v1/certs/revoke` (`shoal cert revoke`) is admin only (a typed
//!   403 for a client), recorded in Raft, effective on every node; the
//!   identity gets a new generation, at which it can be admitted again;
//! - a client renews its certificate through any node (forwarded to the
//!   CA node), keeping role, id and generation.

use crate::common;

use common::certs::Issued;
use common::cluster::{wait_until, TestCluster};
use shoal_api::cluster::RevokeRequest;
use shoal_api::ClientError;
use shoal_cluster::NodeStatus;
use shoal_net::{NetError, Peers};
use shoal_pki::{Forbidden, IssuedCert, Role};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);
/// How soon after a revocation applies an open connection must be gone:
/// well under every timeout that could close it otherwise (HTTP/2
/// keepalive 10 s, anonymous connections 30 s).
const PROMPTLY: Duration = Duration::from_secs(3);

/// Renew `who`'s certificate over `peers` (which keeps its connection to
/// `addr` open) at `path`.
async fn renew_over(
    peers: &Peers,
    addr: &str,
    path: &str,
    who: &Issued,
) -> Result<IssuedCert, NetError> {
    let body = serde_json::to_vec(&who.renew_request()).unwrap();
    let answer = peers.call(addr, path, body.into()).await?;
    Ok(serde_json::from_slice(&answer).expect("an issued certificate"))
}

/// After a revocation: every request `call` makes over `peers` is refused,
/// and the open connection is closed promptly (a refusal at the TLS level
/// or a failed connect means the old connection is gone and a new one is
/// not admitted; a typed 403 means the request raced the close on the old
/// one). Returns how long until it was closed.
async fn refused_then_closed<F, Fut>(what: &str, mut call: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<IssuedCert, NetError>>,
{
    let start = Instant::now();
    loop {
        match call().await {
            Ok(c) => panic!(
                "{what}: served after the revocation (issued serial {})",
                c.serial
            ),
            Err(NetError::Remote {
                status: 403,
                detail,
                message,
            }) => {
                // Raced the close on the still-open connection: refused,
                // typed.
                let typed: Option<Forbidden> = detail.and_then(|d| serde_json::from_value(d).ok());
                assert!(
                    matches!(
                        typed,
                        Some(Forbidden::Revoked { .. } | Forbidden::NotMember { .. })
                    ),
                    "{what}: refused, but not as revoked: {message}"
                );
            }
            Err(NetError::Remote {
                status, message, ..
            }) => panic!("{what}: unexpected answer {status}: {message}"),
            // The old connection is gone and a new handshake is refused.
            Err(_) => return start.elapsed(),
        }
        assert!(
            start.elapsed() < PROMPTLY,
            "{what}: the connection was still open {PROMPTLY:?} after the revocation"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_node_loses_its_open_connections_and_cannot_renew_over_one() {
    let c = TestCluster::start(3).await;
    let admin = Issued::admin_of(&c);
    let n3 = Issued::node_of(&c, 2);
    let (a1, a2) = (c.addrs[0].to_string(), c.addrs[1].to_string());
    // n3's certificate, on connections it keeps open to the CA node (n1)
    // and to n2: renewal works before the removal.
    let peers = n3.peers();
    let before = renew_over(&peers, &a1, "/v1/peer/renew", &n3)
        .await
        .expect("n3 renews before its removal");
    assert_eq!(
        (before.role, before.id.as_str(), before.generation),
        (Role::Node, "n3", 0)
    );
    peers
        .call(&a2, "/v1/peer/processes", Default::default())
        .await
        .expect("n3 talks to n2 before its removal");
    assert_eq!(peers.stats().connects, 2);

    admin
        .client(&c, 0)
        .remove_node("n3", &admin.signer())
        .await
        .expect("the admin removes n3");
    let id3 = c.node(2).id();
    for i in 0..2 {
        let raft = c.node(i).raft().clone();
        wait_until("n3 removed", WAIT, || {
            raft.state().nodes[&id3].status == NodeStatus::Removed
                && raft.revocations().snapshot().generation(Role::Node, "n3") == 1
        })
        .await;
    }
    // The attack of the issue: renewing over the connection n3 still had.
    // Refused, and the connection closed, at the CA node...
    let took = refused_then_closed("n3 renewing at n1", || {
        renew_over(&peers, &a1, "/v1/peer/renew", &n3)
    })
    .await;
    eprintln!("n3's connection to n1 closed {took:?} after the removal applied");
    // ...and at n2, whatever route.
    let took = refused_then_closed("n3 talking to n2", || async {
        peers
            .call(&a2, "/v1/peer/processes", Default::default())
            .await
            .map(|_| panic!("n3 served by n2 after its removal"))
    })
    .await;
    eprintln!("n3's connection to n2 closed {took:?} after the removal applied");
    // The certificate renewed before the removal is revoked with it (same
    // generation), whatever its later dates.
    let renewed = n3.renewed(&before.cert_pem);
    assert!(renewed.identity.info().not_before_unix_ms >= n3.identity.info().not_before_unix_ms);
    let r = renewed
        .peers()
        .call(&a1, "/v1/peer/processes", Default::default())
        .await;
    assert!(
        r.is_err(),
        "a renewal from before the removal accepted: {r:?}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_renews_through_any_node_and_a_revoked_one_loses_everything() {
    let c = TestCluster::start(3).await;
    let admin = Issued::admin_of(&c);
    let alice = Issued::fresh(&c, Role::Client, "alice", 0);
    // Client renewal through n2 (not the CA node: it forwards), keeping
    // role, id and generation.
    let renewed = alice
        .client(&c, 1)
        .renew_certificate(&alice.renew_request())
        .await
        .expect("a client renews through any node");
    assert_eq!(
        (renewed.role, renewed.id.as_str(), renewed.generation),
        (Role::Client, "alice", 0)
    );
    assert_ne!(renewed.serial, alice.identity.info().serial);
    let alice2 = alice.renewed(&renewed.cert_pem);
    alice2
        .client(&c, 2)
        .nodes()
        .await
        .expect("the renewed certificate works");
    // Open connections from alice to every node.
    let peers = alice.peers();
    for a in &c.addrs {
        renew_over(&peers, &a.to_string(), "/v1/certs/renew", &alice)
            .await
            .expect("alice renews before the revocation");
    }
    assert_eq!(peers.stats().connects, 3);
    // A client may not revoke: typed 403.
    let bob = Issued::fresh(&c, Role::Client, "bob", 0);
    let req = RevokeRequest {
        role: Role::Client,
        id: "alice".into(),
        reason: Some("left the team".into()),
    };
    match bob
        .client(&c, 0)
        .revoke_certificate(&req, &bob.signer())
        .await
    {
        Err(ClientError::Forbidden(Forbidden::NeedsAdmin { .. })) => {}
        other => panic!("a client revoking: {other:?}"),
    }
    // The admin revokes alice through n3: recorded in Raft, new generation.
    let revoked = admin
        .client(&c, 2)
        .revoke_certificate(&req, &admin.signer())
        .await
        .expect("the admin revokes alice");
    assert_eq!(revoked.generation, 1);
    for i in 0..3 {
        let raft = c.node(i).raft().clone();
        wait_until("alice revoked", WAIT, || {
            raft.revocations()
                .snapshot()
                .generation(Role::Client, "alice")
                == 1
        })
        .await;
    }
    // Every node closes her connections at once and refuses her renewal.
    for (i, a) in c.addrs.iter().enumerate() {
        let addr = a.to_string();
        let took = refused_then_closed(&format!("alice at n{}", i + 1), || {
            renew_over(&peers, &addr, "/v1/certs/renew", &alice)
        })
        .await;
        eprintln!(
            "alice's connection to n{} closed {took:?} after the revocation applied",
            i + 1
        );
    }
    // Her renewed certificate (same generation) is revoked too, everywhere.
    for i in 0..3 {
        let r = alice2.client(&c, i).nodes().await;
        assert!(
            r.is_err(),
            "a revoked client's renewal served by n{}",
            i + 1
        );
    }
    // Admitted again: new credentials at the new generation work.
    let again = Issued::fresh(&c, Role::Client, "alice", 1);
    again
        .client(&c, 1)
        .nodes()
        .await
        .expect("alice's new credentials work");
    let r = again
        .client(&c, 0)
        .renew_certificate(&again.renew_request())
        .await
        .expect("and renew");
    assert_eq!(r.generation, 1);
    // Revoking a member node is refused: that is `node remove`.
    let r = admin
        .client(&c, 0)
        .revoke_certificate(
            &RevokeRequest {
                role: Role::Node,
                id: "n2".into(),
                reason: None,
            },
            &admin.signer(),
        )
        .await;
    assert!(
        matches!(r, Err(ClientError::Api { status: 409, .. })),
        "{r:?}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_node_rejoins_under_its_name_at_a_new_generation() {
    let mut c = TestCluster::start(2).await;
    let admin = Issued::admin_of(&c);
    admin
        .client(&c, 0)
        .remove_node("n2", &admin.signer())
        .await
        .expect("the admin removes n2");
    let raft = c.node(0).raft().clone();
    wait_until("n2 revoked", WAIT, || {
        raft.revocations().snapshot().generation(Role::Node, "n2") == 1
    })
    .await;
    c.stop(1).await;
    // A new node under the same name, with a new token: admitted at
    // generation 1, while the old n2 certificate stays revoked.
    let old = Issued::node_of(&c, 1);
    let i = c.add_node_named("n2").await;
    let info = c.node(i).inner().identity.info();
    assert_eq!((info.id.as_str(), info.generation), ("n2", 1));
    let r = old
        .peers()
        .call(
            &c.addrs[0].to_string(),
            "/v1/peer/processes",
            Default::default(),
        )
        .await;
    assert!(r.is_err(), "the removed n2's certificate accepted: {r:?}");
    c.shutdown().await;
}
