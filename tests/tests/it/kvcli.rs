//! The operator's side of key-value and locks (`shoal kv`, `shoal locks`)
//! on in-process 2-node clusters, end to end: the control API over mTLS
//! through the leader and a follower (writes are `Command::KvByCaller`,
//! forwarded on behalf of the caller), real client certificates for the
//! ownership rule, real `locker` guests holding and waiting for locks, and
//! the `shoal` binary itself (output, `--json`, exit codes, argument
//! errors).

use crate::common;

use common::certs::Issued;
use common::cluster::{wait_until, TestCluster};
use common::procs::{spawn, stdout, wait_stdout, WAIT};
use common::tally::add_guest_everywhere;
use shoal_api::kv::{LockSummary, KV_PAGE_MAX, VALUE_BYTES_MAX};
use shoal_api::types::SpawnRequest;
use shoal_api::ClientError;
use shoal_pki::{Forbidden, Owner, PkiPaths, Role};
use shoal_runtime::Pid;
use std::process::{Command, Output, Stdio};

fn client_role(name: &str) -> Owner {
    Owner {
        role: Role::Client,
        id: name.to_string(),
    }
}

/// The error must be the typed 403 `not_owner` naming `owner`.
fn assert_not_owner<T: std::fmt::Debug>(r: Result<T, ClientError>, owner: &Owner, what: &str) {
    match r {
        Err(ClientError::Forbidden(Forbidden::NotOwner { owner: o, .. })) if &o == owner => {}
        other => panic!("{what}: expected a typed 403 not_owner naming {owner}, got {other:?}"),
    }
}

/// The error must be an API answer with `status`.
fn assert_status<T: std::fmt::Debug>(r: Result<T, ClientError>, status: u16, what: &str) {
    match r {
        Err(e) if e.status() == Some(status) => {}
        other => panic!("{what}: expected status {status}, got {other:?}"),
    }
}

