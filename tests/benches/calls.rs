//! Calls between processes on a 3-node loopback cluster (mutual TLS),
//! measured inside real guests (`kv_client` against the `kv` server), with
//! the plain message round trip measured the same way in the same run, and
//! Erlang/OTP's `gen_server:call` on this machine as the anchor.
//!
//! - local call round trip: `kv_client bench` and `kv` on n1 (p50/p99);
//! - cross-node call round trip: caller on n1, server on n2 (p50/p99);
//! - cross-node plain message round trip: `kv_client msgbench` on n1 and a
//!   `ping_pong pong` on n2 (`send` then `recv`), and locally on n1;
//! - calls/s with 64 callers: 64 `kv_client stream` on n1 against one `kv`
//!   on n2, every reply checked in the guest;
//! - Erlang: `gen_server:call` to a local server, timed by the Erlang VM
//!   itself (`erl -noshell`), if `erl` is installed (Debian `erlang-base`);
//!   otherwise the bench says so.
//!
//! Run with `cargo bench -p shoal-tests --bench calls`. Prints figures with
//! the issue's aims and ratios beside them; never fails on a slow machine.

#[allow(dead_code)]
#[path = "../tests/it/common/cluster.rs"]
mod cluster;

use cluster::TestCluster;
use shoal_runtime::Pid;
use std::process::Command;
use std::time::{Duration, Instant};

/// Measured rounds per latency figure (after a tenth as many warm-up ones).
const ROUNDS: usize = 20_000;
/// Concurrent callers for the throughput figure.
const CALLERS: usize = 64;
/// Calls each of them makes.
const CALLS_EACH: u64 = 2_000;

/// A latency line a `kv_client bench`/`msgbench` printed.
#[derive(Debug, Clone, Copy)]
struct Lat {
    p50_us: f64,
    p99_us: f64,
}

