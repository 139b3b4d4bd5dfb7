//! `shoal logs` across moves (issue #12 item 2): the whole output of a
//! process that moved, read through the control API client (the path the
//! CLI takes) from every node, live and after it exited, and followed from
//! before its first move to its exit.

use crate::common;

use common::cluster::{wait_until, TestCluster};
use common::tally::add_guest_everywhere as add_guest;
use shoal_api::types::{ExitReport, LogFrame};
use shoal_daemon::migrate::source::{migrate, MigrateError};
use shoal_runtime::log::Stream;
use shoal_runtime::Pid;
use std::sync::atomic::Ordering;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// Move `pid` from node `from` to node `to` (indices).
async fn move_to(c: &TestCluster, from: usize, pid: Pid, to: usize) -> Result<(), MigrateError> {
    let name = c.node(to).name().to_string();
    let r = migrate(c.node(from).migration(), pid, Some(&name)).await?;
    println!("moved n{} -> n{}: {r}", from + 1, to + 1);
    Ok(())
}

/// Wait until `pid`, running on node `i`, has printed line `n`.
async fn wait_line(c: &TestCluster, i: usize, pid: Pid, n: u64) {
    let node = c.node(i).node().clone();
    // The log holds only its last bytes (the cap): under load a poll may
    // come after line `n` has already scrolled out, so wait for any line at
    // or past it.
    wait_until(
        &format!("{pid} on n{} to print line {n}", i + 1),
        WAIT,
        || {
            node.stdout_text(pid)
                .lines()
                .filter_map(|l| l.strip_prefix("line ")?.trim().parse::<u64>().ok())
                .max()
                .is_some_and(|k| k >= n)
        },
    )
    .await;
}

/// Every byte of a log, tagged with its stream, in order.
type Tagged = Vec<(Stream, u8)>;

fn tag(out: &mut Tagged, stream: Stream, data: &[u8]) {
    out.extend(data.iter().map(|b| (stream, *b)));
}

/// What `migrant print` writes when it is stopped after `steps` steps.
fn expected(pid: Pid, steps: u64) -> Tagged {
    let mut out = Vec::new();
    tag(
        &mut out,
        Stream::Stdout,
        format!("print pid={pid}\n").as_bytes(),
    );
    for n in 1..=steps {
        tag(&mut out, Stream::Stdout, format!("line {n}\n").as_bytes());
        if n % 100 == 0 {
            tag(&mut out, Stream::Stderr, format!("mark {n}\n").as_bytes());
        }
    }
    tag(
        &mut out,
        Stream::Stdout,
        format!("printed {steps} lines\n").as_bytes(),
    );
    out
}

/// A log as it was received: the dropped counts (with where they came) and
/// every byte.
#[derive(Default)]
struct Received {
    /// `(bytes received before the gap, bytes dropped)` per `Dropped` frame.
    gaps: Vec<(usize, u64)>,
    bytes: Tagged,
}

impl Received {
    fn push(&mut self, frame: &LogFrame) {
        match frame {
            LogFrame::Output { stream, data } => tag(&mut self.bytes, *stream, data),
            LogFrame::Dropped(n) => self.gaps.push((self.bytes.len(), *n)),
            LogFrame::End(_) => {}
        }
    }

    fn stdout(&self) -> String {
        let b: Vec<u8> = self
            .bytes
            .iter()
            .filter(|(s, _)| *s == Stream::Stdout)
            .map(|(_, b)| *b)
            .collect();
        String::from_utf8_lossy(&b).into_owned()
    }
}

