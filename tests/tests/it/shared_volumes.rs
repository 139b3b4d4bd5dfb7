//! Shared volumes (#15): `--volume NAME:/path`, one tree in Raft, file
//! content in chunks on R nodes, close-to-open consistency. Real 3-node
//! clusters, the `journal` guest using nothing but `std::fs`.

use crate::common;

use common::cluster::TestCluster;
use common::procs::WAIT;
use common::tally::add_guest_everywhere as add_guest;
use shoal_api::types::{SpawnRequest, VolumeRequest};
use shoal_api::volumes::VolumeCreate;
use shoal_cluster::state::failover::{RestartMode, RestartPolicy};
use shoal_daemon::migrate::source::migrate;
use shoal_runtime::Pid;
use std::time::Instant;

use crate::volumes::{ask, WASI_EDQUOT};

/// WASI `ENOENT`, as the guest reports it.
const WASI_ENOENT: &str = "44";

/// Create the admin's shared volume `name`.
async fn create(c: &TestCluster, name: &str, replicas: u8, bytes_max: Option<u64>) {
    c.admin_client(0)
        .volume_create(&VolumeCreate {
            name: name.into(),
            replicas,
            bytes_max,
            files_max: None,
        })
        .await
        .unwrap_or_else(|e| panic!("create volume {name}: {e}"));
}

/// Start a `journal` in `/shared/<dir>` (created first) on node `on`, with
/// the shared volume `volume` mounted at `/shared`.
async fn journal(c: &TestCluster, on: usize, volume: &str, dir: &str) -> Pid {
    journal_with(c, on, volume, dir, &[], None).await
}

/// [`journal`] with more volumes mounted (e.g. `cluster:/cluster`).
async fn journal_with(
    c: &TestCluster,
    on: usize,
    volume: &str,
    dir: &str,
    more: &[(&str, &str)],
    restart: Option<RestartPolicy>,
) -> Pid {
    let admin = c.admin_client(0);
    admin
        .volume_put(None, volume, &format!("{dir}/.keep"), Vec::new())
        .await
        .unwrap_or_else(|e| panic!("create {volume}:/{dir}: {e}"));
    let volumes: Vec<(&str, &str)> = std::iter::once(("/shared", volume))
        .chain(more.iter().map(|(name, guest)| (*guest, *name)))
        .collect();
    spawn_mounting(
        c,
        on,
        "journal",
        &[&format!("/shared/{dir}")],
        &volumes,
        restart,
    )
    .await
}

/// Start `module` with `args` on node `on`, with the shared volumes
/// `volumes` (guest path, volume name) mounted.
async fn spawn_mounting(
    c: &TestCluster,
    on: usize,
    module: &str,
    args: &[&str],
    volumes: &[(&str, &str)],
    restart: Option<RestartPolicy>,
) -> Pid {
    let started = c
        .admin_client(0)
        .spawn(&SpawnRequest {
            module: module.into(),
            argv0: Some(module.into()),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
            count: 1,
            memory_bytes_max: None,
            node: Some(c.node(on).name().to_string()),
            labels: Default::default(),
            preemptible: false,
            volumes: volumes
                .iter()
                .map(|(guest, name)| VolumeRequest {
                    guest: (*guest).into(),
                    bytes_max: None,
                    files_max: None,
                    shared: Some((*name).into()),
                })
                .collect(),
            restart,
        })
        .await
        .unwrap_or_else(|e| panic!("deploy {module} {args:?} on n{}: {e}", on + 1));
    started[0].pid
}

/// The seed of a `whole <seed>` answer; panics on `torn` or anything else.
fn whole(answer: &str) -> u64 {
    answer
        .strip_prefix("whole ")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a whole version: {answer:?}"))
}