/// Set, get (linearizable through the other node, and stale), list (page
/// by page), delete; any bytes as keys and values; bounds refused before
/// anything is written; an admin in any owner's buckets.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admin_sets_gets_lists_and_deletes_keys_through_either_node() {
    let c = TestCluster::start(2).await;
    let (a0, a1) = (c.admin_client(0), c.admin_client(1));

    // Written through one node, read linearizably through the other.
    for (i, (via, other)) in [(&a0, &a1), (&a1, &a0)].into_iter().enumerate() {
        let key = format!("mode{i}");
        let w = via
            .kv_set(None, "config", key.as_bytes(), b"fast".to_vec())
            .await
            .expect("set");
        let e = other
            .kv_get(None, "config", key.as_bytes(), false)
            .await
            .expect("get");
        assert_eq!(e.value.as_deref(), Some("fast"));
        assert_eq!(e.version, w.version);
        assert_eq!(e.key.as_deref(), Some(key.as_str()));
        assert_eq!(e.value_bytes().unwrap(), b"fast");
        // The caller's own bucket: the admin credential's identity.
        assert_eq!(e.owner, w.owner);
        assert!(e.owner.starts_with("admin:"), "{}", e.owner);
    }
    // A new write has a larger version; a stale read on the writer sees it.
    let v1 = a0.kv_get(None, "config", b"mode0", false).await.unwrap();
    let w = a0
        .kv_set(None, "config", b"mode0", b"slow".to_vec())
        .await
        .unwrap();
    assert!(w.version > v1.version);
    let stale = a0.kv_get(None, "config", b"mode0", true).await.unwrap();
    assert_eq!(stale.value.as_deref(), Some("slow"));

    // Any bytes: a key with `/`, `%`, `+`, NUL and 0xff; a value that is
    // not UTF-8; an empty value.
    let odd_key = b"a/b%2F+c\0\xff".to_vec();
    let odd_value = vec![0xffu8, 0, 1, 2, 0xfe];
    a1.kv_set(None, "bin", &odd_key, odd_value.clone())
        .await
        .expect("set bytes");
    let e = a0.kv_get(None, "bin", &odd_key, false).await.expect("get");
    assert_eq!(e.key_bytes().unwrap(), odd_key);
    assert_eq!(e.key, None, "not UTF-8: no text");
    assert_eq!(e.value_bytes().unwrap(), odd_value);
    assert_eq!(e.value, None);
    a0.kv_set(None, "bin", b"empty", Vec::new()).await.unwrap();
    let e = a1.kv_get(None, "bin", b"empty", false).await.unwrap();
    assert_eq!(e.value.as_deref(), Some(""));

    // Listing: every key in byte order, with a prefix, and page by page.
    for i in 0..5 {
        a0.kv_set(None, "users", format!("user/{i}").as_bytes(), vec![b'x'])
            .await
            .unwrap();
    }
    a0.kv_set(None, "users", b"group/1", vec![b'g'])
        .await
        .unwrap();
    let all = a1.kv_keys(None, "users", b"", false).await.unwrap();
    let names: Vec<String> = all.iter().map(|k| k.key.clone().unwrap()).collect();
    assert_eq!(
        names,
        ["group/1", "user/0", "user/1", "user/2", "user/3", "user/4"]
    );
    let users = a1.kv_keys(None, "users", b"user/", true).await.unwrap();
    assert_eq!(users.len(), 5);
    let mut paged = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = a0
            .kv_list_page(None, "users", b"", after.as_deref(), 2, false)
            .await
            .unwrap();
        assert!(page.keys.len() <= 2);
        paged.extend(page.keys.iter().map(|k| k.key.clone().unwrap()));
        if page.complete {
            break;
        }
        after = Some(page.keys.last().unwrap().bytes().unwrap());
    }
    assert_eq!(paged, names);
    assert!(a0
        .kv_keys(None, "nothing-here", b"", false)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(KV_PAGE_MAX, 1000);

    // Delete: existed, then not; then the key is gone (404).
    let d = a1.kv_delete(None, "config", b"mode0").await.unwrap();
    assert!(d.existed);
    let d = a0.kv_delete(None, "config", b"mode0").await.unwrap();
    assert!(!d.existed);
    assert_status(
        a0.kv_get(None, "config", b"mode0", false).await,
        404,
        "a deleted key",
    );

    // Bounds, refused before anything is written.
    let before = c.node(0).raft().state().kv.clone();
    assert_status(
        a0.kv_set(None, "config", b"big", vec![0; VALUE_BYTES_MAX + 1])
            .await,
        400,
        "a value over the bound",
    );
    assert_status(
        a0.kv_set(None, &"b".repeat(65), b"k", vec![1]).await,
        400,
        "a bucket name over the bound",
    );
    assert_status(
        a0.kv_set(None, "config", &[b'k'; 257], vec![1]).await,
        400,
        "a key over the bound",
    );
    assert_eq!(c.node(0).raft().state().kv, before);

    // An admin in another owner's bucket and in the cluster's.
    let alice = client_role("alice");
    a1.kv_set(Some(&alice), "prefs", b"theme", b"dark".to_vec())
        .await
        .expect("an admin writes alice's bucket");
    let e = a0
        .kv_get(Some(&alice), "prefs", b"theme", false)
        .await
        .unwrap();
    assert_eq!(
        (e.owner.as_str(), e.value.as_deref()),
        ("client:alice", Some("dark"))
    );
    assert_status(
        a0.kv_get(None, "prefs", b"theme", false).await,
        404,
        "alice's key is not in the admin's own bucket",
    );
    a0.kv_set(Some(&Owner::cluster()), "shared", b"k", b"v".to_vec())
        .await
        .unwrap();
    let state = c.node(1).raft().linearizable_state().await.unwrap();
    assert_eq!(
        state
            .kv
            .get(&alice, "prefs", b"theme")
            .map(|e| e.value.clone()),
        Some(b"dark".to_vec())
    );
    assert_eq!(
        state
            .kv
            .get(&Owner::cluster(), "shared", b"k")
            .map(|e| e.value.clone()),
        Some(b"v".to_vec())
    );
    c.shutdown().await;
}

