//! `locker`: replicated key-value and cluster-wide locks from a guest
//! (`shoal::Bucket`, `shoal::Lock`), for the tests of both and the bench.
//!
//! Modes (first argument):
//!
//! - `count <lock> <n> [<pause_ms> [go]]`: (with `go`: first waits for one
//!   message, so that many start together) `n` times: take `<lock>` (no
//!   deadline), read the counter `tally/total`, optionally sleep
//!   `pause_ms` (holding the lock), then `cas` it (fenced by the lock) from
//!   the version read to the value + 1. Under mutual exclusion the cas
//!   never meets another version. Prints `inc <value> token=<t>` after each
//!   success (tokens strictly increase in each process), `VIOLATION
//!   <error>` and exits 3 if the cas meets another version or is fenced,
//!   `lost <error>` and retries if the lock is lost; ends with `count done
//!   <n>`.
//! - `hold <lock>`: takes `<lock>`, prints `held token=<t>`, waits for one
//!   message, then tries a write fenced by it and an unlock and prints
//!   `write <ok|err=NAME> unlock <ok|err=NAME> check <ok|err=NAME>`.
//! - `pair <first> <second>`: takes `<first>`, prints `have <first>`, waits
//!   for one message, then waits for `<second>` (60 s at most) and prints
//!   `second ok` or `second err=<NAME>`; then unlocks both and prints
//!   `released`.
//! - `ops <bucket>`: every key-value call (in an empty `<bucket>`) and its refusals in order; prints one
//!   line per check (`ok <what>` or `BAD <what>: <detail>`), then `ops
//!   done bad=<n>` and exits 0 only if none is bad.
//! - `register <keys> <ops> <seed> [<mix> [<pause_ms>]]`: a client of the
//!   linearizability test: `ops` operations on keys `r/<0..keys>` chosen
//!   by a xorshift seeded with `seed`; `mix` is `rw` (get, set, cas: the
//!   default), `r` (gets only) or `rstale` (stale gets only: reads served
//!   without ReadIndex, the deliberately broken client). Each operation is
//!   printed when it returns as `op get <key> - <value|none|?> <start_us>
//!   <end_us>`, `op set <key> <value> <ok|?> ...` or `op cas <key>
//!   <old|none>><new> <true|false|?> ...` (a cas is preceded by the get it
//!   read its version from), with the wall clock in microseconds; `?` is
//!   an unknown outcome (`UNAVAILABLE`). Values are unique per client and
//!   operation. Ends with `register done`.
//! - `puts <n> [go]`: (with `go`: first waits for one message) `n` sets of
//!   100-byte values on keys `p<self>/<i % 100>`; prints `puts done n=<n>`.
//! - `bench <n>`: `n` sets, `n` linearizable gets and `n` lock+unlock of
//!   one lock, each timed in the guest; prints `bench <op> n=<n>
//!   p50_us=<p50> p99_us=<p99>` per operation.
//! - `random <prefix> [try]`: draws a random number (WASI `random_get`),
//!   takes the lock `<prefix>-<number below a million>` (with `try`:
//!   `try_lock`) and waits for messages forever, holding it (`BAD lock
//!   <name> <error>` and exit 1 if refused). Which lock a run takes is its
//!   own: one resumed from before the draw would most likely take another.
//!   It prints nothing once it holds the lock: under output commit a line
//!   waiting to be released would have the process checkpointed past the
//!   call at once, and the failover test wants it resumed inside it.

use shoal::{Bucket, Error, Lock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn usage() -> ! {
    eprintln!("usage: locker count <lock> <n> [<pause_ms> [go]] | hold <lock> | pair <a> <b> | ops <bucket> | register <keys> <ops> <seed> [rw|r|rstale [<pause_ms>]] | bench <n> | puts <n> [go] | random <prefix> [try]");
    std::process::exit(2)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| usage())
}

fn counter_of(bucket: &Bucket, key: &[u8]) -> Result<(i64, u64), Error> {
    Ok(match bucket.get(key)? {
        None => (0, 0),
        Some(e) => {
            let bytes: [u8; 8] = e.value.try_into().map_err(|_| Error::Invalid)?;
            (i64::from_le_bytes(bytes), e.version)
        }
    })
}

