//! `tally`: exactly-once calls across the death of a node (issue #16).
//!
//! Modes (first argument):
//!
//! - `count <name> <senders> <N>`: registers `<name>`, then serves calls
//!   whose request is a number `n` (postcard `u64`). For each caller it
//!   keeps how many calls it took (`count`) and a digest of its replies; it
//!   answers `(count, nonce)`, where `nonce` is drawn from the wall clock
//!   for this reply, so a copy of the process re-executing from an older
//!   state answers with other nonces than the lost one did. Once
//!   `<senders>` callers have each been counted `<N>` times it prints, per
//!   caller in pid order, `tally <pid> count <count> digest <hex>`, then
//!   `tally done`, and goes on serving. Each reply is also printed, as
//!   `reply <caller> <n> <count> <nonce hex>` (output that differs between
//!   histories, for the log tests).
//! - `send <name> <N> [<pause-ms>]`: finds `<name>` (waiting for it), then
//!   calls it with `1..=N` in order, one at a time, pausing `<pause-ms>`
//!   (default 0) after each. Each reply's count must be the number
//!   just sent — a lost call gives less, a call taken twice more — else it
//!   prints `BAD call <n> count <count>` and exits 1. Every 10 calls it
//!   prints `at <n>`; at the end `sent <N> digest <hex>` (the same digest
//!   the tally keeps: equal only if every reply this sender saw is one the
//!   tally's surviving history produced), then `took <µs> us` (the calls'
//!   wall time, for the benchmark), and exits 0.
//!
//! - `journal <name> <dir> <N>`: registers `<name>` and serves calls from
//!   one caller, whose request `k` must be the next number (else it prints
//!   `BAD journal got <k> after <count>`); for each it appends the line
//!   `<k>` to `<dir>/journal.log` (kept open across calls, so a capture has
//!   an open file in the volume), keeps a new 64 KiB heap block filled from
//!   `k`, prints `got <k>` and answers `(count, journal length)`. After the
//!   `<N>`th it checks every heap block and prints `journal done lines <N>
//!   bytes <length> fnv <hex> heap ok|bad` (FNV-1a 64 of the file read
//!   back). An uninterrupted run's output and file are fixed by `<N>`.
//! - `work <seconds> <MiB>`: a computation that yields (a capture point)
//!   between slices, for the throughput benchmark. Keeps `<MiB>` MiB of
//!   heap; each slice writes one byte in each of 16 pages of it (a moving
//!   window, so checkpoints always find pages changed) and folds 64 KiB of
//!   it, then yields. After `<seconds>` it prints `work <slices> slices in
//!   <ms> ms` and exits 0.
//!
//! - `kv <bucket> <N> <pause-ms>`: increments the counter `count` in its
//!   owner's bucket `<bucket>` (absent at the start) `<N>` times, sleeping
//!   `<pause-ms>` (a capture point) before each. Each increment must
//!   answer the number of increments made so far — one made twice (by a
//!   lost history after its last checkpoint, then again by the resumed
//!   copy) answers more — else it prints `BAD kv <k> counter <n>` and
//!   exits 1. Every 10 it prints `kv at <k>`; at the end `kv done <N>`,
//!   then `took <µs> us`, and sleeps (so `shoal ps` still shows it).
//!
//! - `files <dir> <N> <pause-ms>`: shared-volume writes under output
//!   commit. `<N>` times, sleeping `<pause-ms>` (a capture point) before
//!   each step `k`: makes the directory `<dir>/d<k>`, creates
//!   `<dir>/d<k>/new` exclusively with the line `<k> <nonce>` (the nonce
//!   drawn from the wall clock), closes it (which publishes it) and renames
//!   it to `<dir>/d<k>/f`. Each of the three is refused if made twice (a
//!   lost history's step after its last checkpoint, made again by the
//!   resumed copy: `EEXIST`, `EEXIST`, `ENOENT`): then it prints `BAD
//!   files <k> <what>: <error>` and exits 1. Every 10 it prints `files at
//!   <k>`. Meanwhile it keeps `<dir>/log` open (created, truncated),
//!   appending the line `<k>` at each step, and closes it only at the end
//!   (so captures find a written file open, which output commit carries
//!   in the image instead of publishing). At the end it reads every
//!   `d<k>/f` back and prints `files done <N> wrote <hex> read <hex> log
//!   ok|bad`: digests of the lines it wrote and of those it read, equal
//!   only if each file holds what the resumed history wrote, and whether
//!   `log` holds every line once, in order, then `took <µs> us` (the
//!   steps' wall time, for the benchmark). Then it sleeps.
//!
//! - `spawn <module> <bucket> <N> <pause-ms> <target>`: starts `<N>`
//!   children of module `<module>` (`child <bucket> <i>`), sleeping
//!   `<pause-ms>` before each: odd ones with `spawn` (on its own node),
//!   even ones with `spawn_on(<target>)`. Every 10 it prints `spawn at
//!   <i>`; at the end `spawn done <N>`, and sleeps. A failed spawn prints
//!   `BAD spawn <i>: <error>` and exits 1.
//! - `child <bucket> <i>`: increments the counters `children` and
//!   `child-<i>` in its owner's bucket `<bucket>` and exits: after the
//!   children of a `spawn` ran, `children` exceeds the number of
//!   `child-*` keys by the number of children started twice.
//!
//! - `flood <bucket> <N>`: waits (stale reads, 20 ms apart) until the key
//!   `go` exists in its owner's bucket `<bucket>`, then tries `<N>`
//!   increments of the key `flood` back to back, counting those made and
//!   those refused `RATE_LIMITED`, and prints `flood ok <made> limited
//!   <refused> ms <elapsed>` (any other error: `BAD flood <error>`, exit 1).
//!   Then it sleeps.
//!
//! - `watch <pid> <bucket>`: takes the lock `watching`, monitors process
//!   `<pid>`, prints `monitoring <pid>`, and waits (`recv_any`) for its
//!   DOWN. Then it unlocks `watching` (which `shoal locks` shows at once:
//!   an unlock is not held back by output commit, unlike a grant) and
//!   computes without any blocking call — so no checkpoint can cover the
//!   DOWN it took — until the key `release` exists in its owner's bucket
//!   `<bucket>`. Then it prints `down <reason>` and sleeps.
//!
//! - `callwait <pid> <bucket>`: `watch`, with a call instead of a
//!   monitor: takes the lock `calling`, prints `calling <pid>`, and calls
//!   process `<pid>` (which never answers) with a one-hour deadline. When
//!   the call returns it unlocks `calling`, computes without blocking until
//!   the key `release` exists in its owner's bucket `<bucket>`, prints
//!   `call ended <result>` and sleeps.
//!
//! Bad arguments print a usage line to stderr and exit 2.

