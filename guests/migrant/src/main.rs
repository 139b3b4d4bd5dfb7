//! `migrant`: processes to move between nodes while they work, for the
//! migration tests, benchmarks and `shoal demo`.
//!
//! Modes (first argument):
//!
//! - `tally`: a counter that checks what it is sent. Prints `tally ready
//!   pid=<pid>`, then loops on `recv` with a 5 ms timeout; every timeout adds
//!   one to `ticks` (so it counts while idle, in its own heap state). Messages:
//!   - `seq <n>`: number `n` of its sender's stream. Each sender's numbers
//!     must arrive as 0, 1, 2, ...: a number below the next expected one is
//!     counted as a duplicate, one above it as a gap (a lost or reordered
//!     message), and the stream goes on from `n + 1`.
//!   - `get`: replies to the sender with one line:
//!     `ticks=<t> received=<r> senders=<s> dups=<d> gaps=<g>` where
//!     `received` counts `seq` messages.
//!   - `stop`: prints the same line and exits 0.
//! - `send <pid> <count> [<pause_ms>]`: sends `seq 0` .. `seq <count-1>` to
//!   `<pid>` (retrying while its mailbox is full), sleeping `<pause_ms>`
//!   between messages if given (else at full speed), then prints
//!   `sent <count>` and exits 0.
//! - `sleep <ms>`: prints `sleeping <ms>`, sleeps, prints `woke`, then waits
//!   in `recv` for `stop` and exits 0.
//! - `server <delay_ms>`: answers `ask` with `answer` after sleeping
//!   `<delay_ms>`; `stop` ends it.
//! - `server gated`: answers the `ask`s only once a `release` has arrived.
//! - `call <pid> [<message>]`: sends `<message>` (default `ask`) to `<pid>`,
//!   prints `asked`, waits in `recv` for the answer, prints `reply <text>`
//!   and exits 0 (`shoal demo` reads the tally with `call <tally> get`).
//! - `hold <MiB>`: fills a heap buffer of that size with non-zero bytes,
//!   prints `holding <MiB> MiB`, then serves `touch <pages>` (changes one
//!   byte in each of that many pages, replies `ok`), `sum` (replies the
//!   wrapping byte sum), `wipe` (zeroes `STATICS`, 16 KiB of static data
//!   that starts non-zero — a data segment of the module — and replies
//!   `ok`), `statics` (replies the wrapping byte sum of `STATICS`) and
//!   `stop`.
//! - `grow <KiB> [<steps>]`: a program that allocates as it runs. Prints
//!   `growing pid=<pid>`, then loops on `recv` with a 1 ms timeout; every
//!   timeout is one step: it allocates a new `<KiB>` KiB block (kept until
//!   the end, so linear memory grows steadily), fills it with bytes derived
//!   from the step number only, and every 100 steps prints `step <n>`. On
//!   `stop` (or after `<steps>` steps, if given) it checks every block
//!   against what it wrote and prints
//!   `grown steps=<n> kib=<KiB> hash=<h> check=ok` (or `check=bad:<step>`
//!   naming the first block that differs), then exits 0. The output depends
//!   only on `<KiB>` and the number of steps.
//! - `print <KiB>`: a program that prints and allocates steadily, for the
//!   log tests. Prints `print pid=<pid>`, then loops on `recv` with a 1 ms
//!   timeout; every timeout is one step `n` (from 1): it allocates a new
//!   `<KiB>` KiB block (kept until the end), prints `line <n>` on stdout and,
//!   every 100 steps, `mark <n>` on stderr. On `stop` it prints
//!   `printed <n> lines` and exits 0. Its whole output is determined by the
//!   number of steps, so a test can check every line came once, in order.
//! - `clock`: prints `clock ready pid=<pid>`, then answers `now` with
//!   `mono=<ns> back=<b>`: its WASI monotonic clock
//!   (`clock_time_get(MONOTONIC)`) and how many readings so far were below
//!   an earlier one (the clock went back). `stop` ends it.
//!
//! Bad arguments print a usage line to stderr and exit 2; an SDK error prints
//! `migrant: <what>: <error>` and exits 1.