/// A writer on n1 rewrites a 3 MB file again and again while readers on n2
/// and n3 open it: each sees a whole version, never a torn one, and never
/// an older one than it saw before. Two writers on different nodes closing
/// the same file: the later close wins, whole (and `O_APPEND` from two
/// nodes is not atomic across them, as documented). Renames are atomic.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_files_are_seen_whole_on_every_node_close_to_open() {
    let c = TestCluster::start(3).await;
    add_guest(&c, shoal_tests::JOURNAL, "journal").await;
    create(&c, "shared", 2, None).await;
    let w1 = journal(&c, 0, "shared", "w1").await;
    let w2 = journal(&c, 1, "shared", "w2").await;
    let r2 = journal(&c, 1, "shared", "r2").await;
    let r3 = journal(&c, 2, "shared", "r3").await;
    let mb = c.node(0).node().open_mailbox();

    // A closed version is seen whole from the other nodes.
    assert_eq!(ask(&mb, w1, "stamp ../f 3000000 1").await, "ok");
    for r in [r2, r3] {
        assert_eq!(ask(&mb, r, "check ../f").await, "whole 1");
    }

    // Rewritten 10 times while read: whole, and never going back.
    let writer = {
        let mb = c.node(0).node().open_mailbox();
        tokio::spawn(async move {
            for seed in 2..=11u64 {
                assert_eq!(
                    ask(&mb, w1, &format!("stamp ../f 3000000 {seed}")).await,
                    "ok"
                );
            }
        })
    };
    let mut last = [1u64, 1];
    let mut checks = 0;
    while !writer.is_finished() {
        for (i, r) in [r2, r3].into_iter().enumerate() {
            let seed = whole(&ask(&mb, r, "check ../f").await);
            assert!(
                seed >= last[i],
                "reader {i} went back from {} to {seed}",
                last[i]
            );
            last[i] = seed;
            checks += 1;
        }
    }
    writer.await.expect("writer");
    for r in [r2, r3] {
        assert_eq!(ask(&mb, r, "check ../f").await, "whole 11");
    }
    println!("{checks} reads while the file was rewritten, all whole: {last:?}");

    // Two writers on two nodes rewriting the same file at once: whichever
    // closes last wins, and what anyone reads is whole.
    let both: Vec<_> = [(w1, 100u64), (w2, 200u64)]
        .into_iter()
        .map(|(w, base)| {
            let mb = c.node(0).node().open_mailbox();
            tokio::spawn(async move {
                for k in 0..5 {
                    assert_eq!(
                        ask(&mb, w, &format!("stamp ../h 1000000 {}", base + k)).await,
                        "ok"
                    );
                }
            })
        })
        .collect();
    while both.iter().any(|t| !t.is_finished()) {
        let a = ask(&mb, r3, "check ../h").await;
        if a != format!("err {WASI_ENOENT}") {
            whole(&a);
        }
    }
    for t in both {
        t.await.expect("writer");
    }
    let last_h = whole(&ask(&mb, r2, "check ../h").await);
    assert!(last_h == 104 || last_h == 204, "{last_h}");
    assert_eq!(ask(&mb, r3, "check ../h").await, format!("whole {last_h}"));

    // Each writer appends to its own copy: the later close wins whole; the
    // other's line is not merged in (O_APPEND is not atomic across nodes).
    assert_eq!(ask(&mb, w1, "hold ../g").await, "ok");
    assert_eq!(ask(&mb, w2, "hold ../g").await, "ok");
    assert_eq!(ask(&mb, w1, "add from-w1").await, "ok");
    assert_eq!(ask(&mb, w2, "add from-w2").await, "ok");
    let a = ask(&mb, r3, "read ../g").await;
    assert!(
        a.contains("os error 44"),
        "nothing closed yet, so no file: {a}"
    );
    assert_eq!(ask(&mb, w1, "release").await, "ok");
    assert_eq!(ask(&mb, r3, "read ../g").await, "from-w1\n");
    assert_eq!(ask(&mb, w2, "release").await, "ok");
    assert_eq!(ask(&mb, r3, "read ../g").await, "from-w2\n");
    // fsync publishes without closing.
    assert_eq!(ask(&mb, w1, "hold ../g").await, "ok");
    assert_eq!(ask(&mb, w1, "add synced").await, "ok");
    assert_eq!(ask(&mb, r2, "read ../g").await, "from-w2\n");
    assert_eq!(ask(&mb, w1, "sync").await, "ok");
    assert_eq!(ask(&mb, r2, "read ../g").await, "from-w2\nsynced\n");
    assert_eq!(ask(&mb, w1, "release").await, "ok");

    // A rename replaces the target atomically: readers see the old whole
    // version or the new one.
    assert_eq!(ask(&mb, w1, "stamp ../final 2000000 1").await, "ok");
    let renamer = {
        let mb = c.node(0).node().open_mailbox();
        tokio::spawn(async move {
            for seed in 2..=6u64 {
                assert_eq!(
                    ask(&mb, w1, &format!("stamp ../tmp 2000000 {seed}")).await,
                    "ok"
                );
                assert_eq!(ask(&mb, w1, "rename ../tmp ../final").await, "ok");
            }
        })
    };
    let mut seen = 1;
    while !renamer.is_finished() {
        let s = whole(&ask(&mb, r3, "check ../final").await);
        assert!(s >= seen, "went back from {seen} to {s}");
        seen = s;
    }
    renamer.await.expect("renamer");
    assert_eq!(ask(&mb, r2, "check ../final").await, "whole 6");
    assert_eq!(
        ask(&mb, r2, "check ../tmp").await,
        format!("err {WASI_ENOENT}")
    );

    // Operators see the same tree and bytes through the API.
    let admin = c.admin_client(1);
    let root = admin.volume_list(None, "shared", "/").await.expect("ls");
    let names: Vec<&str> = root.iter().map(|e| e.name.as_str()).collect();
    for n in ["f", "final", "g", "h", "r2", "r3", "w1", "w2"] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    let f = root.iter().find(|e| e.name == "f").unwrap();
    assert_eq!(f.holders.len(), 2, "R=2: two holders {f:?}");
    let g = admin.volume_get(None, "shared", "/g").await.expect("get g");
    assert_eq!(&g[..], b"from-w2\nsynced\n");
    c.shutdown().await;
}

