//! The `shoal` CLI against a cluster node over TCP + mutual TLS + HTTP/2:
//! `shoal cluster init`, `shoal cert create`, the verbs with `--addr` and
//! credentials, and the refusals a user meets, with the messages they get.
//!
//! The node side is a small server in the test: a real [`Node`] whose
//! control API ([`routes::route`]) is served over `tokio_rustls` and
//! hyper's HTTP/2 server with the cluster's mTLS server configuration, as a
//! node's TLS port does. The client side is the real `shoal` binary.
// A test that cannot set up its fixture should stop right there.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use shoal_daemon::api::routes;
use shoal_pki::tls::{rejection_of, server_config, CONTROL_API};
use shoal_pki::{CaPin, ClusterTrust, Identity, Serial, SharedRevocations};
use shoal_runtime::{Node, NodeConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

mod common;

use common::{assert_no_panic, ok_stdout, p, parse_json, run_shoal, shoal_command, text};

/// How long anything in these tests may take before it is a failure.
const LONG: Duration = Duration::from_secs(60);

/// Prints one line to stdout and one to stderr, then blocks forever in
/// `shoal_v1.recv` (same guest as tests/daemon.rs).
const BLOCKER_WAT: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "shoal_v1" "recv" (func $recv (param i32 i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "hello from shoal\n")
  (data (i32.const 200) "warming up\n")
  (func $print (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 16))))
  (func (export "_start")
    (call $print (i32.const 1) (i32.const 100) (i32.const 17))
    (call $print (i32.const 2) (i32.const 200) (i32.const 11))
    (loop $forever
      (drop (call $recv (i32.const 1024) (i32.const 1024) (i64.const -1) (i32.const 0)))
      (br $forever))))
"#;

/// A temporary directory with a data directory, and the `shoal` binary
/// pointed at it with no cluster settings inherited from the environment.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn data_dir(&self) -> PathBuf {
        self.path("data")
    }

    fn pki(&self, name: &str) -> PathBuf {
        self.data_dir().join("pki").join(name)
    }

    fn command(&self, args: &[&str]) -> Command {
        shoal_command(&self.data_dir(), args)
    }

    fn shoal(&self, args: &[&str]) -> Output {
        run_shoal(&self.data_dir(), args)
    }

    /// Run a verb that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        ok_stdout(&self.shoal(args), args)
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        parse_json(&self.ok(args), args)
    }

    /// Run a verb that must fail with exit code 1; its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.shoal(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "shoal {args:?} should fail: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stderr)
    }

    /// `shoal cluster init --name <name>` in this data directory.
    fn init_cluster(&self, name: &str) -> String {
        self.ok(&["cluster", "init", "--name", name])
    }

    /// `shoal cert create --client --name <name> -o <dir>`; the directory.
    fn client_creds(&self, name: &str) -> PathBuf {
        let dir = self.path(name);
        self.ok(&["cert", "create", "--client", "--name", name, "-o", p(&dir)]);
        dir
    }

    fn wat(&self, name: &str, wat: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, wat::parse_str(wat).unwrap()).unwrap();
        path
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// A certificate file: readable and writable by its owner, writable by
/// no one else (the exact group/other read bits follow the umask).
fn assert_cert_mode(path: &Path) {
    let m = mode(path);
    assert!(
        m & 0o600 == 0o600 && m & 0o022 == 0,
        "{} has mode {m:o}",
        path.display()
    );
}

/// A node's control API on TCP + mTLS + HTTP/2, serving a real [`Node`]
/// with its own temporary data directory. Stops when dropped.
struct TlsNode {
    addr: String,
    runtime: Option<tokio::runtime::Runtime>,
    /// Why the server refused handshakes (the [`Rejection`] when there is
    /// one), in order.
    refusals: Arc<Mutex<Vec<String>>>,
    /// The revocation list its verifier consults on every handshake.
    revocations: SharedRevocations,
    _node_dir: tempfile::TempDir,
}

