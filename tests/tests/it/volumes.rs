//! Private volumes (#15): a directory that belongs to a process, reached
//! through plain WASI (`std::fs` in the `journal` guest), carried by its
//! moves and snapshots, bounded by quotas, impossible to leave.

use crate::common;

use common::cluster::TestCluster;
use common::procs::{exit_of, home_of, WAIT};
use common::tally::add_guest_everywhere as add_guest;
use shoal_api::types::{SpawnRequest, VolumeRequest};
use shoal_daemon::migrate::source::migrate;
use shoal_runtime::{HostMailbox, Pid};

/// WASI `errno` values the guest reports.
pub(crate) const WASI_EDQUOT: &str = "19";
const WASI_ENOTSUP: &str = "58";

/// Send `text` to `pid` and return its answer.
pub(crate) async fn ask(mb: &HostMailbox, pid: Pid, text: &str) -> String {
    mb.send(pid, text.as_bytes().to_vec())
        .unwrap_or_else(|e| panic!("send {text:?} to {pid}: {e:?}"));
    let reply = mb
        .recv(WAIT)
        .await
        .unwrap_or_else(|| panic!("no answer to {text:?} from {pid}"));
    assert_eq!(reply.sender, pid, "answer to {text:?}");
    String::from_utf8_lossy(&reply.data).into_owned()
}

/// Ask both processes the same thing: their answers must be equal.
async fn ask_both(mb: &HostMailbox, a: Pid, b: Pid, text: &str) -> String {
    let x = ask(mb, a, text).await;
    let y = ask(mb, b, text).await;
    assert_eq!(
        x, y,
        "{text:?}: the moved process and the one left alone differ"
    );
    x
}

/// Start a `journal` with a private volume at `/data` on node `on`,
/// through the cluster API (as `shoal deploy --volume /data` does).
async fn deploy_journal(c: &TestCluster, on: usize, volume: VolumeRequest) -> Pid {
    let started = c
        .admin_client(0)
        .spawn(&SpawnRequest {
            module: "journal".into(),
            argv0: Some("journal".into()),
            args: vec![volume.guest.clone()],
            env: Vec::new(),
            count: 1,
            memory_bytes_max: None,
            node: Some(c.node(on).name().to_string()),
            labels: Default::default(),
            preemptible: false,
            volumes: vec![volume],
            restart: None,
        })
        .await
        .expect("deploy journal --volume /data");
    started[0].pid
}

fn data_volume() -> VolumeRequest {
    VolumeRequest {
        guest: "/data".into(),
        bytes_max: None,
        files_max: None,
        shared: None,
    }
}

/// Move `pid` from node `from` to node `to`; the report.
async fn move_to(
    c: &TestCluster,
    from: usize,
    pid: Pid,
    to: usize,
) -> shoal_api::cluster::MigrateReport {
    let name = c.node(to).name().to_string();
    migrate(c.node(from).migration(), pid, Some(&name))
        .await
        .unwrap_or_else(|e| panic!("migrate {pid} from node {from} to node {to}: {e}"))
}

/// The volume directories node `i` holds now.
fn volume_dirs(c: &TestCluster, i: usize) -> usize {
    let root = c.dirs[i].path().join("volumes");
    std::fs::read_dir(root).map(|d| d.count()).unwrap_or(0)
}

