//! Ownership (issue #11, item 6): processes, module names and snapshots
//! belong to the identity that created them; a client acts only on its
//! own, an admin on all (`shoal_pki::may_act`). Real two-node cluster,
//! real certificates from the cluster CA, real guests.
//!
//! The table test runs every control-API route that touches someone's
//! resource, for each role (client, admin) on its own resource and on
//! another's, and checks the answer: allowed, or a typed 403
//! (`ClientError::Forbidden(Forbidden::NotOwner)`, decoded from the error's
//! `detail`, not from its text).

use crate::common;

use common::cluster::{wait_until, TestCluster};
use shoal_api::types::{RestoreRequest, SnapshotRequest, SpawnRequest};
use shoal_api::ClientError;
use shoal_pki::{ClusterCa, ClusterTrust, Forbidden, Identity, Owner, Role, SharedRevocations};
use shoal_runtime::Pid;
use std::fmt::Debug;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// A client of node `via` over mTLS with a fresh certificate of `role`
/// called `name`, signed by the cluster CA (on node 0).
fn client_as(c: &TestCluster, via: usize, role: Role, name: &str) -> shoal_api::Client {
    let dir1 = c.dirs[0].path();
    let ca_pem = std::fs::read_to_string(shoal_pki::PkiPaths::new(dir1).ca_cert()).unwrap();
    let ca = ClusterCa::load(dir1).unwrap();
    let creds = ca
        .issue_with_new_key(role, name, Duration::from_secs(600))
        .unwrap();
    let id = Identity::from_pem(&creds.cert.cert_pem, &creds.key_pem, &ca_pem).unwrap();
    let trust = ClusterTrust::new(&ca_pem, SharedRevocations::default()).unwrap();
    shoal_api::Client::tls(
        c.addrs[via].to_string(),
        shoal_pki::tls::client_config(&id, &trust).unwrap(),
    )
}

/// A signer of requests with a fresh certificate of `role` called `name`.
fn signer_as(c: &TestCluster, role: Role, name: &str) -> shoal_pki::Signer {
    let dir1 = c.dirs[0].path();
    let ca_pem = std::fs::read_to_string(shoal_pki::PkiPaths::new(dir1).ca_cert()).unwrap();
    let creds = ClusterCa::load(dir1)
        .unwrap()
        .issue_with_new_key(role, name, Duration::from_secs(600))
        .unwrap();
    shoal_pki::Signer::from_pem(&creds.cert.cert_pem, &creds.key_pem, &ca_pem).unwrap()
}

/// One identity with a client on each node.
struct Actor {
    owner: Owner,
    on: Vec<shoal_api::Client>,
    signer: shoal_pki::Signer,
}

impl Actor {
    fn new(c: &TestCluster, role: Role, name: &str) -> Actor {
        Actor {
            owner: Owner {
                role,
                id: name.into(),
            },
            on: (0..c.addrs.len())
                .map(|i| client_as(c, i, role, name))
                .collect(),
            signer: signer_as(c, role, name),
        }
    }

    /// Deploy `argv` (argv[0] a module name) on node `node`.
    async fn deploy(&self, node: &str, argv: &[&str]) -> Pid {
        let req: SpawnRequest = serde_json::from_value(serde_json::json!({
            "module": argv[0],
            "args": argv[1..],
            "node": node,
        }))
        .unwrap();
        let started = self.on[0].spawn(&req).await.expect("deploy");
        started[0].pid
    }
}

/// Tallies of the table, printed at the end.
#[derive(Default)]
struct Table {
    allowed: usize,
    refused: usize,
}

impl Table {
    /// Check one cell: `allowed` means the call must succeed; otherwise it
    /// must be refused with a typed `NotOwner` naming `owner`.
    fn cell<T: Debug>(
        &mut self,
        what: &str,
        allowed: bool,
        owner: &Owner,
        r: Result<T, ClientError>,
    ) -> Option<T> {
        match (allowed, r) {
            (true, Ok(v)) => {
                self.allowed += 1;
                println!("  allowed  {what}");
                Some(v)
            }
            (false, Err(ClientError::Forbidden(Forbidden::NotOwner { owner: o, .. })))
                if &o == owner =>
            {
                self.refused += 1;
                println!("  403      {what}");
                None
            }
            (a, r) => panic!(
                "{what}: expected {}, got {r:?}",
                if a {
                    "success".to_string()
                } else {
                    format!("a typed 403 not_owner naming {owner}")
                }
            ),
        }
    }
}

