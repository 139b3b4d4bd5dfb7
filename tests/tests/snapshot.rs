//! Snapshots: capture a process blocked in a call, resume it elsewhere.

mod common;

use common::{assert_success, TestNode};
use shoal_host::ExitReason;
use shoal_tests as guests;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_captured_in_recv_resumes_in_a_fresh_engine() {
    let a = TestNode::new();
    let hash = a.add_guest(guests::COUNTER, "counter");
    let me = a.node.open_mailbox();
    let pid = a.spawn(hash, &["counter"]).await;
    me.send(pid, "add 5").unwrap();
    me.send(pid, "get").unwrap();
    assert_eq!(me.recv(LONG).await.unwrap().data, b"5");
    let image = a.node.capture(pid, true, LONG).await.expect("capture");
    assert_eq!(image.pending.import, "shoal_v1.recv");
    assert_eq!(a.wait(pid, LONG).await.reason, ExitReason::Snapshotted);

    // A different node, a different engine: only the image and the module travel.
    let b = TestNode::new();
    let hash_b = b.add_guest(guests::COUNTER, "counter");
    assert_eq!(hash, hash_b);
    let restored = b.node.restore(hash, image).await.expect("restore");
    let me_b = b.node.open_mailbox();
    me_b.send(restored, "add 7").unwrap();
    me_b.send(restored, "get").unwrap();
    let reply = me_b.recv(LONG).await.expect("restored counter answers");
    assert_eq!(String::from_utf8(reply.data).unwrap(), "12");
    me_b.send(restored, "stop").unwrap();
    let status = b.wait(restored, LONG).await;
    assert_success(&b, &status);
    assert!(
        b.stdout(restored).contains("counter total=12 adds=2"),
        "{}",
        b.stdout(restored)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_without_stop_lets_the_process_go_on() {
    let t = TestNode::new();
    let hash = t.add_guest(guests::COUNTER, "counter");
    let me = t.node.open_mailbox();
    let pid = t.spawn(hash, &["counter"]).await;
    me.send(pid, "add 1").unwrap();
    for _ in 0..5 {
        t.node.capture(pid, false, LONG).await.expect("capture");
        me.send(pid, "add 1").unwrap();
    }
    me.send(pid, "get").unwrap();
    assert_eq!(me.recv(LONG).await.unwrap().data, b"6");
    me.send(pid, "stop").unwrap();
    assert_success(&t, &t.wait(pid, LONG).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_messages_arrive_after_restore_in_order() {
    let a = TestNode::new();
    let hash = a.add_guest(guests::COUNTER, "counter");
    let me = a.node.open_mailbox();
    let pid = a.spawn(hash, &["counter"]).await;
    // Capture first, then queue messages the process has not read.
    me.send(pid, "get").unwrap();
    assert_eq!(me.recv(LONG).await.unwrap().data, b"0");
    let image = {
        let cap = a.node.capture(pid, true, LONG);
        cap.await.expect("capture")
    };
    assert!(image.mailbox.is_empty());
    let mut image = image;
    // Messages that were waiting at capture: inject as the mailbox would hold them.
    for n in 1..=3u64 {
        image.mailbox.push(shoal_host::runtime::mailbox::Message {
            sender: me.pid(),
            data: format!("add {n}").into_bytes(),
        });
    }
    let b = TestNode::new();
    b.add_guest(guests::COUNTER, "counter");
    let restored = b.node.restore(hash, image).await.unwrap();
    let me_b = b.node.open_mailbox();
    me_b.send(restored, "get").unwrap();
    assert_eq!(me_b.recv(LONG).await.unwrap().data, b"6");
    me_b.send(restored, "stop").unwrap();
    assert!(b.wait(restored, LONG).await.success());
}