/// A process that writes a shared volume as soon as it starts, before its
/// registration reached the directory (it is batched), is not refused:
/// the write waits for it, as a key-value write does. It was refused with
/// `EINVAL` (the state machine's "not live"), unless output commit made
/// the first write wait for a checkpoint anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_writing_a_shared_volume_at_once_is_not_refused() {
    let c = TestCluster::start(3).await;
    add_guest(&c, shoal_tests::TALLY, "tally").await;
    create(&c, "steps", 2, None).await;
    let pid = spawn_mounting(
        &c,
        2,
        "tally",
        &["files", "/shared", "5", "0"],
        &[("/shared", "steps")],
        None,
    )
    .await;
    let n3 = c.node(2).node().clone();
    common::cluster::wait_until("the steps to end", WAIT, || {
        let out = n3.stdout_text(pid);
        out.contains("files done") || out.contains("BAD")
    })
    .await;
    let out = n3.stdout_text(pid);
    assert!(!out.contains("BAD"), "{out}");
    assert!(out.contains("files done 5 "), "{out}");
}

/// Under output commit (`--restart on-failure`) a move publishes
/// nothing: the journal a process keeps open and appends to travels with
/// it as chunks in the moved state, and others see it only when the
/// process ends (its end is final), with every line once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_output_commit_a_move_carries_an_open_written_file_unpublished() {
    let c = TestCluster::start(3).await;
    add_guest(&c, shoal_tests::JOURNAL, "journal").await;
    create(&c, "shared", 2, None).await;
    let policy = RestartPolicy {
        mode: RestartMode::OnFailure,
        checkpoint_every_ms: 60 * 60 * 1000,
        replicas: 1,
    };
    let m = journal_with(&c, 0, "shared", "m", &[], Some(policy)).await;
    let r = journal(&c, 2, "shared", "r").await;
    let mb = c.node(1).node().open_mailbox();
    let unpublished = |a: String| {
        assert!(a.starts_with("err "), "the journal was published: {a:?}");
    };
    let mut expected = String::new();
    for n in 1..=10 {
        let a = ask(&mb, m, &format!("append line {n}")).await;
        assert!(a.starts_with("ok "), "{a}");
        expected.push_str(&format!("line {n}\n"));
    }
    unpublished(ask(&mb, r, "read ../m/journal.log").await);
    // To the node that does not hold its checkpoint (whose chunks are the
    // journal's as it stands): the move itself must bring them.
    let state = c.node(0).raft().state();
    let holders = state
        .failover
        .recoverable
        .get(&m.0)
        .and_then(|r| r.checkpoint.as_ref())
        .map(|cp| cp.holders.clone())
        .unwrap_or_default();
    let to = (1..3)
        .find(|&i| {
            let name = c.node(i).name();
            !state
                .nodes
                .iter()
                .any(|(id, n)| n.name == name && holders.contains(id))
        })
        .unwrap_or_else(|| panic!("every node holds the checkpoint: {holders:?}"));
    migrate(c.node(0).migration(), m, Some(c.node(to).name()))
        .await
        .unwrap_or_else(|e| panic!("move {m} n1 → n{}: {e}", to + 1));
    // The move published nothing.
    unpublished(ask(&mb, r, "read ../m/journal.log").await);
    for n in 11..=15 {
        let a = ask(&mb, m, &format!("append line {n}")).await;
        assert!(a.starts_with("ok "), "{a}");
        expected.push_str(&format!("line {n}\n"));
    }
    mb.send(m, b"stop".to_vec()).expect("stop");
    let started = Instant::now();
    loop {
        let got = ask(&mb, r, "read ../m/journal.log").await;
        if got == expected {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "the journal was not published whole at exit: {got:?}"
        );
        tokio::task::yield_now().await;
    }
    c.shutdown().await;
}