async fn stdout_has(c: &TestCluster, pid: Pid, text: &str) {
    wait_until(&format!("pid {pid} to print {text:?}"), WAIT, || {
        c.running()
            .any(|d| d.node().stdout_text(pid).contains(text))
    })
    .await;
}

/// Every route × {own, another's} × {client, admin}.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_route_acts_only_on_what_the_caller_may() {
    let c = TestCluster::start(2).await;
    c.add_guest(0, shoal_tests::MIGRANT, "migrant").await;
    let hello = std::fs::read(shoal_tests::HELLO).unwrap();
    let ping_pong = std::fs::read(shoal_tests::PING_PONG).unwrap();
    let alice = Actor::new(&c, Role::Client, "alice");
    let bob = Actor::new(&c, Role::Client, "bob");
    let root = Actor::new(&c, Role::Admin, "root");
    let mut t = Table::default();

    // Module names: bob names one; alice cannot repoint it either way.
    let bobs = bob.on[0]
        .add_module(hello.clone(), Some("bobs-app"))
        .await
        .expect("bob names his module");
    let alices = alice.on[0]
        .add_module(ping_pong.clone(), Some("alices-app"))
        .await
        .expect("alice names hers");
    for (actor, own_name, other_name, other_owner) in [
        (&alice, "alices-app", "bobs-app", &bob.owner),
        (&root, "roots-app", "alices-app", &alice.owner),
    ] {
        let admin = actor.owner.role == Role::Admin;
        println!("{} on module names", actor.owner);
        t.cell(
            "POST /v1/modules?name= (own)",
            true,
            &actor.owner,
            actor.on[0].add_module(hello.clone(), Some(own_name)).await,
        );
        t.cell(
            "PUT /v1/names/{own}",
            true,
            &actor.owner,
            actor.on[0].set_name(own_name, "migrant").await,
        );
        t.cell(
            "POST /v1/modules?name= (another's)",
            admin,
            other_owner,
            actor.on[0]
                .add_module(ping_pong.clone(), Some(other_name))
                .await,
        );
        t.cell(
            "PUT /v1/names/{another's}",
            admin,
            other_owner,
            actor.on[0].set_name(other_name, "migrant").await,
        );
    }
    // Alice's attempts changed nothing, in Raft nor in any node's registry;
    // the admin's repoint of alice's name went through (then back).
    let state = c.node(0).raft().state();
    assert_eq!(state.module_names["bobs-app"], bobs.hash.to_hex());
    assert_eq!(c.node(0).node().resolve("bobs-app").unwrap(), bobs.hash);
    assert_eq!(state.module_name_owner("bobs-app"), Some(bob.owner.clone()));
    assert_eq!(
        state.module_name_owner("alices-app"),
        Some(alice.owner.clone())
    );
    assert_ne!(state.module_names["alices-app"], alices.hash.to_hex());

    // Processes and snapshots.
    for (actor, other) in [(&alice, &bob), (&root, &alice)] {
        let admin = actor.owner.role == Role::Admin;
        println!("{} on processes and snapshots", actor.owner);
        let own = actor.deploy("n1", &["migrant", "tally"]).await;
        let theirs = other.deploy("n1", &["migrant", "tally"]).await;
        stdout_has(&c, own, "tally ready").await;
        stdout_has(&c, theirs, "tally ready").await;
        let cases = [(own, true, &actor.owner), (theirs, admin, &other.owner)];

        // ps: a client lists its own processes only.
        let listed: Vec<Pid> = actor.on[0]
            .processes()
            .await
            .expect("ps")
            .iter()
            .map(|p| p.pid)
            .collect();
        for (pid, allowed, owner) in cases {
            assert_eq!(listed.contains(&pid), allowed, "ps lists {pid} ({owner})");
            if allowed {
                t.allowed += 1;
            } else {
                t.refused += 1;
            }
        }

        // The other's snapshot, taken by its owner.
        let their_snap = other.on[0]
            .snapshot(
                theirs,
                &SnapshotRequest {
                    stop: false,
                    wait_max_ms: None,
                },
            )
            .await
            .expect("owner snapshots its process")
            .id;
        for (pid, allowed, owner) in cases {
            let mine = owner == &actor.owner;
            let tag = if mine { "own" } else { "another's" };
            t.cell(
                &format!("GET /v1/processes/{{{tag}}}/logs"),
                allowed,
                owner,
                actor.on[0].logs(pid, false, |_| Ok(())).await,
            );
            let snap = t.cell(
                &format!("POST /v1/processes/{{{tag}}}/snapshot"),
                allowed,
                owner,
                actor.on[0]
                    .snapshot(
                        pid,
                        &SnapshotRequest {
                            stop: false,
                            wait_max_ms: None,
                        },
                    )
                    .await,
            );
            let snap_id = if mine {
                snap.expect("own snapshot").id
            } else {
                their_snap
            };
            t.cell(
                &format!("GET /v1/snapshots/{{{tag}}}"),
                allowed,
                owner,
                actor.on[0].export_snapshot(&snap_id).await,
            );
            let restore = |replace| RestoreRequest {
                replace,
                dirs: Vec::new(),
                env: Vec::new(),
                memory_bytes_max: None,
            };
            if let Some(r) = t.cell(
                &format!("POST /v1/snapshots/{{{tag}}}/restore"),
                allowed,
                owner,
                actor.on[0].restore(&snap_id, &restore(false)).await,
            ) {
                // The restored process is the restorer's.
                wait_until("the restored process's owner", WAIT, || {
                    c.node(0).raft().state().owner_of(r.pid.0) == actor.owner
                })
                .await;
                actor.on[0]
                    .kill(r.pid)
                    .await
                    .expect("kill the restored copy");
            }
            if !mine {
                // Replacing another's process with a file of it: the file
                // is the attacker's now, the process is not.
                let file = root.on[0].export_snapshot(&their_snap).await.unwrap();
                let id = actor.on[0].import_snapshot(file).await.expect("import");
                t.cell(
                    "POST /v1/snapshots/{imported}/restore replace=another's",
                    allowed,
                    owner,
                    actor.on[0].restore(&id, &restore(true)).await,
                );
            }
            // Move it to n2 (asked at n1, relayed), then act on it there:
            // its owner went with it (recorded in Raft, not in the stream).
            t.cell(
                &format!("POST /v1/processes/{{{tag}}}/migrate"),
                allowed,
                owner,
                actor.on[0].migrate(pid, Some("n2")).await,
            );
            if !allowed {
                // The owner moves it; the refusal holds on the new node too.
                other.on[0]
                    .migrate(pid, Some("n2"))
                    .await
                    .expect("owner moves it");
            }
            wait_until("the move to reach every node", WAIT, || {
                c.running().all(|d| {
                    let s = d.raft().state();
                    s.directory.get(&pid.0).map(|e| e.node) == Some(c.node(1).id())
                        && s.owner_of(pid.0) == *owner
                })
            })
            .await;
            t.cell(
                &format!("GET /v1/processes/{{{tag}}}/logs after a move (via n1)"),
                allowed,
                owner,
                actor.on[0].logs(pid, false, |_| Ok(())).await,
            );
            t.cell(
                &format!("DELETE /v1/processes/{{{tag}}} on its new node"),
                allowed,
                owner,
                actor.on[1].kill(pid).await,
            );
            if !allowed {
                t.cell(
                    &format!("DELETE /v1/processes/{{{tag}}} via n1"),
                    false,
                    owner,
                    actor.on[0].kill(pid).await,
                );
                // Still running, untouched.
                assert!(c.node(1).node().module_of(pid).is_some());
                other.on[1].kill(pid).await.expect("the owner kills it");
            }
        }
    }

    // Cluster verbs need an admin, typed too.
    match alice.on[0]
        .create_token(Role::Admin, 60_000, &alice.signer)
        .await
    {
        Err(ClientError::Forbidden(Forbidden::NeedsAdmin { .. })) => t.refused += 1,
        other => panic!("a client created a token: {other:?}"),
    }
    root.on[1]
        .create_token(Role::Node, 60_000, &root.signer)
        .await
        .expect("an admin creates a token");
    t.allowed += 1;

    // A node certificate acting as itself owns none of a client's processes.
    let own = alice.deploy("n1", &["migrant", "tally"]).await;
    let node = client_as(&c, 0, Role::Node, "n2");
    t.cell(
        "DELETE /v1/processes/{a client's} with a node certificate",
        false,
        &alice.owner,
        node.kill(own).await,
    );
    t.cell(
        "GET /v1/processes/{a client's}/logs with a node certificate",
        false,
        &alice.owner,
        node.logs(own, false, |_| Ok(())).await,
    );
    alice.on[0].kill(own).await.expect("alice kills hers");

    println!(
        "ownership table: {} cells allowed, {} refused with a typed 403",
        t.allowed, t.refused
    );
    c.shutdown().await;
}