/// A client reads and writes its own buckets (through either node: the
/// follower forwards its write on its behalf) and is refused, typed, in
/// another's — reads and writes, and the cluster's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_uses_its_own_buckets_and_is_refused_anothers() {
    let c = TestCluster::start(2).await;
    let alice_certs = Issued::fresh(&c, Role::Client, "alice", 0);
    let bob_certs = Issued::fresh(&c, Role::Client, "bob", 0);
    let (alice, bob) = (client_role("alice"), client_role("bob"));
    for via in [0, 1] {
        let a = alice_certs.client(&c, via);
        let key = format!("k{via}");
        let w = a
            .kv_set(None, "prefs", key.as_bytes(), b"mine".to_vec())
            .await
            .unwrap_or_else(|e| panic!("alice writes her bucket via node {via}: {e}"));
        assert_eq!(w.owner, "client:alice");
        // Naming herself is the same as naming nobody.
        let e = a
            .kv_get(Some(&alice), "prefs", key.as_bytes(), false)
            .await
            .unwrap();
        assert_eq!(e.value.as_deref(), Some("mine"));
    }
    let before = c.node(0).raft().state().kv.clone();
    for via in [0, 1] {
        let b = bob_certs.client(&c, via);
        assert_not_owner(
            b.kv_get(Some(&alice), "prefs", b"k0", false).await,
            &alice,
            "bob reads alice's key",
        );
        assert_not_owner(
            b.kv_keys(Some(&alice), "prefs", b"", false).await,
            &alice,
            "bob lists alice's bucket",
        );
        assert_not_owner(
            b.kv_set(Some(&alice), "prefs", b"k0", b"bob's".to_vec())
                .await,
            &alice,
            "bob writes alice's key",
        );
        assert_not_owner(
            b.kv_delete(Some(&alice), "prefs", b"k0").await,
            &alice,
            "bob deletes alice's key",
        );
        assert_not_owner(
            b.kv_set(Some(&Owner::cluster()), "shared", b"k", b"x".to_vec())
                .await,
            &Owner::cluster(),
            "bob writes the cluster's bucket",
        );
        // His own bucket of the same name is another bucket.
        assert_status(
            b.kv_get(None, "prefs", b"k0", false).await,
            404,
            "bob's own prefs",
        );
        assert!(b
            .kv_keys(None, "prefs", b"", false)
            .await
            .unwrap()
            .is_empty());
    }
    assert_eq!(
        c.node(0).raft().state().kv,
        before,
        "bob's attempts changed nothing"
    );
    let kv = c
        .node(1)
        .raft()
        .linearizable_state()
        .await
        .unwrap()
        .kv
        .clone();
    assert_eq!(
        kv.get(&alice, "prefs", b"k0").map(|e| e.value.clone()),
        Some(b"mine".to_vec())
    );
    assert!(kv.get(&bob, "prefs", b"k0").is_none());
    c.shutdown().await;
}

/// Send one message to `pid` from a host mailbox on node `via`.
async fn poke(c: &TestCluster, via: usize, pid: Pid) {
    let mb = c.node(via).node().open_mailbox();
    let mut sent = false;
    wait_until(&format!("a message to {pid}"), WAIT, || {
        sent = sent || mb.send(pid, b"go".to_vec()).is_ok();
        sent
    })
    .await;
}

fn lock_named<'a>(list: &'a [LockSummary], owner: &str, name: &str) -> &'a LockSummary {
    list.iter()
        .find(|l| l.owner == owner && l.name == name)
        .unwrap_or_else(|| panic!("no lock {owner}/{name} in {list:?}"))
}

