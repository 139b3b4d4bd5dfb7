//! `shoal demo`'s logic ([`shoal_demo::run`]) on a real local
//! cluster with the real `migrant` guest: the counter moves three times and
//! node 2 is drained while numbered messages flow.

use shoal_demo::{run, DemoOptions};
use std::path::Path;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_moves_the_counter_around_and_drains_a_node_losing_nothing() {
    let dir = Path::new(shoal_tests::MIGRANT)
        .parent()
        .expect("the guests' directory");
    let opts = DemoOptions {
        guests_dir: Some(dir.to_path_buf()),
        ..DemoOptions::default()
    };
    let mut out = Vec::new();
    let s = run(&opts, &mut out).await.expect("the demo runs");
    let text = String::from_utf8_lossy(&out).into_owned();
    println!("{text}");
    assert!(text.starts_with("Starting a 3-node cluster on 127.0.0.1 with mutual TLS"));
    assert!(s.problems().is_empty(), "{:?}\n{text}", s.problems());
    assert!(s.ok());
    // Three moves, around the ring, each printed.
    let hops: Vec<(&str, &str)> = s
        .moves
        .iter()
        .map(|m| (m.from.as_str(), m.to.as_str()))
        .collect();
    assert_eq!(hops, [("n1", "n2"), ("n2", "n3"), ("n3", "n1")]);
    assert_eq!(text.matches("  moved ").count(), 3, "{text}");
    // The counter never went back, and went on.
    assert_eq!(s.ticks.len(), 5);
    assert!(s.ticks.windows(2).all(|w| w[0] <= w[1]), "{:?}", s.ticks);
    assert!(s.ticks[4] > s.ticks[0], "{:?}", s.ticks);
    for m in &s.moves {
        assert!(m.after.ticks >= m.before.ticks, "{m:?}");
        assert!(m.after.received >= m.before.received, "{m:?}");
        assert!(m.pages_sent <= m.pages_total, "{m:?}");
    }
    // Every message once, in order.
    assert_eq!(s.last.received, s.sent);
    assert_eq!((s.last.dups, s.last.gaps, s.last.senders), (0, 0, 1));
    assert!(
        text.contains("0 lost, 0 duplicated, 0 out of order"),
        "{text}"
    );
    // Back home, and the drained node is empty.
    assert_eq!(s.tally_node, "n1");
    assert_eq!(s.drained_node, "n2");
    assert_eq!(s.drained_moved, opts.drain_processes);
    assert_eq!(s.drained_left, 0);
    // The summary is machine-readable.
    let json = serde_json::to_value(&s).expect("json");
    assert_eq!(json["last"]["received"], s.sent);
}

#[tokio::test]
async fn a_missing_guest_names_the_command_that_builds_it() {
    let empty = tempfile::tempdir().expect("tempdir");
    let opts = DemoOptions {
        guests_dir: Some(empty.path().to_path_buf()),
        ..DemoOptions::default()
    };
    let err = run(&opts, &mut Vec::new()).await.expect_err("no guest");
    let msg = err.to_string();
    assert!(msg.contains("migrant.wasm"), "{msg}");
    assert!(
        msg.contains("cargo build --release --manifest-path guests/Cargo.toml --target wasm32-wasip1 --target-dir target/guests"),
        "{msg}"
    );
}