use std::collections::BTreeMap;
use std::process::exit;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoal::{Error, Pid};

const USAGE: &str =
    "usage: tally count <name> <senders> <N> | send <name> <N> [<pause-ms>] | journal <name> <dir> <N> | work <seconds> <MiB> | kv <bucket> <N> <pause-ms> | watch <pid> <bucket> | callwait <pid> <bucket> | spawn <module> <bucket> <N> <pause-ms> <target> | child <bucket> <i> | flood <bucket> <N> | files <dir> <N> <pause-ms>";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["count", name, senders, n] => count(name, parse(senders), parse(n)),
        ["journal", name, dir, n] => journal(name, dir, parse(n)),
        ["work", seconds, mib] => work(parse(seconds), parse(mib)),
        ["kv", bucket, n, pause_ms] => counter(bucket, parse(n), parse(pause_ms)),
        ["watch", pid, bucket] => watch(Pid::from_raw(parse(pid)), bucket),
        ["callwait", pid, bucket] => call_wait(Pid::from_raw(parse(pid)), bucket),
        ["spawn", module, bucket, n, pause_ms, target] => {
            spawner(module, bucket, parse(n), parse(pause_ms), target)
        }
        ["child", bucket, i] => child(bucket, parse(i)),
        ["flood", bucket, n] => flood(bucket, parse(n)),
        ["files", dir, n, pause_ms] => files(dir, parse(n), parse(pause_ms)),
        ["send", name, n] => send(name, parse(n), 0),
        ["send", name, n, pause_ms] => send(name, parse(n), parse(pause_ms)),
        _ => {
            eprintln!("{USAGE}");
            exit(2)
        }
    }
}

fn parse<T: std::str::FromStr>(text: &str) -> T {
    text.parse().unwrap_or_else(|_| {
        eprintln!("tally: not a number: {text}\n{USAGE}");
        exit(2)
    })
}

