//! Failover (issue #16): three `shoal node start` processes in their own
//! network namespaces; the node running a process is killed with SIGKILL
//! and the process resumes on a survivor from its latest replicated
//! checkpoint, under its pid, as a new incarnation — or, with the default
//! `--restart never`, is shown `lost`. Read back through the CLI, as a user
//! would.

#![allow(clippy::unwrap_used)]

use crate::common;

use crate::netns::{deploy, lab3, ps_entry};
use common::netns::{wait_for, Lab};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Overall bound on any wait for the cluster to settle.
const SETTLE: Duration = Duration::from_secs(90);

/// The `line N` numbers of `migrant print`'s stdout, in order.
fn lines(stdout: &str) -> Vec<u64> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("line "))
        .map(|n| n.parse().expect("a line number"))
        .collect()
}

/// A process deployed with `--restart on-failure` on n3, checkpointed every
/// 200 ms onto another node, goes on after n3 is killed with SIGKILL: the
/// cluster gives it to a survivor when n3 is declared dead, it resumes
/// there under its pid from its latest checkpoint (its output goes on from
/// the step that checkpoint holds, not from 1), `shoal ps` shows it
/// running on its new node as incarnation 1, and `shoal events` says what
/// happened.
#[test]
fn a_process_whose_node_is_killed_resumes_on_a_survivor_from_its_checkpoint() {
    let mut lab = lab3();
    let pid = deploy_on(
        &lab,
        shoal_tests::MIGRANT,
        "n3",
        Some("on-failure"),
        &["--checkpoint-every", "200ms"],
        &["print", "1"],
    );
    let pid_text = pid.to_string();
    // Checkpointed at least twice, and well on its way.
    wait_for("two checkpoints of the process", SETTLE, || {
        ps_entry(&lab, 0, pid).is_some_and(|p| {
            p["restart"]["checkpoint_seq"]
                .as_u64()
                .is_some_and(|s| s >= 2)
        })
    });
    let p = ps_entry(&lab, 0, pid).unwrap();
    assert_eq!(p["restart"]["policy"], "on-failure", "{p}");
    assert_eq!(p["restart"]["incarnation"], 0, "{p}");
    let holders = p["restart"]["checkpoint_holders"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(holders.len(), 2, "{p}");
    assert_eq!(holders[0], "n3", "{p}");
    let before = lines(&lab.cli_ok(0, &["logs", &pid_text]));
    let printed_before = *before.last().unwrap();
    assert!(printed_before > 0);

    lab.kill(2);
    let killed = Instant::now();
    wait_for("the process to run on a survivor", SETTLE, || {
        ps_entry(&lab, 0, pid).is_some_and(|p| p["state"] == "running" && p["node"] != "n3")
    });
    let took = killed.elapsed();
    let p = ps_entry(&lab, 1, pid).unwrap();
    let now_on = p["node"].as_str().unwrap().to_string();
    println!(
        "process {pid} running on {now_on} {} ms after SIGKILL of n3",
        took.as_millis()
    );
    assert_eq!(p["restart"]["incarnation"], 1, "{p}");

    // It resumed from a checkpoint, not from the start, and its log goes on
    // with no gap and no repeat: output commit showed only what a recorded
    // checkpoint covered, the checkpoint carried the log, and the resumed
    // copy writes on from there. What a user saw before the kill is exactly
    // the start of what they see now.
    wait_for("the resumed process to print", SETTLE, || {
        lines(&lab.cli_ok(0, &["logs", &pid_text])).len() >= before.len() + 10
    });
    let after = lines(&lab.cli_ok(1, &["logs", &pid_text]));
    assert_eq!(after[0], 1, "the log lost its start");
    for w in after.windows(2) {
        assert_eq!(
            w[1],
            w[0] + 1,
            "a gap or a repeat in the log across the failover"
        );
    }
    assert_eq!(&after[..before.len()], &before[..]);
    println!(
        "printed {printed_before} visible lines on n3; the log on {now_on} goes on from them, {} lines now",
        after.len()
    );

    // `shoal events` tells it.
    let events = lab.cli_json(0, &["events", "--json"]);
    let resumed: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["pid"].as_u64() == Some(pid))
        .collect();
    assert_eq!(resumed.len(), 1, "{events}");
    let e = resumed[0];
    assert_eq!(e["kind"], "resumed", "{e}");
    assert_eq!(e["node"], "n3", "{e}");
    assert_eq!(e["to"], now_on.as_str(), "{e}");
    assert!(e["checkpoint_seq"].as_u64().unwrap() >= 2, "{e}");
    let text = lab.cli_ok(1, &["events"]);
    assert!(
        text.contains("resumed on") && text.contains("from checkpoint"),
        "{text}"
    );

    // It goes on being checkpointed where it is now.
    wait_for("a checkpoint on the new node", SETTLE, || {
        ps_entry(&lab, 0, pid)
            .is_some_and(|p| p["restart"]["checkpoint_holders"][0] == now_on.as_str())
    });
}

/// With the default policy (`never`), a process of a killed node does not
/// come back: `shoal ps` shows it `lost`, with the reason, and `shoal
/// events` records it.
#[test]
fn a_process_with_restart_never_is_shown_lost_when_its_node_dies() {
    let mut lab = lab3();
    let pid = deploy_on(&lab, shoal_tests::MIGRANT, "n3", None, &[], &["print", "1"]);
    wait_for("the process to be listed running", SETTLE, || {
        ps_entry(&lab, 0, pid).is_some_and(|p| p["state"] == "running")
    });
    assert!(ps_entry(&lab, 0, pid).unwrap()["restart"].is_null());
    lab.kill(2);
    wait_for("the process to be shown lost", SETTLE, || {
        ps_entry(&lab, 0, pid).is_some_and(|p| p["state"] == "lost")
    });
    let p = ps_entry(&lab, 1, pid).unwrap();
    assert_eq!(p["node"], "n3", "{p}");
    let events = lab.cli_json(1, &["events", "--json"]);
    let mine: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["pid"].as_u64() == Some(pid))
        .collect();
    assert_eq!(mine.len(), 1, "{events}");
    assert_eq!(mine[0]["kind"], "lost", "{events}");
    assert!(
        mine[0]["text"]
            .as_str()
            .unwrap()
            .contains("restart policy is never"),
        "{events}"
    );
}