use shoal::Pid;
use std::collections::HashMap;
use std::process::exit;
use std::time::Duration;

const USAGE: &str = "usage: migrant tally | send <pid> <count> [<pause_ms>] | sleep <ms> | server <delay_ms>|gated | call <pid> [<message>] | hold <MiB> | grow <KiB> [<steps>] | print <KiB> | clock";

fn fail(what: &str, e: shoal::Error) -> ! {
    eprintln!("migrant: {what}: {e}");
    exit(1)
}

fn usage() -> ! {
    eprintln!("{USAGE}");
    exit(2)
}

fn num<T: std::str::FromStr>(s: &str) -> T {
    s.parse().unwrap_or_else(|_| usage())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["tally"] => tally(),
        ["send", pid, count] => send(num(pid), num(count), None),
        ["send", pid, count, pause] => send(num(pid), num(count), Some(num(pause))),
        ["sleep", ms] => sleep(num(ms)),
        ["server", "gated"] => gated_server(),
        ["server", delay] => server(num(delay)),
        ["call", pid] => call(num(pid), "ask"),
        ["call", pid, message] => call(num(pid), message),
        ["hold", mib] => hold(num(mib)),
        ["clock"] => clock(),
        ["grow", kib] => grow(num(kib), None),
        ["grow", kib, steps] => grow(num(kib), Some(num(steps))),
        ["print", kib] => print(num(kib)),
        _ => usage(),
    }
}

/// The tally's state, on the heap.
#[derive(Default)]
struct Tally {
    ticks: u64,
    received: u64,
    dups: u64,
    gaps: u64,
    next: HashMap<u64, u64>,
}

impl Tally {
    fn line(&self) -> String {
        format!(
            "ticks={} received={} senders={} dups={} gaps={}",
            self.ticks,
            self.received,
            self.next.len(),
            self.dups,
            self.gaps
        )
    }
}

fn tally() {
    let mut t = Box::new(Tally::default());
    println!("tally ready pid={}", shoal::self_pid());
    loop {
        let msg = match shoal::recv(Some(Duration::from_millis(5))) {
            Ok(m) => m,
            Err(shoal::Error::Timeout) => {
                t.ticks += 1;
                continue;
            }
            Err(e) => fail("recv", e),
        };
        let text = String::from_utf8_lossy(&msg.data);
        let mut words = text.split_whitespace();
        match (words.next(), words.next()) {
            (Some("seq"), Some(n)) => {
                let Ok(n) = n.parse::<u64>() else {
                    eprintln!("migrant: bad message {text:?}");
                    continue;
                };
                t.received += 1;
                let next = t.next.entry(msg.sender.as_u64()).or_insert(0);
                if n < *next {
                    if t.dups == 0 {
                        eprintln!(
                            "migrant: first duplicate from {}: got {n}, expected {}",
                            msg.sender, *next
                        );
                    }
                    t.dups += 1;
                } else {
                    if n > *next {
                        eprintln!(
                            "migrant: gap from {}: got {n}, expected {}",
                            msg.sender, *next
                        );
                        t.gaps += 1;
                    }
                    *next = n + 1;
                }
            }
            (Some("get"), None) => {
                if let Err(e) = shoal::send_blocking(msg.sender, t.line().as_bytes()) {
                    eprintln!("migrant: reply to {}: {e}", msg.sender);
                }
            }
            (Some("stop"), None) => {
                println!("{}", t.line());
                shoal::exit(0);
            }
            _ => eprintln!("migrant: bad message {text:?}"),
        }
    }
}

fn send(to: u64, count: u64, pause_ms: Option<u64>) {
    let to = Pid::from_raw(to);
    for n in 0..count {
        let text = format!("seq {n}");
        if let Err(e) = shoal::send_blocking(to, text.as_bytes()) {
            fail("send", e);
        }
        if let Some(ms) = pause_ms {
            if let Err(e) = shoal::sleep(Duration::from_millis(ms)) {
                fail("sleep", e);
            }
        }
    }
    println!("sent {count}");
}