/// `locks` lists a guest's lock with its holder, the holder's node, its
/// token and the waiters in order; a client sees its own locks only. The
/// holder's fenced write is then readable with `kv get --owner cluster`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn locks_lists_holders_nodes_tokens_and_waiters() {
    let c = TestCluster::start(2).await;
    add_guest_everywhere(&c, shoal_tests::LOCKER, "locker").await;
    let admin = c.admin_client(0);
    // A holder on node 2, then a waiter on node 1 (processes nobody
    // deployed through the API: the cluster's).
    let holder = spawn(&c, 1, &["locker", "hold", "gate"]).await;
    wait_stdout(&c, 1, holder, "held token=").await;
    let token: u64 = stdout(&c, 1, holder)
        .split("held token=")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .expect("the holder's token");
    let waiter = spawn(&c, 0, &["locker", "hold", "gate"]).await;
    let raft = c.node(0).raft().clone();
    raft.wait_for(WAIT, |s| {
        s.locks
            .get(&Owner::cluster(), "gate")
            .is_some_and(|l| l.waiters == [waiter.0])
    })
    .await
    .expect("the second locker waits");
    let list = admin.locks(false).await.expect("locks");
    let gate = lock_named(&list, "cluster", "gate");
    assert_eq!(gate.holder_pid, Some(holder));
    assert_eq!(gate.holder_node.as_deref(), Some("n2"));
    assert_eq!(gate.token, Some(token));
    assert_eq!(gate.waiters, vec![waiter]);

    // A client's own lock: alice sees hers and not the cluster's; bob
    // sees none; the admin sees both.
    let alice_certs = Issued::fresh(&c, Role::Client, "alice", 0);
    let bob_certs = Issued::fresh(&c, Role::Client, "bob", 0);
    let req: SpawnRequest = serde_json::from_value(serde_json::json!({
        "module": "locker",
        "args": ["hold", "mine"],
        "node": "n1",
    }))
    .unwrap();
    let hers = alice_certs.client(&c, 1).spawn(&req).await.expect("deploy")[0].pid;
    wait_stdout(&c, 0, hers, "held token=").await;
    let seen = alice_certs.client(&c, 1).locks(false).await.unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let mine = lock_named(&seen, "client:alice", "mine");
    assert_eq!(
        (mine.holder_pid, mine.holder_node.as_deref()),
        (Some(hers), Some("n1"))
    );
    assert!(bob_certs
        .client(&c, 0)
        .locks(true)
        .await
        .unwrap()
        .is_empty());
    let all = c.admin_client(1).locks(false).await.unwrap();
    lock_named(&all, "client:alice", "mine");
    lock_named(&all, "cluster", "gate");

    // The CLI shows the same table.
    let out = shoal_cli(&c, 0, &["locks"]).await;
    let text = ok(&out, "locks");
    let row = text
        .lines()
        .find(|l| l.starts_with("cluster") && l.contains("gate"))
        .unwrap_or_else(|| panic!("no gate row in {text}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cols,
        [
            "cluster",
            "gate",
            &holder.to_string(),
            "n2",
            &token.to_string(),
            &waiter.to_string()
        ],
        "{text}"
    );
    assert!(text.starts_with("OWNER"), "{text}");
    let json: Vec<LockSummary> =
        serde_json::from_str(&ok(&shoal_cli(&c, 1, &["locks", "--json"]).await, "locks")).unwrap();
    assert_eq!(lock_named(&json, "cluster", "gate").waiters, vec![waiter]);

    // The holder writes fenced and unlocks; the waiter gets the lock
    // under a larger token, on its node.
    poke(&c, 1, holder).await;
    wait_stdout(&c, 1, holder, "write ok unlock ok").await;
    wait_stdout(&c, 0, waiter, "held token=").await;
    let list = admin.locks(false).await.unwrap();
    let gate = lock_named(&list, "cluster", "gate");
    assert_eq!(gate.holder_pid, Some(waiter));
    assert_eq!(gate.holder_node.as_deref(), Some("n1"));
    assert!(gate.token > Some(token));
    assert!(gate.waiters.is_empty());
    // The guest's write, read by the operator.
    let e = admin
        .kv_get(Some(&Owner::cluster()), "held", b"k", false)
        .await
        .expect("the guest's fenced write");
    assert_eq!(e.value.as_deref(), Some("v"));
    c.shutdown().await;
}