/// The digest both sides keep: a fold of (n, count, nonce).
fn fold(digest: u64, n: u64, count: u64, nonce: u64) -> u64 {
    let mut h = digest ^ 0x9e37_79b9_7f4a_7c15;
    for v in [n, count, nonce] {
        h = (h ^ v).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29);
    }
    h
}

fn count(name: &str, senders: usize, n: u64) -> ! {
    if let Err(e) = shoal::register(name) {
        eprintln!("tally: register {name}: {e}");
        exit(1)
    }
    // Caller → (count, digest).
    let mut tallies: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut reported = false;
    let mut drawn: u64 = 0;
    let served = shoal::serve(
        |from: Pid, k: u64| {
            let t = tallies.entry(from.as_u64()).or_insert((0, 0));
            t.0 += 1;
            drawn += 1;
            let nonce = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
                ^ drawn.rotate_left(40);
            t.1 = fold(t.1, k, t.0, nonce);
            println!("reply {from} {k} {} {nonce:016x}", t.0);
            let reply = (t.0, nonce);
            if !reported
                && tallies.len() >= senders
                && tallies.values().filter(|(c, _)| *c >= n).count() >= senders
            {
                reported = true;
                for (pid, (c, d)) in &tallies {
                    println!("tally {pid} count {c} digest {d:016x}");
                }
                println!("tally done");
            }
            reply
        },
        |_| true,
    );
    eprintln!("tally: serve: {served:?}");
    exit(1)
}

fn watch(target: Pid, bucket: &str) -> ! {
    let watching = take_lock("watching");
    if let Err(e) = shoal::monitor(target) {
        println!("BAD monitor {target}: {e}");
        exit(1)
    }
    println!("monitoring {target}");
    let down = loop {
        match shoal::recv_any(None) {
            Ok(shoal::Incoming::Down(d)) => break d,
            Ok(_) => {}
            Err(e) => {
                println!("BAD recv_any: {e}");
                exit(1)
            }
        }
    };
    // The resumed copy is a new incarnation, which holds nothing.
    let _ = watching.unlock();
    let acc = spin_until(bucket, b"release");
    println!("down {:?} (spun {})", down.reason, acc & 1);
    sleep_forever()
}

fn call_wait(target: Pid, bucket: &str) -> ! {
    let calling = take_lock("calling");
    println!("calling {target}");
    let result = shoal::call_raw(target, b"wait", Some(Duration::from_secs(3600)));
    // The resumed copy is a new incarnation, which holds nothing.
    let _ = calling.unlock();
    spin_until(bucket, b"release");
    println!("call ended {result:?}");
    sleep_forever()
}

/// Sleeps for good (so `shoal ps` still shows the process).
fn sleep_forever() -> ! {
    loop {
        let _ = shoal::sleep(Duration::from_secs(3600));
    }
}

/// Takes lock `name`, or prints `BAD lock <name>: <error>` and exits 1.
fn take_lock(name: &str) -> shoal::Lock {
    shoal::Lock::acquire(name, None).unwrap_or_else(|e| {
        println!("BAD lock {name}: {e}");
        exit(1)
    })
}

/// Computes, with no blocking call (so no capture point), until `key`
/// exists in the owner's bucket `bucket` (a stale read is local).
fn spin_until(bucket: &str, key: &[u8]) -> u64 {
    let bucket = shoal::Bucket::new(bucket).stale();
    let mut acc = 0u64;
    while !matches!(bucket.exists(key), Ok(true)) {
        for i in 0..200_000u64 {
            acc = acc.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i);
        }
    }
    acc
}

fn counter(bucket: &str, n: i64, pause_ms: u64) -> ! {
    let bucket = shoal::Bucket::new(bucket);
    let started = std::time::Instant::now();
    for k in 1..=n {
        if pause_ms > 0 {
            let _ = shoal::sleep(Duration::from_millis(pause_ms));
        }
        match bucket.increment(b"count", 1) {
            Ok(counter) if counter == k => {}
            Ok(counter) => {
                println!("BAD kv {k} counter {counter}");
                exit(1)
            }
            Err(e) => {
                println!("BAD kv {k} failed: {e}");
                exit(1)
            }
        }
        if k % 10 == 0 {
            println!("kv at {k}");
        }
    }
    println!("kv done {n}");
    println!("took {} us", started.elapsed().as_micros());
    // Stay, so `shoal ps` still shows where it ran.
    sleep_forever()
}

