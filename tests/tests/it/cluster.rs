//! Clusters of real nodes on loopback: membership by Raft, mTLS between
//! nodes, remote spawn, location-transparent messaging, failures.

use crate::common;

use common::certs::{ca_pem_of, peers_with};
use common::cluster::{wait_until, TestCluster};
use shoal_cluster::{Command, CommandResult, NodeStatus};
use shoal_net::{NetConfig, NetError, Peers};
use shoal_pki::{self, ClusterCa, ClusterTrust, Identity, Role, SharedRevocations, Validity};
use shoal_runtime::{Pid, SpawnSpec};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_agree_on_membership_and_each_has_a_pid_block() {
    let c = TestCluster::start(3).await;
    let leader = c.leader().expect("a leader");
    for d in c.running() {
        let s = d.raft().state();
        let names: Vec<_> = s.nodes.values().map(|n| n.name.clone()).collect();
        assert_eq!(names, ["n1", "n2", "n3"], "as seen by {}", d.name());
        assert_eq!(s.ca_node, Some(1));
        let raft = d.raft().clone();
        wait_until("3 voters everywhere", WAIT, || {
            raft.status().voters.len() == 3
        })
        .await;
        // Every node was granted its own pid blocks (a block has one owner).
        wait_until("every node to own a pid block", WAIT, || {
            let owners: std::collections::BTreeSet<_> =
                raft.state().pid_blocks.values().copied().collect();
            owners.len() == 3
        })
        .await;
    }
    println!("leader is n{}", leader + 1);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_guest_on_node_a_spawns_on_node_b_and_they_talk() {
    // Without modules prepared ahead, n2 gets the module only when asked.
    let c = TestCluster::start_with(3, |config| config.prepare_ahead = false).await;
    let hash = c.add_guest(0, shoal_tests::PING_PONG, "ping_pong").await;
    let n2 = c.node(1);
    assert!(
        !n2.node().registry().contains(&hash),
        "n2 has not seen it yet"
    );
    let a = c.node(0).node();
    let (pid, status) =
        run_to_exit(a, hash, &["ping_pong", "ping", "ping_pong", "300", "n2"]).await;
    let out = a.stdout_text(pid);
    assert_eq!(
        status.code(),
        0,
        "stdout: {out} stderr: {}",
        stderr_of(a, pid)
    );
    assert!(out.contains("ping-pong done 300 round trips"), "{out}");
    // n2 fetched the module from n1 and checked its hash before running it.
    assert!(n2.node().registry().contains(&hash));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduler_and_labels_place_remote_spawns() {
    let c = TestCluster::start(3).await;
    let hash = c.add_guest(0, shoal_tests::PING_PONG, "ping_pong").await;
    let a = c.node(0).node();
    // Leave placement to the scheduler: the child lands somewhere and talks.
    let (pid, status) = run_to_exit(a, hash, &["ping_pong", "ping", "ping_pong", "50", ""]).await;
    assert_eq!(status.code(), 0, "{}", a.stdout_text(pid));
    // A target no node fits fails with NO_NODE, named in the guest's error.
    let (pid, status) = run_to_exit(
        a,
        hash,
        &["ping_pong", "ping", "ping_pong", "1", "zone=mars"],
    )
    .await;
    assert_eq!(status.code(), 1);
    let text = stderr_of(a, pid);
    assert!(text.contains("NO_NODE"), "{text}");
    c.shutdown().await;
}

/// Start `argv` of module `hash` on `node` and wait (bounded) for its end.
async fn run_to_exit(
    node: &shoal_runtime::Node,
    hash: shoal_registry::Sha256,
    argv: &[&str],
) -> (Pid, shoal_runtime::ExitStatus) {
    let spec = SpawnSpec::new(hash, argv.iter().map(|s| s.to_string()).collect());
    let pid = node.spawn(spec).await.unwrap();
    let status = tokio::time::timeout(WAIT, node.wait(pid))
        .await
        .unwrap()
        .unwrap();
    (pid, status)
}

/// The refusal's whole chain of causes, as the CLI prints it.
fn err_text<T, E: Into<anyhow::Error>>(r: Result<T, E>) -> String {
    match r {
        Ok(_) => panic!("expected a refusal, but it worked"),
        Err(e) => format!("{:#}", e.into()),
    }
}

fn stderr_of(node: &shoal_runtime::Node, pid: Pid) -> String {
    node.log(pid)
        .map(|l| {
            String::from_utf8_lossy(&l.stream_bytes(shoal_runtime::log::Stream::Stderr))
                .into_owned()
        })
        .unwrap_or_default()
}

/// Send `n` numbered messages from a host mailbox on node `from` to a
/// `sink` guest on node `to`, retrying while the way is full.
async fn send_numbered(c: &TestCluster, from: usize, sink: Pid, n: u64) {
    let mb = c.node(from).node().open_mailbox();
    for seq in 0..n {
        let mut payload = seq.to_le_bytes().to_vec();
        payload.extend_from_slice(&[7u8; 24]);
        let deadline = Instant::now() + WAIT;
        loop {
            match mb.send(sink, payload.clone()) {
                Ok(()) => break,
                Err(shoal_runtime::mailbox::PushError::Full) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_micros(200)).await
                }
                Err(e) => panic!("send {seq}: {e}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cross_node_messages_arrive_once_in_order_while_a_bystander_restarts() {
    let mut c = TestCluster::start(3).await;
    let hash = c.add_guest(0, shoal_tests::PING_PONG, "ping_pong").await;
    let n: u64 = 30_000;
    let b = c.node(1).node().clone();
    let sink = b
        .spawn_by_reference(&hash.to_string(), vec!["sink".into(), n.to_string()])
        .await
        .unwrap();
    // The bystander n3 goes down and comes back while messages flow.
    let sender = {
        let c = &c;
        async move { send_numbered(c, 0, sink, n).await }
    };
    let started = Instant::now();
    sender.await;
    c.stop(2).await;
    c.restart(2).await;
    let status = tokio::time::timeout(WAIT, b.wait(sink))
        .await
        .unwrap()
        .unwrap();
    let out = b.stdout_text(sink);
    assert_eq!(status.code(), 0, "{out}");
    assert!(out.contains(&format!("sink got {n} in order")), "{out}");
    println!("{n} cross-node messages in {:?}", started.elapsed());
    c.wait_healthy(3).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_pid_on_another_node_gives_no_process() {
    let c = TestCluster::start(2).await;
    let hash = c.add_guest(0, shoal_tests::PING_PONG, "ping_pong").await;
    let b = c.node(1).node().clone();
    let pong = b
        .spawn_by_reference(&hash.to_string(), vec!["pong".into()])
        .await
        .unwrap();
    let mb = c.node(0).node().open_mailbox();
    mb.send(pong, b"hello".to_vec()).unwrap();
    let reply = mb.recv(WAIT).await.expect("reply across nodes");
    assert_eq!(reply.sender, pong);
    assert_eq!(reply.data, b"hello");
    let raft = c.node(0).raft().clone();
    wait_until("the directory to list the pid", WAIT, || {
        raft.state().directory.contains_key(&pong.0)
    })
    .await;
    b.kill(pong).unwrap();
    wait_until("the directory to drop the pid", WAIT, || {
        !raft.state().directory.contains_key(&pong.0)
    })
    .await;
    assert_eq!(
        mb.send(pong, b"anyone?".to_vec()),
        Err(shoal_runtime::mailbox::PushError::Closed)
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_elects_a_new_one_and_writes_continue() {
    let mut c = TestCluster::start(3).await;
    let old = c.leader().expect("leader");
    let started = Instant::now();
    c.stop(old).await;
    let survivors: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    let mut new = None;
    while new.is_none() {
        assert!(started.elapsed() < WAIT, "no new leader");
        if let Some(l) = c.leader() {
            if l != old && c.nodes[l].is_some() {
                new = Some(l);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "new leader n{} after {:?}",
        new.unwrap() + 1,
        started.elapsed()
    );
    // Writes through any survivor work (forwarded to the new leader).
    let root = shoal_pki::Owner {
        role: shoal_pki::Role::Admin,
        id: "root".into(),
    };
    for i in &survivors {
        // As the API does: on behalf of the admin it names (a node may not
        // name another author as itself).
        let cmd = Command::NameModule {
            name: format!("after-failover-{i}"),
            hash: "a".repeat(64),
            by: root.clone(),
        };
        let r = c.node(*i).raft().write_as(cmd, &root);
        let r = tokio::time::timeout(WAIT, r).await.unwrap();
        assert!(matches!(r, Ok(CommandResult::Ok)), "{r:?}");
    }
    // The old leader comes back as a follower and catches up.
    c.restart(old).await;
    let raft = c.node(old).raft().clone();
    wait_until("the old leader to catch up", WAIT, || {
        raft.state()
            .module_names
            .contains_key(&format!("after-failover-{}", survivors[0]))
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_keeps_serving_with_one_node_down() {
    let mut c = TestCluster::start(3).await;
    let hash = c.add_guest(0, shoal_tests::PING_PONG, "ping_pong").await;
    // Take down a node that is not node 1 (which we use below).
    c.stop(2).await;
    let a = c.node(0).node();
    let (pid, status) =
        run_to_exit(a, hash, &["ping_pong", "ping", "ping_pong", "100", "n2"]).await;
    assert_eq!(status.code(), 0, "{}", a.stdout_text(pid));
    // The leader's failure detector declares the stopped node dead.
    let raft = c.node(0).raft().clone();
    wait_until("n3 to be declared dead", WAIT, || {
        let s = raft.state();
        let n3 = s.nodes.values().find(|n| n.name == "n3").unwrap();
        s.node_dead(n3.id).is_some()
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn join_refusals_bad_reused_expired_tokens_and_wrong_pin() {
    let c = TestCluster::start(1).await;
    let n1 = c.node(0);
    let good = n1
        .create_join_token("node", Duration::from_secs(600))
        .await
        .unwrap();
    let try_join = |name: &str, token: String, pin: String| {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = common::cluster::config(dir.path(), name, "127.0.0.1:0".parse().unwrap());
        cfg.join = Some(shoal_daemon::JoinSpec {
            addr: good.addr.clone(),
            token,
            ca_pin: pin,
        });
        async move {
            let r = shoal_daemon::Daemon::start(cfg).await;
            (r, dir)
        }
    };
    // A made-up token.
    let (r, _d) = try_join("x1", "abcdef.0123456789abcdef".into(), good.ca_hash.clone()).await;
    let e = err_text(r);
    assert!(e.contains("refused") && e.contains("token"), "{e}");
    // A wrong CA pin: the joiner refuses the cluster.
    let wrong_pin = format!("sha256:{}", "0".repeat(64));
    let (r, _d) = try_join("x2", good.token.clone(), wrong_pin).await;
    let e = err_text(r);
    assert!(e.to_lowercase().contains("pin"), "{e}");
    // The good token works once...
    let (r, _keep) = try_join("x3", good.token.clone(), good.ca_hash.clone()).await;
    let x3 = r.expect("first use joins");
    assert_eq!(x3.name(), "x3");
    // ...and never again.
    let (r, _d) = try_join("x4", good.token.clone(), good.ca_hash.clone()).await;
    let e = err_text(r);
    assert!(e.contains("refused"), "{e}");
    // A joiner may not take a live member's name (and with it its address):
    // refused before the token is spent, which then still works.
    let taken = n1
        .create_join_token("node", Duration::from_secs(600))
        .await
        .unwrap();
    let (r, _d) = try_join("n1", taken.token.clone(), taken.ca_hash.clone()).await;
    let e = err_text(r);
    assert!(e.contains("belongs to live member"), "{e}");
    let me = n1.raft().state().member_by_name("n1").unwrap().addr.clone();
    assert_eq!(me, c.addrs[0].to_string(), "n1's address is unchanged");
    let (r, _keep2) = try_join("x6", taken.token.clone(), taken.ca_hash.clone()).await;
    let x6 = r.expect("the token refused for a taken name was not spent");
    // Unauthenticated joins with made-up tokens write nothing to Raft: each
    // used to append an entry (a refused RedeemToken), so 200 of them grew
    // the log by 200; now it grows by the three nodes' own heartbeats
    // only (5 a second each in these tests: 8 entries in 0.4 s here).
    let before = n1.raft().status().last_applied.unwrap_or(0);
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    for i in 0..200 {
        let r = shoal_daemon::join::join(
            dir.path(),
            &good.addr,
            &format!("zzzzz{}.0123456789abcdef", i % 10),
            &good.ca_hash,
            &format!("bogus{i}"),
            "127.0.0.1:1",
            &Default::default(),
        )
        .await;
        assert!(r.is_err(), "a made-up token joined");
    }
    let grew = n1.raft().status().last_applied.unwrap_or(0) - before;
    eprintln!(
        "200 bogus joins in {:?}: the log grew by {grew} entries",
        started.elapsed()
    );
    assert!(grew < 100, "log grew by {grew} during 200 bogus joins");
    // An expired token.
    let short = n1
        .create_join_token("node", Duration::from_millis(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (r, _d) = try_join("x5", short.token.clone(), short.ca_hash.clone()).await;
    let e = err_text(r);
    assert!(e.contains("expired"), "{e}");
    x3.shutdown().await;
    x6.shutdown().await;
    c.shutdown().await;
}

/// 1024 TLS connections without a client certificate that never send an
/// HTTP/2 preface used to take every connection slot, locking out admins,
/// peers and joiners for as long as they stayed open. Anonymous
/// connections now have their own few slots and a bounded life.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_silent_anonymous_connections_leaves_room_for_the_cluster() {
    let c = TestCluster::start(1).await;
    let n1 = c.node(0);
    let addr = c.addrs[0].to_string();
    let pin = n1
        .create_join_token("node", Duration::from_secs(600))
        .await
        .unwrap()
        .ca_hash;
    let (tls, _) = shoal_pki::join::pinned_client_config(pin.parse().unwrap()).unwrap();
    let connector = tokio_rustls::TlsConnector::from(tls);
    let mut held = Vec::new();
    let mut handshakes = 0;
    for _ in 0..1024 {
        let Ok(tcp) = tokio::net::TcpStream::connect(&addr).await else {
            continue;
        };
        // The server may close it right after the handshake (no slot):
        // either way, it never gets a preface.
        if let Ok(s) = connector
            .connect(shoal_pki::tls::placeholder_server_name(), tcp)
            .await
        {
            handshakes += 1;
            held.push(s);
        }
    }
    assert!(handshakes > 64, "only {handshakes} handshakes completed");
    // The admin is served at once, while all of them are still open.
    let dir1 = c.dirs[0].path();
    let ca_pem = ca_pem_of(dir1);
    let admin_dir = shoal_pki::PkiPaths::new(dir1).admin_dir();
    let admin = Identity::from_pem(
        &std::fs::read_to_string(admin_dir.join("client.crt")).unwrap(),
        &std::fs::read_to_string(admin_dir.join("client.key")).unwrap(),
        &ca_pem,
    )
    .unwrap();
    let served = peers_with(&admin, &ca_pem)
        .call(&addr, "/v1/peer/processes", Default::default())
        .await;
    assert!(
        matches!(served, Err(NetError::Remote { status: 403, .. })),
        "the admin was not served during the flood: {served:?}"
    );
    drop(held);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_from_another_ca_expired_revoked_or_of_the_wrong_role_are_refused() {
    let c = TestCluster::start(3).await;
    let addr = c.addrs[0].to_string();
    let dir1 = c.dirs[0].path();
    let ca_pem = ca_pem_of(dir1);
    // Baseline: the admin credential works.
    let admin_dir = shoal_pki::PkiPaths::new(dir1).admin_dir();
    let admin = Identity::from_pem(
        &std::fs::read_to_string(admin_dir.join("client.crt")).unwrap(),
        &std::fs::read_to_string(admin_dir.join("client.key")).unwrap(),
        &ca_pem,
    )
    .unwrap();
    let ok = peers_with(&admin, &ca_pem)
        .call(&addr, "/v1/peer/processes", Default::default())
        .await;
    // An admin is not a node: peer routes are refused by role.
    match ok {
        Err(NetError::Remote {
            status: 403,
            message,
            ..
        }) => assert!(message.contains("node"), "{message}"),
        other => panic!("admin on a peer route: {other:?}"),
    }
    // A client certificate posing as a node on a Raft route: refused.
    let ca = ClusterCa::load(dir1).unwrap();
    let client = ca
        .issue_with_new_key(Role::Client, "mallory", Duration::from_secs(600))
        .unwrap();
    let client_id = Identity::from_pem(&client.cert.cert_pem, &client.key_pem, &ca_pem).unwrap();
    match peers_with(&client_id, &ca_pem)
        .call(&addr, "/v1/raft/vote", Default::default())
        .await
    {
        Err(NetError::Remote { status: 403, .. }) => {}
        other => panic!("client on a Raft route: {other:?}"),
    }
    // Another cluster's certificates: refused at the handshake.
    let other = TestCluster::start(1).await;
    let other_dir = other.dirs[0].path();
    let foreign = Identity::load(other_dir).unwrap();
    let r = peers_with(&foreign, &ca_pem_of(other_dir))
        .call(&addr, "/v1/peer/processes", Default::default())
        .await;
    assert!(
        matches!(r, Err(NetError::Tls { .. }) | Err(NetError::Http { .. })),
        "foreign certificate: {r:?}"
    );
    // An expired node certificate: refused at the handshake.
    let now = shoal_pki::now_unix_ms();
    let expired = ca
        .issue_with_new_key_validity(
            Role::Node,
            "ghost",
            Validity::between(now - 7_200_000, now - 3_600_000),
        )
        .unwrap();
    let expired_id = Identity::from_pem(&expired.cert.cert_pem, &expired.key_pem, &ca_pem).unwrap();
    let r = peers_with(&expired_id, &ca_pem)
        .call(&addr, "/v1/peer/processes", Default::default())
        .await;
    assert!(r.is_err(), "expired certificate accepted: {r:?}");
    // A removed node: its certificate is revoked cluster-wide.
    let n3_identity = Identity::load(c.dirs[2].path()).unwrap();
    let before = peers_with(&n3_identity, &ca_pem)
        .call(&addr, "/v1/peer/processes", Default::default())
        .await;
    assert!(before.is_ok(), "n3 works before removal: {before:?}");
    let id3 = c.node(2).id();
    let proof = common::certs::Issued::admin_of(&c)
        .signer()
        .sign(shoal_pki::Intent::RemoveNode { node: "n3".into() })
        .unwrap();
    let r = c
        .node(0)
        .raft()
        .write_as(
            Command::Signed {
                proof,
                cmd: Box::new(Command::RemoveNode {
                    id: id3,
                    now_ms: shoal_pki::now_unix_ms(),
                }),
            },
            &shoal_pki::Owner {
                role: shoal_pki::Role::Admin,
                id: "root".into(),
            },
        )
        .await;
    assert!(matches!(r, Ok(CommandResult::Ok)), "{r:?}");
    let raft = c.node(0).raft().clone();
    // Removed in n1's state, and the revocation copied into the list n1's
    // handshakes read.
    let handshakes = c.node(0).inner().trust.revocations().clone();
    wait_until("n3 removed and revoked where n1 checks", WAIT, || {
        raft.state().nodes[&id3].status == NodeStatus::Removed
            && handshakes.snapshot().generation(Role::Node, "n3") >= 1
    })
    .await;
    let after = peers_with(&n3_identity, &ca_pem)
        .call(&addr, "/v1/peer/processes", Default::default())
        .await;
    assert!(after.is_err(), "revoked certificate accepted: {after:?}");
    other.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_certificates_are_renewed_before_they_expire() {
    // The CA signs 6-second certificates; nodes check every 200 ms.
    let c = TestCluster::start_with(2, |cfg| {
        cfg.cert_ttl = Duration::from_secs(6);
        cfg.renew_check_interval = Duration::from_millis(200);
    })
    .await;
    let n2 = c.node(1);
    let first = n2.inner().identity.info();
    // (back-dated by the 60 s clock-skew allowance)
    assert!(first.not_after_unix_ms - first.not_before_unix_ms <= 66_000);
    // Renewed, and past the first certificate's expiry...
    wait_until(
        "a renewed certificate, past the first's expiry",
        WAIT,
        || {
            n2.inner().identity.info().serial != first.serial
                && shoal_pki::now_unix_ms() > first.not_after_unix_ms + 1_000
        },
    )
    .await;
    let now_info = n2.inner().identity.info();
    assert_ne!(now_info.serial, first.serial, "renewed");
    assert!(now_info.not_after_unix_ms > shoal_pki::now_unix_ms());
    // ...a brand-new connection from n2 (its client certificate) to n1,
    // and from n1 to n2 (n2's server certificate), still works.
    let net = NetConfig::default();
    let from_n2 = Peers::new(n2.inner().client_tls.clone(), net.clone());
    from_n2
        .call(
            &c.addrs[0].to_string(),
            "/v1/peer/processes",
            Default::default(),
        )
        .await
        .expect("n2 -> n1 with the renewed certificate");
    let from_n1 = Peers::new(c.node(0).inner().client_tls.clone(), net);
    from_n1
        .call(
            &c.addrs[1].to_string(),
            "/v1/peer/processes",
            Default::default(),
        )
        .await
        .expect("n1 -> n2, n2 presenting the renewed certificate");
    // The renewed certificate is on disk for a restart.
    let on_disk = Identity::load(c.dirs[1].path()).unwrap();
    assert_eq!(on_disk.info().serial, now_info.serial);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_control_api_of_any_node_reaches_processes_on_every_node() {
    use shoal_api::types::{SnapshotRequest, SpawnRequest};
    let c = TestCluster::start(3).await;
    c.add_guest(0, shoal_tests::PING_PONG, "ping_pong").await;
    // A CLI client of n1 with the admin credential, over mTLS.
    let dir1 = c.dirs[0].path();
    let admin = shoal_pki::PkiPaths::new(dir1).admin_dir();
    let ca_pem = ca_pem_of(dir1);
    let id = Identity::from_pem(
        &std::fs::read_to_string(admin.join("client.crt")).unwrap(),
        &std::fs::read_to_string(admin.join("client.key")).unwrap(),
        &ca_pem,
    )
    .unwrap();
    let trust = ClusterTrust::new(&ca_pem, SharedRevocations::default()).unwrap();
    let client = shoal_api::Client::tls(
        c.addrs[0].to_string(),
        shoal_pki::tls::client_config(&id, &trust).unwrap(),
    );
    // Deploy on n3 through n1.
    let spawned = client
        .spawn(&SpawnRequest {
            module: "ping_pong".into(),
            argv0: None,
            args: vec!["pong".into()],
            env: vec![],
            count: 1,
            memory_bytes_max: None,
            node: Some("n3".into()),
            labels: Default::default(),
            preemptible: false,
            volumes: Vec::new(),
            restart: None,
        })
        .await
        .unwrap();
    let pid = spawned[0].pid;
    assert_eq!(spawned[0].node.as_deref(), Some("n3"));
    // ps through n1 lists it on n3.
    let list = client.processes().await.unwrap();
    let p = list.iter().find(|p| p.pid == pid).expect("listed");
    assert_eq!(p.node.as_deref(), Some("n3"));
    // A snapshot of it, asked of n1, is taken on n3.
    let report = client
        .snapshot(
            pid,
            &SnapshotRequest {
                stop: false,
                wait_max_ms: Some(10_000),
            },
        )
        .await
        .expect("snapshot forwarded to n3");
    assert!(c.node(2).node().registry().contains(&report.id));
    // And killing it through n1 ends it on n3.
    let exit = client.kill(pid).await.unwrap();
    assert_eq!(exit.pid, pid);
    assert!(!c.node(2).node().router().is_local(pid));
    // Removing n3 through the API: joint consensus takes it out of the
    // voters, and its certificate stops working.
    let admin_signer = common::certs::Issued::admin_of(&c).signer();
    client
        .remove_node("n3", &admin_signer)
        .await
        .expect("admin removes n3");
    let raft = c.node(0).raft().clone();
    wait_until("n3 out of the voters", WAIT, || {
        raft.status().voters.len() == 2
    })
    .await;
    let s = raft.state();
    let n3 = s.nodes.values().find(|n| n.name == "n3").unwrap();
    assert_eq!(n3.status, NodeStatus::Removed);
    // A client certificate cannot remove nodes.
    let ca = ClusterCa::load(dir1).unwrap();
    let bob = ca
        .issue_with_new_key(Role::Client, "bob", Duration::from_secs(600))
        .unwrap();
    let bob_id = Identity::from_pem(&bob.cert.cert_pem, &bob.key_pem, &ca_pem).unwrap();
    let bob_client = shoal_api::Client::tls(
        c.addrs[0].to_string(),
        shoal_pki::tls::client_config(&bob_id, &trust).unwrap(),
    );
    let bob_signer =
        shoal_pki::Signer::from_pem(&bob.cert.cert_pem, &bob.key_pem, &ca_pem).unwrap();
    let e = bob_client
        .remove_node("n2", &bob_signer)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("admin"), "{e}");
    c.shutdown().await;
}

/// #11 item 2, the hostile leader: Raft does not tolerate a hostile member,
/// so a node that wins an election appends what it likes. Here the leader
/// itself writes an admin join token — unsigned, signed by a client, and
/// as an admin's signed request for a *node* token changed to an admin
/// one — and a joiner then tries each token. Every node refuses each entry
/// when it applies it (typed: the proof's fault), no token is recorded
/// anywhere, and no join with one succeeds. An admin's own signed request
/// still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hostile_leader_cannot_mint_an_admin_token() {
    use shoal_cluster::Refusal;
    use shoal_pki::{Intent, ProofError};
    let c = TestCluster::start(2).await;
    let leader = c.leader().expect("a leader");
    let raft = c.node(leader).raft().clone();
    let admin = common::certs::Issued::admin_of(&c).signer();
    let client = common::certs::Issued::fresh(&c, Role::Client, "carol", 0).signer();
    let admin_record = || common::certs::token_record(Role::Admin);
    // The leader's own write of a signed token entry (no check but the
    // state machine's).
    let forge = |proof, record| {
        let raft = raft.clone();
        async move {
            raft.write(Command::Signed {
                proof,
                cmd: Box::new(Command::CreateToken { record }),
            })
            .await
            .expect("the write commits")
        }
    };
    let mut minted = Vec::new();
    // Unsigned.
    let (token, record) = admin_record();
    let r = raft
        .write(Command::CreateToken { record })
        .await
        .expect("the write commits");
    assert!(
        matches!(
            r,
            CommandResult::Refused(Refusal::Proof(ProofError::Missing { .. }))
        ),
        "{r:?}"
    );
    minted.push(token);
    // Signed by a client.
    let (token, record) = admin_record();
    let proof = client.sign(Intent::create_token(&record)).unwrap();
    let r = forge(proof, record).await;
    assert!(
        matches!(
            r,
            CommandResult::Refused(Refusal::Proof(ProofError::NotAdmin { .. }))
        ),
        "{r:?}"
    );
    minted.push(token);
    // An admin's request for a node token, turned into an admin token.
    let (token, mut record) = admin_record();
    record.role = Role::Node;
    let proof = admin.sign(Intent::create_token(&record)).unwrap();
    record.role = Role::Admin;
    let r = forge(proof, record).await;
    assert!(
        matches!(
            r,
            CommandResult::Refused(Refusal::Proof(ProofError::WrongIntent { .. }))
        ),
        "{r:?}"
    );
    minted.push(token);
    // An admin's real request, ordered after them: once it is applied on
    // every node, so are the forgeries, and none of them left a token.
    let real = c
        .node(1 - leader)
        .create_join_token_signed(Role::Node, 600_000, &admin)
        .await
        .expect("an admin's signed token");
    c.wait_token_on_every_node(&real.token).await;
    for d in c.running() {
        let state = d.raft().state();
        for token in &minted {
            assert!(
                state.tokens.get(token.id()).is_none(),
                "a forged token was recorded"
            );
        }
    }
    // A joiner with each forged token is refused; the real one admits.
    for (i, token) in minted.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg =
            common::cluster::config(dir.path(), &format!("x{i}"), "127.0.0.1:0".parse().unwrap());
        cfg.join = Some(shoal_daemon::JoinSpec {
            addr: real.addr.clone(),
            token: token.to_string(),
            ca_pin: real.ca_hash.clone(),
        });
        let e = err_text(shoal_daemon::Daemon::start(cfg).await);
        assert!(e.contains("token"), "{e}");
    }
    c.shutdown().await;
}

/// A snapshot file restored through the API on a node that never held the
/// snapshot's module: the node gets the module from the cluster (checked
/// against the hash the snapshot names) instead of refusing the restore.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restore_on_a_node_without_the_module_fetches_it_from_the_cluster() {
    // Without modules prepared ahead, n2 gets the module only when asked.
    let c = TestCluster::start_with(2, |config| config.prepare_ahead = false).await;
    // Only n1 holds the module.
    let hash = c.add_guest(0, shoal_tests::JOURNAL, "journal").await;
    assert!(!c.node(1).node().registry().contains(&hash));
    let n1 = c.admin_client(0);
    let n2 = c.admin_client(1);
    let started = n1
        .spawn(&shoal_api::types::SpawnRequest {
            module: "journal".into(),
            argv0: None,
            args: vec!["/data".into()],
            env: Vec::new(),
            count: 1,
            memory_bytes_max: None,
            node: Some(c.node(0).name().to_string()),
            labels: Default::default(),
            preemptible: false,
            volumes: vec![shoal_api::types::VolumeRequest {
                guest: "/data".into(),
                bytes_max: None,
                files_max: None,
                shared: None,
            }],
            restart: None,
        })
        .await
        .expect("deploy");
    let pid = started[0].pid;
    let report = n1
        .snapshot(
            pid,
            &shoal_api::types::SnapshotRequest {
                stop: true,
                wait_max_ms: None,
            },
        )
        .await
        .expect("snapshot");
    let file = n1.export_snapshot(&report.id).await.expect("export");
    let id = n2.import_snapshot(file).await.expect("import on n2");
    let restored = n2
        .restore(
            &id,
            &shoal_api::types::RestoreRequest {
                replace: false,
                dirs: Vec::new(),
                env: Vec::new(),
                memory_bytes_max: None,
            },
        )
        .await
        .expect("restore on a node without the module");
    assert!(c.node(1).node().registry().contains(&hash));
    let mb = c.node(0).node().open_mailbox();
    mb.send(restored.pid, b"append after restore".to_vec())
        .expect("send");
    let reply = mb.recv(Duration::from_secs(120)).await.expect("an answer");
    assert_eq!(reply.data, b"ok 14");
    c.shutdown().await;
}

/// Issue #16's spawns under output commit, at the gap a SIGKILL can only
/// hit by chance: the parent's node recorded a `spawn_on` child (which
/// registers it on the target) and died before its start request left.
/// Here the record is made and the request never sent; then the copy
/// resumed inside the same `spawn_on` repeats it. The target must start
/// the child (it never got a request), and a further repeat must not start
/// it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recorded_spawn_on_child_whose_request_never_left_starts_once_when_asked_again() {
    use shoal_runtime::cluster_link::EffectKey;
    let c = TestCluster::start(2).await;
    // The parent and the child wait in `recv` for messages that never
    // come (so the repeats below find the child running).
    let (parent, args) = recorded_spawn_parent(&c).await;
    let (n1, n2) = (c.node(0), c.node(1));
    let link = n1.node().router().cluster().unwrap().clone();
    let key = EffectKey { life: 1, seq: 7 };
    // The first copy's record; its node "dies" before the request.
    let child = record_child_on_n2(&c, parent, key).await;
    assert!(n2.node().exit_record(child).is_none() && !n2.node().router().is_local(child));
    // The resumed copy's repeat: the same child, and n2 starts it now.
    let again = link
        .spawn_placed(parent, "n2", "tally", args.clone(), Some(key))
        .await;
    assert_eq!(again, Ok(child));
    wait_until("the child to run on n2", WAIT, || {
        n2.node().router().is_local(child)
    })
    .await;
    // Another repeat: the same answer, and nothing more starts on n2 (a
    // start would change its process table before n2 answered).
    let before = *n2.node().table_changes().borrow();
    let once_more = link
        .spawn_placed(parent, "n2", "tally", args.clone(), Some(key))
        .await;
    assert_eq!(once_more, Ok(child));
    assert_eq!(
        *n2.node().table_changes().borrow(),
        before,
        "n2 started the recorded child a second time"
    );
    assert!(n2.node().router().is_local(child));
    c.shutdown().await;
}

/// A parent on n1 waiting in `recv`, for the recorded-spawn tests, and the
/// tally child's arguments (it waits in `recv` too).
async fn recorded_spawn_parent(c: &TestCluster) -> (Pid, Vec<String>) {
    let hash = c.add_guest(0, shoal_tests::TALLY, "tally").await;
    let n1 = c.node(0);
    let spec = SpawnSpec::new(
        hash,
        ["tally", "count", "parent", "1", "1000000"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    );
    let parent = n1.node().spawn(spec).await.unwrap();
    wait_until("the parent in the directory", WAIT, || {
        n1.raft().state().directory.contains_key(&parent.0)
    })
    .await;
    let args = ["count", "child", "1", "1000000"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    (parent, args)
}

/// Record, as n1 does for `parent`'s effect `key`, a child to run on n2
/// (under a pid n1 draws), and send no start request; returns the child
/// once both nodes' directories show it on n2.
async fn record_child_on_n2(
    c: &TestCluster,
    parent: Pid,
    key: shoal_runtime::cluster_link::EffectKey,
) -> Pid {
    use shoal_runtime::cluster_link::SpawnRecord;
    let n2 = c.node(1).id();
    let link = c.node(0).node().router().cluster().unwrap().clone();
    let child = c.node(0).node().pids().allocate_wait(WAIT).await.unwrap();
    let first = link.record_spawn(parent, key, child, Some(n2)).await;
    assert_eq!(first, Ok(SpawnRecord::Start));
    wait_until("the record on both nodes", WAIT, || {
        (0..2).all(|i| {
            c.node(i)
                .raft()
                .state()
                .directory
                .get(&child.0)
                .is_some_and(|e| e.node == n2)
        })
    })
    .await;
    child
}

/// Issue #16: a `spawn_on` child is registered on its target by its record,
/// before it runs. When its start fails (the target refused it, or could
/// not be reached), the parent's node records the failure; the child must
/// then leave the directory, or `ps` shows a process that never ran. And
/// if it did start (the target started it but its answer was lost), the
/// record is what the parent and any resumed copy saw: the target kills
/// it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recorded_spawn_on_child_recorded_as_failed_leaves_the_directory_and_does_not_run() {
    use shoal_runtime::abi::errno;
    use shoal_runtime::cluster_link::EffectKey;
    let c = TestCluster::start(2).await;
    let (parent, args) = recorded_spawn_parent(&c).await;
    let (n1, n2) = (c.node(0), c.node(1));
    let link = n1.node().router().cluster().unwrap().clone();
    // Neither node's directory shows `child`.
    let gone = |c: &TestCluster, child: Pid| {
        (0..2).all(|i| !c.node(i).raft().state().directory.contains_key(&child.0))
    };

    // Never started: recorded, then reported failed.
    let key = EffectKey { life: 1, seq: 7 };
    let child = record_child_on_n2(&c, parent, key).await;
    link.spawn_failed(parent, key, child, errno::UNAVAILABLE)
        .await;
    wait_until(
        "the child recorded as failed to leave the directory",
        WAIT,
        || gone(&c, child),
    )
    .await;
    // A repeat gets the failure, and n2 does not start it.
    let again = link
        .spawn_placed(parent, "n2", "tally", args.clone(), Some(key))
        .await;
    assert_eq!(again, Err(errno::UNAVAILABLE));
    assert!(!n2.node().router().is_local(child));

    // Started, but recorded as failed (its answer was lost): n2 kills it.
    let key = EffectKey { life: 1, seq: 8 };
    let child = record_child_on_n2(&c, parent, key).await;
    // The repeat asks n2, which starts it.
    let started = link
        .spawn_placed(parent, "n2", "tally", args.clone(), Some(key))
        .await;
    assert_eq!(started, Ok(child));
    // Once it has registered its name it waits in `recv`: nothing but a
    // kill ends it.
    wait_until("the child to register its name", WAIT, || {
        link.whereis(parent, "child") == Ok(child)
    })
    .await;
    assert!(n2.node().router().is_local(child));
    link.spawn_failed(parent, key, child, errno::UNAVAILABLE)
        .await;
    let ended = tokio::time::timeout(WAIT, n2.node().wait(child))
        .await
        .expect("n2 to kill the child recorded as failed")
        .expect("n2 ran the child");
    assert_eq!(ended.reason, shoal_runtime::ExitReason::Killed);
    wait_until("the killed child out of the directory", WAIT, || {
        gone(&c, child)
    })
    .await;
    c.shutdown().await;
}

/// A copy resumed inside a `spawn_on` whose record this node has applied
/// goes to the recorded child without placing it again: placing could
/// fail (here the target matches no node now) and would draw a pid for
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resumed_spawn_on_finds_its_record_before_placing() {
    use shoal_runtime::cluster_link::EffectKey;
    let c = TestCluster::start(2).await;
    let (parent, args) = recorded_spawn_parent(&c).await;
    let (n1, n2) = (c.node(0), c.node(1));
    let link = n1.node().router().cluster().unwrap().clone();
    let key = EffectKey { life: 1, seq: 9 };
    let child = record_child_on_n2(&c, parent, key).await;
    let again = link
        .spawn_placed(parent, "zone=nowhere", "tally", args, Some(key))
        .await;
    assert_eq!(again, Ok(child));
    wait_until("the child to run on n2", WAIT, || {
        n2.node().router().is_local(child)
    })
    .await;
    c.shutdown().await;
}