/// A module that prints `started` and exits with the code it is given as
/// its first argument's length (no argument: 0).
const EXITER_WAT: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "started\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 8))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))
    ;; argc at 200, argv buffer size at 204: exit with (buffer size - argc*0)
    ;; minus the length of argv[0] + 1, i.e. the bytes of the other args.
    (drop (call $sizes (i32.const 200) (i32.const 204)))
    (call $exit (i32.sub (i32.load (i32.const 204)) (i32.const 7)))))
"#;

/// The events of `pid`, oldest first.
fn events_of(lab: &Lab, i: usize, pid: u64) -> Vec<Value> {
    let events = lab.cli_json(i, &["events", "--json"]);
    events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["pid"].as_u64() == Some(pid))
        .cloned()
        .collect()
}

/// `--restart on-failure`: a process that exits non-zero is started again,
/// fresh, under its pid, as a new incarnation, after a growing backoff;
/// one that exits 0 is not. `--restart always` restarts a clean exit too.
/// A kill stops the restarts.
#[test]
fn a_failing_process_restarts_fresh_with_backoff_until_killed() {
    let lab = lab3();
    let wasm = wat::parse_str(EXITER_WAT).unwrap();
    // argv[0] is the module name given to deploy: "exiter" (6 bytes + NUL).
    let path = lab.file("exiter", &wasm);
    let path = path.to_str().unwrap();
    lab.cli_ok(0, &["deploy", path, "--name", "exiter"]);
    // argv[1] = "xx": exits with 3 (two bytes and a NUL).
    let (failing, _) = deploy(
        &lab,
        0,
        &[
            "exiter",
            "--node",
            "n2",
            "--restart",
            "on-failure",
            "--",
            "xx",
        ],
    )[0]
    .clone();
    let (clean, _) = deploy(
        &lab,
        0,
        &["exiter", "--node", "n2", "--restart", "on-failure"],
    )[0]
    .clone();
    let (always, _) =
        deploy(&lab, 0, &["exiter", "--node", "n2", "--restart", "always"])[0].clone();
    wait_for("three restarts of the failing process", SETTLE, || {
        events_of(&lab, 0, failing).len() >= 3
    });
    wait_for("two restarts of the always process", SETTLE, || {
        events_of(&lab, 0, always).len() >= 2
    });
    let ev = events_of(&lab, 1, failing);
    for (n, e) in ev.iter().enumerate() {
        assert_eq!(e["kind"], "restarted", "{e}");
        assert_eq!(e["node"], "n2", "{e}");
        assert_eq!(e["incarnation"].as_u64(), Some(n as u64 + 1), "{e}");
        assert!(e["text"].as_str().unwrap().contains("code 3"), "{e}");
    }
    // The backoff grows: 100 ms, 200 ms, 400 ms ... between restarts.
    let at: Vec<u64> = ev
        .iter()
        .map(|e| e["at_unix_ms"].as_u64().unwrap())
        .collect();
    assert!(
        at[2] - at[1] >= at[1] - at[0],
        "the backoff did not grow: {at:?}"
    );
    // A clean exit is not a failure: gone, no event.
    wait_for("the clean process to be gone", SETTLE, || {
        ps_entry(&lab, 0, clean).is_none()
    });
    assert!(events_of(&lab, 0, clean).is_empty());
    // A kill ends the restarts (whether it is running or waiting).
    lab.cli_ok(0, &["kill", &failing.to_string()]);
    wait_for("the killed process to be gone", SETTLE, || {
        ps_entry(&lab, 0, failing).is_none()
    });
    let after_kill = events_of(&lab, 0, failing).len();
    // Its backoff is at most a few seconds by now: an `always` process
    // restarting twice more is proof enough that time has passed.
    let always_before = events_of(&lab, 0, always).len();
    wait_for("two more restarts of the always process", SETTLE, || {
        events_of(&lab, 0, always).len() >= always_before + 2
    });
    assert_eq!(events_of(&lab, 0, failing).len(), after_kill);
    lab.cli_ok(0, &["kill", &always.to_string()]);
}