impl TlsNode {
    /// Serve with the node identity and CA found in `data_dir/pki`.
    fn start(data_dir: &Path) -> TlsNode {
        let identity = Identity::load(data_dir).unwrap();
        let ca_pem = std::fs::read_to_string(data_dir.join("pki/ca.crt")).unwrap();
        let revocations = SharedRevocations::default();
        let trust = ClusterTrust::new(&ca_pem, revocations.clone()).unwrap();
        let config = server_config(&identity, &trust, CONTROL_API).unwrap();
        let acceptor = TlsAcceptor::from(config);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let node_dir = tempfile::tempdir().unwrap();
        let (listener, node) = runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let node = Node::new(NodeConfig::new(node_dir.path())).unwrap();
            (listener, node)
        });
        let addr = listener.local_addr().unwrap().to_string();
        let refusals = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&refusals);
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(serve(
                    tcp,
                    acceptor.clone(),
                    node.clone(),
                    Arc::clone(&seen),
                ));
            }
        });
        TlsNode {
            addr,
            runtime: Some(runtime),
            refusals,
            revocations,
            _node_dir: node_dir,
        }
    }

    fn refusals(&self) -> Vec<String> {
        self.refusals.lock().unwrap().clone()
    }

    /// Whether a refusal mentioning `what` is recorded within [`LONG`].
    fn wait_for_refusal(&self, what: &str) -> bool {
        let deadline = Instant::now() + LONG;
        loop {
            if self.refusals().iter().any(|r| r.contains(what)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TlsNode {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(10));
        }
    }
}

/// One connection: TLS handshake (recording a refusal), then the control
/// API's routes over HTTP/2 until the client hangs up.
async fn serve(
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    node: Node,
    refusals: Arc<Mutex<Vec<String>>>,
) {
    let tls = match acceptor.accept(tcp).await {
        Ok(tls) => tls,
        Err(e) => {
            let why = match rejection_of(&e) {
                Some(r) => format!("{r:?}"),
                None => e.to_string(),
            };
            refusals.lock().unwrap().push(why);
            return;
        }
    };
    let service = service_fn(move |req| {
        let node = node.clone();
        async move {
            Ok::<_, Infallible>(
                routes::route(&node, req, shoal_runtime::grants::DirAuthority::Listed).await,
            )
        }
    });
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tls), service)
        .await;
}

#[test]
fn cluster_init_writes_private_files_and_never_overwrites() {
    let env = Env::new();
    let out = env.init_cluster("node-a");
    let ca_pem = std::fs::read_to_string(env.pki("ca.crt")).unwrap();
    let pin = CaPin::of_cert_pem(&ca_pem).unwrap().to_string();
    assert!(pin.starts_with("sha256:"));
    assert!(out.contains(&pin), "prints the CA pin {pin}: {out}");
    assert!(out.contains("shoal node start --listen"), "{out}");

    assert_eq!(mode(&env.data_dir().join("pki")), 0o700);
    assert_eq!(mode(&env.pki("ca.key")), 0o600);
    assert_eq!(mode(&env.pki("node.key")), 0o600);
    assert_cert_mode(&env.pki("ca.crt"));
    assert_cert_mode(&env.pki("node.crt"));
    assert_eq!(mode(&env.pki("admin")), 0o700);
    assert_eq!(mode(&env.pki("admin/client.key")), 0o600);
    assert_cert_mode(&env.pki("admin/client.crt"));
    assert_eq!(
        std::fs::read_to_string(env.pki("admin/ca.crt")).unwrap(),
        ca_pem
    );
    // The node certificate is a node's, issued by this CA.
    let node = Identity::load(&env.data_dir()).unwrap();
    assert_eq!(node.info().role.as_str(), "node");
    assert_eq!(node.info().id, "node-a");

    let ca_key = std::fs::read(env.pki("ca.key")).unwrap();
    let node_key = std::fs::read(env.pki("node.key")).unwrap();
    let err = env.fails(&["cluster", "init", "--name", "node-b"]);
    assert!(
        err.contains("already") && err.contains("refusing to overwrite"),
        "{err}"
    );
    assert_eq!(std::fs::read(env.pki("ca.key")).unwrap(), ca_key);
    assert_eq!(std::fs::read_to_string(env.pki("ca.crt")).unwrap(), ca_pem);
    assert_eq!(std::fs::read(env.pki("node.key")).unwrap(), node_key);

    let other = Env::new();
    let err = other.fails(&["cluster", "init", "--name", "bad/name"]);
    assert!(err.contains("invalid id"), "{err}");
    assert!(!other.pki("ca.key").exists(), "nothing created");
}

