//! `kv_client`: the client half of the calls example (`kv` is the service).
//!
//! Modes (first argument):
//!
//! - `stream <server> <count> [<timeout_ms>]`: `count` calls `Echo(i, payload)`
//!   in a row (payload: 16 bytes derived from `i`), each checked against its
//!   request. Prints `progress <i>` every 500 calls and at the end
//!   `stream done calls=<n> ok=<ok> bad=<bad> errors=<e> first_error=<E>`,
//!   then exits 0 (1 if any call failed or mismatched).
//! - `kv <server>`: Put then Get of a few keys; prints `kv ok` or `kv bad`.
//! - `hold <server> <timeout_ms>`: one `Hold(7)` call. Prints `calling`
//!   first, then `result ok released=<n>` or `result err=<NAME> reason=<r>
//!   ms=<elapsed>`, then every plain message already queued, oldest first,
//!   as `mail <text>`, then `done`.
//! - `monitor <pid>`: monitors `pid`, prints `monitoring`, waits for its
//!   DOWN and prints `down reason=<r>`.
//! - `unwatch <pid>`: monitors `pid`, withdraws that monitor
//!   (`shoal::demonitor`), monitors it again, prints `unwatched`, then
//!   waits for a DOWN of `pid` and prints `down ref=<first|second>
//!   reason=<r>` (exit 0 only for `second`: the withdrawn one never fires).
//! - `whereis <name>`: prints `whereis <pid>` or `whereis err=<ERROR>`.
//! - `byname <name>`: a Put and a Get by name (`shoal::call_name`); prints
//!   `byname ok` or `byname err=<ERROR>`.
//! - `group <group> <count>`: `count` calls `Echo` to the group
//!   (`shoal::call_group`), each checked; prints `group done calls=<n>
//!   ok=<ok> bad=<bad> errors=<e>` and `served_by <pid> <n>` per member.
//! - `noproc <pid>`: a call to a pid that does not exist: prints
//!   `result err=<NAME>`.
//! - `request <server>`: `hold` through the selective receive: one
//!   `Hold(7)` with `shoal::send_request`, prints `requested`, then waits
//!   only for its answer (`shoal::receive_response`, no deadline) and
//!   prints `result ...`, the queued mail and `done` as `hold` does.
//! - `from <pid>`: prints `waiting`, waits (`shoal::recv_from`, no
//!   deadline) for the first message from `<pid>` only and prints
//!   `from <text>`, then the other mail, oldest first, as `mail <text>`,
//!   then `done`.
//! - `groupstream <group> <count> <pause_ms>`: `count` calls `Echo` to the
//!   group through `shoal::call_group` (which fails over to another member
//!   when the one called is found down), each checked, `pause_ms` apart.
//!   Prints `progress <i>` every 50 calls and at the end `groupstream done
//!   calls=<n> ok=<ok> bad=<bad> errors=<e> first_error=<E>
//!   slowest_ms=<ms>`.
//! - `bench <server> <count>` / `msgbench <pong> <count>`: round-trip
//!   latency measured in the guest, after `count / 10` unmeasured warm-up
//!   rounds: `count` calls `Echo(i, 16 bytes)` (`bench`), or `count` plain
//!   16-byte messages to a `ping_pong pong` each received back with `recv`
//!   (`msgbench`). Prints `<mode> n=<count> p50_us=<p50> p99_us=<p99>
//!   mean_us=<mean>`.
//! - `fanout <count> <server>...`: `count` `Echo` requests to each server,
//!   all pending at once, then collects the answers newest first (each
//!   with its own `receive_response`); prints `fanout ok=<n> bad=<b>
//!   errors=<e>`.

use kv_proto::{Req, Resp};
use shoal::{Error, Incoming, Pid};
use std::time::{Duration, Instant};

fn pid_arg(args: &[String], i: usize) -> Pid {
    args.get(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| usage())
}

fn usage() -> ! {
    eprintln!("usage: kv_client stream <server> <count> [<timeout_ms>] | kv <server> | hold <server> <timeout_ms> | monitor <pid> | noproc <pid>");
    std::process::exit(2)
}

fn reason_of(e: &Error) -> String {
    match e {
        Error::CalleeDown(r) => format!("{r:?}"),
        _ => "-".into(),
    }
}