/// A graceful stop: `shoal node stop` on n3 and SIGTERM to n2 each move
/// the node's process to another node by live migration (it goes on
/// printing where it lands, every line once) before the node exits;
/// `shoal node stop --kill` kills instead.
#[test]
fn a_graceful_stop_drains_the_node_and_kill_does_not() {
    let mut lab = lab3();
    let deploy_on = |lab: &Lab, node: &str| {
        deploy(
            lab,
            0,
            &[shoal_tests::MIGRANT, "--node", node, "--", "print", "1"],
        )[0]
        .0
    };
    let printed = |lab: &Lab, pid: u64| lines(&lab.cli_ok(0, &["logs", &pid.to_string()]));
    let on_n3 = deploy_on(&lab, "n3");
    let on_n2 = deploy_on(&lab, "n2");
    for pid in [on_n3, on_n2] {
        wait_for("the process to print", SETTLE, || {
            printed(&lab, pid).len() >= 20
        });
    }

    // `shoal node stop` on n3's data dir: it returns once n3 has gone.
    let out = lab.cli(2, &["node", "stop"]);
    assert!(
        out.status.success(),
        "node stop: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("n3's process to exit", SETTLE, || lab.exited(2));
    let p = ps_entry(&lab, 0, on_n3).expect("still listed");
    assert_eq!(p["state"], "running", "{p}");
    assert!(p["node"] == "n1" || p["node"] == "n2", "{p}");

    // n3 comes back (empty, and still cordoned by its drain), so that a
    // quorum remains when n2 goes: a node left alone without one suspends
    // its processes (its lease runs out).
    lab.start(2);
    // SIGTERM to n2: the same. (Its own process and the one from n3, if it
    // landed there, go to n1: the only node that takes processes.)
    lab.terminate(1);
    wait_for("n2's process to exit", SETTLE, || lab.exited(1));
    for pid in [on_n3, on_n2] {
        let p = ps_entry(&lab, 0, pid).expect("still listed");
        assert_eq!(p["node"], "n1", "{p}");
        let before = printed(&lab, pid).len();
        wait_for("it to go on printing on n1", SETTLE, || {
            printed(&lab, pid).len() >= before + 20
        });
        let all = printed(&lab, pid);
        for (i, n) in all.iter().enumerate() {
            assert_eq!(*n, i as u64 + 1, "process {pid}: a line lost or repeated");
        }
    }

    // `--kill`: no drain (there is nowhere left to go anyway, but it does
    // not even try): n1 exits and its processes are gone with it.
    let out = lab.cli(0, &["node", "stop", "--kill"]);
    assert!(
        out.status.success(),
        "node stop --kill: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("n1's process to exit", SETTLE, || lab.exited(0));
    assert!(
        lab.log(0).contains("stopping, killing 2 process(es)"),
        "{}",
        lab.log(0)
    );
}

/// Never two live copies under a partition: n3, running a process with
/// `--restart on-failure`, is cut off. Within its lease (half the 3 s
/// window) it suspends its processes, before the majority declares it dead
/// and resumes the process on n1 or n2; the old copy then prints nothing
/// more while the new one goes on. When the partition heals, n3 kills the
/// old copy before it may run again.
#[test]
fn a_partitioned_node_suspends_its_copy_before_the_majority_resumes_it_and_kills_it_on_return() {
    let lab = lab3();
    let pid = deploy_on(
        &lab,
        shoal_tests::MIGRANT,
        "n3",
        Some("on-failure"),
        &["--checkpoint-every", "200ms"],
        &["print", "1"],
    );
    let pid_text = pid.to_string();
    wait_for("a checkpoint", SETTLE, || {
        ps_entry(&lab, 0, pid).is_some_and(|p| p["restart"]["checkpoint_seq"].as_u64().is_some())
    });
    // Read through n3 itself (its socket, inside its namespace): the old
    // copy's output.
    let old_lines = || lines(&lab.cli_ok(2, &["logs", &pid_text]));
    wait_for("the process to print", SETTLE, || old_lines().len() >= 20);

    lab.partition(2);
    wait_for("n3 to suspend its processes", SETTLE, || {
        lab.log(2).contains("suspending this node's processes")
    });
    wait_for("the majority to resume the process", SETTLE, || {
        ps_entry(&lab, 0, pid).is_some_and(|p| p["state"] == "running" && p["node"] != "n3")
    });
    // The old copy is suspended: nothing it printed comes after the
    // resume. Its output now, and again once the new copy has printed 50
    // lines, is the same.
    let frozen = old_lines();
    let new_lines = || lines(&lab.cli_ok(0, &["logs", &pid_text]));
    let start = new_lines().len();
    wait_for("the new copy to print 50 lines", SETTLE, || {
        new_lines().len() >= start + 50
    });
    assert_eq!(old_lines(), frozen, "the cut-off copy went on printing");
    println!(
        "old copy stopped at line {}; new copy resumed at line {}",
        frozen.last().unwrap(),
        new_lines()[0]
    );

    lab.heal(2);
    wait_for("n3 to kill its old copy", SETTLE, || {
        lab.log(2).contains("killing the old copy here")
    });
    wait_for("n3 to be back in touch", SETTLE, || {
        lab.log(2).contains("no longer suspended")
    });
    let p = ps_entry(&lab, 2, pid).expect("listed");
    assert_ne!(p["node"], "n3", "{p}");
    // The old copy never printed again: what n3 still holds of it (its
    // final log) is what it had when suspended.
    let log = lab.log(2);
    let killed_at = log.find("killing the old copy here").unwrap();
    let back_at = log.find("no longer suspended").unwrap();
    assert!(
        killed_at < back_at,
        "the gate opened before the old copy was killed"
    );
}

/// A process of 32 MiB is checkpointed and replicated too: its manifest
/// (one entry per page) is larger than a volume chunk, which the replica's
/// fetch used to refuse, so no checkpoint of a memory past about 12 MiB
/// was ever recorded (found by the failover bench at 64 MiB).
#[test]
fn a_large_process_is_checkpointed_onto_a_replica() {
    let lab = lab3();
    let pid = deploy_on(
        &lab,
        shoal_tests::MIGRANT,
        "n3",
        Some("on-failure"),
        &["--checkpoint-every", "200ms"],
        &["hold", "32"],
    );
    wait_for("a replicated checkpoint of 32 MiB", SETTLE, || {
        ps_entry(&lab, 0, pid).is_some_and(|p| {
            p["restart"]["checkpoint_seq"].as_u64().is_some()
                && p["restart"]["checkpoint_holders"]
                    .as_array()
                    .is_some_and(|h| h.len() == 2)
        })
    });
}

/// Deploy `module <args>` on node `node` from n1's CLI (`restart`: its
/// `--restart` policy, `extra`: more deploy flags); its pid, checked to be
/// placed there.
fn deploy_on(
    lab: &Lab,
    module: &str,
    node: &str,
    restart: Option<&str>,
    extra: &[&str],
    args: &[&str],
) -> u64 {
    let mut argv = vec![module, "--node", node];
    if let Some(policy) = restart {
        argv.extend(["--restart", policy]);
    }
    argv.extend_from_slice(extra);
    argv.push("--");
    argv.extend_from_slice(args);
    let placed = deploy(lab, 0, &argv);
    assert_eq!(placed[0].1, node, "placed elsewhere");
    placed[0].0
}

/// The `at N` progress of a `tally send` process (0 before the first).
fn progress(lab: &Lab, pid: u64) -> u64 {
    reached(&lab.cli_ok(0, &["logs", &pid.to_string()]), "at ")
}

/// Exactly-once across a failover. A tally process (`--restart
/// on-failure`, on n3) answers numbered calls from a sender on n1 and one
/// on n2, each reply carrying its count for that caller and a nonce drawn
/// for the reply; n3 is killed with SIGKILL mid-stream. The tally resumes
/// on a survivor from its checkpoint and:
///
/// - every reply a sender got had the count equal to the call's number (a
///   call lost in the failover would give less, one taken twice more), so
///   no gap and no duplicate per sender;
/// - each sender's digest of the replies it saw equals the digest the
///   resumed tally keeps of the replies it produced: no sender ever saw a
///   reply of the lost history (output commit — the nonces would differ);
/// - the final counts are exact.
#[test]
fn a_tally_killed_mid_stream_resumes_and_counts_every_call_exactly_once() {
    const N: u64 = 150;
    let mut lab = lab3();
    let n_text = N.to_string();
    let tally_pid = deploy_on(
        &lab,
        shoal_tests::TALLY,
        "n3",
        Some("on-failure"),
        &[],
        &["count", "tally", "2", &n_text],
    );
    let mut senders = Vec::new();
    for node in ["n1", "n2"] {
        // Paced, so the stream is long also when calls are fast.
        senders.push(deploy_on(
            &lab,
            shoal_tests::TALLY,
            node,
            None,
            &[],
            &["send", "tally", &n_text, "30"],
        ));
    }
    wait_for("both senders past call 20", SETTLE, || {
        senders.iter().all(|p| progress(&lab, *p) >= 20)
    });
    let at_kill: Vec<u64> = senders.iter().map(|p| progress(&lab, *p)).collect();
    // What a user sees of the tally's output now, from n3.
    let seen_before = lab.cli_ok(0, &["logs", &tally_pid.to_string()]);
    lab.kill(2);
    println!("killed n3 with the senders at calls {at_kill:?} of {N}");
    assert!(
        at_kill.iter().all(|a| *a < N - 10),
        "the senders finished before the kill: make N larger"
    );

    let logs = |pid: u64| lab.cli_ok(0, &["logs", &pid.to_string()]);
    wait_for("both senders to finish", SETTLE * 2, || {
        senders
            .iter()
            .all(|p| logs(*p).contains("sent ") || logs(*p).contains("BAD"))
    });
    let mut digests = Vec::new();
    for p in &senders {
        let out = logs(*p);
        assert!(!out.contains("BAD"), "sender {p}: {out}");
        let line = out.lines().find(|l| l.starts_with("sent ")).unwrap();
        let digest = line.rsplit(' ').next().unwrap().to_string();
        assert_eq!(line, format!("sent {N} digest {digest}"));
        digests.push(digest);
    }

    let p = ps_entry(&lab, 0, tally_pid).unwrap();
    assert_eq!(p["state"], "running", "{p}");
    assert_ne!(p["node"], "n3", "{p}");
    assert_eq!(p["restart"]["incarnation"], 1, "{p}");
    wait_for("the tally's report", SETTLE, || {
        logs(tally_pid).contains("tally done")
    });
    let report = logs(tally_pid);
    // Its log: what a user saw before the kill is exactly its start (output
    // commit showed only what the checkpoint the copy resumed from covers,
    // and that checkpoint carried it; the nonces would differ otherwise),
    // and every call shows once, in order, per sender.
    assert!(
        report.starts_with(&seen_before),
        "the log changed under a reader across the failover:\nbefore:\n{seen_before}\nafter:\n{report}"
    );
    for p in &senders {
        let ks: Vec<u64> = report
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("reply {p} ")))
            .map(|rest| rest.split(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(
            ks,
            (1..=N).collect::<Vec<_>>(),
            "sender {p}'s calls in the log"
        );
    }
    for (p, digest) in senders.iter().zip(&digests) {
        let want = format!("tally {p} count {N} digest {digest}");
        assert!(
            report.lines().any(|l| l == want),
            "expected `{want}` in the tally's report:\n{report}"
        );
    }
    println!("both senders: {N} calls each, every reply from the surviving history");
}

/// FNV-1a 64, as `tally journal` computes it.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A process with a private volume and a growing heap (`tally journal`:
/// each call appends a line to a file it keeps open and keeps a new heap
/// block) is driven by a sender on n1; its node n3 is killed with SIGKILL
/// mid-stream. It resumes on a survivor with its files rolled back with its
/// memory to the checkpoint, and at the end its output (as `shoal logs`
/// shows it), its file and its heap equal an uninterrupted run's: every
/// line once, in order, nothing missing.
#[test]
fn a_process_with_a_volume_and_a_growing_heap_ends_as_an_uninterrupted_run_after_a_failover() {
    const N: u64 = 120;
    let mut lab = lab3();
    let n_text = N.to_string();
    let pid = deploy_on(
        &lab,
        shoal_tests::TALLY,
        "n3",
        Some("on-failure"),
        &["--volume", "/data"],
        &["journal", "journal", "/data", &n_text],
    );
    let sender = deploy_on(
        &lab,
        shoal_tests::TALLY,
        "n1",
        None,
        &[],
        &["send", "journal", &n_text, "30"],
    );
    wait_for("the sender past call 20", SETTLE, || {
        progress(&lab, sender) >= 20
    });
    lab.kill(2);
    let logs = |pid: u64| lab.cli_ok(0, &["logs", &pid.to_string()]);
    wait_for("the sender to finish", SETTLE * 2, || {
        let out = logs(sender);
        out.contains("sent ") || out.contains("BAD")
    });
    let out = logs(sender);
    assert!(!out.contains("BAD"), "sender: {out}");
    wait_for("the journal's last line", SETTLE, || {
        logs(pid).contains("journal done")
    });
    let p = ps_entry(&lab, 0, pid).unwrap();
    assert_ne!(p["node"], "n3", "{p}");
    assert_eq!(p["restart"]["incarnation"], 1, "{p}");

    let file: String = (1..=N).map(|k| format!("{k}\n")).collect();
    let mut want: String = (1..=N).map(|k| format!("got {k}\n")).collect();
    want.push_str(&format!(
        "journal done lines {N} bytes {} fnv {:016x} heap ok\n",
        file.len(),
        fnv(file.as_bytes())
    ));
    assert_eq!(logs(pid), want, "not what an uninterrupted run prints");
    println!("journal of {N} calls: output, file and heap as an uninterrupted run's");
}

/// Shared-volume writes are under output commit too. A process
/// (`--restart on-failure`, on n3, `tally files`) makes, step by step, a
/// directory in a shared volume (R=2), a file in it created exclusively
/// and written, and a rename of that file; n3 is SIGKILLed mid-stream.
/// Each of the three waited, captured inside its WASI call, for a
/// recorded checkpoint, and went to the cluster under its effect key; the
/// copy resumed from that checkpoint made it again, answered from the
/// first time. Meanwhile it keeps a file open and appends to it at every
/// step: no capture publishes it (checkpoints carry its copy), and after
/// the failover it holds every line once. So no step is refused as made
/// before (each would be:
/// `EEXIST` for the directory and the exclusive create, `ENOENT` for the
/// rename), and every file holds the line the resumed history wrote (the
/// lines carry a wall-clock nonce). Without the gate, the steps the lost
/// copy made after its last checkpoint stay in the volume and the
/// resumed copy's repeat of the first of them is refused.
#[test]
fn shared_volume_writes_of_a_process_killed_mid_stream_are_made_once_each() {
    const N: u64 = 60;
    let mut lab = lab3();
    lab.cli_ok(0, &["volume", "create", "steps", "--replicas", "2"]);
    let pid = deploy_on(
        &lab,
        shoal_tests::TALLY,
        "n3",
        Some("on-failure"),
        &["--volume", "steps:/shared"],
        &["files", "/shared", &N.to_string(), "20"],
    );
    let logs = logs_if_running;
    let at = |lab: &Lab| reached(&logs(lab, pid), "files at ");
    wait_for("the steps past 20", SETTLE, || at(&lab) >= 20);
    // Its open `log` was written at every step and captured at every
    // checkpoint, but nothing published it: the checkpoints carry it.
    let root = lab.cli_json(0, &["volume", "ls", "steps:/", "--json"]);
    let names: Vec<&str> = root
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(names.contains(&"d1"), "{root}");
    assert!(
        !names.contains(&"log"),
        "a capture published the open log: {root}"
    );
    lab.kill(2);
    wait_for("the steps to end", SETTLE * 2, || {
        let out = logs(&lab, pid);
        out.contains("files done") || out.contains("BAD")
    });
    let out = logs(&lab, pid);
    assert!(!out.contains("BAD"), "a step made twice or lost: {out}");
    let done = out
        .lines()
        .find_map(|l| l.strip_prefix("files done "))
        .unwrap_or_else(|| panic!("no summary: {out}"));
    let parts: Vec<&str> = done.split(' ').collect();
    assert_eq!(parts[0], N.to_string(), "{done}");
    assert_eq!(
        parts[2], parts[4],
        "a file does not hold what was written: {done}"
    );
    assert_eq!(
        parts[6], "ok",
        "the log kept open lost or repeated lines: {done}"
    );
    let p = ps_entry(&lab, 0, pid).unwrap();
    assert_ne!(p["node"], "n3", "{p}");
    assert_eq!(p["restart"]["incarnation"], 1, "{p}");
    // As a user sees the volume: one directory per step, each with `f`.
    let root = lab.cli_json(0, &["volume", "ls", "steps:/", "--json"]);
    let entries = root.as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(
        entries as u64,
        N + 1,
        "a directory per step and the log: {root}"
    );
    let last = lab.cli_json(0, &["volume", "ls", &format!("steps:/d{N}"), "--json"]);
    assert_eq!(last[0]["name"], "f", "{last}");
    println!("{N} steps of shared-volume writes across a failover: each made once");
}

/// A sender restarted fresh under its pid (`--restart always`, after it
/// ends) numbers its messages from 1 again; the receiver, which took
/// numbers 1..=5 from its first run, still takes them: they carry the
/// sender's new life, so they are not dropped as repeats. Seen in the
/// tally's log as the restarted sender's call 1 counted sixth.
#[test]
fn a_sender_restarted_fresh_under_its_pid_is_not_taken_for_a_repeat() {
    let lab = lab3();
    deploy_on(
        &lab,
        shoal_tests::TALLY,
        "n3",
        None,
        &[],
        &["count", "tally", "1", "5"],
    );
    let sender = deploy_on(
        &lab,
        shoal_tests::TALLY,
        "n1",
        Some("always"),
        &[],
        &["send", "tally", "5"],
    );
    let want = format!("reply {sender} 1 6 ");
    // Not "and the sender is in `ps`": its second run ends at once (call 1
    // answers count 6, which `send` calls BAD), so it spends most of its
    // time in a growing restart backoff, out of `ps`.
    wait_for(
        "the restarted sender's first call to be taken",
        SETTLE,
        || {
            let tally = lab
                .cli_json(0, &["ps", "--json"])
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["node"] == "n3")
                .and_then(|p| p["pid"].as_u64());
            tally.is_some_and(|t| {
                lab.cli_ok(0, &["logs", &t.to_string()])
                    .lines()
                    .any(|l| l.starts_with(&want))
            })
        },
    );
    let restarted = events_of(&lab, 0, sender);
    assert!(
        restarted.iter().any(|e| e["kind"] == "restarted"),
        "{restarted:?}"
    );
}

/// The largest `N` of the lines `<prefix>N` in `out` (0 if none): how far
/// a guest that prints its progress got.
fn reached(out: &str, prefix: &str) -> u64 {
    out.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|n| n.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

/// The logs of `pid`, read on n1; empty while no live node runs it
/// (between a kill and the resume, `shoal logs` cannot reach it).
fn logs_if_running(lab: &Lab, pid: u64) -> String {
    let out = lab.cli(0, &["logs", &pid.to_string()]);
    if out.status.success() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        String::new()
    }
}

/// Key-value writes are under output commit too. A process (`--restart
/// on-failure`, on n3) increments a replicated counter 120 times, 20 ms
/// apart, checking that each increment answers its own count; n3 is
/// SIGKILLed mid-stream. Each write waited, captured inside the call, for
/// a recorded checkpoint before it was made, and the copy resumed from
/// that checkpoint made it again under the same key, answered from the
/// first time. So every answer the resumed run sees equals its count (an
/// increment the lost history made after its last checkpoint would show
/// as a jump) and the counter ends at exactly 120, as `shoal kv get`
/// reads it.
#[test]
fn a_counter_incremented_by_a_process_killed_mid_stream_counts_every_increment_once() {
    const N: i64 = 120;
    let mut lab = lab3();
    let pid = deploy_on(
        &lab,
        shoal_tests::TALLY,
        "n3",
        Some("on-failure"),
        &[],
        &["kv", "counted", &N.to_string(), "20"],
    );
    let logs = logs_if_running;
    let at = |lab: &Lab| reached(&logs(lab, pid), "kv at ");
    wait_for("the counter past 30", SETTLE, || at(&lab) >= 30);
    lab.kill(2);
    wait_for("the counter's run to end", SETTLE * 2, || {
        let out = logs(&lab, pid);
        out.contains("kv done") || out.contains("BAD")
    });
    let out = logs(&lab, pid);
    assert!(
        !out.contains("BAD"),
        "an increment made twice or lost: {out}"
    );
    for e in events_of(&lab, 0, pid) {
        println!("event: {e}");
    }
    let p = ps_entry(&lab, 0, pid).unwrap();
    assert_ne!(p["node"], "n3", "{p}");
    assert_eq!(p["restart"]["incarnation"], 1, "{p}");
    let got = lab.cli_json(0, &["kv", "get", "counted", "count", "--json"]);
    assert_eq!(
        got["value_base64"],
        shoal_api::kv::base64_encode(&N.to_le_bytes()),
        "{got}"
    );
    println!("counter of {N} increments across a failover: exact");
}

/// Lock grants are under output commit too. Two processes (`--restart
/// on-failure`, on n3, checkpointed only when an effect or output needs
/// it: every hour otherwise) each draw a random lock name and take that
/// lock, one with `lock`, one with `try_lock`, and then wait without
/// output (`locker random`); n3 is SIGKILLed as soon as `shoal locks`
/// shows both grants. Each request waited, captured inside the
/// call, for a recorded checkpoint before it was sent, so the copy resumed
/// on a survivor is inside the same call with the same name, and takes
/// that same lock again as the new incarnation (a new, larger token).
/// Without the gate no checkpoint covers the draw: the resumed run draws
/// again (another name, but for one chance in a million), and the grant
/// every other process saw belongs to a history that never happened.
#[test]
fn a_lock_granted_to_the_lost_copy_is_the_one_its_resumed_copy_takes() {
    let mut lab = lab3();
    let deploy_random = |lab: &Lab, mode: &[&str]| {
        let mut args = vec!["random"];
        args.extend_from_slice(mode);
        deploy_on(
            lab,
            shoal_tests::LOCKER,
            "n3",
            Some("on-failure"),
            &["--checkpoint-every", "1h"],
            &args,
        )
    };
    let waiter = deploy_random(&lab, &["w"]);
    let trier = deploy_random(&lab, &["t", "try"]);
    // (name, token) of the lock `pid` holds, if any.
    let held = |lab: &Lab, pid: u64| -> Option<(String, u64)> {
        let list = lab.cli_json(0, &["locks", "--json"]);
        let lock = list
            .as_array()?
            .iter()
            .find(|l| l["holder_pid"].as_u64() == Some(pid))?;
        Some((lock["name"].as_str()?.to_string(), lock["token"].as_u64()?))
    };
    let mut first = Vec::new();
    for pid in [waiter, trier] {
        wait_for("the grant", SETTLE, || held(&lab, pid).is_some());
        first.push(held(&lab, pid).unwrap());
    }
    lab.kill(2);
    for (pid, (name, token)) in [waiter, trier].into_iter().zip(&first) {
        let started = Instant::now();
        while held(&lab, pid).is_none_or(|(_, t)| t <= *token) {
            assert!(
                started.elapsed() < SETTLE * 2,
                "no new grant to pid {pid} (it held {name} under {token}): locks {}, ps {:?}, events {:?}, logs {:?}",
                lab.cli_ok(0, &["locks", "--json"]),
                ps_entry(&lab, 0, pid),
                events_of(&lab, 0, pid),
                logs_if_running(&lab, pid)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let (again, _) = held(&lab, pid).unwrap();
        assert_eq!(
            &again, name,
            "pid {pid} held {name} before the failover and {again} after"
        );
        let p = ps_entry(&lab, 0, pid).unwrap();
        assert_ne!(p["node"], "n3", "{p}");
        assert_eq!(p["restart"]["incarnation"], 1, "{p}");
        println!("pid {pid}: {name} before the failover and after");
    }
}

/// A DOWN the lost copy took is not lost with it. A watcher (`--restart
/// on-failure`, on n3) holding the lock `watching` monitors a process on
/// n1, which is then killed; the watcher takes the DOWN, unlocks
/// `watching` (seen at once in `shoal locks`: an unlock is not held back)
/// and computes without blocking, so no checkpoint covers the DOWN it
/// took; n3 is SIGKILLed then. The copy resumed from the last
/// checkpoint still holds the monitor (it was in `recv_any`); the DOWN
/// will never be sent again, so the resume asks its monitors again and
/// the one whose target is gone gets its DOWN (`noproc`) at once. Without
/// that, the resumed watcher waits forever.
#[test]
fn a_down_taken_by_the_lost_copy_reaches_the_resumed_one() {
    let mut lab = lab3();
    let target = deploy_on(
        &lab,
        shoal_tests::TALLY,
        "n1",
        None,
        &[],
        &["work", "3600", "1"],
    );
    let target_text = target.to_string();
    let watcher = deploy_on(
        &lab,
        shoal_tests::TALLY,
        "n3",
        Some("on-failure"),
        &[],
        &["watch", &target_text, "watched"],
    );
    let logs = |lab: &Lab| logs_if_running(lab, watcher);
    wait_for("the watcher to monitor", SETTLE, || {
        logs(&lab).contains("monitoring")
    });
    assert!(
        lab.cli_ok(0, &["locks"]).contains("watching"),
        "the watcher holds `watching` before it monitors"
    );
    let out = lose_the_down(
        &mut lab,
        &target_text,
        watcher,
        "watching",
        "watched",
        "down ",
    );
    println!("resumed watcher: {}", out.trim_end());
}

/// Kill `target`, whose DOWN `pid` (on n3) takes by unlocking `lock`; then
/// SIGKILL n3, let the resumed copy go on (`release` in `bucket`) and wait
/// for its one line with `marker`. Returns its log.
fn lose_the_down(
    lab: &mut Lab,
    target: &str,
    pid: u64,
    lock: &str,
    bucket: &str,
    marker: &str,
) -> String {
    lab.cli_ok(0, &["kill", target]);
    wait_for("the DOWN to be taken", SETTLE, || {
        !lab.cli_ok(0, &["locks"]).contains(lock)
    });
    lab.kill(2);
    lab.cli_ok(0, &["kv", "set", bucket, "release", "1"]);
    wait_for("the resumed copy to take its DOWN", SETTLE * 2, || {
        logs_if_running(lab, pid).contains(marker)
    });
    let out = logs_if_running(lab, pid);
    assert!(!out.contains("BAD"), "{out}");
    assert_eq!(out.matches(marker).count(), 1, "one `{marker}`: {out}");
    let p = ps_entry(lab, 0, pid).unwrap();
    assert_ne!(p["node"], "n3", "{p}");
    assert_eq!(p["restart"]["incarnation"], 1, "{p}");
    out
}

/// The DOWN that ends a call is not lost with the caller either. A caller
/// (`--restart on-failure`, on n3) holding the lock `calling` calls a
/// process on n1 that never answers, with a one-hour deadline. The callee
/// is protected too, so once a checkpoint of it covers the call's receipt
/// it acknowledges the call, and the caller's outbox lets it go; the test
/// waits for two more checkpoints of each, so the caller's latest one no
/// longer holds the call to send again. The callee is killed, so the call
/// fails (`Killed`), and the caller unlocks `calling` and computes without
/// blocking, so no checkpoint covers the DOWN it took; n3 is SIGKILLed
/// then. The copy resumed from the last checkpoint is inside the same
/// call; the callee's DOWN will never be sent again, so the resume asks
/// whether the callee is still there and, as it is gone, the call fails at
/// once (`NoProcess`). Without that, the resumed caller waits for the
/// call's deadline, an hour.
#[test]
fn the_down_of_a_call_taken_by_the_lost_copy_reaches_the_resumed_one() {
    let mut lab = lab3();
    let often = ["--checkpoint-every", "200ms"];
    let callee = deploy_on(
        &lab,
        shoal_tests::TALLY,
        "n1",
        Some("on-failure"),
        &often,
        &["work", "3600", "1"],
    );
    let callee_text = callee.to_string();
    let caller = deploy_on(
        &lab,
        shoal_tests::TALLY,
        "n3",
        Some("on-failure"),
        &often,
        &["callwait", &callee_text, "called"],
    );
    let logs = |lab: &Lab| logs_if_running(lab, caller);
    wait_for("the caller to call", SETTLE, || {
        logs(&lab).contains("calling")
    });
    let seq = |lab: &Lab, pid: u64| {
        ps_entry(lab, 0, pid)
            .and_then(|p| p["restart"]["checkpoint_seq"].as_u64())
            .unwrap_or(0)
    };
    for pid in [callee, caller] {
        let from = seq(&lab, pid);
        wait_for("two more checkpoints", SETTLE, || {
            seq(&lab, pid) >= from + 2
        });
    }
    assert!(
        lab.cli_ok(0, &["locks"]).contains("calling"),
        "the caller holds `calling` while it calls"
    );
    let out = lose_the_down(
        &mut lab,
        &callee_text,
        caller,
        "calling",
        "called",
        "call ended",
    );
    assert!(
        out.contains("call ended Err(NoProcess)"),
        "the resumed copy's call fails for want of its callee: {out}"
    );
    println!("resumed caller: {}", out.trim_end());
}

/// Spawns are under output commit too. A spawner (`--restart on-failure`,
/// on n3) starts 60 children, 20 ms apart, odd ones on its own node with
/// `spawn` and even ones on n1 with `spawn_on`; each child counts itself in
/// a bucket (`children`, and its own key `child-<i>`) and exits. n3 is
/// SIGKILLed past the 30th. Each spawn waited, captured inside the call,
/// for a recorded checkpoint, and its child was recorded as the spawn's
/// effect before it ran, so the copy resumed inside the same `spawn`
/// finds the first child instead of starting a second; a `spawn_on` whose
/// request n3 never sent is asked again by the resumed copy, and n1
/// starts that child once. At the end every `child-*` key counts 1 (no
/// child started twice), every child on n1 ran, and at most one child on
/// n3 is missing (started there just before the kill, it died with the
/// node, perhaps after counting itself in `children`).
#[test]
fn children_spawned_by_a_process_killed_mid_stream_start_once_each() {
    const N: usize = 60;
    let mut lab = lab3();
    let n = N.to_string();
    let pid = deploy_on(
        &lab,
        shoal_tests::TALLY,
        "n3",
        Some("on-failure"),
        &["--name", "spawner"],
        &["spawn", "spawner", "kids", &n, "20", "n1"],
    );
    let logs = |lab: &Lab| logs_if_running(lab, pid);
    let at = |lab: &Lab| reached(&logs(lab), "spawn at ");
    wait_for("the spawner past 30", SETTLE, || at(&lab) >= 30);
    lab.kill(2);
    wait_for("the spawner's run to end", SETTLE * 2, || {
        let out = logs(&lab);
        out.contains("spawn done") || out.contains("BAD")
    });
    let out = logs(&lab);
    assert!(!out.contains("BAD"), "a spawn failed: {out}");
    // Every child that runs ends at once: wait until none runs.
    wait_for("the children to end", SETTLE, || {
        let list = lab.cli_json(0, &["ps", "--json"]);
        list.as_array()
            .unwrap()
            .iter()
            .all(|p| p["pid"].as_u64() == Some(pid) || p["state"] != "running")
    });
    let keys: Vec<String> = lab
        .cli_json(0, &["kv", "ls", "kids", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["key"].as_str())
        .filter(|k| k.starts_with("child-"))
        .map(str::to_string)
        .collect();
    let count_of = |key: &str| {
        let got = lab.cli_json(0, &["kv", "get", "kids", key, "--json"]);
        shoal_api::kv::base64_decode(got["value_base64"].as_str().unwrap())
            .ok()
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(i64::from_le_bytes)
            .unwrap()
    };
    let counted = count_of("children");
    // Each child counts its own runs under its key: a child started twice
    // shows 2 there.
    let twice: Vec<(String, i64)> = keys
        .iter()
        .map(|k| (k.clone(), count_of(k)))
        .filter(|(_, runs)| *runs != 1)
        .collect();
    let missing: Vec<usize> = (1..=N)
        .filter(|i| !keys.contains(&format!("child-{i}")))
        .collect();
    println!(
        "{counted} children ran under {} keys; missing {missing:?}",
        keys.len()
    );
    assert!(twice.is_empty(), "children started twice: {twice:?}");
    // A child on n3 killed between its two increments counted itself in
    // `children` only: it is the missing one.
    assert!(
        counted >= keys.len() as i64 && counted <= (keys.len() + missing.len()) as i64,
        "children started twice: {counted} ran under {} keys",
        keys.len()
    );
    assert!(
        missing.iter().all(|i| i % 2 == 1) && missing.len() <= 1,
        "children missing: {missing:?}"
    );
    let p = ps_entry(&lab, 0, pid).unwrap();
    assert_ne!(p["node"], "n3", "{p}");
    assert_eq!(p["restart"]["incarnation"], 1, "{p}");
}

/// A cluster of one still runs a protected process's output. With no other
/// member to hold its checkpoints, the node records them alone (they could
/// not survive it anyway), so what they cover is released: a `tally kv`
/// deployed `--restart on-failure` on a lone node makes its 20 increments
/// and its log shows them. Before, no checkpoint was ever recorded there,
/// and the first write waited for ever.
#[test]
fn a_protected_process_on_a_lone_node_releases_its_output() {
    let mut lab = Lab::new(1);
    lab.start_args = vec!["--dead-after".into(), "3s".into()];
    lab.start_all();
    let pid = deploy_on(
        &lab,
        shoal_tests::TALLY,
        "n1",
        Some("on-failure"),
        &[],
        &["kv", "alone", "20", "0"],
    );
    wait_for("the counter's run to end", SETTLE, || {
        let out = logs_if_running(&lab, pid);
        out.contains("kv done") || out.contains("BAD")
    });
    let out = logs_if_running(&lab, pid);
    assert!(out.contains("kv done 20") && !out.contains("BAD"), "{out}");
    let got = lab.cli_json(0, &["kv", "get", "alone", "count", "--json"]);
    assert_eq!(
        got["value_base64"],
        shoal_api::kv::base64_encode(&20i64.to_le_bytes()),
        "{got}"
    );
    let p = ps_entry(&lab, 0, pid).unwrap();
    println!("lone node: {p}");
}
