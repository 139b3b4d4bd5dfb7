//! `counter`: a stateful server whose state lives on the heap, for capture and
//! restore tests.
//!
//! Prints `counter ready pid=<pid>` (and logs `counter ready` at info level to
//! the process log), then loops on `recv` (no timeout) taking
//! text commands:
//!
//! - `add <n>`: adds the unsigned number `n` to the total (wrapping) and
//!   records it in the history.
//! - `get`: replies to the sender with the total as decimal text.
//! - `stop`: prints `counter total=<total> adds=<number of adds>` and exits 0
//!   (through `shoal::exit`).
//!
//! Anything else is reported on stderr (`counter: bad command ...`) and
//! ignored.

use std::process::exit;

/// The whole state, boxed so that it lives in linear-memory heap rather than
/// on the stack.
struct State {
    /// Every number added, in order.
    history: Vec<u64>,
    /// Running (wrapping) sum of `history`.
    total: u64,
}

fn main() {
    let mut state = Box::new(State {
        history: Vec::new(),
        total: 0,
    });
    println!("counter ready pid={}", shoal::self_pid());
    if let Err(e) = shoal::log(shoal::Level::Info, "counter ready") {
        eprintln!("counter: log: {e}");
    }
    loop {
        let msg = match shoal::recv(None) {
            Ok(msg) => msg,
            Err(e) => {
                eprintln!("counter: recv: {e}");
                exit(1);
            }
        };
        let text = String::from_utf8_lossy(&msg.data);
        let mut words = text.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("add"), Some(n), None) => match n.parse::<u64>() {
                Ok(n) => {
                    state.history.push(n);
                    state.total = state.total.wrapping_add(n);
                }
                Err(_) => eprintln!("counter: bad command {text:?}"),
            },
            (Some("get"), None, None) => {
                if let Err(e) = shoal::send_blocking(msg.sender, state.total.to_string().as_bytes())
                {
                    eprintln!("counter: reply to {}: {e}", msg.sender);
                }
            }
            (Some("stop"), None, None) => {
                println!("counter total={} adds={}", state.total, state.history.len());
                shoal::exit(0);
            }
            _ => eprintln!("counter: bad command {text:?}"),
        }
    }
}