fn count(lock: &str, n: u64, pause_ms: u64) {
    let bucket = Bucket::new("tally");
    let mut done = 0;
    let mut last_token = 0;
    while done < n {
        let guard = match Lock::acquire(lock, None) {
            Ok(g) => g,
            Err(e) => {
                println!("lost {}", e.name());
                continue;
            }
        };
        if guard.token() <= last_token {
            println!("VIOLATION token {} after {last_token}", guard.token());
            std::process::exit(3);
        }
        last_token = guard.token();
        let (value, version) = match counter_of(&bucket, b"total") {
            Ok(v) => v,
            Err(e) => {
                println!("lost {}", e.name());
                let _ = guard.unlock();
                continue;
            }
        };
        if pause_ms > 0 {
            let _ = shoal::sleep(Duration::from_millis(pause_ms));
        }
        let next = (value + 1).to_le_bytes();
        match bucket.cas_fenced(b"total", version, &next, &guard) {
            Ok(_) => {
                println!("inc {} token={}", value + 1, guard.token());
                done += 1;
            }
            Err(e @ (Error::VersionMismatch | Error::Fenced)) => {
                println!("VIOLATION {}", e.name());
                std::process::exit(3);
            }
            Err(e) => println!("lost {}", e.name()),
        }
        if let Err(e) = guard.unlock() {
            println!("lost {}", e.name());
        }
    }
    println!("count done {n}");
}

fn outcome<T>(r: Result<T, Error>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("err={}", e.name()),
    }
}

fn hold(lock: &str) {
    let guard = match Lock::acquire(lock, None) {
        Ok(g) => g,
        Err(e) => {
            println!("hold err={}", e.name());
            std::process::exit(1);
        }
    };
    println!("held token={}", guard.token());
    let _ = shoal::recv(None);
    let write = Bucket::new("held").set_fenced(b"k", b"v", &guard);
    let check = Lock::check(lock, guard.token());
    let unlock = guard.unlock();
    println!(
        "write {} unlock {} check {}",
        outcome(write),
        outcome(unlock),
        outcome(check)
    );
}

fn pair(first: &str, second: &str) {
    let a = match Lock::acquire(first, Some(Duration::from_secs(60))) {
        Ok(g) => g,
        Err(e) => {
            println!("first err={}", e.name());
            std::process::exit(1);
        }
    };
    println!("have {first}");
    let _ = shoal::recv(None);
    match Lock::acquire(second, Some(Duration::from_secs(60))) {
        Ok(b) => {
            println!("second ok");
            let _ = b.unlock();
        }
        Err(e) => println!("second err={}", e.name()),
    }
    let _ = a.unlock();
    println!("released");
}