#[test]
fn client_credentials_drive_the_verbs_over_tls() {
    let env = Env::new();
    env.init_cluster("node-a");
    let alice = env.path("alice");
    let before_ms = now_ms();
    let created = env.json(&[
        "cert",
        "create",
        "--client",
        "--name",
        "alice",
        "-o",
        p(&alice),
        "--json",
    ]);
    assert_eq!(created["role"], "client");
    assert_eq!(created["name"], "alice");
    assert_eq!(
        created["dir"].as_str().unwrap(),
        p(&std::fs::canonicalize(&alice).unwrap())
    );
    assert!(!created["serial"].as_str().unwrap().is_empty());
    let expires = created["expires_unix_ms"].as_u64().unwrap();
    let day_ms = 24 * 3600 * 1000;
    assert!(
        expires > before_ms + 29 * day_ms && expires < before_ms + 31 * day_ms,
        "default ttl is 30 days: {expires}"
    );
    assert_eq!(mode(&alice), 0o700);
    assert_eq!(mode(&alice.join("client.key")), 0o600);
    assert_cert_mode(&alice.join("client.crt"));
    assert_cert_mode(&alice.join("ca.crt"));

    // Never overwritten by accident; replaced on request.
    let old_key = std::fs::read(alice.join("client.key")).unwrap();
    let err = env.fails(&[
        "cert",
        "create",
        "--client",
        "--name",
        "alice",
        "-o",
        p(&alice),
    ]);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(alice.join("client.key")).unwrap(), old_key);
    let out = env.ok(&[
        "cert",
        "create",
        "--client",
        "--name",
        "alice",
        "-o",
        p(&alice),
        "--force",
    ]);
    assert!(out.contains("export SHOAL_CREDS="), "{out}");
    assert_ne!(std::fs::read(alice.join("client.key")).unwrap(), old_key);

    let node = TlsNode::start(&env.data_dir());
    let via = |args: &[&str]| -> Vec<String> {
        let mut v = vec![
            "--addr".to_string(),
            node.addr.clone(),
            "--creds".to_string(),
            p(&alice).to_string(),
        ];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    };
    let run = |args: &[&str]| -> String {
        let args = via(args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        env.ok(&args)
    };

    let ps: serde_json::Value = serde_json::from_str(&run(&["ps", "--json"])).unwrap();
    assert_eq!(ps, serde_json::json!([]));
    let status: serde_json::Value =
        serde_json::from_str(&run(&["node", "status", "--json"])).unwrap();
    assert!(status["processes_max"].as_u64().unwrap() > 0, "{status}");

    let blocker = env.wat("blocker.wasm", BLOCKER_WAT);
    let pid_n: u64 = run(&["deploy", p(&blocker)])
        .trim()
        .parse()
        .expect("deploy prints the pid");
    let pid = pid_n.to_string();
    assert_eq!(pids(&run(&["ps", "--json"])), vec![pid_n]);

    // Logs stream over HTTP/2 too: wait (bounded) for the guest's output.
    let deadline = Instant::now() + LONG;
    loop {
        let args = via(&["logs", &pid]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = env.shoal(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        if text(&out.stdout).contains("hello from shoal")
            && text(&out.stderr).contains("warming up")
        {
            break;
        }
        assert!(Instant::now() < deadline, "no output from the process");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The same through the environment variables.
    let out = env
        .command(&["ps", "--json"])
        .env("SHOAL_ADDR", &node.addr)
        .env("SHOAL_CREDS", &alice)
        .output()
        .unwrap();
    assert_no_panic(&out);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(pids(&text(&out.stdout)), vec![pid_n]);

    // Without --creds, this data directory's own node identity is used; the
    // admin credentials from `cluster init` work too.
    let out = env.ok(&["--addr", &node.addr, "ps", "--json"]);
    assert_eq!(pids(&out), vec![pid_n]);
    let admin = env.pki("admin");
    let out = env.ok(&["--addr", &node.addr, "--creds", p(&admin), "ps", "--json"]);
    assert_eq!(pids(&out), vec![pid_n]);

    let out = run(&["kill", &pid]);
    assert_eq!(out.trim(), format!("process {pid} killed"));
    assert_eq!(pids(&run(&["ps", "--json"])), Vec::<u64>::new());
    assert!(node.refusals().is_empty(), "{:?}", node.refusals());
}

#[test]
fn refusals_name_the_problem() {
    let a = Env::new();
    a.init_cluster("node-a");
    let alice = a.client_creds("alice");
    let b = Env::new();
    b.init_cluster("node-b");
    let bob = b.client_creds("bob");
    let node_a = TlsNode::start(&a.data_dir());

    // Credentials of another cluster (certificate and CA): the node's
    // certificate is not from the CA we trust, so we refuse it.
    let err = b.fails(&["--addr", &node_a.addr, "--creds", p(&bob), "ps"]);
    assert!(
        err.contains(&format!("TLS handshake with {} failed", node_a.addr))
            && err.contains("not from this cluster's CA"),
        "{err}"
    );

    // Same from the other side: a node of another cluster.
    let node_b = TlsNode::start(&b.data_dir());
    let err = a.fails(&["--addr", &node_b.addr, "--creds", p(&alice), "ps"]);
    assert!(
        err.contains(&format!("TLS handshake with {} failed", node_b.addr))
            && err.contains("not from this cluster's CA"),
        "{err}"
    );

    // The node refuses our certificate (revoked there): said plainly, and
    // the node's verifier saw the revocation.
    let carol = a.path("carol");
    let created = a.json(&[
        "cert",
        "create",
        "--client",
        "--name",
        "carol",
        "-o",
        p(&carol),
        "--json",
    ]);
    let serial: Serial = created["serial"].as_str().unwrap().parse().unwrap();
    node_a
        .revocations
        .update(|list| list.revoke_serial(serial, now_ms(), "lost laptop", None))
        .expect("room in the list");
    let err = a.fails(&["--addr", &node_a.addr, "--creds", p(&carol), "ps"]);
    assert!(
        err.contains("the node refused our certificate") && err.contains(&node_a.addr),
        "{err}"
    );
    // The node records its refusal after sending the alert, so it may come
    // a moment after our exit.
    assert!(
        node_a.wait_for_refusal("Revoked"),
        "node A refused carol's certificate as revoked: {:?}",
        node_a.refusals()
    );

    // Our certificate with another cluster's CA file: named before connecting.
    let err = a.fails(&[
        "--addr",
        &node_a.addr,
        "--creds",
        p(&alice),
        "--ca",
        p(&bob.join("ca.crt")),
        "ps",
    ]);
    assert!(err.contains("cannot be used with the CA"), "{err}");

    // No credentials at all: say how to get them.
    let c = Env::new();
    let err = c.fails(&["--addr", &node_a.addr, "ps"]);
    assert!(
        err.contains("no credentials")
            && err.contains("shoal cert create")
            && err.contains("--creds"),
        "{err}"
    );
    let err = c.fails(&[
        "--addr",
        &node_a.addr,
        "--creds",
        p(&c.path("nowhere")),
        "ps",
    ]);
    assert!(err.contains("does not exist"), "{err}");

    // A private key others can read is refused.
    let loose = a.path("loose");
    std::fs::create_dir(&loose).unwrap();
    for f in ["ca.crt", "client.crt", "client.key"] {
        std::fs::copy(alice.join(f), loose.join(f)).unwrap();
    }
    std::fs::set_permissions(
        loose.join("client.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let err = a.fails(&["--addr", &node_a.addr, "--creds", p(&loose), "ps"]);
    assert!(
        err.contains("client.key") && err.contains("0600") && err.contains("chmod 600"),
        "{err}"
    );

    // Nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let err = a.fails(&["--addr", &closed_addr, "--creds", p(&alice), "ps"]);
    assert!(
        err.contains(&format!(
            "cannot reach node {closed_addr}: connection refused"
        )),
        "{err}"
    );

    // Only the CA node issues credentials.
    let err = c.fails(&[
        "cert",
        "create",
        "--client",
        "--name",
        "x",
        "-o",
        p(&c.path("x")),
    ]);
    assert!(
        err.contains("this node does not hold the cluster CA")
            && err.contains("shoal cluster init"),
        "{err}"
    );
    assert!(!c.path("x").exists(), "nothing written");

    // The good credentials still work against node A after all that.
    let out = a.ok(&["--addr", &node_a.addr, "--creds", p(&alice), "ps", "--json"]);
    assert_eq!(out.trim(), "[]");
}

#[test]
fn cert_create_checks_its_arguments() {
    let env = Env::new();
    env.init_cluster("node-a");
    let dir = env.path("c");
    let out = env.shoal(&["cert", "create", "--name", "x", "-o", p(&dir)]);
    assert_eq!(out.status.code(), Some(2), "a role is required");
    let out = env.shoal(&[
        "cert",
        "create",
        "--client",
        "--admin",
        "--name",
        "x",
        "-o",
        p(&dir),
    ]);
    assert_eq!(out.status.code(), Some(2), "one role only");
    let out = env.shoal(&[
        "cert",
        "create",
        "--client",
        "--name",
        "x",
        "--ttl",
        "3 weeks",
        "-o",
        p(&dir),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("30d"), "{}", text(&out.stderr));
    let err = env.fails(&[
        "cert",
        "create",
        "--admin",
        "--name",
        "no/slash",
        "-o",
        p(&dir),
    ]);
    assert!(err.contains("invalid id"), "{err}");
    assert!(!dir.exists(), "nothing written");

    let created = env.json(&[
        "cert",
        "create",
        "--admin",
        "--name",
        "ops",
        "--ttl",
        "12h",
        "-o",
        p(&dir),
        "--json",
    ]);
    assert_eq!(created["role"], "admin");
    let expires = created["expires_unix_ms"].as_u64().unwrap();
    let now = now_ms();
    assert!(
        expires > now + 11 * 3600 * 1000 && expires <= now + 12 * 3600 * 1000,
        "{expires} vs now {now}"
    );
}

#[test]
fn help_teaches() {
    let env = Env::new();
    let help = env.ok(&["cert", "create", "--help"]);
    assert!(
        help.contains("Examples") && help.contains("--ttl"),
        "{help}"
    );
    assert!(help.contains("SHOAL_CREDS"), "{help}");
    let help = env.ok(&["cluster", "init", "--help"]);
    assert!(
        help.contains("Examples") && help.contains("--name"),
        "{help}"
    );
    let help = env.ok(&["ps", "--help"]);
    assert!(
        help.contains("--addr") && help.contains("--creds"),
        "{help}"
    );
}

/// The pids in `shoal ps --json` output.
fn pids(ps_json: &str) -> Vec<u64> {
    let v: serde_json::Value = serde_json::from_str(ps_json)
        .unwrap_or_else(|e| panic!("ps printed no JSON ({e}): {ps_json}"));
    v.as_array()
        .unwrap_or_else(|| panic!("ps printed no list: {ps_json}"))
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
