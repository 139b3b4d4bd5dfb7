//! Guests in other languages (#17): the Zig, C++, AssemblyScript, Go and
//! Python example guests (`guests/{zig,cpp,assemblyscript,go,python}`, over the SDKs in
//! `sdk/`), built by `guests/langs/build.sh` from `tests/build.rs`, on real
//! 3-node clusters next to the Rust `ping_pong` guest.
//!
//! One cluster per language (they are slow to start on two cores); its test
//! goes through every step in order:
//!
//! 1. the language's ping talks to a Rust pong on another node, and a Rust
//!    ping to the language's pong on another node;
//! 2. the language's pong is snapshotted while blocked in `recv`, restored
//!    on a third node from the snapshot file, and answers there;
//! 3. the language's pong moves to another node while a Rust ping on a
//!    third node is in the middle of its round trips (the ping checks every
//!    reply against what it sent, so a lost, duplicated or reordered
//!    message fails it);
//! 4. its all-imports guest calls every `shoal_v1` import on the cluster
//!    and prints `all imports ok` (on the Raft leader; on a follower in
//!    `allimports_on_a_follower_sees_its_own_names`).
//!
//! And once for all ten built modules: every `shoal_v1` import they
//! declare is in the host's import table with the same signature.
//!
//! The Go modules are about 2 MB and the Python ones 7 MB: each node prepares one (Asyncify and
//! compilation) in several seconds the first time it runs it, so a spawn,
//! restore or move to a node that has not run it yet waits that long (in
//! step 3 the target, n3, has prepared the pong's module for step 2's
//! restore already). Every wait here is for a condition, bounded by `WAIT`
//! (minutes), never a fixed sleep.

use crate::common;

use common::cluster::{wait_until, TestCluster};
use common::procs::{exit_of, home_of, move_to, spawn, stderr, stdout, WAIT};
use common::tally::add_guest_everywhere as add_guest;
use shoal_abi::table::{Provider, Ty, IMPORTS, SHOAL_ABI_MODULE, WASI_MODULE};
use shoal_registry::Sha256;
use shoal_runtime::{ExitReason, Pid};
use std::time::Instant;

/// One language's two example guests.
struct Lang {
    /// Prefix of its module names (`zig`, `cpp`, `as`, `go`, `py`).
    prefix: &'static str,
    /// Path of `<prefix>_pingpong.wasm`.
    pingpong: &'static str,
    /// Path of `<prefix>_allimports.wasm`.
    allimports: &'static str,
}

const ZIG: Lang = Lang {
    prefix: "zig",
    pingpong: shoal_tests::ZIG_PINGPONG,
    allimports: shoal_tests::ZIG_ALLIMPORTS,
};

const CPP: Lang = Lang {
    prefix: "cpp",
    pingpong: shoal_tests::CPP_PINGPONG,
    allimports: shoal_tests::CPP_ALLIMPORTS,
};

const ASSEMBLYSCRIPT: Lang = Lang {
    prefix: "as",
    pingpong: shoal_tests::AS_PINGPONG,
    allimports: shoal_tests::AS_ALLIMPORTS,
};

const GO: Lang = Lang {
    prefix: "go",
    pingpong: shoal_tests::GO_PINGPONG,
    allimports: shoal_tests::GO_ALLIMPORTS,
};

const PYTHON: Lang = Lang {
    prefix: "py",
    pingpong: shoal_tests::PY_PINGPONG,
    allimports: shoal_tests::PY_ALLIMPORTS,
};

/// Every language: the follower test and the import check cover them all.
const ALL_LANGS: [&Lang; 5] = [&ZIG, &CPP, &ASSEMBLYSCRIPT, &GO, &PYTHON];

/// Round trips of the cross-language ping-pongs.
const ROUND_TRIPS: u64 = 1_000;

/// Round trips of the ping whose pong moves: enough that the ping is still
/// at it when the move is over, on a loaded two-core machine too.
const MOVE_ROUND_TRIPS: u64 = 20_000;