/// Checks of every call and refusal; returns how many were wrong.
fn ops(bucket: &str) -> u32 {
    let mut bad = 0;
    let mut expect = |what: &str, ok: bool, detail: String| {
        if ok {
            println!("ok {what}");
        } else {
            println!("BAD {what}: {detail}");
            bad += 1;
        }
    };
    let b = Bucket::new(bucket);
    let r = b.get(b"missing");
    expect(
        "get of a missing key is None",
        r == Ok(None),
        format!("{r:?}"),
    );
    let v1 = b.set(b"a", b"one");
    expect("set", v1.is_ok(), format!("{v1:?}"));
    let v1 = v1.unwrap_or(0);
    let r = b.get(b"a");
    expect(
        "get sees the set with its version",
        r.as_ref().is_ok_and(|e| {
            e.as_ref()
                .is_some_and(|e| e.value == b"one" && e.version == v1)
        }),
        format!("{r:?}"),
    );
    let r = b.stale().get(b"a");
    expect(
        "a stale read on the writer's node sees it",
        r.as_ref().is_ok_and(|e| e.is_some()),
        format!("{r:?}"),
    );
    let r = b.exists(b"a");
    expect("exists", r == Ok(true), format!("{r:?}"));
    let r = b.cas(b"a", v1 + 1000, b"two");
    expect(
        "cas with a wrong version",
        r == Err(Error::VersionMismatch),
        format!("{r:?}"),
    );
    let r = b.cas(b"a", v1, b"two");
    expect(
        "cas with the right version",
        r.as_ref().is_ok_and(|v| *v > v1),
        format!("{r:?}"),
    );
    let r = b.cas(b"fresh", 0, b"x");
    expect("cas 0 creates an absent key", r.is_ok(), format!("{r:?}"));
    let r = b.increment(b"n", 5).and_then(|_| b.increment(b"n", -2));
    expect("increment", r == Ok(3), format!("{r:?}"));
    let r = b.increment(b"a", 1);
    expect(
        "increment of a non-counter",
        r == Err(Error::NotACounter),
        format!("{r:?}"),
    );
    let r = b.increment(b"n", i64::MAX);
    expect(
        "increment overflow",
        r == Err(Error::Overflow),
        format!("{r:?}"),
    );
    let big = vec![7u8; 300_000];
    let r = b.set(b"big", &big).and_then(|_| b.get(b"big"));
    expect(
        "a 300 KB value round trips (buffer grown)",
        r.as_ref()
            .is_ok_and(|e| e.as_ref().is_some_and(|e| e.value == big)),
        format!("{:?}", r.map(|e| e.map(|e| e.value.len()))),
    );
    let r = b.set(b"huge", &vec![0u8; (1 << 20) + 1]);
    expect(
        "a value over 1 MiB",
        r == Err(Error::ValueTooLarge),
        format!("{r:?}"),
    );
    let r = b.set(&[b'k'; 257], b"v");
    expect(
        "a key over 256 bytes",
        r == Err(Error::BadKey),
        format!("{r:?}"),
    );
    let r = b.set(b"", b"v");
    expect("an empty key", r == Err(Error::BadKey), format!("{r:?}"));
    let r = Bucket::new(&"b".repeat(65)).set(b"k", b"v");
    expect(
        "a bucket name over 64 bytes",
        r == Err(Error::BadBucket),
        format!("{r:?}"),
    );
    for i in 0..1500u32 {
        if let Err(e) = b.set(format!("list/{i:05}").as_bytes(), b"") {
            expect("fill the list", false, format!("{e:?}"));
            break;
        }
    }
    let r = b.keys(b"list/");
    expect(
        "keys pages past 1000 in order",
        r.as_ref().is_ok_and(|k| {
            k.len() == 1500 && k.windows(2).all(|w| w[0] < w[1]) && k[0] == b"list/00000"
        }),
        format!("{:?}", r.map(|k| k.len())),
    );
    let r = b
        .delete(b"a")
        .and_then(|existed| Ok((existed, b.delete(b"a")?)));
    expect(
        "delete says whether it existed",
        r == Ok((true, false)),
        format!("{r:?}"),
    );
    let big = vec![7u8; 3000];
    let r = b.set_many(&[(&b"m1"[..], &big[..]), (b"m2", b"two"), (b"m3", &big[..])]);
    expect("set_many sets all", r == Ok(3), format!("{r:?}"));
    let r = b.get_many(&[&b"m1"[..], b"absent", b"m2", b"m3"]);
    expect(
        "get_many reads all in order, past a first buffer too small",
        r.as_ref().is_ok_and(|got| {
            got.len() == 4
                && got[0]
                    .as_ref()
                    .is_some_and(|e| e.value == big && e.version > 0)
                && got[1].is_none()
                && got[2].as_ref().is_some_and(|e| e.value == b"two")
                && got[3].as_ref().is_some_and(|e| e.value == big)
        }),
        format!(
            "{:?}",
            r.map(|g| g
                .iter()
                .map(|e| e.as_ref().map(|e| e.value.len()))
                .collect::<Vec<_>>())
        ),
    );
    let r = b.set_many(&[(&b"m4"[..], &b"x"[..]), (b"", b"y")]);
    let m4 = b.exists(b"m4");
    expect(
        "a batch with one bad key is refused whole",
        r == Err(Error::BadKey) && m4 == Ok(false),
        format!("{r:?} {m4:?}"),
    );
    let keys: Vec<Vec<u8>> = (0..101u32).map(|i| i.to_le_bytes().to_vec()).collect();
    let r = b.get_many(&keys);
    expect(
        "101 keys",
        r.as_ref().err() == Some(&Error::BadBatch),
        format!("{:?}", r.map(|g| g.len())),
    );
    let r = b.get_many::<&[u8]>(&[]);
    expect(
        "an empty batch",
        r.as_ref().err() == Some(&Error::BadBatch),
        format!("{:?}", r.map(|g| g.len())),
    );
    let huge = vec![0u8; 1 << 20];
    let five: Vec<(Vec<u8>, &[u8])> = (0..5u8).map(|i| (vec![b'h', i], &huge[..])).collect();
    let r = b.set_many(&five);
    expect(
        "a batch over 4 MiB",
        r == Err(Error::BadBatch),
        format!("{r:?}"),
    );
    let r = b.delete_many(&[&b"m1"[..], b"absent", b"m3"]);
    let left = b.get_many(&[&b"m1"[..], b"m2"]);
    expect(
        "delete_many says how many existed",
        r == Ok(2)
            && left
                .as_ref()
                .is_ok_and(|l| l[0].is_none() && l[1].is_some()),
        format!("{r:?} {left:?}"),
    );
    let r = Lock::try_acquire("ops-lock");
    expect("try_lock of a free lock", r.is_ok(), format!("{r:?}"));
    if let Ok(g) = r {
        let again = Lock::try_acquire("ops-lock");
        expect(
            "try_lock again by its holder gives the same token",
            again.as_ref().is_ok_and(|a| a.token() == g.token()),
            format!("{again:?}"),
        );
        let c = Lock::check("ops-lock", g.token());
        expect(
            "lock_check of the current token",
            c.is_ok(),
            format!("{c:?}"),
        );
        let c = Lock::check("ops-lock", g.token() + 1);
        expect(
            "lock_check of another token",
            c == Err(Error::Fenced),
            format!("{c:?}"),
        );
        let t = g.token();
        let r = g.unlock();
        expect("unlock", r.is_ok(), format!("{r:?}"));
        let r = b.set_fenced(
            b"f",
            b"v",
            &Lock::try_acquire("ops-lock").unwrap_or_else(|_| std::process::exit(4)),
        );
        expect(
            "a fenced write under the held lock",
            r.is_ok(),
            format!("{r:?}"),
        );
        let c = Lock::check("ops-lock", t);
        expect(
            "the old token is fenced after a new grant",
            c == Err(Error::Fenced),
            format!("{c:?}"),
        );
    }
    let r = Lock::acquire("", None);
    expect(
        "an empty lock name",
        r == Err(Error::Invalid),
        format!("{r:?}"),
    );
    bad
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn register(keys: u64, ops: u64, seed: u64, mix: &str, pause_ms: u64) {
    let b = Bucket::new("lin");
    let reader = if mix == "rstale" {
        b.stale()
    } else {
        b.clone()
    };
    let kinds = if mix == "rw" { 3 } else { 1 };
    let mut x = seed.max(1);
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..ops {
        let key = next() % keys;
        let name = format!("r/{key}");
        if pause_ms > 0 {
            let _ = shoal::sleep(Duration::from_millis(pause_ms));
        }
        let start = now_us();
        let line = match next() % kinds {
            0 => {
                let r = reader.get(name.as_bytes());
                let result = match r {
                    Ok(None) => "none".to_string(),
                    Ok(Some(e)) => {
                        let v: [u8; 8] = e.value.try_into().unwrap_or([0; 8]);
                        u64::from_le_bytes(v).to_string()
                    }
                    Err(_) => "?".into(),
                };
                format!("get {key} - {result}")
            }
            1 => {
                // Unique values: seed and sequence.
                let v = seed * 1_000_000 + i + 1;
                let r = b.set(name.as_bytes(), &v.to_le_bytes());
                format!("set {key} {v} {}", if r.is_ok() { "ok" } else { "?" })
            }
            _ => {
                // cas from the value read a moment ago (absent: 0 version).
                let seen = b.get(name.as_bytes());
                let v = seed * 1_000_000 + i + 1;
                match seen {
                    Ok(entry) => {
                        let (old, version) = match entry {
                            None => ("none".to_string(), 0),
                            Some(e) => {
                                let bytes: [u8; 8] = e.value.try_into().unwrap_or([0; 8]);
                                (u64::from_le_bytes(bytes).to_string(), e.version)
                            }
                        };
                        // The cas is one operation from here on.
                        let start2 = now_us();
                        let r = b.cas(name.as_bytes(), version, &v.to_le_bytes());
                        let result = match r {
                            Ok(_) => "true",
                            Err(Error::VersionMismatch) => "false",
                            Err(_) => "?",
                        };
                        // Print the read as its own get, then the cas.
                        println!("op get {key} - {old} {start} {start2}");
                        let end = now_us();
                        println!("op cas {key} {old}>{v} {result} {start2} {end}");
                        continue;
                    }
                    Err(_) => format!("get {key} - ?"),
                }
            }
        };
        println!("op {line} {start} {}", now_us());
    }
    println!("register done");
}

fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn bench(n: usize) {
    let b = Bucket::new("bench");
    let report = |what: &str, mut t: Vec<u64>| {
        t.sort_unstable();
        println!(
            "bench {what} n={} p50_us={} p99_us={}",
            t.len(),
            percentile(&t, 50),
            percentile(&t, 99)
        );
    };
    let timed = |f: &mut dyn FnMut(usize) -> bool| -> Vec<u64> {
        let mut t = Vec::with_capacity(n);
        for i in 0..n {
            let start = Instant::now();
            if !f(i) {
                println!("bench error at {i}");
                std::process::exit(1);
            }
            t.push(start.elapsed().as_micros() as u64);
        }
        t
    };
    let value = [7u8; 100];
    let puts = timed(&mut |i| b.set(format!("k{}", i % 100).as_bytes(), &value).is_ok());
    report("put", puts);
    let gets = timed(&mut |i| b.get(format!("k{}", i % 100).as_bytes()).is_ok());
    report("get", gets);
    let locks = timed(&mut |_| {
        Lock::acquire("bench-lock", Some(Duration::from_secs(10)))
            .and_then(|g| g.unlock())
            .is_ok()
    });
    report("lock_unlock", locks);
}

fn random(prefix: &str, try_only: bool) -> ! {
    use std::hash::{BuildHasher, Hasher};
    // RandomState's keys come from WASI random_get.
    let drawn = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let name = format!("{prefix}-{}", drawn % 1_000_000);
    let taken = if try_only {
        Lock::try_acquire(&name)
    } else {
        Lock::acquire(&name, None)
    };
    let _held = match taken {
        Ok(held) => held,
        Err(e) => {
            println!("BAD lock {name} {}", e.name());
            std::process::exit(1)
        }
    };
    loop {
        let _ = shoal::recv(None);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("count") => {
            let lock: String = arg(&args, 1);
            let pause = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
            if args.get(4).map(String::as_str) == Some("go") {
                let _ = shoal::recv(None);
            }
            count(&lock, arg(&args, 2), pause)
        }
        Some("hold") => hold(&arg::<String>(&args, 1)),
        Some("pair") => pair(&arg::<String>(&args, 1), &arg::<String>(&args, 2)),
        Some("ops") => {
            let bad = ops(&arg::<String>(&args, 1));
            println!("ops done bad={bad}");
            std::process::exit(i32::from(bad > 0));
        }
        Some("register") => {
            let mix = args.get(4).map_or("rw", String::as_str);
            let pause_ms = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(0);
            if !["rw", "r", "rstale"].contains(&mix) {
                usage();
            }
            register(arg(&args, 1), arg(&args, 2), arg(&args, 3), mix, pause_ms)
        }
        Some("bench") => bench(arg(&args, 1)),
        Some("random") => random(&arg::<String>(&args, 1), args.get(2).map(String::as_str) == Some("try")),
        Some("puts") => {
            let n: usize = arg(&args, 1);
            if args.get(2).map(String::as_str) == Some("go") {
                let _ = shoal::recv(None);
            }
            let b = Bucket::new("bench");
            let me = shoal::self_pid();
            for i in 0..n {
                if let Err(e) = b.set(format!("p{me}/{}", i % 100).as_bytes(), &[7u8; 100]) {
                    println!("puts err={}", e.name());
                    std::process::exit(1);
                }
            }
            println!("puts done n={n}");
        }
        _ => usage(),
    }
}