/// A process with a shared file open (its journal, appended to) moves
/// n1 → n2 → n3: the move publishes what it wrote, it goes on appending
/// after each move, and a reader elsewhere sees every line in order once
/// it closes. Over the volume's quota, writes fail with EDQUOT. A volume
/// that does not exist is refused at deploy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_moved_process_keeps_its_shared_files_and_quotas_hold() {
    let c = TestCluster::start(3).await;
    add_guest(&c, shoal_tests::JOURNAL, "journal").await;
    create(&c, "shared", 2, Some(8 << 20)).await;
    let m = journal(&c, 0, "shared", "m").await;
    let r = journal(&c, 2, "shared", "r").await;
    let mb = c.node(1).node().open_mailbox();
    let mut expected = String::new();
    let mut n = 0;
    for (from, to) in [(0usize, 1usize), (1, 2)] {
        for _ in 0..10 {
            n += 1;
            let a = ask(&mb, m, &format!("append line {n}")).await;
            assert!(a.starts_with("ok "), "{a}");
            expected.push_str(&format!("line {n}\n"));
        }
        let started = Instant::now();
        let name = c.node(to).name().to_string();
        migrate(c.node(from).migration(), m, Some(&name))
            .await
            .unwrap_or_else(|e| panic!("move {m} n{} → n{}: {e}", from + 1, to + 1));
        println!(
            "moved n{} → n{} in {:?}",
            from + 1,
            to + 1,
            started.elapsed()
        );
        // The capture published the journal as it stood.
        assert_eq!(ask(&mb, r, "read ../m/journal.log").await, expected);
    }
    for _ in 0..5 {
        n += 1;
        ask(&mb, m, &format!("append line {n}")).await;
        expected.push_str(&format!("line {n}\n"));
    }
    // Its last lines reach others when it closes the file (at exit).
    mb.send(m, b"stop".to_vec()).expect("stop");
    let started = Instant::now();
    loop {
        if ask(&mb, r, "read ../m/journal.log").await == expected {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "the journal was not published at exit"
        );
        tokio::task::yield_now().await;
    }

    // Paths never leave the volume; there are no symlinks in it.
    for path in ["/shared/../etc/passwd", "/shared/r/../../x", "/etc/passwd"] {
        let a = ask(&mb, r, &format!("try open {path}")).await;
        assert!(a.starts_with("err "), "open {path}: {a}");
    }
    let a = ask(&mb, r, "try create /shared/r/../../outside").await;
    assert!(a.starts_with("err "), "create outside: {a}");
    assert_eq!(
        ask(&mb, r, "try symlink /etc").await,
        "err 58",
        "no symlinks"
    );

    // Quota: 8 MiB for the whole volume.
    let a = ask(&mb, r, "fill ../big 16777216").await;
    assert!(a.starts_with(&format!("err {WASI_EDQUOT} after ")), "{a}");

    // A volume that does not exist is refused at deploy, with its name.
    let e = c
        .admin_client(0)
        .spawn(&SpawnRequest {
            module: "journal".into(),
            argv0: None,
            args: vec!["/x".into()],
            env: Vec::new(),
            count: 1,
            memory_bytes_max: None,
            node: None,
            labels: Default::default(),
            preemptible: false,
            volumes: vec![VolumeRequest {
                guest: "/x".into(),
                bytes_max: None,
                files_max: None,
                shared: Some("nosuch".into()),
            }],
            restart: None,
        })
        .await
        .expect_err("no such volume");
    assert!(e.to_string().contains("nosuch"), "{e}");
    c.shutdown().await;
}

