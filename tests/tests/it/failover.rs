//! Failover (issue #16): three `shoal node start` processes in their own
//! network namespaces; the node running a process is killed with SIGKILL
//! and the process resumes on a survivor from its latest replicated
//! checkpoint, under its pid, as a new incarnation — or, with the default
//! `--restart never`, is shown `lost`. Read back through the CLI, as a user
//! would.

#![allow(clippy::unwrap_used)]

use crate::common;

use common::netns::{wait_for, Lab};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Overall bound on any wait for the cluster to settle.
const SETTLE: Duration = Duration::from_secs(90);

fn lab3() -> Lab {
    let mut lab = Lab::new(3);
    lab.start_args = vec!["--dead-after".into(), "3s".into()];
    lab.start_all();
    lab
}

/// The pid and node of each process `deploy --json` started.
fn deploy(lab: &Lab, i: usize, args: &[&str]) -> Vec<(u64, String)> {
    let mut argv = vec!["deploy", "--json"];
    argv.extend_from_slice(args);
    let v = lab.cli_json(i, &argv);
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["pid"].as_u64().unwrap(),
                s["node"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `shoal ps --json` on node `i`: the entry of `pid`.
fn ps_entry(lab: &Lab, i: usize, pid: u64) -> Option<Value> {
    let list = lab.cli_json(i, &["ps", "--json"]);
    list.as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"].as_u64() == Some(pid))
        .cloned()
}

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
    let placed = deploy(
        &lab,
        0,
        &[
            shoal_tests::MIGRANT,
            "--node",
            "n3",
            "--restart",
            "on-failure",
            "--checkpoint-every",
            "200ms",
            "--",
            "print",
            "1",
        ],
    );
    let (pid, on) = placed[0].clone();
    assert_eq!(on, "n3");
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

    // It resumed from a checkpoint, not from the start: its first line on
    // the survivor continues the count.
    wait_for("the resumed process to print", SETTLE, || {
        lines(&lab.cli_ok(0, &["logs", &pid_text])).len() >= 10
    });
    let after = lines(&lab.cli_ok(1, &["logs", &pid_text]));
    let first = after[0];
    assert!(
        first > 1,
        "the resumed process started over: first line {first}"
    );
    assert!(
        first <= printed_before + 1 + 1_000_000,
        "resumed past anything printed: {first} vs {printed_before}"
    );
    for w in after.windows(2) {
        assert_eq!(w[1], w[0] + 1, "lines out of order after the resume");
    }
    println!(
        "printed {printed_before}+ lines on n3; resumed at line {first} (the checkpoint's step + 1)"
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
    let placed = deploy(
        &lab,
        0,
        &[shoal_tests::MIGRANT, "--node", "n3", "--", "print", "1"],
    );
    let (pid, _) = placed[0].clone();
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