/// Messages the test itself exchanges with a pong around a snapshot or a
/// move, from a host mailbox on another node.
const HOST_ROUNDS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zig_guests_talk_to_rust_survive_snapshot_and_move_and_call_every_import() {
    whole_story(&ZIG).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cpp_guests_talk_to_rust_survive_snapshot_and_move_and_call_every_import() {
    whole_story(&CPP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn assemblyscript_guests_talk_to_rust_survive_snapshot_and_move_and_call_every_import() {
    whole_story(&ASSEMBLYSCRIPT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn go_guests_talk_to_rust_survive_snapshot_and_move_and_call_every_import() {
    whole_story(&GO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_guests_talk_to_rust_survive_snapshot_and_move_and_call_every_import() {
    whole_story(&PYTHON).await;
}

/// Every step, in order, on one 3-node cluster (`n1`, `n2`, `n3`: indices
/// 0, 1, 2).
async fn whole_story(lang: &Lang) {
    let started = Instant::now();
    let c = TestCluster::start(3).await;
    let pingpong = format!("{}_pingpong", lang.prefix);
    let allimports = format!("{}_allimports", lang.prefix);
    add_guest(&c, shoal_tests::PING_PONG, "ping_pong").await;
    let hash = add_guest(&c, lang.pingpong, &pingpong).await;
    add_guest(&c, lang.allimports, &allimports).await;
    println!("{pingpong}: cluster up in {:?}", started.elapsed());

    let t = Instant::now();
    // The language's ping on n1, its Rust pong on n2.
    ping_pong_across(&c, 0, &pingpong, "ping_pong", 1).await;
    // A Rust ping on n3, the language's pong on n1.
    ping_pong_across(&c, 2, "ping_pong", &pingpong, 0).await;
    println!("{pingpong}: both ping-pongs in {:?}", t.elapsed());

    let t = Instant::now();
    snapshot_in_recv_and_restore_elsewhere(&c, &pingpong).await;
    println!("{pingpong}: snapshot and restore in {:?}", t.elapsed());

    let t = Instant::now();
    move_mid_conversation(&c, &pingpong, hash).await;
    println!("{pingpong}: move mid-conversation in {:?}", t.elapsed());

    let t = Instant::now();
    // On the Raft leader (a follower: `allimports_on_a_follower_sees_its_own_names`).
    let leader = c.leader().expect("a Raft leader");
    let out = all_imports_ok(&c, leader, &allimports).await;
    println!(
        "{allimports} on {}: {} in {:?}",
        c.node(leader).name(),
        out.lines().last().unwrap_or_default(),
        t.elapsed()
    );

    c.shutdown().await;
    println!("{pingpong}: whole test {:?}", started.elapsed());
}

/// Run `<allimports> <allimports>` on node `i` (its registered name is how
/// it spawns its helper): it must exit 0 having printed `all imports ok`
/// and no failed check. Returns its output.
async fn all_imports_ok(c: &TestCluster, i: usize, allimports: &str) -> String {
    let all = spawn(c, i, &[allimports, allimports]).await;
    let st = exit_of(c, i, all).await;
    let out = stdout(c, i, all);
    let err = stderr(c, i, all);
    let failed: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        st.success(),
        "{allimports} on {}: {st}\nfailed checks:\n{}\nstderr:\n{err}",
        c.node(i).name(),
        failed.join("\n")
    );
    assert!(out.contains("all imports ok"), "{allimports}:\n{out}");
    assert!(failed.is_empty(), "{allimports}:\n{out}");
    // Checked for real, not as on a node without a cluster.
    assert!(!out.contains("standalone"), "{allimports}:\n{out}");
    out
}

/// A guest's own `register` / `join_group` must be visible to its own
/// `whereis`, `unregister` and `group_pick` right after, on any node. On a
/// follower the write returns once the leader has applied it, and those
/// calls read the follower's applied state: without the host waiting for
/// its node to apply its own name writes, the all-imports guests failed
/// `whereis: finds oneself` (NO_PROCESS), `unregister: the name` (INVALID)
/// or `group_pick: picks the only member` (NO_PROCESS) on every run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn allimports_on_a_follower_sees_its_own_names() {
    let c = TestCluster::start(3).await;
    for lang in ALL_LANGS {
        let allimports = format!("{}_allimports", lang.prefix);
        add_guest(&c, lang.allimports, &allimports).await;
    }
    let leader = c.leader().expect("a Raft leader");
    let follower = (0..3).find(|i| *i != leader).expect("a follower");
    for lang in ALL_LANGS {
        let allimports = format!("{}_allimports", lang.prefix);
        all_imports_ok(&c, follower, &allimports).await;
    }
    c.shutdown().await;
}

/// `ping <pong_module> ROUND_TRIPS n<pong_node+1>` of `ping_module` on node
/// `ping_node`: it ends with code 0 having printed that it is done, and its
/// partner ran on node `pong_node` (a process started and ended there).
async fn ping_pong_across(
    c: &TestCluster,
    ping_node: usize,
    ping_module: &str,
    pong_module: &str,
    pong_node: usize,
) {
    assert_ne!(ping_node, pong_node);
    let target = c.node(pong_node).name().to_string();
    let there = c.node(pong_node).node().table_changes();
    let before = *there.borrow();
    let n = ROUND_TRIPS.to_string();
    let t = Instant::now();
    let ping = spawn(
        c,
        ping_node,
        &[ping_module, "ping", pong_module, &n, &target],
    )
    .await;
    let st = exit_of(c, ping_node, ping).await;
    let out = stdout(c, ping_node, ping);
    assert!(
        st.success(),
        "{ping_module} ping -> {pong_module} pong on {target}: {st}\n{out}\nstderr:\n{}",
        stderr(c, ping_node, ping)
    );
    assert!(
        out.contains(&format!("ping-pong done {ROUND_TRIPS} round trips")),
        "{out}"
    );
    println!(
        "{ping_module} ping on {} -> {pong_module} pong on {target}: {ROUND_TRIPS} round trips in {:?}",
        c.node(ping_node).name(),
        t.elapsed()
    );
    // The pong started on the target node and ended there when told to stop
    // (nothing else runs on it meanwhile).
    wait_until(
        &format!("the {pong_module} pong to start and end on {target}"),
        WAIT,
        || *there.borrow() >= before + 2,
    )
    .await;
}

/// The language's pong on n2 answers a host mailbox on n1, is snapshotted
/// (stopped) while it waits in `recv`, restored on n3 from the exported
/// file, and answers there.
async fn snapshot_in_recv_and_restore_elsewhere(c: &TestCluster, pingpong: &str) {
    let pong = spawn(c, 1, &[pingpong, "pong"]).await;
    wait_home(c, 0, pong, 1).await;
    let mb = c.node(0).node().open_mailbox();
    for i in 0..HOST_ROUNDS {
        round_trip(&mb, pong, &format!("before snapshot {i}")).await;
    }
    // It has answered everything: it is back in `recv`, with nothing queued.
    let info = c
        .node(1)
        .node()
        .snapshot(pong, true, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{pingpong} pong: snapshot: {e}"));
    assert_eq!(info.pending_call, "shoal_v1.recv", "{pingpong}");
    assert_eq!(exit_of(c, 1, pong).await.reason, ExitReason::Snapshotted);
    let file = c
        .node(1)
        .node()
        .export_snapshot(&info.id)
        .expect("export the snapshot");
    // Only the file travels to n3. The module is named cluster-wide, but its
    // bytes are only where it ran (n3 has not): restoring takes a module in
    // the node's registry, so n3 fetches it first.
    let n3 = c.node(2).node();
    let fetched = n3
        .fetch_module(pingpong)
        .await
        .unwrap_or_else(|code| panic!("n3 fetches {pingpong}: error {code}"));
    assert_eq!(fetched, info.module);
    let id = n3.import_snapshot(&file).expect("import the snapshot");
    let restored = n3
        .restore_snapshot(&id, false, &shoal_runtime::grants::Grants::default())
        .await
        .unwrap_or_else(|e| panic!("{pingpong} pong: restore: {e}"));
    wait_home(c, 0, restored, 2).await;
    for i in 0..HOST_ROUNDS {
        round_trip(&mb, restored, &format!("after restore {i}")).await;
    }
    mb.send(restored, b"stop".to_vec()).expect("send stop");
    let st = exit_of(c, 2, restored).await;
    assert!(
        st.success(),
        "{pingpong} restored pong: {st}\nstderr:\n{}",
        stderr(c, 2, restored)
    );
}

/// A Rust ping on n1 starts the language's pong on n2 and runs
/// MOVE_ROUND_TRIPS round trips with it; meanwhile a host mailbox on n1 has
/// some round trips of its own with the pong, queues a few more, and the
/// pong moves n2 -> n3. The queued ones are answered from n3, in order, and
/// the ping, still running when the move ends, finishes with every reply
/// checked.
async fn move_mid_conversation(c: &TestCluster, pingpong: &str, hash: Sha256) {
    let n = MOVE_ROUND_TRIPS.to_string();
    let ping = spawn(c, 0, &["ping_pong", "ping", pingpong, &n, "n2"]).await;
    // Its pong: the one process of the language's module on n2.
    let n2 = c.node(1).node().clone();
    let mut pong = None;
    wait_until("the ping's pong to start on n2", WAIT, || {
        pong = n2
            .processes()
            .iter()
            .find(|p| p.module == hash)
            .map(|p| p.pid);
        pong.is_some()
    })
    .await;
    let pong = pong.expect("found");
    wait_home(c, 0, pong, 1).await;
    let mb = c.node(0).node().open_mailbox();
    for i in 0..HOST_ROUNDS {
        round_trip(&mb, pong, &format!("before move {i}")).await;
    }
    let n1 = c.node(0).node().clone();
    assert!(
        n1.router().is_local(ping),
        "the ping ended before the move began: raise MOVE_ROUND_TRIPS\n{}",
        stdout(c, 0, ping)
    );
    // Queued (or on their way) while it moves.
    let queued: Vec<String> = (0..10).map(|i| format!("during move {i}")).collect();
    for m in &queued {
        mb.send(pong, m.clone().into_bytes()).expect("send");
    }
    let t = Instant::now();
    move_to(c, 1, pong, 2).await;
    let took = t.elapsed();
    let ping_was_running = n1.router().is_local(ping);
    assert!(c.node(2).node().router().is_local(pong));
    assert!(!c.node(1).node().router().is_local(pong));
    assert_eq!(home_of(c, pong), Some(2));
    for m in &queued {
        let reply = mb.recv(WAIT).await.expect("a reply after the move");
        assert_eq!(reply.sender, pong);
        assert_eq!(String::from_utf8_lossy(&reply.data), *m);
    }
    let st = exit_of(c, 0, ping).await;
    let out = stdout(c, 0, ping);
    assert!(
        st.success(),
        "Rust ping -> {pingpong} pong moved n2 -> n3: {st}\n{out}\nstderr:\n{}",
        stderr(c, 0, ping)
    );
    assert!(
        out.contains(&format!("ping-pong done {MOVE_ROUND_TRIPS} round trips")),
        "{out}"
    );
    assert!(
        ping_was_running,
        "the ping had finished when the move ended: raise MOVE_ROUND_TRIPS"
    );
    // The ping's `stop` reached it on n3.
    let st = exit_of(c, 2, pong).await;
    assert!(
        st.success(),
        "{pingpong} pong: {st}\nstderr:\n{}",
        stderr(c, 2, pong)
    );
    println!("{pingpong} pong moved n2 -> n3 in {took:?} during {MOVE_ROUND_TRIPS} round trips");
}

/// Send `text` to `pid` and check the reply is the same bytes, from `pid`.
async fn round_trip(mb: &shoal_runtime::HostMailbox, pid: Pid, text: &str) {
    mb.send(pid, text.as_bytes().to_vec())
        .unwrap_or_else(|e| panic!("send {text:?} to {pid}: {e:?}"));
    let reply = mb
        .recv(WAIT)
        .await
        .unwrap_or_else(|| panic!("no reply to {text:?} from {pid}"));
    assert_eq!(reply.sender, pid, "reply to {text:?}");
    assert_eq!(String::from_utf8_lossy(&reply.data), text);
}

/// Wait until node `via`'s directory places `pid` on node `home`.
async fn wait_home(c: &TestCluster, via: usize, pid: Pid, home: usize) {
    let raft = c.node(via).raft().clone();
    let id = c.node(home).id();
    wait_until(
        &format!("node {via} to see {pid} on node {home}"),
        WAIT,
        || raft.state().directory.get(&pid.0).map(|e| e.node) == Some(id),
    )
    .await;
}

fn ty_of(v: &wasmparser::ValType) -> Option<Ty> {
    match v {
        wasmparser::ValType::I32 => Some(Ty::I32),
        wasmparser::ValType::I64 => Some(Ty::I64),
        _ => None,
    }
}

/// The function imports of a module: (module, name, params, results), the
/// types as the host table spells them (`None` for any other type).
#[allow(clippy::type_complexity)]
fn func_imports(wasm: &[u8]) -> Vec<(String, String, Vec<Option<Ty>>, Vec<Option<Ty>>)> {
    use wasmparser::{Parser, Payload, TypeRef};
    let mut types = Vec::new();
    let mut imports = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.expect("a valid module") {
            Payload::TypeSection(reader) => {
                for ty in reader.into_iter_err_on_gc_types() {
                    types.push(ty.expect("a function type"));
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.expect("an import");
                    let idx = match import.ty {
                        TypeRef::Func(i) | TypeRef::FuncExact(i) => i,
                        other => panic!(
                            "import {}.{} is not a function: {other:?}",
                            import.module, import.name
                        ),
                    };
                    let f = &types[idx as usize];
                    imports.push((
                        import.module.to_string(),
                        import.name.to_string(),
                        f.params().iter().map(ty_of).collect(),
                        f.results().iter().map(ty_of).collect(),
                    ));
                }
            }
            _ => {}
        }
    }
    imports
}

/// The built modules (not their sources): every `shoal_v1` import is in
/// the host's table with the same signature, every other import is WASI
/// preview 1 (nothing the host does not link, like AssemblyScript's
/// `env.abort`), and each all-imports guest imports the whole `shoal_v1`
/// table.
#[test]
fn every_shoal_import_of_the_built_modules_is_in_the_host_table_with_its_signature() {
    let host: Vec<_> = IMPORTS
        .iter()
        .filter(|i| i.provider == Provider::Shoal)
        .collect();
    let mut problems = Vec::new();
    for lang in ALL_LANGS {
        for (kind, path) in [("pingpong", lang.pingpong), ("allimports", lang.allimports)] {
            let module = format!("{}_{kind}", lang.prefix);
            let wasm = std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
            let imports = func_imports(&wasm);
            let mut shoal_names = Vec::new();
            for (from, name, params, results) in &imports {
                if from == WASI_MODULE {
                    continue;
                }
                if from != SHOAL_ABI_MODULE {
                    problems.push(format!(
                        "{module}: imports {from}.{name}, which the host does not provide"
                    ));
                    continue;
                }
                shoal_names.push(name.as_str());
                let Some(spec) = host.iter().find(|i| i.name == name) else {
                    problems.push(format!(
                        "{module}: imports {from}.{name}, not in the host's table"
                    ));
                    continue;
                };
                let want_params: Vec<Option<Ty>> = spec.params.iter().copied().map(Some).collect();
                let want_results: Vec<Option<Ty>> =
                    spec.results.iter().copied().map(Some).collect();
                if *params != want_params || *results != want_results {
                    problems.push(format!(
                        "{module}: {from}.{name} is imported as {params:?} -> {results:?}, the host has {:?} -> {:?}",
                        spec.params, spec.results
                    ));
                }
            }
            assert!(
                shoal_names.contains(&"recv") && shoal_names.contains(&"send"),
                "{module} does not import recv and send: {shoal_names:?}"
            );
            if kind == "allimports" {
                for spec in &host {
                    if !shoal_names.contains(&spec.name) {
                        problems.push(format!(
                            "{module} does not import {SHOAL_ABI_MODULE}.{}",
                            spec.name
                        ));
                    }
                }
            }
            println!(
                "{module}: {} bytes, {} imports, {} of them shoal_v1, checked",
                wasm.len(),
                imports.len(),
                shoal_names.len()
            );
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
