//! Tiered compilation (#17, `shoal_runtime::modules`): a big module someone
//! waits for starts at once in the baseline tier (Winch) while Cranelift
//! compiles it in the background; processes started afterwards run
//! Cranelift's code, and a process of either tier is captured and restored
//! into the other, since both run the same prepared module.

use crate::common;

use common::cluster::wait_until;
use common::{assert_success, TestNode};
use shoal_runtime::modules::Tier;
use shoal_runtime::{Node, Pid};
use shoal_tests as guests;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(120);

fn tier_of(node: &Node, pid: Pid) -> Tier {
    node.processes()
        .into_iter()
        .find(|p| p.pid == pid)
        .unwrap_or_else(|| panic!("process {pid} is not running"))
        .tier
}

async fn ask(me: &shoal_runtime::HostMailbox, pid: Pid, what: &str) -> String {
    me.send(pid, what).expect("send");
    let reply = me.recv(LONG).await.expect("an answer");
    String::from_utf8(reply.data).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_module_starts_in_the_baseline_tier_and_later_processes_run_cranelift_code() {
    // Every module counts as big here, so the counter (100 KB) takes the
    // path a 12 MB Python interpreter takes with the default threshold.
    let t = TestNode::with(|c| c.baseline_tier_bytes_min = Some(0));
    let hash = t.add_guest(guests::COUNTER, "counter");
    let me = t.node.open_mailbox();
    assert!(!t.node.is_compiled(&hash));

    let first = t.spawn(hash, &["counter"]).await;
    assert_eq!(tier_of(&t.node, first), Tier::Baseline);
    me.send(first, "add 5").expect("send");
    assert_eq!(ask(&me, first, "get").await, "5");

    // The optimizing compile runs in the background, writes the artifact
    // and replaces the loaded module.
    let node = t.node.clone();
    wait_until("the optimizing tier to be compiled", LONG, || {
        node.is_compiled(&hash)
            && node
                .load_module(&hash)
                .is_ok_and(|m| m.tier == Tier::Optimized)
    })
    .await;
    let second = t.spawn(hash, &["counter"]).await;
    assert_eq!(tier_of(&t.node, second), Tier::Optimized);
    // The first keeps the code it started with, and both work.
    assert_eq!(tier_of(&t.node, first), Tier::Baseline);
    assert_eq!(ask(&me, second, "get").await, "0");
    assert_eq!(ask(&me, first, "get").await, "5");

    // Captured in `recv` on Winch's code, restored onto Cranelift's: the
    // same prepared module, so the same records and globals.
    let image = t.node.capture(first, true, LONG).await.expect("capture");
    assert_eq!(image.pending.import, "shoal_v1.recv");
    t.wait(first, LONG).await;
    let restored = t.node.restore(hash, image).await.expect("restore");
    assert_eq!(tier_of(&t.node, restored), Tier::Optimized);
    assert_eq!(ask(&me, restored, "get").await, "5");

    for pid in [second, restored] {
        me.send(pid, "stop").expect("stop");
        assert_success(&t, &t.wait(pid, LONG).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_under_the_threshold_or_with_tiers_off_runs_cranelift_code_from_the_start() {
    // The default threshold (1 MiB prepared): the counter is far under it.
    let t = TestNode::new();
    assert_eq!(
        t.node.config().baseline_tier_bytes_min,
        Some(shoal_runtime::node::BASELINE_TIER_BYTES_MIN)
    );
    // Tiers off: even a module over any threshold waits for Cranelift.
    let off = TestNode::with(|c| c.baseline_tier_bytes_min = None);
    for node in [&t, &off] {
        let hash = node.add_guest(guests::COUNTER, "counter");
        let pid = node.spawn(hash, &["counter"]).await;
        assert_eq!(tier_of(&node.node, pid), Tier::Optimized);
        assert!(
            node.node.is_compiled(&hash),
            "the artifact is written before it runs"
        );
        let me = node.node.open_mailbox();
        me.send(pid, "stop").expect("stop");
        assert_success(node, &node.wait(pid, LONG).await);
    }
}

/// `shoal ps --json` (the cluster API's process list) says which tier each
/// process runs, through a node other than its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_process_list_shows_each_process_tier() {
    use common::cluster::TestCluster;
    use common::procs::spawn;
    use shoal_api::types::CodeTier;

    let c = TestCluster::start_with(2, |config| {
        config.node.baseline_tier_bytes_min = Some(0);
        // Nothing prepared ahead: the first spawn on n2 waits for the module.
        config.prepare_ahead = false;
    })
    .await;
    let hash = c.add_guest(1, guests::COUNTER, "counter").await;
    let first = spawn(&c, 1, &["counter"]).await;
    let n2 = c.node(1).node().clone();
    wait_until("the optimizing tier on n2", LONG, || n2.is_compiled(&hash)).await;
    wait_until("the optimized module loaded on n2", LONG, || {
        n2.load_module(&hash)
            .is_ok_and(|m| m.tier == Tier::Optimized)
    })
    .await;
    let second = spawn(&c, 1, &["counter"]).await;
    let list = c.admin_client(0).processes().await.expect("process list");
    let tier = |pid: Pid| list.iter().find(|p| p.pid == pid).and_then(|p| p.code_tier);
    assert_eq!(tier(first), Some(CodeTier::Baseline), "{list:?}");
    assert_eq!(tier(second), Some(CodeTier::Optimized), "{list:?}");
    c.shutdown().await;
}

/// A process of a big module run again (a second `shoal run`, a node
/// restarted) before the optimizing compile is done does not compile the
/// baseline tier again: its artifact is cached, and removed once the
/// optimized one is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_baseline_tier_is_cached_until_the_optimized_one_replaces_it() {
    use shoal_runtime::modules::LoadOrigin;
    use shoal_runtime::NodeConfig;

    let dir = tempfile::tempdir().expect("tempdir");
    let config = || {
        let mut c = NodeConfig::new(dir.path());
        c.engine.processes_max = 8;
        c
    };
    // The 7 MB Python interpreter: 12 MB prepared, over the default
    // threshold, and seconds of Cranelift, so the first node is gone long
    // before its optimizing compile is done.
    let bytes = std::fs::read(guests::PY_PINGPONG).expect("python guest");
    let hash = {
        let node = Node::new(config()).expect("node");
        let hash = node.add_module(&bytes).expect("add");
        let m = node.load_module(&hash).expect("load");
        assert_eq!(m.tier, Tier::Baseline);
        assert!(
            matches!(m.origin, LoadOrigin::Compiled { .. }),
            "{:?}",
            m.origin
        );
        assert!(node.is_compiled_baseline(&hash));
        assert!(!node.is_compiled(&hash));
        hash
    };
    let node = Node::new(config()).expect("node on the same data dir");
    let m = node.load_module(&hash).expect("load");
    assert_eq!(m.tier, Tier::Baseline);
    assert!(
        matches!(m.origin, LoadOrigin::ArtifactCache { .. }),
        "the baseline tier was compiled again: {:?}",
        m.origin
    );
    // Its own optimizing compile (the module prepared again) replaces it.
    wait_until(
        "the optimized tier, and the baseline artifact gone",
        LONG,
        || {
            node.is_compiled(&hash)
                && !node.is_compiled_baseline(&hash)
                && node
                    .load_module(&hash)
                    .is_ok_and(|m| m.tier == Tier::Optimized)
        },
    )
    .await;
}