/// A journal with files in its volume moves n1 → n2 → n3 → n1 while it
/// keeps appending through a file it holds open, and is snapshotted and
/// restored on another cluster from the exported file; a twin started with
/// it stays on n1 untouched. Every answer
/// and, at the end, every file's bytes are the same for both. A repeat
/// move of 64 MiB of files of which 1 MiB changed carries about 1 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn files_in_a_private_volume_follow_their_process_across_moves_and_snapshots() {
    let c = TestCluster::start(3).await;
    add_guest(&c, shoal_tests::JOURNAL, "journal").await;
    let moved = deploy_journal(&c, 0, data_volume()).await;
    let twin = deploy_journal(&c, 0, data_volume()).await;
    let mb = c.node(1).node().open_mailbox();

    let mut line = 0;
    let mut appends = |n: usize| -> Vec<String> {
        (0..n)
            .map(|_| {
                line += 1;
                format!("append line {line}")
            })
            .collect()
    };
    for t in appends(20) {
        ask_both(&mb, moved, twin, &t).await;
    }
    // 64 MiB of files, in a sub-directory too.
    ask_both(&mb, moved, twin, "write big 67108864 7").await;
    ask_both(&mb, moved, twin, "write small 1000 8").await;
    let mut at = 0;
    for (to, name) in [(1, "n2"), (2, "n3")] {
        let report = move_to(&c, at, moved, to).await;
        assert_eq!(home_of(&c, moved), Some(to), "moved to {name}");
        println!(
            "journal moved to {name}: {} volume bytes fetched, freeze {} µs, phases {:?}",
            report.volume_bytes_sent, report.freeze_us, report.phases_us
        );
        if to == 1 {
            // The first move carries all of it.
            assert!(
                report.volume_bytes_sent >= 64 << 20,
                "first move fetched {} volume bytes",
                report.volume_bytes_sent
            );
        }
        at = to;
        for t in appends(20) {
            ask_both(&mb, moved, twin, &t).await;
        }
        ask_both(&mb, moved, twin, "digest").await;
    }
    // Back to n1, which still holds the chunks of its first stay: only
    // what changed since (1 MiB of `big`, the journal) travels.
    ask_both(&mb, moved, twin, "patch big 4194304 1048576 9").await;
    let report = move_to(&c, at, moved, 0).await;
    println!(
        "journal moved back to n1 after 1 MiB changed: {} volume bytes fetched",
        report.volume_bytes_sent
    );
    assert!(
        report.volume_bytes_sent >= 1 << 20 && report.volume_bytes_sent <= 2 << 20,
        "a repeat move fetched {} volume bytes for 1 MiB changed",
        report.volume_bytes_sent
    );
    for t in appends(10) {
        ask_both(&mb, moved, twin, &t).await;
    }
    // Snapshot (stop) and export to a file; restore it on another cluster,
    // where nothing of it exists but the module: the file carries the
    // volume's chunks, the journal is reopened at its end.
    let n1 = c.node(0).node();
    let info = n1.snapshot(moved, true, WAIT).await.expect("snapshot");
    assert_eq!(info.pending_call, "shoal_v1.recv");
    exit_of(&c, 0, moved).await;
    let file = n1.export_snapshot(&info.id).expect("export");
    assert!(
        file.len() > 64 << 20,
        "the file carries the volume ({} bytes)",
        file.len()
    );
    let other = TestCluster::start(1).await;
    add_guest(&other, shoal_tests::JOURNAL, "journal").await;
    let there = other.node(0).node();
    let id = there
        .import_snapshot(&file)
        .expect("import on another cluster");
    let restored = there
        .restore_snapshot(&id, false, &Default::default())
        .await
        .expect("restore on another cluster");
    let mb2 = there.open_mailbox();
    for t in appends(10) {
        let a = ask(&mb2, restored, &t).await;
        assert_eq!(a, ask(&mb, twin, &t).await, "{t}");
    }
    for t in ["digest", "read journal.log"] {
        let a = ask(&mb2, restored, t).await;
        assert_eq!(a, ask(&mb, twin, t).await, "{t}");
    }
    let journal = ask(&mb, twin, "read journal.log").await;
    assert_eq!(journal.lines().count(), line);
    assert_eq!(
        journal.lines().last(),
        Some(format!("line {line}").as_str())
    );
    // Every node the journal left removed its volume directory; n1 holds
    // the twin's.
    for (i, want) in [(0, 1), (1, 0), (2, 0)] {
        common::cluster::wait_until(
            &format!("node {i} to hold {want} volume directories"),
            WAIT,
            || volume_dirs(&c, i) == want,
        )
        .await;
    }
    other.shutdown().await;
    c.shutdown().await;
}

/// Paths cannot leave the volume (`..`, absolute paths, symlinks), and the
/// quotas fail writes and creations with `EDQUOT` without losing what is
/// there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn volume_paths_cannot_escape_and_quotas_refuse_with_edquot() {
    let c = TestCluster::start(1).await;
    add_guest(&c, shoal_tests::JOURNAL, "journal").await;
    let pid = deploy_journal(
        &c,
        0,
        VolumeRequest {
            guest: "/data".into(),
            bytes_max: Some(1 << 20),
            files_max: Some(4),
            shared: None,
        },
    )
    .await;
    let mb = c.node(0).node().open_mailbox();
    assert_eq!(ask(&mb, pid, "append kept").await, "ok 5");
    for path in ["/data/../etc/passwd", "/etc/passwd", "/data/../../data/x"] {
        let a = ask(&mb, pid, &format!("try open {path}")).await;
        assert!(a.starts_with("err "), "open {path}: {a}");
    }
    let a = ask(&mb, pid, "try create /data/../outside").await;
    assert!(a.starts_with("err "), "create outside: {a}");
    assert_eq!(
        ask(&mb, pid, "try symlink /etc").await,
        format!("err {WASI_ENOTSUP}"),
        "symlinks are not made in a volume"
    );
    // Bytes: 1 MiB in all.
    let a = ask(&mb, pid, "fill big 2097152").await;
    let (errno, after) = a
        .strip_prefix("err ")
        .and_then(|r| r.split_once(" after "))
        .unwrap_or_else(|| panic!("fill past the quota: {a}"));
    assert_eq!(errno, WASI_EDQUOT, "{a}");
    let written: u64 = after.parse().expect("bytes written");
    assert!(written <= 1 << 20, "{a}");
    // Nothing lost: the journal still reads back, and freeing space helps.
    assert_eq!(ask(&mb, pid, "read journal.log").await, "kept\n");
    assert_eq!(ask(&mb, pid, "write big 0 1").await, "ok");
    assert_eq!(ask(&mb, pid, "append again").await, "ok 11");
    // Files: journal.log, big, then two more; the next one is refused.
    assert_eq!(ask(&mb, pid, "try mkdir /data/sub").await, "ok");
    assert_eq!(ask(&mb, pid, "try create /data/sub/a").await, "ok");
    assert_eq!(
        ask(&mb, pid, "try create /data/sub/b").await,
        format!("err {WASI_EDQUOT}")
    );
    mb.send(pid, b"stop".to_vec()).expect("stop");
    assert!(exit_of(&c, 0, pid).await.success());
    common::cluster::wait_until("the volume directory to go", WAIT, || {
        volume_dirs(&c, 0) == 0
    })
    .await;
    c.shutdown().await;
}

