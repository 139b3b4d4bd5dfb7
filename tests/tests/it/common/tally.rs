//! Helpers for tests that run `migrant` guests on a [`TestCluster`]: a
//! guest known on every node, and questions to a `migrant tally`.

use super::cluster::{wait_until, TestCluster};
use shoal_registry::Sha256;
use shoal_runtime::Pid;
use std::time::Duration;

/// Store a guest under a cluster-wide name and wait until every node can
/// resolve it.
pub async fn add_guest_everywhere(c: &TestCluster, path: &str, name: &str) -> Sha256 {
    let hash = c.add_guest(0, path, name).await;
    for d in c.running() {
        let raft = d.raft().clone();
        let hex = hash.to_hex();
        wait_until(
            "the module to be known everywhere",
            Duration::from_secs(60),
            || {
                let s = raft.state();
                s.module_names.get(name) == Some(&hex)
                    && s.modules.get(&hex).is_some_and(|m| !m.holders.is_empty())
            },
        )
        .await;
    }
    hash
}

/// Ask a `migrant tally` for its line, from a host mailbox on node `via`.
/// The question is sent as soon as the node accepts it (its mailbox or lane
/// may be full for a while on a loaded machine), within a minute.
pub async fn ask(c: &TestCluster, via: usize, pid: Pid, what: &str) -> String {
    let mb = c.node(via).node().open_mailbox();
    let mut sent = false;
    wait_until(
        &format!("node {via} to accept {what:?} for {pid}"),
        Duration::from_secs(60),
        || {
            sent = sent || mb.send(pid, what.as_bytes().to_vec()).is_ok();
            sent
        },
    )
    .await;
    let m = mb
        .recv(Duration::from_secs(60))
        .await
        .unwrap_or_else(|| panic!("no answer to {what:?} from {pid}"));
    String::from_utf8_lossy(&m.data).into_owned()
}

pub fn field(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
}