/// Read `pid`'s log through the control API of node `via`, as `shoal logs`
/// (or `shoal logs -f`) does.
async fn read(
    c: &TestCluster,
    via: usize,
    pid: Pid,
    follow: bool,
) -> (Received, Option<ExitReport>) {
    let client = c.admin_client(via);
    let mut got = Received::default();
    let end = tokio::time::timeout(
        WAIT,
        client.logs(pid, follow, |f| {
            got.push(f);
            Ok(())
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("reading the log of {pid} through n{} timed out", via + 1))
    .unwrap_or_else(|e| panic!("reading the log of {pid} through n{}: {e}", via + 1));
    (got, end)
}

/// The number of steps `migrant print` made, from its last line.
fn steps_of(stdout: &str) -> u64 {
    let last = stdout
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("printed "))
        .and_then(|l| l.strip_suffix(" lines"))
        .unwrap_or_else(|| panic!("no `printed N lines` at the end of:\n{stdout}"));
    last.parse().expect("a step count")
}

/// Check a live log is the exact start of the whole output: every line
/// from the first, once, in order, up to where it ends.
fn assert_prefix(got: &Received, pid: Pid, what: &str) {
    assert!(got.gaps.is_empty(), "{what}: dropped {:?}", got.gaps);
    let lines = got.stdout().lines().count() as u64;
    assert!(lines > 1, "{what}: {lines} lines");
    // Every complete line so far, then at most part of the next.
    let want = expected(pid, lines + 1);
    assert!(
        got.bytes.len() <= want.len() && got.bytes[..] == want[..got.bytes.len()],
        "{what}: not the start of the output:\n{}",
        got.stdout()
    );
}

fn stopped(report: &Option<ExitReport>) -> bool {
    report
        .as_ref()
        .is_some_and(|r| r.reason == shoal_abi::process::ExitReason::Exited { code: 0 })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_whole_log_of_a_moved_process_is_read_from_every_node_and_followed() {
    let c = TestCluster::start(3).await;
    add_guest(&c, shoal_tests::MIGRANT, "migrant").await;
    // Prints a line every millisecond and allocates 2 KiB with it: its
    // memory grows while it moves.
    let pid = c
        .node(0)
        .node()
        .spawn_by_reference("migrant", vec!["print".into(), "2".into()])
        .await
        .expect("spawn");
    let mut line = 50;
    wait_line(&c, 0, pid, line).await;
    // A follower through n2 (where the process never is when it starts),
    // from before the first move to the exit: `shoal logs -f`'s path.
    let follower = {
        let client = c.admin_client(1);
        tokio::spawn(async move {
            let mut got = Received::default();
            let end = client
                .logs(pid, true, |f| {
                    got.push(f);
                    Ok(())
                })
                .await;
            (got, end)
        })
    };
    // n1 -> n2 -> n3 -> n1, printing all along.
    for (from, to) in [(0, 1), (1, 2), (2, 0)] {
        line += 300;
        wait_line(&c, from, pid, line).await;
        move_to(&c, from, pid, to)
            .await
            .unwrap_or_else(|e| panic!("move n{} -> n{}: {e}", from + 1, to + 1));
    }
    // A move called off after the freeze: it resumes on n1.
    line += 300;
    wait_line(&c, 0, pid, line).await;
    c.node(0)
        .migration()
        .faults
        .withhold_switches
        .store(1, Ordering::SeqCst);
    let err = move_to(&c, 0, pid, 1)
        .await
        .expect_err("the switch is withheld");
    println!("called off: {err}");
    assert!(matches!(err, MigrateError::Resumed { .. }), "{err}");
    assert!(c.node(0).node().router().is_local(pid));
    line += 300;
    wait_line(&c, 0, pid, line).await;
    // Live, from every node: the whole output so far.
    for via in 0..3 {
        let (got, end) = read(&c, via, pid, false).await;
        assert!(end.is_none(), "live, read through n{}: {end:?}", via + 1);
        assert_prefix(&got, pid, &format!("live, read through n{}", via + 1));
    }
    // A fourth move, so it ends on a node that is neither its origin nor
    // the node of its first stay.
    move_to(&c, 0, pid, 2).await.expect("move n1 -> n3");
    line += 300;
    wait_line(&c, 2, pid, line).await;
    c.node(2)
        .node()
        .send(Pid(0), pid, b"stop".to_vec())
        .expect("stop");
    let st = tokio::time::timeout(WAIT, c.node(2).node().wait(pid))
        .await
        .expect("it ends")
        .expect("it is known");
    assert!(st.success(), "{st}");
    let steps = steps_of(&c.node(2).node().stdout_text(pid));
    let want = expected(pid, steps);
    println!("{steps} lines, {} bytes", want.len());
    // Once every node knows it ended (the directory no longer has it).
    for d in c.running() {
        let raft = d.raft().clone();
        wait_until("every node to see the exit", WAIT, || {
            raft.state().is_gone(pid.0)
        })
        .await;
    }
    // After the exit, from every node: all of it, once, in order.
    for via in 0..3 {
        let (got, end) = read(&c, via, pid, false).await;
        assert!(got.gaps.is_empty(), "n{}: dropped {:?}", via + 1, got.gaps);
        assert_eq!(
            got.bytes.len(),
            want.len(),
            "read through n{} after the exit:\n{}",
            via + 1,
            got.stdout()
        );
        assert!(got.bytes == want, "read through n{} differs", via + 1);
        assert!(stopped(&end), "n{}: {end:?}", via + 1);
    }
    // Moving it, asked of a node it did not end on: it exited, and when
    // (#12 item 3; that node finds the one it ended on).
    match c.admin_client(1).migrate(pid, None).await {
        Err(shoal_api::ClientError::Gone { message, gone }) => {
            println!("{message}");
            assert_eq!(gone.pid, pid);
            assert!(gone.exited_unix_ms.is_some(), "{gone:?}");
            assert!(message.contains("exited with code 0 at "), "{message}");
        }
        other => panic!("expected 410 Gone, got {other:?}"),
    }
    // The follower got exactly the same bytes, and the exit.
    let (got, end) = tokio::time::timeout(WAIT, follower)
        .await
        .expect("the follower ends with the process")
        .expect("the follower task");
    let end = end.expect("the follower's stream");
    assert!(got.gaps.is_empty(), "follower: dropped {:?}", got.gaps);
    assert_eq!(got.bytes.len(), want.len(), "follower:\n{}", got.stdout());
    assert!(got.bytes == want, "the follower's bytes differ");
    assert!(stopped(&end), "follower: {end:?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn output_dropped_by_the_log_cap_is_counted_once_at_the_gap_across_moves() {
    let c = TestCluster::start_with(3, |cfg| cfg.node.log_bytes_max = 16 << 10).await;
    add_guest(&c, shoal_tests::MIGRANT, "migrant").await;
    let pid = c
        .node(0)
        .node()
        .spawn_by_reference("migrant", vec!["print".into(), "1".into()])
        .await
        .expect("spawn");
    // Each stay prints more than the cap holds.
    let mut line = 0;
    for (from, to) in [(0, 1), (1, 2)] {
        line += 3000;
        wait_line(&c, from, pid, line).await;
        move_to(&c, from, pid, to)
            .await
            .unwrap_or_else(|e| panic!("move n{} -> n{}: {e}", from + 1, to + 1));
    }
    line += 3000;
    wait_line(&c, 2, pid, line).await;
    c.node(2)
        .node()
        .send(Pid(0), pid, b"stop".to_vec())
        .expect("stop");
    let st = tokio::time::timeout(WAIT, c.node(2).node().wait(pid))
        .await
        .expect("it ends")
        .expect("it is known");
    assert!(st.success(), "{st}");
    let steps = steps_of(&c.node(2).node().stdout_text(pid));
    let want = expected(pid, steps);
    for via in 0..3 {
        let (got, end) = read(&c, via, pid, false).await;
        assert!(stopped(&end), "n{}: {end:?}", via + 1);
        // One gap, first, counting exactly the bytes that are not there.
        assert_eq!(got.gaps.len(), 1, "n{}: gaps {:?}", via + 1, got.gaps);
        let (at, dropped) = got.gaps[0];
        assert_eq!(at, 0, "n{}: the gap comes first", via + 1);
        assert_eq!(
            dropped as usize + got.bytes.len(),
            want.len(),
            "n{}: dropped {dropped} + held {} is not the {} bytes written",
            via + 1,
            got.bytes.len(),
            want.len()
        );
        assert!(
            got.bytes[..] == want[dropped as usize..],
            "n{}: what is held is not the newest output:\n{}",
            via + 1,
            got.stdout()
        );
        assert!(got.bytes.len() <= 16 << 10);
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_the_exit_a_node_holding_the_log_that_cannot_be_reached_is_named() {
    let mut c = TestCluster::start(3).await;
    add_guest(&c, shoal_tests::MIGRANT, "migrant").await;
    let pid = c
        .node(0)
        .node()
        .spawn_by_reference("migrant", vec!["print".into(), "1".into()])
        .await
        .expect("spawn");
    wait_line(&c, 0, pid, 100).await;
    move_to(&c, 0, pid, 1).await.expect("move n1 -> n2");
    wait_line(&c, 1, pid, 200).await;
    c.node(1)
        .node()
        .send(Pid(0), pid, b"stop".to_vec())
        .expect("stop");
    tokio::time::timeout(WAIT, c.node(1).node().wait(pid))
        .await
        .expect("it ends")
        .expect("it is known");
    let raft = c.node(2).raft().clone();
    wait_until("n3 to see the exit", WAIT, || raft.state().is_gone(pid.0)).await;
    // Its whole log is on n2 only; n2 stops.
    c.stop(1).await;
    let client = c.admin_client(2);
    let answer = tokio::time::timeout(WAIT, client.logs(pid, false, |_| Ok(()))).await;
    let e = answer
        .expect("an answer within the bound")
        .expect_err("n2 holds the log and cannot be reached");
    println!("{e}");
    assert_eq!(e.status(), Some(503), "{e}");
    assert!(e.to_string().contains("n2"), "{e}");
    // What n1 remembers (the output before the move) is not passed off
    // as the whole log.
    let client = c.admin_client(0);
    let e = tokio::time::timeout(WAIT, client.logs(pid, false, |_| Ok(())))
        .await
        .expect("an answer within the bound")
        .expect_err("n1 does not hold the whole log");
    assert_eq!(e.status(), Some(503), "{e}");
    c.shutdown().await;
}