/// A tmpfs of `bytes` mounted at `dir` for a test, unmounted when dropped
/// (also when the test panics).
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: std::path::PathBuf, bytes: u64) -> SmallDisk {
        std::fs::create_dir_all(&dir).expect("mount point");
        let st = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes}"),
                "shoal-test-disk",
            ])
            .arg(&dir)
            .status()
            .expect("mount (the tests run as root)");
        assert!(st.success(), "mount tmpfs at {}: {st}", dir.display());
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// The node's disk fills up (a 4 MiB file system under its volumes) while
/// the volume's quota is far away: the write fails with `ENOSPC`, what was
/// written before is intact, freeing space lets the process go on, and it
/// still moves to another node with its files.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_fails_writes_with_enospc_and_loses_nothing() {
    const WASI_ENOSPC: &str = "51";
    let c = TestCluster::start(2).await;
    add_guest(&c, shoal_tests::JOURNAL, "journal").await;
    let _disk = SmallDisk::mount(c.dirs[0].path().join("volumes"), 4 << 20);
    let pid = deploy_journal(&c, 0, data_volume()).await;
    let mb = c.node(1).node().open_mailbox();
    assert_eq!(ask(&mb, pid, "append kept").await, "ok 5");
    let a = ask(&mb, pid, "fill big 67108864").await;
    let (errno, after) = a
        .strip_prefix("err ")
        .and_then(|r| r.split_once(" after "))
        .unwrap_or_else(|| panic!("fill past the disk: {a}"));
    assert_eq!(errno, WASI_ENOSPC, "{a}");
    let written: u64 = after.parse().expect("bytes written");
    assert!(written <= 4 << 20, "{a}");
    println!("the disk filled after {written} bytes: {a}");
    assert_eq!(ask(&mb, pid, "read journal.log").await, "kept\n");
    assert_eq!(ask(&mb, pid, "write big 0 1").await, "ok");
    assert_eq!(ask(&mb, pid, "append again").await, "ok 11");
    move_to(&c, 0, pid, 1).await;
    assert_eq!(ask(&mb, pid, "read journal.log").await, "kept\nagain\n");
    c.shutdown().await;
}

/// What the API refuses before anything starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_volume_requests_are_refused() {
    let c = TestCluster::start(1).await;
    add_guest(&c, shoal_tests::JOURNAL, "journal").await;
    for (guest, bytes_max) in [
        ("data", None),
        ("/data/../x", None),
        ("/", None),
        ("/data", Some(u64::MAX)),
    ] {
        let r = c
            .admin_client(0)
            .spawn(&SpawnRequest {
                module: "journal".into(),
                argv0: None,
                args: vec![],
                env: Vec::new(),
                count: 1,
                memory_bytes_max: None,
                node: None,
                labels: Default::default(),
                preemptible: false,
                volumes: vec![VolumeRequest {
                    guest: guest.into(),
                    bytes_max,
                    files_max: None,
                    shared: None,
                }],
                restart: None,
            })
            .await;
        assert!(r.is_err(), "volume {guest:?} {bytes_max:?} was accepted");
    }
    c.shutdown().await;
}

/// Volume directories a crashed daemon left (its processes died with it)
/// are removed when the node starts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_node_removes_the_volumes_its_dead_processes_left() {
    let mut c = TestCluster::start(2).await;
    c.stop(1).await;
    let left = c.dirs[1]
        .path()
        .join("volumes")
        .join("9.00000000deadbeef")
        .join("0");
    std::fs::create_dir_all(&left).expect("a leftover volume");
    std::fs::write(left.join("journal.log"), b"old").expect("a leftover file");
    c.restart(1).await;
    assert_eq!(volume_dirs(&c, 1), 0, "leftover volumes after a restart");
    c.shutdown().await;
}