fn wait_for_stop() {
    loop {
        match shoal::recv(None) {
            Ok(m) if m.data == b"stop" => shoal::exit(0),
            Ok(_) => {}
            Err(e) => fail("recv", e),
        }
    }
}

fn sleep(ms: u64) {
    println!("sleeping {ms}");
    if let Err(e) = shoal::sleep(Duration::from_millis(ms)) {
        fail("sleep", e);
    }
    println!("woke");
    wait_for_stop();
}

fn server(delay_ms: u64) {
    println!("server ready pid={}", shoal::self_pid());
    loop {
        let msg = match shoal::recv(None) {
            Ok(m) => m,
            Err(e) => fail("recv", e),
        };
        match msg.data.as_slice() {
            b"ask" => {
                if let Err(e) = shoal::sleep(Duration::from_millis(delay_ms)) {
                    fail("sleep", e);
                }
                if let Err(e) = shoal::send_blocking(msg.sender, b"answer") {
                    eprintln!("migrant: answer {}: {e}", msg.sender);
                }
            }
            b"stop" => shoal::exit(0),
            _ => {}
        }
    }
}

/// Like [`server`], but `ask`s are answered only once a `release` has
/// arrived (so a test decides when the answer comes, not a clock).
fn gated_server() {
    println!("server ready pid={}", shoal::self_pid());
    let mut pending = Vec::new();
    let mut released = false;
    loop {
        let msg = match shoal::recv(None) {
            Ok(m) => m,
            Err(e) => fail("recv", e),
        };
        match msg.data.as_slice() {
            b"ask" => pending.push(msg.sender),
            b"release" => released = true,
            b"stop" => shoal::exit(0),
            _ => {}
        }
        if released {
            for asker in pending.drain(..) {
                if let Err(e) = shoal::send_blocking(asker, b"answer") {
                    eprintln!("migrant: answer {asker}: {e}");
                }
            }
        }
    }
}

fn call(server: u64, message: &str) {
    if let Err(e) = shoal::send_blocking(Pid::from_raw(server), message.as_bytes()) {
        fail("ask", e);
    }
    println!("asked");
    match shoal::recv(None) {
        Ok(m) => println!("reply {}", String::from_utf8_lossy(&m.data)),
        Err(e) => fail("recv", e),
    }
}

/// Static data that starts non-zero: the module's data segment writes it
/// at instantiation. After `wipe` its whole pages are zero, which a move
/// must keep (a fresh instance has the segment's bytes there).
static mut STATICS: [u8; 16384] = [0x5a; 16384];

/// The wrapping byte sum of [`STATICS`].
fn statics_sum() -> u64 {
    // SAFETY: the guest is single-threaded; nothing else holds a reference.
    let statics = unsafe { &*std::ptr::addr_of!(STATICS) };
    statics.iter().fold(0u64, |a, b| a.wrapping_add(*b as u64))
}

fn hold(mib: usize) {
    let mut buffer = vec![0u8; mib << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in buffer.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        for (b, v) in chunk.iter_mut().zip(x.to_le_bytes()) {
            *b = v | 1;
        }
    }
    println!("holding {mib} MiB");
    let mut next_page = 0usize;
    loop {
        let msg = match shoal::recv(None) {
            Ok(m) => m,
            Err(e) => fail("recv", e),
        };
        let text = String::from_utf8_lossy(&msg.data).into_owned();
        let mut words = text.split_whitespace();
        match (words.next(), words.next()) {
            (Some("touch"), Some(n)) => {
                let pages: usize = n.parse().unwrap_or(1);
                for _ in 0..pages {
                    let at = (next_page * 4096) % buffer.len().max(1);
                    if let Some(b) = buffer.get_mut(at) {
                        *b = b.wrapping_add(2) | 1;
                    }
                    next_page += 1;
                }
                let _ = shoal::send_blocking(msg.sender, b"ok");
            }
            (Some("sum"), None) => {
                let sum = buffer.iter().fold(0u64, |a, b| a.wrapping_add(*b as u64));
                let _ = shoal::send_blocking(msg.sender, sum.to_string().as_bytes());
            }
            (Some("wipe"), None) => {
                // SAFETY: single-threaded; volatile so the writes stay.
                unsafe {
                    let at = std::ptr::addr_of_mut!(STATICS) as *mut u8;
                    for i in 0..16384 {
                        std::ptr::write_volatile(at.add(i), 0);
                    }
                }
                let _ = shoal::send_blocking(msg.sender, b"ok");
            }
            (Some("statics"), None) => {
                let sum = statics_sum();
                let _ = shoal::send_blocking(msg.sender, sum.to_string().as_bytes());
            }
            (Some("stop"), None) => shoal::exit(0),
            _ => {}
        }
    }
}