/// Run the `shoal` binary against node `via` over mTLS with the cluster's
/// admin credential, with none of the caller's Shoal environment.
async fn shoal_cli(c: &TestCluster, via: usize, args: &[&str]) -> Output {
    let creds = PkiPaths::new(c.dirs[0].path()).admin_dir();
    let data = c.dirs[via].path().join("cli-data");
    let mut cmd = Command::new(common::netns::shoal_bin());
    cmd.arg("--addr")
        .arg(c.addrs[via].to_string())
        .arg("--creds")
        .arg(&creds)
        .args(args)
        .env("SHOAL_DATA_DIR", &data)
        .env_remove("SHOAL_SOCKET")
        .env_remove("SHOAL_ADDR")
        .env_remove("SHOAL_CREDS")
        .env_remove("SHOAL_CERT")
        .env_remove("SHOAL_KEY")
        .env_remove("SHOAL_CA")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null());
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run shoal"))
        .await
        .expect("the CLI's thread");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "shoal {args:?} panicked: {err}"
    );
    out
}

/// The stdout of a run that must have succeeded.
fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "shoal {what} failed ({:?}): {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `shoal` binary: `kv set|get|ls|del` and their `--json`, keys that
/// are not text shown as `0x…` and given back so, a missing key an error,
/// and argument mistakes refused before anything is asked (exit 2, no
/// panic).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_shoal_cli_speaks_kv() {
    let c = TestCluster::start(2).await;
    let out = shoal_cli(&c, 0, &["kv", "set", "config", "mode", "fast"]).await;
    let text = ok(&out, "kv set");
    assert!(
        text.starts_with("set mode in bucket config of admin:") && text.contains("(version "),
        "{text}"
    );
    let out = shoal_cli(&c, 1, &["kv", "get", "config", "mode"]).await;
    assert_eq!(ok(&out, "kv get"), "fast\n");
    let out = shoal_cli(&c, 1, &["kv", "get", "config", "mode", "--json", "--stale"]).await;
    let json: serde_json::Value = serde_json::from_str(&ok(&out, "kv get --json")).unwrap();
    assert_eq!(json["key"], "mode");
    assert_eq!(json["value"], "fast");
    assert_eq!(json["value_base64"], "ZmFzdA==");
    assert!(json["version"].as_u64().unwrap() > 0);

    // Bytes: a value from a file, a key given in hex; `ls` prints it in
    // hex and `get` takes that back.
    let file = c.dirs[0].path().join("value.bin");
    std::fs::write(&file, [0xffu8, 0x00, 0x41]).unwrap();
    let file = file.to_str().unwrap().to_string();
    ok(
        &shoal_cli(&c, 0, &["kv", "set", "config", "0x00ff", "--file", &file]).await,
        "kv set --file",
    );
    // A text key that starts with 0x (written through the API: the CLI
    // reads a 0x argument as hex).
    c.admin_client(1)
        .kv_set(None, "config", b"0xtext", b"t".to_vec())
        .await
        .unwrap();
    let out = shoal_cli(&c, 1, &["kv", "ls", "config"]).await;
    let listed = ok(&out, "kv ls");
    assert_eq!(
        listed.lines().collect::<Vec<_>>(),
        ["0x00ff", "0x307874657874", "mode"],
        "{listed}"
    );
    let out = shoal_cli(&c, 0, &["kv", "get", "config", "0x00ff"]).await;
    assert_eq!(ok(&out, "kv get 0x00ff"), "0xff0041\n");
    let out = shoal_cli(&c, 0, &["kv", "get", "config", "0x307874657874"]).await;
    assert_eq!(ok(&out, "kv get of a key listed in hex"), "t\n");
    let copy = c.dirs[0].path().join("copy.bin");
    let copy_arg = copy.to_str().unwrap().to_string();
    ok(
        &shoal_cli(&c, 1, &["kv", "get", "config", "0x00ff", "-o", &copy_arg]).await,
        "kv get -o",
    );
    assert_eq!(std::fs::read(&copy).unwrap(), [0xff, 0x00, 0x41]);
    let out = shoal_cli(&c, 1, &["kv", "ls", "config", "mo", "--json"]).await;
    let json: serde_json::Value = serde_json::from_str(&ok(&out, "kv ls --json")).unwrap();
    assert_eq!(
        json,
        serde_json::json!([{"key": "mode", "key_base64": "bW9kZQ=="}])
    );

    // An admin names another owner.
    ok(
        &shoal_cli(
            &c,
            0,
            &[
                "kv",
                "set",
                "prefs",
                "theme",
                "dark",
                "--owner",
                "client:alice",
            ],
        )
        .await,
        "kv set --owner",
    );
    let out = shoal_cli(
        &c,
        1,
        &["kv", "get", "prefs", "theme", "--owner", "client:alice"],
    )
    .await;
    assert_eq!(ok(&out, "kv get --owner"), "dark\n");

    // Delete, then a missing key: an error naming it (exit 1).
    let out = shoal_cli(&c, 0, &["kv", "del", "config", "mode", "--json"]).await;
    let json: serde_json::Value = serde_json::from_str(&ok(&out, "kv del")).unwrap();
    assert_eq!(json["existed"], true);
    let out = shoal_cli(&c, 0, &["kv", "del", "config", "mode"]).await;
    assert!(ok(&out, "kv del again").contains("nothing to delete"));
    let out = shoal_cli(&c, 1, &["kv", "get", "config", "mode"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("no key mode in bucket \"config\""),
        "{err}"
    );

    // Argument mistakes: usage errors (exit 2) that say what is wrong.
    for (args, says) in [
        (
            &["kv", "get", "config", "0xzz"][..],
            "not an even number of hex digits",
        ),
        (
            &["kv", "set", "config", "0xtext", "t"][..],
            "starts with 0x",
        ),
        (
            &["kv", "get", "", "k"][..],
            "a bucket name is 1 to 64 bytes",
        ),
        (&["kv", "set", "config", "k"][..], "<VALUE>"),
        (
            &["kv", "set", "config", "k", "v", "--file", "/dev/null"][..],
            "cannot be used with",
        ),
        (&["kv", "ls", "config", "--owner", "alice"][..], "ROLE:ID"),
        (
            &["kv", "del", "config", "--owner", "boss:x", "k"][..],
            "unknown role",
        ),
    ] {
        let out = shoal_cli(&c, 0, args).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // A value over the bound is refused before it is sent.
    let big = c.dirs[0].path().join("big.bin");
    std::fs::write(&big, vec![0u8; VALUE_BYTES_MAX + 1]).unwrap();
    let out = shoal_cli(
        &c,
        0,
        &[
            "kv",
            "set",
            "config",
            "big",
            "--file",
            big.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("values are at most"));
    // `--help` teaches the key and owner forms.
    let help = ok(
        &shoal_cli(&c, 0, &["kv", "ls", "--help"]).await,
        "kv ls --help",
    );
    assert!(
        help.contains("Examples") && help.contains("--owner cluster") && help.contains("0x"),
        "{help}"
    );
    c.shutdown().await;
}

/// Operators' writes share the write-rate quota with guests' (on the
/// identity that asked): past `kv_writes_per_s_max` a write is refused with
/// a typed 429 and nothing is written; the bucket refills with time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_writing_past_the_rate_quota_gets_a_typed_429() {
    let c = TestCluster::start_with(2, |cfg| cfg.kv_writes_per_s_max = 3).await;
    let a0 = c.admin_client(0);
    let mut refused = None;
    let mut written = Vec::new();
    for i in 0..50 {
        let key = format!("burst{i}");
        match a0
            .kv_set(None, "rates", key.as_bytes(), b"v".to_vec())
            .await
        {
            Ok(_) => written.push(key),
            Err(e) => {
                refused = Some((key, e));
                break;
            }
        }
    }
    let (key, e) = refused.expect("50 writes at once pass a quota of 3 per second");
    assert!(written.len() >= 3, "the bucket starts full: {written:?}");
    match &e {
        ClientError::Api {
            status: 429,
            message,
        } => assert!(
            message.contains("admin:") && message.contains("3 per second"),
            "{message}"
        ),
        other => panic!("expected a 429, got {other:?}"),
    }
    assert_status(
        a0.kv_get(None, "rates", key.as_bytes(), false).await,
        404,
        "the refused write wrote nothing",
    );
    // The bucket refills with time (retried until it has, boundedly).
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match a0.kv_set(None, "rates", b"later", b"v".to_vec()).await {
            Ok(_) => break,
            Err(e) if e.status() == Some(429) && std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("after the refill: {e}"),
        }
    }
}