fn payload(i: u64) -> Vec<u8> {
    (0..16u64)
        .map(|k| (i.wrapping_mul(31).wrapping_add(k)) as u8)
        .collect()
}

fn stream(server: Pid, count: u64, timeout: Duration) -> bool {
    let (mut ok, mut bad, mut errors) = (0u64, 0u64, 0u64);
    let mut first_error = String::from("-");
    for i in 0..count {
        match shoal::call::<Req, Resp>(server, &Req::Echo(i, payload(i)), Some(timeout)) {
            Ok(Resp::Echo(n, data)) if n == i && data == payload(i) => ok += 1,
            Ok(other) => {
                bad += 1;
                eprintln!("call {i}: mismatched reply {other:?}");
            }
            Err(e) => {
                errors += 1;
                if first_error == "-" {
                    first_error = format!("{}@{i}", e.name());
                }
            }
        }
        if (i + 1) % 500 == 0 {
            println!("progress {}", i + 1);
        }
    }
    println!(
        "stream done calls={count} ok={ok} bad={bad} errors={errors} first_error={first_error}"
    );
    bad == 0 && errors == 0
}

/// Run `round` (`count / 10` times unmeasured, then `count` times) and
/// print `<what> n=<count> p50_us=.. p99_us=.. mean_us=..`.
fn measure(what: &str, count: usize, mut round: impl FnMut(u64) -> bool) -> bool {
    for i in 0..count / 10 {
        if !round(i as u64) {
            return false;
        }
    }
    let mut lat = Vec::with_capacity(count);
    for i in 0..count {
        let t = Instant::now();
        if !round(i as u64) {
            println!("{what} failed at {i}");
            return false;
        }
        lat.push(t.elapsed());
    }
    lat.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let at = |p: f64| us(lat[((lat.len().max(1) - 1) as f64 * p) as usize]);
    let mean = us(lat.iter().sum::<Duration>()) / lat.len().max(1) as f64;
    println!(
        "{what} n={count} p50_us={:.1} p99_us={:.1} mean_us={mean:.1}",
        at(0.5),
        at(0.99)
    );
    true
}