/// With R=2, a file copied in on n1 has its chunks on two nodes; after
/// SIGKILL of n1 (its writer, and a holder) it is still read whole through
/// n3, which fetches the chunks from the other holder. `shoal volume`
/// create, cp both ways, ls and rm, as a user runs them.
#[test]
fn a_file_of_an_r2_volume_stays_readable_when_a_holder_is_killed() {
    use common::netns::Lab;
    let mut lab = Lab::new(3);
    lab.start_all();
    lab.cli_ok(0, &["volume", "create", "media", "--replicas", "2"]);
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let src = lab.file("clip.bin", &content);
    let w = lab.cli_json(
        0,
        &[
            "volume",
            "cp",
            "--json",
            src.to_str().unwrap(),
            "media:/clips/clip.bin",
        ],
    );
    let holders: Vec<u64> = w["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_u64().unwrap())
        .collect();
    assert_eq!(holders.len(), 2, "{w}");
    let n1_id = holders[0];
    let ls = lab.cli_ok(1, &["volume", "ls"]);
    assert!(ls.contains("media") && ls.contains("3000000"), "{ls}");
    let tree = lab.cli_json(2, &["volume", "ls", "media:/clips", "--json"]);
    assert_eq!(tree[0]["name"], "clip.bin", "{tree}");
    assert_eq!(tree[0]["size"], 3_000_000, "{tree}");

    // The writer (the first holder) dies; the other holder serves it.
    lab.kill(0);
    let out = lab.path("back.bin");
    // Until the survivors have a leader again and n3 has the chunks.
    let took = common::netns::wait_for(
        "the file to be read through n3 with n1 dead",
        std::time::Duration::from_secs(60),
        || {
            lab.cli(
                2,
                &[
                    "volume",
                    "cp",
                    "media:/clips/clip.bin",
                    out.to_str().unwrap(),
                ],
            )
            .status
            .success()
        },
    );
    assert_eq!(
        std::fs::read(&out).unwrap(),
        content,
        "read back whole through n3"
    );
    println!("read back 3 MB through n3 with holder {n1_id} dead after {took:?}");
    lab.cli_ok(2, &["volume", "rm", "media"]);
    let ls = lab.cli_ok(2, &["volume", "ls"]);
    assert!(!ls.contains("media"), "{ls}");
}

/// `--volume cluster:/cluster`: the cluster as read-only files. A process
/// reads its own pid and node (which changes when it moves), the nodes
/// with their health and load, where each process runs; writing fails
/// with `EROFS`; `cluster` cannot be created as a volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cluster_namespace_shows_nodes_and_processes_and_follows_a_move() {
    const WASI_EROFS: &str = "69";
    let c = TestCluster::start(3).await;
    add_guest(&c, shoal_tests::JOURNAL, "journal").await;
    create(&c, "shared", 1, None).await;
    let p = journal_with(&c, 0, "shared", "p", &[("cluster", "/cluster")], None).await;
    let other = journal(&c, 2, "shared", "o").await;
    let mb = c.node(1).node().open_mailbox();
    assert_eq!(
        ask(&mb, p, "cat /cluster/self/pid").await,
        format!("{}\n", p.0)
    );
    assert_eq!(ask(&mb, p, "cat /cluster/self/node").await, "n1\n");
    let root = ask(&mb, p, "ls /cluster").await;
    for d in ["nodes", "procs", "self"] {
        assert!(
            root.lines().any(|l| l == d),
            "{d} missing from /cluster: {root:?}"
        );
    }
    assert_eq!(ask(&mb, p, "ls /cluster/nodes").await, "n1\nn2\nn3");
    assert_eq!(ask(&mb, p, "cat /cluster/nodes/n3/health").await, "alive\n");
    assert_eq!(
        ask(&mb, p, "cat /cluster/nodes/n2/status").await,
        "active\n"
    );
    let load = ask(&mb, p, "cat /cluster/nodes/n1/load").await;
    assert!(load.starts_with("processes "), "{load}");
    let started = Instant::now();
    // The directory is registered in batches: wait for the other process.
    loop {
        let a = ask(&mb, p, &format!("cat /cluster/procs/{}/node", other.0)).await;
        if a == "n3\n" {
            break;
        }
        assert!(started.elapsed() < WAIT, "{other} never listed on n3: {a}");
        tokio::task::yield_now().await;
    }
    assert_eq!(
        ask(&mb, p, "try create /cluster/x").await,
        format!("err {WASI_EROFS}")
    );
    assert_eq!(
        ask(&mb, p, "try mkdir /cluster/d").await,
        format!("err {WASI_EROFS}")
    );
    // Moved, it reads its new node.
    let name = c.node(1).name().to_string();
    migrate(c.node(0).migration(), p, Some(&name))
        .await
        .unwrap_or_else(|e| panic!("move {p}: {e}"));
    assert_eq!(ask(&mb, p, "cat /cluster/self/node").await, "n2\n");
    // `cluster` is not a volume name.
    let e = c
        .admin_client(0)
        .volume_create(&VolumeCreate {
            name: "cluster".into(),
            replicas: 1,
            bytes_max: None,
            files_max: None,
        })
        .await
        .expect_err("reserved");
    assert!(e.to_string().contains("reserved"), "{e}");
    c.shutdown().await;
}

