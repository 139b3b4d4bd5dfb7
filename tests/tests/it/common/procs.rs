//! Processes on a [`TestCluster`]: start one by module name, read what it
//! printed, wait for its end, move it. Shared by the areas that drive real
//! guests on in-process clusters.

use super::cluster::{wait_until, TestCluster};
use shoal_daemon::migrate::source::migrate;
use shoal_runtime::Pid;
use std::time::Duration;

/// How long a test waits for a condition before it fails.
pub const WAIT: Duration = Duration::from_secs(120);

/// Start `argv` on node `i` (argv[0]: a cluster-wide module name).
pub async fn spawn(c: &TestCluster, i: usize, argv: &[&str]) -> Pid {
    let args = argv[1..].iter().map(|s| s.to_string()).collect();
    c.node(i)
        .node()
        .spawn_by_reference(argv[0], args)
        .await
        .unwrap_or_else(|code| panic!("spawn {argv:?} on node {i}: error {code}"))
}

/// Index of the node the directory places `pid` on.
pub fn home_of(c: &TestCluster, pid: Pid) -> Option<usize> {
    let state = c.running().next()?.raft().state();
    let id = state.directory.get(&pid.0)?.node;
    c.nodes
        .iter()
        .position(|d| d.as_ref().map(|d| d.id()) == Some(id))
}

/// What `pid` printed on node `i` so far.
pub fn stdout(c: &TestCluster, i: usize, pid: Pid) -> String {
    c.node(i).node().stdout_text(pid)
}

/// What `pid` on node `i` wrote to stderr, as text (empty if the node has no log of it).
pub fn stderr(c: &TestCluster, i: usize, pid: Pid) -> String {
    c.node(i)
        .node()
        .log(pid)
        .map(|l| {
            String::from_utf8_lossy(&l.stream_bytes(shoal_runtime::log::Stream::Stderr))
                .into_owned()
        })
        .unwrap_or_default()
}

/// Wait until `pid` on node `i` has printed `text`.
pub async fn wait_stdout(c: &TestCluster, i: usize, pid: Pid, text: &str) {
    let node = c.node(i).node().clone();
    wait_until(
        &format!("{pid} on node {i} to print {text:?}"),
        WAIT,
        || node.stdout_text(pid).contains(text),
    )
    .await;
}

/// Move `pid` from node `from` to node `to` (a live migration).
pub async fn move_to(c: &TestCluster, from: usize, pid: Pid, to: usize) {
    let name = c.node(to).name().to_string();
    migrate(c.node(from).migration(), pid, Some(&name))
        .await
        .unwrap_or_else(|e| panic!("migrate {pid} from node {from} to node {to}: {e}"));
}

/// Wait for `pid`, on node `i`, to end: its status.
pub async fn exit_of(c: &TestCluster, i: usize, pid: Pid) -> shoal_runtime::ExitStatus {
    tokio::time::timeout(WAIT, c.node(i).node().wait(pid))
        .await
        .unwrap_or_else(|_| panic!("{pid} did not end on node {i}"))
        .unwrap_or_else(|| panic!("{pid} unknown on node {i}"))
}