/// A guest's children are its owner's, on its node and on another
/// (`spawn` and `spawn_on`): a guest never leaves its owner's namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_guests_children_belong_to_its_owner() {
    let c = TestCluster::start(2).await;
    c.add_guest(0, shoal_tests::PING_PONG, "ping_pong").await;
    let alice = Actor::new(&c, Role::Client, "alice");
    let bob = Actor::new(&c, Role::Client, "bob");
    for target in [None, Some("n2")] {
        let mut argv = vec!["ping_pong", "ping", "ping_pong", "1000000000"];
        argv.extend(target);
        let parent = alice.deploy("n1", &argv).await;
        // The child shows up in alice's listing (and in Raft as hers).
        let child = {
            let mut found = None;
            let deadline = std::time::Instant::now() + WAIT;
            while found.is_none() {
                assert!(std::time::Instant::now() < deadline, "no child listed");
                let ps = alice.on[0].processes().await.expect("ps");
                found = ps.iter().map(|p| p.pid).find(|p| *p != parent);
                if found.is_none() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            found.unwrap()
        };
        wait_until("the child's owner in Raft", WAIT, || {
            c.node(0).raft().state().owner_of(child.0) == alice.owner
        })
        .await;
        let home = c.node(0).raft().state().directory[&child.0].node;
        let want = if target.is_some() {
            c.node(1).id()
        } else {
            c.node(0).id()
        };
        assert_eq!(home, want, "child placed as asked");
        match bob.on[0].kill(child).await {
            Err(ClientError::Forbidden(Forbidden::NotOwner { owner, .. })) => {
                assert_eq!(owner, alice.owner)
            }
            other => panic!("bob killed alice's guest's child: {other:?}"),
        }
        alice.on[0]
            .kill(parent)
            .await
            .expect("alice kills the parent");
        alice.on[0]
            .kill(child)
            .await
            .expect("alice kills the child");
    }
    c.shutdown().await;
}