/// Print the outcome of a `Hold(7)` call, then the mail that waited.
fn report(r: Result<Resp, Error>, start: Instant) {
    let ms = start.elapsed().as_millis();
    match &r {
        Ok(Resp::Released(n)) => println!("result ok released={n}"),
        Ok(other) => println!("result bad {other:?}"),
        Err(e) => println!("result err={} reason={} ms={ms}", e.name(), reason_of(e)),
    }
    // Mail that came while the call waited is all still there, in order.
    while let Ok(m) = shoal::recv(Some(Duration::ZERO)) {
        println!("mail {}", String::from_utf8_lossy(&m.data));
    }
    println!("done");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("");
    let good = match mode {
        "stream" => {
            let count = args
                .get(3)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| usage());
            let timeout_ms = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(30_000);
            stream(pid_arg(&args, 2), count, Duration::from_millis(timeout_ms))
        }
        "kv" => {
            let server = pid_arg(&args, 2);
            let t = Some(shoal::DEFAULT_CALL_TIMEOUT);
            let mut good = true;
            for k in 0..4u8 {
                let key = format!("key{k}");
                let put: Result<Resp, _> =
                    shoal::call(server, &Req::Put(key.clone(), vec![k; 3]), t);
                good &= put == Ok(Resp::Value(None));
                let got: Result<Resp, _> = shoal::call(server, &Req::Get(key), t);
                good &= got == Ok(Resp::Value(Some(vec![k; 3])));
            }
            println!("{}", if good { "kv ok" } else { "kv bad" });
            good
        }
        "hold" => {
            let server = pid_arg(&args, 2);
            let timeout_ms: u64 = args
                .get(3)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| usage());
            println!("calling");
            let start = Instant::now();
            let r = shoal::call::<Req, Resp>(
                server,
                &Req::Hold(7),
                Some(Duration::from_millis(timeout_ms)),
            );
            report(r, start);
            true
        }
        "request" => {
            let server = pid_arg(&args, 2);
            let start = Instant::now();
            let r = shoal::send_request(server, &Req::Hold(7)).and_then(|request| {
                println!("requested");
                shoal::receive_response::<Resp>(request, None)
            });
            report(r, start);
            true
        }
        "from" => {
            let from = pid_arg(&args, 2);
            println!("waiting");
            match shoal::recv_from(from, None) {
                Ok(Incoming::Message(m)) => println!("from {}", String::from_utf8_lossy(&m.data)),
                Ok(other) => println!("from other {other:?}"),
                Err(e) => println!("from err={}", e.name()),
            }
            while let Ok(m) = shoal::recv(Some(Duration::ZERO)) {
                println!("mail {}", String::from_utf8_lossy(&m.data));
            }
            println!("done");
            true
        }
        "groupstream" => {
            let group = args.get(2).cloned().unwrap_or_else(|| usage());
            let count: u64 = args
                .get(3)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| usage());
            let pause_ms: u64 = args
                .get(4)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| usage());
            let (mut ok, mut bad, mut errors, mut slowest_ms) = (0u64, 0u64, 0u64, 0u128);
            let mut first_error = String::from("-");
            for i in 0..count {
                let start = Instant::now();
                let r = shoal::call_group::<Req, Resp>(
                    &group,
                    &Req::Echo(i, payload(i)),
                    Some(Duration::from_secs(30)),
                );
                slowest_ms = slowest_ms.max(start.elapsed().as_millis());
                match r {
                    Ok(Resp::Echo(n, d)) if n == i && d == payload(i) => ok += 1,
                    Ok(_) => bad += 1,
                    Err(e) => {
                        errors += 1;
                        if first_error == "-" {
                            first_error = format!("{}@{i}", e.name());
                        }
                    }
                }
                if (i + 1) % 50 == 0 {
                    println!("progress {}", i + 1);
                }
                std::thread::sleep(Duration::from_millis(pause_ms));
            }
            println!("groupstream done calls={count} ok={ok} bad={bad} errors={errors} first_error={first_error} slowest_ms={slowest_ms}");
            bad == 0 && errors == 0
        }
        "bench" => {
            let server = pid_arg(&args, 2);
            let count: usize = args
                .get(3)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| usage());
            let t = Some(Duration::from_secs(30));
            measure("bench", count, |i| {
                let data = payload(i);
                matches!(shoal::call::<Req, Resp>(server, &Req::Echo(i, data.clone()), t),
                    Ok(Resp::Echo(n, d)) if n == i && d == data)
            })
        }
        "msgbench" => {
            let pong = pid_arg(&args, 2);
            let count: usize = args
                .get(3)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| usage());
            measure("msgbench", count, |i| {
                let data = payload(i);
                shoal::send(pong, &data).is_ok()
                    && matches!(shoal::recv(Some(Duration::from_secs(30))),
                        Ok(m) if m.sender == pong && m.data == data)
            })
        }
        "fanout" => {
            let count: u64 = args
                .get(2)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| usage());
            let servers: Vec<Pid> = (3..args.len()).map(|i| pid_arg(&args, i)).collect();
            let (mut ok, mut bad, mut errors) = (0u64, 0u64, 0u64);
            let mut pending = Vec::new();
            for i in 0..count {
                for (k, server) in servers.iter().enumerate() {
                    let n = i * 1000 + k as u64;
                    match shoal::send_request(*server, &Req::Echo(n, payload(n))) {
                        Ok(r) => pending.push((n, r)),
                        Err(_) => errors += 1,
                    }
                }
            }
            while let Some((n, r)) = pending.pop() {
                match shoal::receive_response::<Resp>(r, Some(Duration::from_secs(30))) {
                    Ok(Resp::Echo(m, d)) if m == n && d == payload(n) => ok += 1,
                    Ok(_) => bad += 1,
                    Err(_) => errors += 1,
                }
            }
            println!("fanout ok={ok} bad={bad} errors={errors}");
            bad == 0 && errors == 0
        }
        "unwatch" => {
            // Monitor, withdraw, monitor again: only the second may ever
            // see the DOWN.
            let target = pid_arg(&args, 2);
            let first = shoal::monitor(target).and_then(|r| shoal::demonitor(r).map(|()| r));
            let second = shoal::monitor(target);
            let (Ok(first), Ok(second)) = (first, second) else {
                println!("unwatch failed");
                std::process::exit(1)
            };
            println!("unwatched");
            loop {
                match shoal::recv_any(None) {
                    Ok(Incoming::Down(d)) if d.pid == target => {
                        let which = if d.reference == second {
                            "second"
                        } else if d.reference == first {
                            "first"
                        } else {
                            "unknown"
                        };
                        println!("down ref={which} reason={:?}", d.reason);
                        break which == "second";
                    }
                    Ok(other) => println!("other {other:?}"),
                    Err(e) => {
                        println!("recv_any failed {e}");
                        break false;
                    }
                }
            }
        }
        "monitor" => {
            let target = pid_arg(&args, 2);
            let reference = match shoal::monitor(target) {
                Ok(r) => r,
                Err(e) => {
                    println!("monitor failed {e}");
                    std::process::exit(1)
                }
            };
            println!("monitoring");
            loop {
                match shoal::recv_any(None) {
                    Ok(Incoming::Down(d)) if d.reference == reference && d.pid == target => {
                        println!("down reason={:?}", d.reason);
                        break true;
                    }
                    Ok(other) => println!("other {other:?}"),
                    Err(e) => {
                        println!("recv_any failed {e}");
                        break false;
                    }
                }
            }
        }
        "whereis" => {
            let name = args.get(2).cloned().unwrap_or_else(|| usage());
            match shoal::whereis(&name) {
                Ok(pid) => println!("whereis {pid}"),
                Err(e) => println!("whereis err={}", e.name()),
            }
            true
        }
        "byname" => {
            let name = args.get(2).cloned().unwrap_or_else(|| usage());
            let t = Some(shoal::DEFAULT_CALL_TIMEOUT);
            let r = shoal::call_name::<Req, Resp>(&name, &Req::Put("k".into(), b"v".to_vec()), t)
                .and_then(|_| shoal::call_name::<Req, Resp>(&name, &Req::Get("k".into()), t));
            match r {
                Ok(Resp::Value(Some(v))) if v == b"v" => println!("byname ok"),
                Ok(other) => println!("byname bad {other:?}"),
                Err(e) => println!("byname err={}", e.name()),
            }
            true
        }
        "group" => {
            let group = args.get(2).cloned().unwrap_or_else(|| usage());
            let count: u64 = args
                .get(3)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| usage());
            let (mut ok, mut bad, mut errors) = (0u64, 0u64, 0u64);
            let mut served: std::collections::BTreeMap<u64, u64> = Default::default();
            for i in 0..count {
                let member = shoal::group_pick(&group).map(|p| p.as_u64()).unwrap_or(0);
                match shoal::call::<Req, Resp>(
                    Pid::from_raw(member),
                    &Req::Echo(i, payload(i)),
                    Some(Duration::from_secs(30)),
                ) {
                    Ok(Resp::Echo(n, d)) if n == i && d == payload(i) => {
                        ok += 1;
                        *served.entry(member).or_default() += 1;
                    }
                    Ok(_) => bad += 1,
                    Err(_) => errors += 1,
                }
            }
            println!("group done calls={count} ok={ok} bad={bad} errors={errors}");
            for (pid, n) in served {
                println!("served_by {pid} {n}");
            }
            bad == 0 && errors == 0
        }
        "groupcall" => {
            let group = args.get(2).cloned().unwrap_or_else(|| usage());
            let r = shoal::call_group::<Req, Resp>(
                &group,
                &Req::Echo(1, payload(1)),
                Some(Duration::from_secs(30)),
            );
            match r {
                Ok(Resp::Echo(1, _)) => println!("groupcall ok"),
                Ok(other) => println!("groupcall bad {other:?}"),
                Err(e) => println!("groupcall err={}", e.name()),
            }
            true
        }
        "noproc" => {
            let r = shoal::call::<Req, Resp>(
                pid_arg(&args, 2),
                &Req::Get("x".into()),
                Some(Duration::from_secs(5)),
            );
            match r {
                Ok(_) => println!("result ok"),
                Err(e) => println!("result err={}", e.name()),
            }
            true
        }
        _ => usage(),
    };
    std::process::exit(if good { 0 } else { 1 })
}