/// Prints `BAD files <k> <what>: <error>` and exits 1.
fn bad_file_step(k: u64, what: &str, e: std::io::Error) -> ! {
    println!("BAD files {k} {what}: {e}");
    exit(1)
}

fn files(dir: &str, n: u64, pause_ms: u64) -> ! {
    use std::io::Write;
    let log_path = format!("{dir}/log");
    let mut log = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&log_path)
        .unwrap_or_else(|e| bad_file_step(0, "log", e));
    let mut wrote = 0u64;
    let started = std::time::Instant::now();
    for k in 1..=n {
        if pause_ms > 0 {
            let _ = shoal::sleep(Duration::from_millis(pause_ms));
        }
        if let Err(e) = writeln!(log, "{k}") {
            bad_file_step(k, "log", e)
        }
        let d = format!("{dir}/d{k}");
        if let Err(e) = std::fs::create_dir(&d) {
            bad_file_step(k, "mkdir", e)
        }
        let nonce = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|t| t.as_nanos() as u64)
            .unwrap_or(0);
        let line = format!("{k} {nonce:016x}\n");
        let new = format!("{d}/new");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&new)
            .unwrap_or_else(|e| bad_file_step(k, "create", e));
        if let Err(e) = f.write_all(line.as_bytes()) {
            bad_file_step(k, "write", e)
        }
        // Closing publishes; `sync_all` first reports a failed publish
        // (a plain close cannot).
        if let Err(e) = f.sync_all() {
            bad_file_step(k, "sync", e)
        }
        drop(f);
        if let Err(e) = std::fs::rename(&new, format!("{d}/f")) {
            bad_file_step(k, "rename", e)
        }
        wrote = fnv_more(wrote, line.as_bytes());
        if k % 10 == 0 {
            println!("files at {k}");
        }
    }
    let took_us = started.elapsed().as_micros();
    // Closing publishes it (`sync_all` reports a failure).
    if let Err(e) = log.sync_all() {
        bad_file_step(n, "log", e)
    }
    drop(log);
    let lines: String = (1..=n).map(|k| format!("{k}\n")).collect();
    let log_ok = match std::fs::read(&log_path) {
        Ok(bytes) => bytes == lines.as_bytes(),
        Err(e) => bad_file_step(n, "read log", e),
    };
    let mut read = 0u64;
    for k in 1..=n {
        match std::fs::read(format!("{dir}/d{k}/f")) {
            Ok(bytes) => read = fnv_more(read, &bytes),
            Err(e) => bad_file_step(k, "read", e),
        }
    }
    let log_ok = if log_ok { "ok" } else { "bad" };
    println!("files done {n} wrote {wrote:016x} read {read:016x} log {log_ok}");
    println!("took {took_us} us");
    sleep_forever()
}

