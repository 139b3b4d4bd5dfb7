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
//! - `whereis <name>`: prints `whereis <pid>` or `whereis err=<ERROR>`.
//! - `byname <name>`: a Put and a Get by name (`shoal::call_name`); prints
//!   `byname ok` or `byname err=<ERROR>`.
//! - `group <group> <count>`: `count` calls `Echo` to the group
//!   (`shoal::call_group`), each checked; prints `group done calls=<n>
//!   ok=<ok> bad=<bad> errors=<e>` and `served_by <pid> <n>` per member.
//! - `noproc <pid>`: a call to a pid that does not exist: prints
//!   `result err=<NAME>`.

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
    (0..16u64).map(|k| (i.wrapping_mul(31).wrapping_add(k)) as u8).collect()
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
    println!("stream done calls={count} ok={ok} bad={bad} errors={errors} first_error={first_error}");
    bad == 0 && errors == 0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("");
    let good = match mode {
        "stream" => {
            let count = args.get(3).and_then(|s| s.parse().ok()).unwrap_or_else(|| usage());
            let timeout_ms = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(30_000);
            stream(pid_arg(&args, 2), count, Duration::from_millis(timeout_ms))
        }
        "kv" => {
            let server = pid_arg(&args, 2);
            let t = Some(shoal::DEFAULT_CALL_TIMEOUT);
            let mut good = true;
            for k in 0..4u8 {
                let key = format!("key{k}");
                let put: Result<Resp, _> = shoal::call(server, &Req::Put(key.clone(), vec![k; 3]), t);
                good &= put == Ok(Resp::Value(None));
                let got: Result<Resp, _> = shoal::call(server, &Req::Get(key), t);
                good &= got == Ok(Resp::Value(Some(vec![k; 3])));
            }
            println!("{}", if good { "kv ok" } else { "kv bad" });
            good
        }
        "hold" => {
            let server = pid_arg(&args, 2);
            let timeout_ms: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or_else(|| usage());
            println!("calling");
            let start = Instant::now();
            let r = shoal::call::<Req, Resp>(server, &Req::Hold(7), Some(Duration::from_millis(timeout_ms)));
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
            true
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
            let count: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or_else(|| usage());
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
            let r = shoal::call_group::<Req, Resp>(&group, &Req::Echo(1, payload(1)), Some(Duration::from_secs(30)));
            match r {
                Ok(Resp::Echo(1, _)) => println!("groupcall ok"),
                Ok(other) => println!("groupcall bad {other:?}"),
                Err(e) => println!("groupcall err={}", e.name()),
            }
            true
        }
        "noproc" => {
            let r = shoal::call::<Req, Resp>(pid_arg(&args, 2), &Req::Get("x".into()), Some(Duration::from_secs(5)));
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
