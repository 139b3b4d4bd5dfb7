//! The trust boundary (issue #11): every attack found in the review, on
//! real nodes on loopback, refused.
//!
//! - Capabilities never come from a snapshot or a peer's stream: a
//!   correctly re-sealed snapshot whose process had `/` preopened gets no
//!   preopen; a restorer grants directories only within their role; nobody
//!   grants the data dir; a migration target applies the cluster's record.
//! - Every snapshot field is bounded before use, and a process whose
//!   restore fails leaves no entry behind.
//! - One request cannot knock a node over: a huge `deploy --count`, a
//!   million empty `log` calls, a snapshot upload that announces 4 GiB.
//! - What a node writes to its data dir is its own (0600 files, 0700 dirs).

use crate::common;

use common::cluster::{wait_until, TestCluster};
use common::TestNode;
use shoal_api::types::{RestoreRequest, SpawnRequest};
use shoal_cluster::GrantedDir;
use shoal_daemon::DaemonConfig;
use shoal_pki::{ClusterCa, ClusterTrust, Identity, Role, SharedRevocations};
use shoal_registry::Sha256;
use shoal_runtime::snapshot::format::{decode_file, encode_file, Manifest, SnapshotFormatError};
use shoal_tests as guests;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

/// The directory every test node's operator offers to clients
/// (`--grantable-dir`), holding what the `hello files` guest reads.
fn grantable() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        std::fs::write(dir.join("in.txt"), "HELLOworld").expect("in.txt");
        std::fs::write(dir.join("out.txt"), "").expect("out.txt");
        dir
    })
}

fn with_grantable(c: &mut DaemonConfig) {
    c.node.grantable_dirs = vec![grantable().to_path_buf()];
}

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

/// Decode a snapshot file, let `edit` change its manifest, and seal it
/// again with a correct checksum: what anyone can do to a file.
fn reseal(file: &[u8], edit: impl FnOnce(&mut Manifest)) -> Vec<u8> {
    let (mut manifest, pages) = decode_file(file, None).expect("a valid snapshot");
    edit(&mut manifest);
    encode_file(&manifest, |h: &Sha256| {
        pages
            .get(h)
            .cloned()
            .ok_or(SnapshotFormatError::PageMissing { hash: *h })
    })
    .expect("re-sealed")
}