/// The bytes of block `step` of `grow`: non-zero, from the step alone.
fn grow_fill(step: u64, block: &mut [u8]) {
    let mut x: u64 = (step + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in block.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        for (b, v) in chunk.iter_mut().zip(x.to_le_bytes()) {
            *b = v | 1;
        }
    }
}

fn grow(kib: usize, steps: Option<u64>) {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    println!("growing pid={}", shoal::self_pid());
    loop {
        if steps.is_some_and(|n| blocks.len() as u64 >= n) {
            break;
        }
        match shoal::recv(Some(Duration::from_millis(1))) {
            Ok(m) if m.data == b"stop" && steps.is_none() => break,
            Ok(_) => continue,
            Err(shoal::Error::Timeout) => {}
            Err(e) => fail("recv", e),
        }
        let step = blocks.len() as u64;
        let mut block = vec![0u8; kib << 10];
        grow_fill(step, &mut block);
        blocks.push(block);
        if (step + 1) % 100 == 0 {
            println!("step {}", step + 1);
        }
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut bad = None;
    let mut want = vec![0u8; kib << 10];
    for (step, block) in blocks.iter().enumerate() {
        grow_fill(step as u64, &mut want);
        if bad.is_none() && *block != want {
            bad = Some(step);
        }
        for b in block {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    let check = match bad {
        None => "ok".to_string(),
        Some(step) => format!("bad:{step}"),
    };
    println!(
        "grown steps={} kib={kib} hash={hash:016x} check={check}",
        blocks.len()
    );
}

fn print(kib: usize) {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    println!("print pid={}", shoal::self_pid());
    loop {
        match shoal::recv(Some(Duration::from_millis(1))) {
            Ok(m) if m.data == b"stop" => break,
            Ok(_) => continue,
            Err(shoal::Error::Timeout) => {}
            Err(e) => fail("recv", e),
        }
        let step = blocks.len() as u64 + 1;
        let mut block = vec![0u8; kib << 10];
        grow_fill(step, &mut block);
        blocks.push(block);
        println!("line {step}");
        if step % 100 == 0 {
            eprintln!("mark {step}");
        }
    }
    println!("printed {} lines", blocks.len());
}

#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    /// WASI `clock_time_get(id, precision, *time) -> errno`.
    #[link_name = "clock_time_get"]
    fn wasi_clock_time_get(id: u32, precision: u64, time: *mut u64) -> i32;
}

/// WASI `clock_time_get(MONOTONIC)`, ns.
fn monotonic_ns() -> u64 {
    let mut t: u64 = 0;
    // SAFETY: `t` is valid for a write of 8 bytes.
    let errno = unsafe { wasi_clock_time_get(1, 1, &mut t) };
    if errno != 0 {
        eprintln!("migrant: clock_time_get failed: errno {errno}");
        exit(1);
    }
    t
}

fn clock() {
    println!("clock ready pid={}", shoal::self_pid());
    let mut last = monotonic_ns();
    let mut back = 0u64;
    loop {
        let msg = match shoal::recv(None) {
            Ok(m) => m,
            Err(e) => fail("recv", e),
        };
        match msg.data.as_slice() {
            b"now" => {
                let now = monotonic_ns();
                if now < last {
                    back += 1;
                }
                last = now;
                let line = format!("mono={now} back={back}");
                if let Err(e) = shoal::send_blocking(msg.sender, line.as_bytes()) {
                    eprintln!("migrant: reply to {}: {e}", msg.sender);
                }
            }
            b"stop" => shoal::exit(0),
            _ => {}
        }
    }
}