/// Volumes belong to the identity that created them: alice creates, copies
/// in and lists hers; bob is refused (typed 403 naming alice) when he names
/// her volume, and his own volume of the same name is another volume; a
/// process bob deploys cannot mount alice's volume (it is not his).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shared_volume_belongs_to_its_creator() {
    use common::certs::Issued;
    use shoal_api::ClientError;
    use shoal_pki::{Forbidden, Owner, Role};
    let c = TestCluster::start(2).await;
    add_guest(&c, shoal_tests::JOURNAL, "journal").await;
    let alice_certs = Issued::fresh(&c, Role::Client, "alice", 0);
    let bob_certs = Issued::fresh(&c, Role::Client, "bob", 0);
    let alice_owner = Owner {
        role: Role::Client,
        id: "alice".into(),
    };
    let alice = alice_certs.client(&c, 0);
    let bob = bob_certs.client(&c, 1);
    let v = alice
        .volume_create(&VolumeCreate {
            name: "docs".into(),
            replicas: 1,
            bytes_max: None,
            files_max: None,
        })
        .await
        .expect("alice creates docs");
    assert_eq!(v.owner, "client:alice");
    alice
        .volume_put(None, "docs", "/plan.txt", b"alice's plan".to_vec())
        .await
        .expect("alice writes");
    let not_owner = |r: Result<_, ClientError>, what: &str| match r {
        Err(ClientError::Forbidden(Forbidden::NotOwner { owner, .. })) if owner == alice_owner => {}
        other => panic!("{what}: expected a typed 403 naming alice, got {other:?}"),
    };
    not_owner(
        bob.volume_get(Some(&alice_owner), "docs", "/plan.txt")
            .await
            .map(|_| ()),
        "bob reads alice's file",
    );
    not_owner(
        bob.volume_put(Some(&alice_owner), "docs", "/plan.txt", b"bob".to_vec())
            .await
            .map(|_| ()),
        "bob writes alice's file",
    );
    not_owner(
        bob.volume_remove(Some(&alice_owner), "docs")
            .await
            .map(|_| ()),
        "bob removes alice's volume",
    );
    // Bob's own `docs` does not exist; he may create his own.
    match bob.volume_get(None, "docs", "/plan.txt").await {
        Err(e) if e.status() == Some(404) => {}
        other => panic!("bob's own docs: expected 404, got {other:?}"),
    }
    assert!(bob.volumes(false).await.expect("bob lists").is_empty());
    let e = bob
        .volumes(true)
        .await
        .expect_err("only admins list everyone's");
    assert_eq!(e.status(), Some(403), "{e}");
    // A process bob deploys cannot mount alice's volume.
    let e = bob
        .spawn(&SpawnRequest {
            module: "journal".into(),
            argv0: None,
            args: vec!["/docs".into()],
            env: Vec::new(),
            count: 1,
            memory_bytes_max: None,
            node: None,
            labels: Default::default(),
            preemptible: false,
            volumes: vec![VolumeRequest {
                guest: "/docs".into(),
                bytes_max: None,
                files_max: None,
                shared: Some("docs".into()),
            }],
            restart: None,
        })
        .await
        .expect_err("bob mounting docs");
    assert!(e.to_string().contains("docs"), "{e}");
    // Alice's file is untouched; an admin sees both owners' volumes.
    let got = alice
        .volume_get(None, "docs", "/plan.txt")
        .await
        .expect("alice reads");
    assert_eq!(&got[..], b"alice's plan");
    let all = c.admin_client(0).volumes(true).await.expect("admin lists");
    assert!(
        all.iter()
            .any(|v| v.owner == "client:alice" && v.name == "docs"),
        "{all:?}"
    );
    c.shutdown().await;
}