/// A `hello files /data` process (holding `/data/in.txt` and
/// `/data/out.txt` open in `recv`), snapshotted to a file on a node of its
/// own that granted it a directory.
async fn files_snapshot() -> (TestNode, Vec<u8>) {
    let data = tempfile::tempdir().unwrap().keep();
    std::fs::write(data.join("in.txt"), "HELLOworld").unwrap();
    let a = TestNode::new();
    let hash = a.add_guest(guests::HELLO, "hello");
    let mut spec =
        shoal_runtime::SpawnSpec::new(hash, vec!["hello".into(), "files".into(), "/data".into()]);
    spec.dirs = vec![shoal_runtime::node::DirGrant {
        host: data.clone(),
        guest: "/data".into(),
    }];
    let pid = a.node.spawn(spec).await.unwrap();
    let deadline = std::time::Instant::now() + LONG;
    while !a.stdout(pid).contains("files waiting") {
        assert!(std::time::Instant::now() < deadline, "{}", a.stdout(pid));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let info = a.node.snapshot(pid, true, LONG).await.unwrap();
    let file = a.node.export_snapshot(&info.id).unwrap();
    (a, file)
}

/// The snapshot's process had `/` preopened as `/data`, the environment of
/// someone else, the host's stdin and a 4 GiB memory cap.
fn forge_root_grant(m: &mut Manifest) {
    let spec = &mut m.state["spec"];
    spec["dirs"] = serde_json::json!([{ "host": "/", "guest": "/data" }]);
    spec["env"] = serde_json::json!([["SECRET", "stolen"]]);
    spec["inherit_stdin"] = serde_json::json!(true);
    spec["forward_output"] = serde_json::json!(true);
    spec["memory_bytes_max"] = serde_json::json!(4u64 << 30);
}

fn restore_req(dirs: &[(&Path, &str)]) -> RestoreRequest {
    RestoreRequest {
        replace: false,
        dirs: dirs
            .iter()
            .map(|(h, g)| GrantedDir {
                host: h.display().to_string(),
                guest: g.to_string(),
            })
            .collect(),
        env: Vec::new(),
        memory_bytes_max: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resealed_snapshot_granting_root_is_restored_only_with_what_the_restorer_grants() {
    let (_a, file) = files_snapshot().await;
    let forged = reseal(&file, forge_root_grant);
    let c = TestCluster::start_with(1, with_grantable).await;
    c.add_guest(0, guests::HELLO, "hello").await;
    let carol = client_as(&c, 0, Role::Client, "carol");
    let admin = client_as(&c, 0, Role::Admin, "root-admin");
    let id = carol.import_snapshot(forged).await.expect("import");

    // Restored without --dir: refused, naming the guest path; nothing runs.
    let e = carol
        .restore(&id, &restore_req(&[]))
        .await
        .expect_err("a snapshot grants nothing")
        .to_string();
    assert!(e.contains("/data") && e.contains("not granted"), "{e}");
    assert!(c.node(0).node().processes().is_empty());

    // A client may not grant `/` (not grantable here, and it holds the
    // data dir); an admin may not either, nor the data dir itself.
    let data_dir = c.dirs[0].path().to_path_buf();
    let e = carol
        .restore(&id, &restore_req(&[(Path::new("/"), "/data")]))
        .await
        .expect_err("a client grants only grantable dirs");
    assert_eq!(e.status(), Some(403), "{e}");
    for host in [Path::new("/"), data_dir.as_path(), &data_dir.join("pki")] {
        let e = admin
            .restore(&id, &restore_req(&[(host, "/data")]))
            .await
            .expect_err("nobody grants the data dir");
        assert_eq!(e.status(), Some(403), "{}: {e}", host.display());
        assert!(e.to_string().contains("data dir"), "{e}");
    }
    assert!(c.node(0).node().processes().is_empty());

    // Granted a directory the operator offers, it runs on in the same call
    // and reads on from the same offset; its grant is on record with the
    // client's identity.
    let restored = carol
        .restore(&id, &restore_req(&[(grantable(), "/data")]))
        .await
        .expect("restored with an offered directory");
    let node = c.node(0).node().clone();
    let me = node.open_mailbox();
    me.send(restored.pid, "go").unwrap();
    let status = tokio::time::timeout(LONG, node.wait(restored.pid))
        .await
        .expect("it ends")
        .expect("known");
    let out = node.stdout_text(restored.pid);
    assert!(status.success(), "{status}: {out}");
    assert!(out.contains("rest=world"), "{out}");
    let state = c.node(0).raft().state();
    let record = state.grants.get(&restored.pid.0);
    // The process has ended, so its record is gone with its directory
    // entry, or still there until the exit is flushed: either way, while
    // it lived, what it had was the client's grant and nothing else.
    if let Some(r) = record {
        assert_eq!(r.granted_by.role, Role::Client);
        assert_eq!(r.granted_by.id, "carol");
        assert_eq!(r.dirs.len(), 1);
        assert!(
            r.env.is_empty(),
            "the snapshot's environment is not granted"
        );
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grants_are_recorded_in_raft_with_who_made_them() {
    let (_a, file) = files_snapshot().await;
    let c = TestCluster::start_with(1, with_grantable).await;
    c.add_guest(0, guests::HELLO, "hello").await;
    let carol = client_as(&c, 0, Role::Client, "carol");
    let id = carol.import_snapshot(file).await.unwrap();
    let mut req = restore_req(&[(grantable(), "/data")]);
    req.env = vec![("MODE".into(), "fast".into())];
    let restored = carol.restore(&id, &req).await.expect("restored");
    let raft = c.node(0).raft().clone();
    let r = raft
        .state()
        .grants
        .get(&restored.pid.0)
        .cloned()
        .expect("on record");
    assert_eq!(r.granted_by.id, "carol");
    assert_eq!(r.granted_by.role, Role::Client);
    assert_eq!(r.env, vec![("MODE".to_string(), "fast".to_string())]);
    let canonical = std::fs::canonicalize(grantable()).unwrap();
    assert_eq!(r.dirs[0].host, canonical.display().to_string());
    assert_eq!(r.dirs[0].guest, "/data");

    // Deployed with an environment: on record too, with the deployer.
    c.add_guest(0, guests::COUNTER, "counter").await;
    let spawned = carol
        .spawn(&SpawnRequest {
            module: "counter".into(),
            argv0: None,
            args: Vec::new(),
            env: vec![("GREETING".into(), "hi".into())],
            count: 1,
            memory_bytes_max: None,
            node: None,
            labels: Default::default(),
            preemptible: false,
            volumes: Vec::new(),
            restart: None,
        })
        .await
        .expect("deployed");
    let pid = spawned[0].pid;
    let r = raft.state().grants.get(&pid.0).cloned().expect("on record");
    assert_eq!(r.granted_by.id, "carol");
    assert_eq!(r.env, vec![("GREETING".to_string(), "hi".to_string())]);
    // The record goes with the process.
    c.node(0).node().kill(pid).unwrap();
    wait_until("the record to go with the process", LONG, || {
        !raft.state().grants.contains_key(&pid.0)
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_migration_stream_gets_no_capabilities() {
    use shoal_daemon::migrate::target;
    use shoal_daemon::migrate::wire::{Final, Offer, PATH_FINAL, PATH_OFFER};
    // A real captured image, so the host state is well formed.
    let t = TestNode::new();
    let hash = t.add_guest(guests::COUNTER, "counter");
    let pid = t.spawn(hash, &["counter"]).await;
    let image = t.node.capture(pid, true, LONG).await.unwrap();
    let mut state = shoal_runtime::snapshot::HostState::of(&image);
    state.spec.dirs = vec![shoal_runtime::node::DirGrant {
        host: "/".into(),
        guest: "/".into(),
    }];
    state.spec.env = vec![("SECRET".into(), "stolen".into())];

    let c = TestCluster::start(2).await;
    c.add_guest(1, guests::COUNTER, "counter").await;
    let inner = c.node(1).migration().clone();
    let moving = shoal_runtime::Pid(image.memory.len() as u64 + 7_000_000);
    let offer = Offer {
        id: "forged".into(),
        pid: moving.0,
        module: hash.to_hex(),
        source: c.node(0).id(),
        epoch: 0,
        memory_bytes: image.memory.len() as u64,
        page_bytes: 4096,
        pages: Vec::new(),
        preemptible: false,
        chunks: Vec::new(),
        volume_trees: None,
    };
    target::handle(
        &inner,
        PATH_OFFER,
        bytes::Bytes::from(serde_json::to_vec(&offer).unwrap()),
    )
    .await
    .expect("the offer is taken");
    let fin = Final {
        id: "forged".into(),
        memory_bytes: image.memory.len() as u64,
        zeroed: Vec::new(),
        globals: image.globals.clone(),
        state,
        log: Vec::new(),
        log_start: 0,
    };
    let e = target::handle(
        &inner,
        PATH_FINAL,
        bytes::Bytes::from(serde_json::to_vec(&fin).unwrap()),
    )
    .await
    .expect_err("the source's word grants nothing");
    assert_eq!(e.status, 403, "{}", e.message);
    assert!(e.message.contains("not granted"), "{}", e.message);
    target::start(&inner, moving).await;
    assert!(
        !c.node(1).node().router().is_local(moving),
        "nothing started"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_snapshot_field_is_bounded_and_a_failed_restore_leaves_no_entry() {
    let (_a, file) = files_snapshot().await;
    let b = TestNode::with(|c| c.grantable_dirs = vec![grantable().to_path_buf()]);
    b.add_guest(guests::HELLO, "hello");
    let grant = shoal_runtime::grants::Grants {
        dirs: vec![shoal_runtime::node::DirGrant {
            host: grantable().to_path_buf(),
            guest: "/data".into(),
        }],
        ..Default::default()
    };
    // A memory size that is not a whole number of Wasm pages (it used to
    // panic the process task and leave an entry nothing could remove).
    let odd = reseal(&file, |m| {
        assert!(m.page_bytes < 65536);
        m.memory_bytes += u64::from(m.page_bytes);
    });
    // An open file relative to a directory fd it never had.
    let bad_fd = reseal(&file, |m| {
        m.state["open_files"][0]["dir_fd"] = serde_json::json!(77);
    });
    // A capture buffer outside memory.
    let bad_buffer = reseal(&file, |m| {
        m.state["asyncify_buffer"] = serde_json::json!(u32::MAX);
    });
    // Captured in a module another build prepared (its saved stack would
    // rewind to a wrong place), or by a build that did not record it.
    let other_preparation = reseal(&file, |m| {
        assert_eq!(
            m.state["prepare_version"],
            serde_json::json!(shoal_prepare::PREPARE_VERSION)
        );
        m.state["prepare_version"] = serde_json::json!("prepare-3");
    });
    let no_preparation = reseal(&file, |m| {
        m.state
            .as_object_mut()
            .expect("the state is an object")
            .remove("prepare_version");
    });
    for (what, forged) in [
        ("odd memory", odd),
        ("fd", bad_fd),
        ("buffer", bad_buffer),
        ("prepared", other_preparation),
        ("prepared", no_preparation),
    ] {
        for _ in 0..3 {
            let id = b.node.import_snapshot(&forged).unwrap();
            let e = b
                .node
                .restore_snapshot(&id, false, &grant)
                .await
                .expect_err(what);
            eprintln!("{what}: {e}");
            if what == "prepared" {
                assert!(e.to_string().contains("prepared as"), "{e}");
            }
        }
        assert!(b.node.processes().is_empty(), "{what}: an entry was left");
    }
    // The in-process path is bounded the same way.
    let t = TestNode::new();
    let counter = t.add_guest(guests::COUNTER, "counter");
    let pid = t.spawn(counter, &["counter"]).await;
    let mut captured = t.node.capture(pid, true, LONG).await.unwrap();
    let mut memory = captured.memory.bytes().to_vec();
    memory.extend_from_slice(&[0u8; 4096]);
    captured.memory = memory.into();
    for _ in 0..3 {
        let e = t
            .node
            .restore(counter, captured.clone())
            .await
            .expect_err("odd memory refused");
        assert!(e.to_string().contains("64 KiB"), "{e}");
    }
    let _ = t.wait(pid, LONG).await;
    assert!(t.node.processes().is_empty(), "no entry left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_huge_deploy_count_is_refused_before_anything_is_allocated() {
    let c = TestCluster::start(1).await;
    c.add_guest(0, guests::COUNTER, "counter").await;
    let carol = client_as(&c, 0, Role::Client, "carol");
    let req = |count| SpawnRequest {
        module: "counter".into(),
        argv0: None,
        args: Vec::new(),
        env: Vec::new(),
        count,
        memory_bytes_max: None,
        node: None,
        labels: Default::default(),
        preemptible: false,
        volumes: Vec::new(),
        restart: None,
    };
    let e = carol
        .spawn(&req(u32::MAX))
        .await
        .expect_err("4294967295 processes");
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(e.to_string().contains("cannot place 4294967295"), "{e}");
    // The node is fine and takes a normal deploy.
    let ok = carol.spawn(&req(2)).await.expect("two counters");
    assert_eq!(ok.len(), 2);
    c.shutdown().await;
}

/// Calls `log` with an empty line a million times, then exits 0.
const MILLION_LOGS_WAT: &str = r#"
(module
  (import "shoal_v1" "log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (local $i i32)
    (loop $again
      (drop (call $log (i32.const 2) (i32.const 0) (i32.const 0)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 1000000))))))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_empty_log_calls_cost_no_more_than_the_log_cap() {
    let t = TestNode::new();
    let cap = t.node.config().log_bytes_max;
    let hash = t
        .node
        .add_module(&wat::parse_str(MILLION_LOGS_WAT).unwrap())
        .unwrap();
    let pid = t.spawn(hash, &["logger"]).await;
    let status = t.wait(pid, LONG).await;
    assert!(status.success(), "{status}");
    let log = t.node.log(pid).expect("remembered after exit");
    let chunks = log.chunks().len();
    assert!(
        chunks <= cap / shoal_runtime::log::CHUNK_OVERHEAD_BYTES,
        "{chunks} chunks held under a {cap}-byte cap"
    );
    assert!(log.held_bytes() <= cap);
    assert_eq!(log.dropped_bytes() + chunks as u64, 1_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_upload_is_checked_as_it_arrives() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = TestNode::new();
    let socket = t.dir.path().join("node.sock");
    let server = shoal_daemon::api::UnixServer::bind(&socket).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(server.serve(t.node.clone(), async move {
        let _ = stop_rx.await;
    }));
    // A file whose envelope announces 4 GiB: refused after its first 32
    // bytes, while the client is still sending (never held whole).
    let total: u64 = 4 << 30;
    let mut prefix = Vec::new();
    prefix.extend_from_slice(b"SHOALSNP");
    prefix.extend_from_slice(&1u32.to_le_bytes());
    prefix.extend_from_slice(&0u32.to_le_bytes());
    prefix.extend_from_slice(&total.to_le_bytes());
    prefix.extend_from_slice(&(!total).to_le_bytes());
    let mut conn = tokio::net::UnixStream::connect(&socket).await.unwrap();
    let head = "POST /v1/snapshots HTTP/1.1\r\nhost: node\r\ntransfer-encoding: chunked\r\ncontent-type: application/vnd.shoal.snapshot\r\n\r\n";
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut chunk = format!("{:x}\r\n", prefix.len()).into_bytes();
    chunk.extend_from_slice(&prefix);
    chunk.extend_from_slice(b"\r\n");
    // The node may answer and close its side before all of it is taken.
    let _ = conn.write_all(&chunk).await;
    let _ = conn.flush().await;
    // ... and the body never ends.
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), conn.read(&mut answer))
        .await
        .expect("answered before the upload ends")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("exceeds the limit"), "{answer}");

    // A real file still imports and restores through the stream.
    let (_a, file) = files_snapshot().await;
    t.add_guest(guests::HELLO, "hello");
    let client = shoal_api::Client::new(&socket);
    let id = client.import_snapshot(file).await.expect("imported");
    let e = client
        .restore(&id, &restore_req(&[]))
        .await
        .expect_err("its directory is not granted again");
    assert!(e.to_string().contains("/data"), "{e}");
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("in.txt"), "HELLOworld").unwrap();
    std::fs::write(data.path().join("out.txt"), "").unwrap();
    let restored = client
        .restore(&id, &restore_req(&[(data.path(), "/data")]))
        .await
        .expect("the node's operator grants any directory");
    let me = t.node.open_mailbox();
    me.send(restored.pid, "go").unwrap();
    let status = t.wait(restored.pid, LONG).await;
    assert!(status.success(), "{status}: {}", t.stdout(restored.pid));
    let _ = stop_tx.send(());
    let _ = served.await;
}

/// Every file under `dir` is 0600 and every directory 0700; returns how
/// many files were checked.
fn assert_private(dir: &Path) -> usize {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![dir.to_path_buf()];
    let mut files = 0;
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{} is {mode:o}", p.display());
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_eq!(mode, 0o600, "{} is {mode:o}", p.display());
            files += 1;
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn guest_memory_and_the_raft_store_are_the_nodes_alone() {
    let c = TestCluster::start(1).await;
    c.add_guest(0, guests::COUNTER, "counter").await;
    let node = c.node(0).node().clone();
    let hash = node.resolve("counter").unwrap();
    let pid = node
        .spawn(shoal_runtime::SpawnSpec::new(hash, vec!["counter".into()]))
        .await
        .unwrap();
    // Guest memory goes to the registry as snapshot pages.
    let info = node.snapshot(pid, false, LONG).await.unwrap();
    assert!(info.pages_new > 0);
    let data = c.dirs[0].path();
    let raft = c.node(0).raft().clone();
    wait_until("the pid on record", LONG, || {
        raft.state().directory.contains_key(&pid.0)
    })
    .await;
    let registry_files = assert_private(&data.join("registry"));
    assert!(registry_files > info.pages_new, "{registry_files}");
    assert!(assert_private(&data.join("cluster")) >= 2);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "the data dir");
    }
    let _ = node.kill(pid);
    c.shutdown().await;
}