/// Issue #11 item 2: a node certificate is not an admin. On main, a node
/// wrote `CreateToken{role: admin}` straight into Raft (a forwarded
/// write, whose `from` field was trusted) and redeemed it. Now the leader
/// takes the sender from its certificate and applies a forwarded write
/// only if that node may make it: minting a token needs an admin's request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_certificate_cannot_mint_an_admin_token() {
    let c = TestCluster::start(2).await;
    let leader = c.leader().expect("a leader");
    let other = 1 - leader;
    let leader_id = c.node(leader).id();
    let other_id = c.node(other).id();
    // A genuine node certificate of this cluster: the other member's name.
    let dir1 = c.dirs[0].path();
    let ca_pem = std::fs::read_to_string(shoal_pki::PkiPaths::new(dir1).ca_cert()).unwrap();
    let creds = ClusterCa::load(dir1)
        .unwrap()
        .issue_with_new_key(
            Role::Node,
            &format!("n{}", other + 1),
            Duration::from_secs(600),
        )
        .unwrap();
    let id = Identity::from_pem(&creds.cert.cert_pem, &creds.key_pem, &ca_pem).unwrap();
    let trust = ClusterTrust::new(&ca_pem, SharedRevocations::default()).unwrap();
    let peers = shoal_net::Peers::new(
        shoal_pki::tls::client_config(&id, &trust).unwrap(),
        shoal_net::NetConfig::default(),
    );
    let addr = c.addrs[leader].to_string();
    let (token, record) = crate::common::certs::token_record(Role::Admin);
    // As itself, and posing as the leader.
    for from in [other_id, leader_id] {
        let body = serde_json::json!({
            "from": from,
            "cmd": { "CreateToken": { "record": record } },
        });
        let answer = peers
            .call(
                &addr,
                "/v1/raft/write",
                bytes::Bytes::from(serde_json::to_vec(&body).unwrap()),
            )
            .await;
        println!("CreateToken{{admin}} from a node certificate, as node {from}: {answer:?}");
        match answer {
            // Refused as a value, typed: `Err(Forbidden(..))`, an admin
            // needed for CreateToken.
            Ok(b) => {
                let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
                let why = &v["Err"]["Forbidden"];
                assert!(
                    why["refusal"] == "forbidden" && why["code"] == "needs_admin",
                    "not refused: {v}"
                );
            }
            // Refused outright (impersonation).
            Err(e) => assert!(e.to_string().contains("only as itself"), "{e}"),
        }
    }
    // Nothing was written, on any node: a later admin token (ordered
    // after the attempts) reaches every node, the node's never does.
    let root = client_as(&c, leader, Role::Admin, "root");
    let later = root
        .create_token(Role::Node, 60_000, &signer_as(&c, Role::Admin, "root"))
        .await
        .expect("an admin creates a token");
    c.wait_token_on_every_node(&later.token).await;
    for d in c.running() {
        assert!(d.raft().state().tokens.get(token.id()).is_none());
    }
    c.shutdown().await;
}