/// FNV-1a 64 of `bytes`, going on from `h` (0: from the start).
fn fnv_more(h: u64, bytes: &[u8]) -> u64 {
    let start = if h == 0 { 0xcbf2_9ce4_8422_2325 } else { h };
    bytes.iter().fold(start, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn spawner(module: &str, bucket: &str, n: u64, pause_ms: u64, target: &str) -> ! {
    for i in 1..=n {
        if pause_ms > 0 {
            let _ = shoal::sleep(Duration::from_millis(pause_ms));
        }
        let i_text = i.to_string();
        let args = ["child", bucket, &i_text];
        let spawned = if i % 2 == 1 {
            shoal::spawn(module, &args)
        } else {
            shoal::spawn_on(target, module, &args)
        };
        if let Err(e) = spawned {
            println!("BAD spawn {i}: {e}");
            exit(1)
        }
        if i % 10 == 0 {
            println!("spawn at {i}");
        }
    }
    println!("spawn done {n}");
    sleep_forever()
}

fn child(bucket: &str, i: u64) -> ! {
    let bucket = shoal::Bucket::new(bucket);
    for key in ["children".to_string(), format!("child-{i}")] {
        if let Err(e) = bucket.increment(key.as_bytes(), 1) {
            println!("BAD child {i} {key}: {e}");
            exit(1)
        }
    }
    exit(0)
}

fn flood(bucket: &str, n: u64) -> ! {
    let stale = shoal::Bucket::new(bucket).stale();
    while !matches!(stale.exists(b"go"), Ok(true)) {
        let _ = shoal::sleep(Duration::from_millis(20));
    }
    let bucket = shoal::Bucket::new(bucket);
    let started = std::time::Instant::now();
    let (mut made, mut refused) = (0u64, 0u64);
    for _ in 0..n {
        match bucket.increment(b"flood", 1) {
            Ok(_) => made += 1,
            Err(Error::RateLimited) => refused += 1,
            Err(e) => {
                println!("BAD flood {e}");
                exit(1)
            }
        }
    }
    println!(
        "flood ok {made} limited {refused} ms {}",
        started.elapsed().as_millis()
    );
    sleep_forever()
}

fn work(seconds: u64, mib: usize) -> ! {
    const PAGE: usize = 4096;
    let mut heap = vec![1u8; mib.max(1) << 20];
    let pages = heap.len() / PAGE;
    let started = std::time::Instant::now();
    let mut slices = 0u64;
    let mut acc = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        for i in 0..16 {
            let page = (slices as usize * 16 + i) % pages;
            heap[page * PAGE] = heap[page * PAGE].wrapping_add(1);
        }
        let at = (slices as usize * 65_536) % (heap.len() - 65_536 + 1);
        acc ^= fnv(&heap[at..at + 65_536]);
        slices += 1;
        if let Err(e) = shoal::yield_now() {
            eprintln!("tally: yield: {e}");
            exit(1)
        }
    }
    println!(
        "work {slices} slices in {} ms (fold {acc:x})",
        started.elapsed().as_millis()
    );
    exit(0)
}

/// FNV-1a 64.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn journal(name: &str, dir: &str, n: u64) -> ! {
    use std::io::Write;
    if let Err(e) = shoal::register(name) {
        eprintln!("tally: register {name}: {e}");
        exit(1)
    }
    let path = format!("{dir}/journal.log");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| {
            eprintln!("tally: open {path}: {e}");
            exit(1)
        });
    let mut count = 0u64;
    let mut length = 0u64;
    let mut heap: Vec<Vec<u8>> = Vec::new();
    let served = shoal::serve(
        |_from: Pid, k: u64| {
            if k != count + 1 {
                println!("BAD journal got {k} after {count}");
            }
            count += 1;
            let line = format!("{k}\n");
            if let Err(e) = file.write_all(line.as_bytes()) {
                println!("BAD journal append: {e}");
            }
            length += line.len() as u64;
            heap.push(vec![(k % 251) as u8; 64 * 1024]);
            println!("got {k}");
            if count == n {
                let content = std::fs::read(&path).unwrap_or_default();
                let heap_ok = heap
                    .iter()
                    .enumerate()
                    .all(|(i, b)| b.iter().all(|x| *x == ((i as u64 + 1) % 251) as u8));
                println!(
                    "journal done lines {n} bytes {} fnv {:016x} heap {}",
                    content.len(),
                    fnv(&content),
                    if heap_ok { "ok" } else { "bad" }
                );
            }
            (count, length)
        },
        |_| true,
    );
    eprintln!("tally: serve: {served:?}");
    exit(1)
}

fn send(name: &str, n: u64, pause_ms: u64) -> ! {
    let tally = loop {
        match shoal::whereis(name) {
            Ok(p) => break p,
            Err(_) => {
                let _ = shoal::sleep(Duration::from_millis(20));
            }
        }
    };
    let mut digest = 0u64;
    let started = std::time::Instant::now();
    for k in 1..=n {
        let (count, nonce): (u64, u64) = loop {
            match shoal::call(tally, &k, Some(Duration::from_secs(300))) {
                Ok(r) => break r,
                // The way is full (its node is dying): the call was not
                // sent; try again.
                Err(Error::MailboxFull) => {
                    let _ = shoal::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    println!("BAD call {k} failed: {e}");
                    exit(1)
                }
            }
        };
        if count != k {
            println!("BAD call {k} count {count}");
            exit(1)
        }
        digest = fold(digest, k, count, nonce);
        if k % 10 == 0 {
            println!("at {k}");
        }
        if pause_ms > 0 {
            let _ = shoal::sleep(Duration::from_millis(pause_ms));
        }
    }
    println!("sent {n} digest {digest:016x}");
    println!("took {} us", started.elapsed().as_micros());
    exit(0)
}
