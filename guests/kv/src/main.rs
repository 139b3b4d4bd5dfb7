//! `kv`: a key/value service answering calls (see `kv_proto` for the
//! protocol), the server half of the worked example of calls between
//! processes; `kv_client` is the other half.
//!
//! Modes (first argument):
//!
//! - `serve` (the default): prints `kv ready pid=<pid>`, then answers calls
//!   from any process with a hand-written `recv_any` loop. `Hold` calls are
//!   kept unanswered (printing `held <n>`) until a plain message `release`
//!   arrives. Plain messages also control it: `exit <code>` exits with that
//!   code (calls pending get `CALLEE_DOWN`), `trap` traps, `stats` replies
//!   (as a plain message) `calls=<n> held=<h> keys=<k>`.
//! - `named <name>`: registers `<name>` first, printing `registered <name>`
//!   (then serves as `serve`) or `register failed <ERROR>` (then exits 3).
//! - `member <group>`: joins `<group>`, prints `joined <group>` (or
//!   `join failed <ERROR>`, exit 3), then serves as `serve`.
//! - `simple`: the same Put/Get/Echo through `shoal::serve` (Hold is
//!   answered at once); prints `kv simple ready pid=<pid>`.

use kv_proto::{Req, Resp};
use shoal::{CallHandle, Incoming, Pid};
use std::collections::BTreeMap;

fn answer(store: &mut BTreeMap<String, Vec<u8>>, req: Req) -> Resp {
    match req {
        Req::Put(k, v) => Resp::Value(store.insert(k, v)),
        Req::Get(k) => Resp::Value(store.get(&k).cloned()),
        Req::Echo(n, data) => Resp::Echo(n, data),
        Req::Hold(n) => Resp::Released(n),
    }
}

fn serve() -> shoal::Result<()> {
    let mut store = BTreeMap::new();
    let mut held: Vec<(CallHandle, u64)> = Vec::new();
    let mut calls = 0u64;
    loop {
        match shoal::recv_any(None)? {
            Incoming::Call { from, handle, data } => {
                calls += 1;
                let req: Req = match postcard::from_bytes(&data) {
                    Ok(r) => r,
                    Err(_) => {
                        eprintln!("kv: undecodable call from {from}");
                        continue;
                    }
                };
                if let Req::Hold(n) = req {
                    held.push((handle, n));
                    println!("held {}", held.len());
                    continue;
                }
                let resp = answer(&mut store, req);
                if let Err(e) = shoal::reply(handle, &resp) {
                    eprintln!("kv: reply to {from}: {e}");
                }
            }
            Incoming::Message(m) => {
                let text = String::from_utf8_lossy(&m.data).into_owned();
                let mut words = text.split_whitespace();
                match words.next() {
                    Some("release") => {
                        for (h, n) in held.drain(..) {
                            let _ = shoal::reply(h, &Resp::Released(n));
                        }
                        println!("released");
                    }
                    Some("exit") => {
                        let code = words.next().and_then(|c| c.parse().ok()).unwrap_or(0);
                        println!("exiting {code}");
                        shoal::exit(code);
                    }
                    Some("trap") => {
                        println!("trapping");
                        std::process::abort();
                    }
                    Some("stats") => {
                        let line =
                            format!("calls={calls} held={} keys={}", held.len(), store.len());
                        let _ = shoal::send(m.sender, line.as_bytes());
                    }
                    _ => eprintln!("kv: unknown message {text:?}"),
                }
            }
            Incoming::Down(d) => println!("down {} {:?}", d.pid, d.reason),
        }
    }
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "serve".into());
    let me: Pid = shoal::self_pid();
    let r = match mode.as_str() {
        "serve" => {
            println!("kv ready pid={me}");
            serve()
        }
        "named" => {
            let name = std::env::args().nth(2).unwrap_or_default();
            match shoal::register(&name) {
                Ok(()) => println!("registered {name}"),
                Err(e) => {
                    println!("register failed {}", e.name());
                    std::process::exit(3);
                }
            }
            println!("kv ready pid={me}");
            serve()
        }
        "member" => {
            let group = std::env::args().nth(2).unwrap_or_default();
            match shoal::join_group(&group) {
                Ok(()) => println!("joined {group}"),
                Err(e) => {
                    println!("join failed {}", e.name());
                    std::process::exit(3);
                }
            }
            println!("kv ready pid={me}");
            serve()
        }
        "simple" => {
            println!("kv simple ready pid={me}");
            let mut store = BTreeMap::new();
            shoal::serve(|_from: Pid, req: Req| answer(&mut store, req), |_| true)
        }
        other => {
            eprintln!("usage: kv [serve|simple] (got {other:?})");
            std::process::exit(2)
        }
    };
    if let Err(e) = r {
        eprintln!("kv: {e}");
        std::process::exit(1);
    }
}