fn field(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

async fn spawn(c: &TestCluster, i: usize, argv: &[&str]) -> Pid {
    let args = argv[1..].iter().map(|s| s.to_string()).collect();
    c.node(i)
        .node()
        .spawn_by_reference(argv[0], args)
        .await
        .unwrap_or_else(|code| panic!("spawn {argv:?} on node {i}: error {code}"))
}

/// Run a `kv_client` latency mode on n1 and read its figures.
async fn latency(c: &TestCluster, mode: &str, target: Pid) -> Lat {
    let n = ROUNDS.to_string();
    let pid = spawn(c, 0, &["kv_client", mode, &target.0.to_string(), &n]).await;
    let node = c.node(0).node();
    let st = node.wait(pid).await.expect("known");
    let out = node.stdout_text(pid);
    assert!(st.success(), "{mode}: {st}: {out}");
    Lat {
        p50_us: field(&out, "p50_us"),
        p99_us: field(&out, "p99_us"),
    }
}

async fn ready(c: &TestCluster, i: usize, pid: Pid, text: &str) {
    let node = c.node(i).node().clone();
    cluster::wait_until(&format!("{pid} ready"), Duration::from_secs(60), || {
        node.stdout_text(pid).contains(text)
    })
    .await;
}

/// The Erlang program, run by `erl -noshell -eval`: a gen_server module
/// answering `{echo, Bin}` with `Bin`, compiled from source at start (so
/// the calling loop is compiled code too, not the shell's interpreter), then
/// called `@ROUNDS@` times after `@WARM@` warm-up calls, each timed with
/// `erlang:monotonic_time`; prints `p50_us=.. p99_us=.. mean_us=..`.
const ERLANG_PROGRAM: &str = r#"Src = "-module(shoal_anchor).
-behaviour(gen_server).
-export([init/1, handle_call/3, handle_cast/2, run/2]).
init(_) -> {ok, nil}.
handle_call({echo, B}, _, S) -> {reply, B, S}.
handle_cast(_, S) -> {noreply, S}.
once(Pid, P) -> T0 = erlang:monotonic_time(nanosecond), P = gen_server:call(Pid, {echo, P}), erlang:monotonic_time(nanosecond) - T0.
run(Pid, N) -> P = binary:copy(<<7>>, 16), [once(Pid, P) || _ <- lists:seq(1, N)].
",
{ok, Toks, _} = erl_scan:string(Src),
Split = fun Split([], _, Out) -> lists:reverse(Out); Split([{dot, _} = D | T], Acc, Out) -> Split(T, [], [lists:reverse([D | Acc]) | Out]); Split([H | T], Acc, Out) -> Split(T, [H | Acc], Out) end,
Forms = [begin {ok, F} = erl_parse:parse_form(Ts), F end || Ts <- Split(Toks, [], [])],
{ok, Mod, Bin} = compile:forms(Forms, []),
{module, Mod} = code:load_binary(Mod, "shoal_anchor.erl", Bin),
{ok, Pid} = gen_server:start(shoal_anchor, [], []),
_ = shoal_anchor:run(Pid, @WARM@),
Sorted = lists:sort(shoal_anchor:run(Pid, @ROUNDS@)),
At = fun(P) -> lists:nth(1 + trunc((length(Sorted) - 1) * P), Sorted) / 1000 end,
io:format("p50_us=~.2f p99_us=~.2f mean_us=~.2f~n", [At(0.5), At(0.99), lists:sum(Sorted) / length(Sorted) / 1000]),
halt()."#;

fn erlang_program(rounds: usize) -> String {
    ERLANG_PROGRAM
        .replace("@WARM@", &(rounds / 10).to_string())
        .replace("@ROUNDS@", &rounds.to_string())
}

/// Erlang's local `gen_server:call` round trip, or why there is none.
fn erlang_anchor() -> Result<Lat, String> {
    let out = Command::new("erl")
        .args(["-noshell", "-eval", &erlang_program(ROUNDS)])
        .output()
        .map_err(|e| format!("`erl` could not be run ({e}): install Debian's erlang-base"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("p50_us="))
        .ok_or_else(|| {
            format!(
                "`erl` printed no figure (exit {:?}): {} {}",
                out.status.code(),
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })?;
    Ok(Lat {
        p50_us: field(line, "p50_us"),
        p99_us: field(line, "p99_us"),
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let c = TestCluster::start(3).await;
    c.add_guest(0, shoal_tests::KV, "kv").await;
    c.add_guest(0, shoal_tests::KV_CLIENT, "kv_client").await;
    c.add_guest(0, shoal_tests::PING_PONG, "ping_pong").await;

    let local_server = spawn(&c, 0, &["kv"]).await;
    ready(&c, 0, local_server, "kv ready").await;
    let remote_server = spawn(&c, 1, &["kv"]).await;
    ready(&c, 1, remote_server, "kv ready").await;
    let local_pong = spawn(&c, 0, &["ping_pong", "pong"]).await;
    let remote_pong = spawn(&c, 1, &["ping_pong", "pong"]).await;

    let local_call = latency(&c, "bench", local_server).await;
    let local_msg = latency(&c, "msgbench", local_pong).await;
    let remote_call = latency(&c, "bench", remote_server).await;
    let remote_msg = latency(&c, "msgbench", remote_pong).await;
    let erlang = erlang_anchor();

    println!("calls, measured in the guest ({ROUNDS} rounds each, 16-byte payloads):");
    println!(
        "  local call round trip (n1 -> n1):          p50 {:>7.1} us  p99 {:>7.1} us   (aim p50 <= 5 us)",
        local_call.p50_us, local_call.p99_us
    );
    println!(
        "  local message round trip (send + recv):    p50 {:>7.1} us  p99 {:>7.1} us   call/message p50 = {:.2}",
        local_msg.p50_us,
        local_msg.p99_us,
        local_call.p50_us / local_msg.p50_us
    );
    match &erlang {
        Ok(e) => println!(
            "  Erlang/OTP gen_server:call, local:         p50 {:>7.2} us  p99 {:>7.2} us   Shoal/Erlang p50 = {:.1}",
            e.p50_us,
            e.p99_us,
            local_call.p50_us / e.p50_us
        ),
        Err(why) => println!("  Erlang/OTP gen_server:call: NOT MEASURED: {why}"),
    }
    println!(
        "  cross-node call round trip (n1 -> n2):     p50 {:>7.1} us  p99 {:>7.1} us",
        remote_call.p50_us, remote_call.p99_us
    );
    println!(
        "  cross-node message round trip (n1 <-> n2): p50 {:>7.1} us  p99 {:>7.1} us   call/message p50 = {:.2} (aim <= 1.2)",
        remote_msg.p50_us,
        remote_msg.p99_us,
        remote_call.p50_us / remote_msg.p50_us
    );

    // Throughput: 64 callers on n1, one server on n2, every reply checked.
    let each = CALLS_EACH.to_string();
    let s = remote_server.0.to_string();
    let t = Instant::now();
    let mut callers = Vec::with_capacity(CALLERS);
    for _ in 0..CALLERS {
        callers.push(spawn(&c, 0, &["kv_client", "stream", &s, &each]).await);
    }
    let node = c.node(0).node().clone();
    for pid in &callers {
        let st = node.wait(*pid).await.expect("known");
        let out = node.stdout_text(*pid);
        assert!(st.success(), "{st}: {out}");
        assert!(out.contains(&format!("ok={each} bad=0 errors=0")), "{out}");
    }
    let took = t.elapsed();
    let total = CALLERS as u64 * CALLS_EACH;
    let rate = total as f64 / took.as_secs_f64();
    println!(
        "  {CALLERS} callers on n1 -> one server on n2:   {total} calls in {:.2} s = {rate:.0} calls/s   (aim >= 50000)",
        took.as_secs_f64()
    );
    c.shutdown().await;
}