/// Names are per owner, end to end (issue #13): alice and bob each
/// register `svc` through their own deployed guests and both win; a second
/// `svc` of alice's is refused `NAME_TAKEN`; each owner's `whereis` finds
/// its own, and a name in one namespace is not seen from the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn names_live_in_their_owners_namespace() {
    let c = TestCluster::start(2).await;
    c.add_guest(0, shoal_tests::KV, "kv").await;
    c.add_guest(0, shoal_tests::KV_CLIENT, "kv_client").await;
    let alice = Actor::new(&c, Role::Client, "alice");
    let bob = Actor::new(&c, Role::Client, "bob");
    let a = alice.deploy("n1", &["kv", "named", "svc"]).await;
    let b = bob.deploy("n2", &["kv", "named", "svc"]).await;
    stdout_has(&c, a, "registered svc").await;
    stdout_has(&c, b, "registered svc").await;
    let again = alice.deploy("n2", &["kv", "named", "svc"]).await;
    stdout_has(&c, again, "register failed NAME_TAKEN").await;
    let only_bob = bob.deploy("n1", &["kv", "named", "bobs"]).await;
    stdout_has(&c, only_bob, "registered bobs").await;
    for (who, node, want) in [
        (&alice, "n2", format!("whereis {a}")),
        (&bob, "n1", format!("whereis {b}")),
    ] {
        let probe = who.deploy(node, &["kv_client", "whereis", "svc"]).await;
        stdout_has(&c, probe, &want).await;
    }
    let probe = bob.deploy("n2", &["kv_client", "byname", "svc"]).await;
    stdout_has(&c, probe, "byname ok").await;
    let probe = alice.deploy("n1", &["kv_client", "whereis", "bobs"]).await;
    stdout_has(&c, probe, "whereis err=NO_PROCESS").await;
    c.shutdown().await;
}
