//! etcd 3.4 baseline for Shoal's benchmarks.
//!
//! Starts a real three-member etcd cluster (Debian's `etcd-server` package) on
//! loopback and measures it through the JSON gateway (grpc-gateway) that etcd
//! 3.4 serves on every client port under `/v3/...`. The point is a reference
//! figure measured on the same machine, with the same durability promise
//! (etcd fsyncs its WAL before acknowledging a write) and the same transport
//! style (HTTP/1.1 + JSON, one keep-alive connection per client), so that
//! Shoal's numbers can be read next to it.
//!
//! Self-contained on purpose: only `std`, `anyhow`, `serde_json` and
//! `tempfile`. The HTTP/1.1 client and the base64 codec are in this file.
//!
//! Facts about the 3.4 gateway that the code relies on (checked against
//! etcd 3.4.23):
//! - every call is `POST` with a JSON body (`GET` answers 405);
//! - `bytes` fields (keys, values, lock names) are standard base64, padded;
//! - 64-bit integers (revisions, lease IDs, member IDs) come back as JSON
//!   strings, and zero-valued fields are left out altogether (`count`,
//!   `kvs`, `leader`, an empty `value`...);
//! - an error answers a non-200 status with
//!   `{"error","message","code"}`, often chunked with an HTTP trailer;
//! - large bodies (a few KiB and up) are sent chunked;
//! - the streaming `/v3/lease/keepalive` works as a single request: one
//!   JSON message in, `{"result":{...}}` out, then the response ends.

#![allow(dead_code)]

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use tempfile::TempDir;

/// Number of etcd members: the smallest cluster that tolerates one failure.
pub const MEMBER_COUNT: usize = 3;

/// How long `EtcdCluster::start` waits for a leader before giving up.
pub const STARTUP_TIMEOUT_MS: u64 = 30_000;

/// Pause between two readiness probes while the cluster starts.
const STARTUP_POLL_INTERVAL_MS: u64 = 50;

/// Socket read/write timeout of a benchmark client: bounds every wait on
/// the server, including a `/v3/lock/lock` that would otherwise block.
pub const IO_TIMEOUT_MS: u64 = 10_000;

/// Socket timeout of a readiness probe, short so polling stays responsive.
const PROBE_TIMEOUT_MS: u64 = 1_000;

/// Largest HTTP response body accepted; larger answers are an error.
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Largest status line + headers (and trailers) accepted.
const MAX_HEADER_BYTES: usize = 64 << 10;

/// Lease TTL of a client's lock lease. Long enough that a measurement run
/// never sees it expire; `EtcdClient::refresh_lease_if_stale` renews it.
pub const LOCK_LEASE_TTL_S: i64 = 60;

/// How long the concurrent phase waits for its clients to connect.
const CLIENT_START_TIMEOUT_MS: u64 = 30_000;

// ---------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------

/// A running three-member etcd cluster on 127.0.0.1.
///
/// Each member has its own client and peer port (picked free by binding
/// port 0) and its own data dir inside a temporary directory. Durability is
/// etcd's default: the WAL is fsynced before a write is acknowledged. The
/// processes are SIGKILLed and reaped on drop, then the data is removed.
pub struct EtcdCluster {
    /// Started members, in index order. Filled one by one so that a failed
    /// start still kills whatever was already spawned (via `Drop`).
    members: Vec<Member>,
    /// `etcd --version` first line, e.g. `etcd Version: 3.4.23`.
    version: String,
    /// Data dirs and logs; dropped after the processes are killed.
    data_dir: TempDir,
}

/// One etcd process and what is needed to reach and diagnose it.
struct Member {
    name: String,
    client_addr: SocketAddr,
    peer_addr: SocketAddr,
    args: Vec<String>,
    log_path: PathBuf,
    child: Child,
}

/// What `/v3/maintenance/status` says about one member.
#[derive(Clone, Debug)]
pub struct MemberStatus {
    /// The answering member's ID (`header.member_id`).
    pub member_id: u64,
    /// The leader this member knows of; 0 when it knows none.
    pub leader_id: u64,
    /// Server version, e.g. `3.4.23`.
    pub version: String,
    /// Raft term as seen by this member.
    pub raft_term: u64,
}

impl EtcdCluster {
    /// Starts the cluster with its data in a fresh temporary directory under
    /// the system temp dir, and waits (at most `STARTUP_TIMEOUT_MS`) until
    /// every member agrees on a leader and answers a linearizable read.
    pub fn start() -> Result<Self> {
        let data_dir = tempfile::Builder::new()
            .prefix("shoal-etcd-")
            .tempdir()
            .context("creating a temporary directory for etcd's data")?;
        Self::start_with_data_dir(data_dir)
    }

    /// Like `start`, with the temporary data directory created inside
    /// `parent_dir` — use it to put the WAL on a chosen disk, since fsync
    /// cost depends entirely on the filesystem underneath.
    pub fn start_in(parent_dir: &Path) -> Result<Self> {
        let data_dir = tempfile::Builder::new()
            .prefix("shoal-etcd-")
            .tempdir_in(parent_dir)
            .with_context(|| {
                format!("creating a temporary directory in {}", parent_dir.display())
            })?;
        Self::start_with_data_dir(data_dir)
    }

    fn start_with_data_dir(data_dir: TempDir) -> Result<Self> {
        let version = etcd_version()?;
        let ports = pick_free_ports(2 * MEMBER_COUNT)?;
        let client_addrs: Vec<SocketAddr> = ports[..MEMBER_COUNT]
            .iter()
            .map(|&port| loopback(port))
            .collect();
        let peer_addrs: Vec<SocketAddr> = ports[MEMBER_COUNT..]
            .iter()
            .map(|&port| loopback(port))
            .collect();
        let names: Vec<String> = (0..MEMBER_COUNT).map(|i| format!("m{i}")).collect();
        let initial_cluster = names
            .iter()
            .zip(&peer_addrs)
            .map(|(name, peer)| format!("{name}=http://{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        // A token unique to this cluster, so members of two clusters started
        // side by side can never mistake each other for peers.
        let cluster_token = format!("shoal-bench-{}-{}", std::process::id(), ports[0]);

        let mut cluster = EtcdCluster {
            members: Vec::new(),
            version,
            data_dir,
        };
        for i in 0..MEMBER_COUNT {
            let member_dir = cluster.data_dir.path().join(&names[i]);
            let log_path = cluster.data_dir.path().join(format!("{}.log", names[i]));
            let args = member_args(
                &names[i],
                &member_dir,
                client_addrs[i],
                peer_addrs[i],
                &initial_cluster,
                &cluster_token,
            );
            let child = spawn_etcd(&args, &log_path)?;
            cluster.members.push(Member {
                name: names[i].clone(),
                client_addr: client_addrs[i],
                peer_addr: peer_addrs[i],
                args,
                log_path,
                child,
            });
        }
        cluster.wait_for_leader(Duration::from_millis(STARTUP_TIMEOUT_MS))?;
        Ok(cluster)
    }

    /// Client URL addresses of the members, in member index order.
    pub fn client_addrs(&self) -> Vec<SocketAddr> {
        self.members.iter().map(|m| m.client_addr).collect()
    }

    /// Peer (raft) addresses of the members, in member index order.
    pub fn peer_addrs(&self) -> Vec<SocketAddr> {
        self.members.iter().map(|m| m.peer_addr).collect()
    }

    /// First line of `etcd --version`, e.g. `etcd Version: 3.4.23`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The temporary directory holding the members' data dirs and logs.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// The exact command line member `member_index` was started with,
    /// shell-style, for reports.
    pub fn command_line(&self, member_index: usize) -> Option<String> {
        self.members.get(member_index).map(|m| {
            std::iter::once("etcd".to_string())
                .chain(m.args.iter().cloned())
                .collect::<Vec<_>>()
                .join(" ")
        })
    }

    /// Opens a keep-alive client to member `member_index`.
    pub fn connect(&self, member_index: usize) -> Result<EtcdClient> {
        let member = self.members.get(member_index).ok_or_else(|| {
            anyhow!(
                "no etcd member {member_index} (cluster has {})",
                self.members.len()
            )
        })?;
        EtcdClient::connect(member.client_addr)
    }

    /// Index of the member that is currently the raft leader.
    pub fn leader_index(&self) -> Result<usize> {
        let mut probe = EtcdClient::connect_with_timeout(
            self.members[0].client_addr,
            Duration::from_millis(PROBE_TIMEOUT_MS),
        )?;
        let leader_id = probe.status()?.leader_id;
        if leader_id == 0 {
            bail!("member {} knows no leader", self.members[0].name);
        }
        for (index, member) in self.members.iter().enumerate() {
            let mut client = EtcdClient::connect_with_timeout(
                member.client_addr,
                Duration::from_millis(PROBE_TIMEOUT_MS),
            )?;
            if client.status()?.member_id == leader_id {
                return Ok(index);
            }
        }
        bail!("leader {leader_id:x} is not one of this cluster's members")
    }

    /// Polls until every member reports the same non-zero leader and serves
    /// a linearizable read, or `timeout` passes, or a member process dies.
    fn wait_for_leader(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            for member in &mut self.members {
                if let Some(exit) = member
                    .child
                    .try_wait()
                    .context("checking an etcd process")?
                {
                    bail!(
                        "etcd member {} exited during startup ({exit}); last log lines:\n{}",
                        member.name,
                        log_tail(&member.log_path)
                    );
                }
            }
            let last_problem = match self.probe_leader() {
                Ok(()) => return Ok(()),
                Err(err) => format!("{err:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "etcd cluster had no leader after {} ms ({last_problem}); member {} last log lines:\n{}",
                    timeout.as_millis(),
                    self.members[0].name,
                    log_tail(&self.members[0].log_path)
                );
            }
            std::thread::sleep(Duration::from_millis(STARTUP_POLL_INTERVAL_MS));
        }
    }

    /// One readiness probe: all members agree on a leader, and a
    /// linearizable range (which needs a working quorum) succeeds on each.
    fn probe_leader(&self) -> Result<()> {
        let mut agreed_leader_id = None;
        for member in &self.members {
            let mut client = EtcdClient::connect_with_timeout(
                member.client_addr,
                Duration::from_millis(PROBE_TIMEOUT_MS),
            )
            .with_context(|| format!("member {}", member.name))?;
            let status = client
                .status()
                .with_context(|| format!("status of member {}", member.name))?;
            if status.leader_id == 0 {
                bail!("member {} knows no leader yet", member.name);
            }
            match agreed_leader_id {
                None => agreed_leader_id = Some(status.leader_id),
                Some(id) if id != status.leader_id => {
                    bail!(
                        "members disagree on the leader ({id:x} vs {:x})",
                        status.leader_id
                    )
                }
                Some(_) => {}
            }
            client
                .get(b"shoal-bench/readiness-probe")
                .with_context(|| format!("linearizable read on member {}", member.name))?;
        }
        Ok(())
    }
}

impl Drop for EtcdCluster {
    /// SIGKILLs every member, then reaps it, before the data dir goes away.
    fn drop(&mut self) {
        for member in &mut self.members {
            let _ = member.child.kill();
        }
        for member in &mut self.members {
            let _ = member.child.wait();
        }
    }
}

/// Command-line arguments (after `etcd`) of one member.
fn member_args(
    name: &str,
    member_dir: &Path,
    client_addr: SocketAddr,
    peer_addr: SocketAddr,
    initial_cluster: &str,
    cluster_token: &str,
) -> Vec<String> {
    vec![
        "--name".into(),
        name.into(),
        "--data-dir".into(),
        member_dir.display().to_string(),
        "--listen-client-urls".into(),
        format!("http://{client_addr}"),
        "--advertise-client-urls".into(),
        format!("http://{client_addr}"),
        "--listen-peer-urls".into(),
        format!("http://{peer_addr}"),
        "--initial-advertise-peer-urls".into(),
        format!("http://{peer_addr}"),
        "--initial-cluster".into(),
        initial_cluster.into(),
        "--initial-cluster-token".into(),
        cluster_token.into(),
        "--initial-cluster-state".into(),
        "new".into(),
        // On by default in 3.4; spelled out because everything here uses it.
        "--enable-grpc-gateway=true".into(),
        // The default capnslog logger prints a deprecation warning.
        "--logger".into(),
        "zap".into(),
        "--log-outputs".into(),
        "stderr".into(),
    ]
}

/// Spawns one `etcd` with stdout/stderr going to `log_path`. `ETCD_*`
/// variables are removed from its environment: etcd reads every flag from
/// them too (e.g. `ETCD_UNSAFE_NO_FSYNC`), and the benchmark must not
/// inherit a setting silently.
fn spawn_etcd(args: &[String], log_path: &Path) -> Result<Child> {
    let log = File::create(log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let log_for_stdout = log
        .try_clone()
        .context("duplicating the etcd log file handle")?;
    let mut command = Command::new("etcd");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ETCD_") {
            command.env_remove(&key);
        }
    }
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_for_stdout))
        .stderr(Stdio::from(log));
    command
        .spawn()
        .map_err(|err| missing_etcd_error(err, "starting etcd"))
}

/// Runs `etcd --version` and returns its first line; the clear place to
/// report that the binary is missing.
fn etcd_version() -> Result<String> {
    let output = Command::new("etcd")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|err| missing_etcd_error(err, "running `etcd --version`"))?;
    if !output.status.success() {
        bail!(
            "`etcd --version` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    Ok(stdout
        .lines()
        .next()
        .unwrap_or("etcd Version: unknown")
        .trim()
        .to_string())
}

/// Turns a spawn error into an actionable message when the binary is absent.
fn missing_etcd_error(err: std::io::Error, what: &str) -> anyhow::Error {
    if err.kind() == std::io::ErrorKind::NotFound {
        anyhow!(
            "the `etcd` binary was not found on PATH; install etcd 3.4 with \
             `apt-get install -y etcd-server etcd-client` (Debian) and retry"
        )
    } else {
        anyhow::Error::new(err).context(what.to_string())
    }
}

/// Picks `count` distinct free TCP ports on 127.0.0.1 by binding port 0
/// `count` times at once, then releasing them for etcd to take.
fn pick_free_ports(count: usize) -> Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<std::io::Result<Vec<_>>>()
        .context("binding 127.0.0.1:0 to pick free ports")?;
    listeners
        .iter()
        .map(|listener| Ok(listener.local_addr()?.port()))
        .collect::<std::io::Result<Vec<u16>>>()
        .context("reading a picked port")
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Last couple of KiB of a member log, for error messages.
fn log_tail(path: &Path) -> String {
    const TAIL_BYTES: u64 = 2048;
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let len_bytes = file.metadata()?.len();
        file.seek(SeekFrom::Start(len_bytes.saturating_sub(TAIL_BYTES)))?;
        let mut tail = Vec::new();
        file.take(TAIL_BYTES).read_to_end(&mut tail)?;
        Ok(String::from_utf8_lossy(&tail).into_owned())
    };
    read().unwrap_or_else(|err| format!("(cannot read {}: {err})", path.display()))
}

// ---------------------------------------------------------------------------
// Client: blocking HTTP/1.1 keep-alive + JSON gateway calls
// ---------------------------------------------------------------------------

/// One etcd client: a single keep-alive HTTP/1.1 connection to one member's
/// JSON gateway, plus (for locks) one lease that it reuses.
///
/// A failed call drops the connection; the next call reconnects. No call is
/// retried, so a figure is never flattered by a hidden retry.
pub struct EtcdClient {
    addr: SocketAddr,
    io_timeout: Duration,
    conn: Option<BufReader<TcpStream>>,
    lease: Option<Lease>,
    request_buf: Vec<u8>,
}

/// The lease a client attaches its lock keys to.
struct Lease {
    id: i64,
    ttl_s: i64,
    refreshed_at: Instant,
}

/// A parsed HTTP response.
struct HttpResponse {
    status: u16,
    body: Vec<u8>,
    /// The server said `Connection: close` or delimited the body by EOF.
    close: bool,
}

impl EtcdClient {
    /// Connects to the gateway at `addr` with `IO_TIMEOUT_MS` socket timeouts.
    pub fn connect(addr: SocketAddr) -> Result<Self> {
        Self::connect_with_timeout(addr, Duration::from_millis(IO_TIMEOUT_MS))
    }

    /// Connects with the given connect/read/write timeout.
    pub fn connect_with_timeout(addr: SocketAddr, io_timeout: Duration) -> Result<Self> {
        let mut client = EtcdClient {
            addr,
            io_timeout,
            conn: None,
            lease: None,
            request_buf: Vec::new(),
        };
        client.conn = Some(client.open()?);
        Ok(client)
    }

    /// Connects and grants the client's lock lease right away, so that the
    /// first `lock` does not pay for the grant.
    pub fn connect_with_lease(addr: SocketAddr, ttl_s: i64) -> Result<Self> {
        let mut client = Self::connect(addr)?;
        client.grant_lease(ttl_s)?;
        Ok(client)
    }

    /// Address of the member this client talks to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `PUT key = value` (`/v3/kv/put`), acknowledged once committed by a
    /// quorum, i.e. fsynced on a majority of members.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.call(
            "/v3/kv/put",
            &json!({ "key": base64_encode(key), "value": base64_encode(value) }),
        )?;
        Ok(())
    }

    /// Linearizable read of one key (`/v3/kv/range` with
    /// `serializable: false`, the default, spelled out). `None` if absent.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let response = self.call(
            "/v3/kv/range",
            &json!({ "key": base64_encode(key), "serializable": false }),
        )?;
        let kvs = match response.get("kvs") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Array(kvs)) => kvs,
            Some(other) => bail!("range answered `kvs` that is not an array: {other}"),
        };
        let Some(kv) = kvs.first() else {
            return Ok(None);
        };
        // An empty value is a zero-valued proto field: the gateway omits it.
        match kv.get("value") {
            None | Some(Value::Null) => Ok(Some(Vec::new())),
            Some(Value::String(text)) => base64_decode(text).map(Some).context("range value"),
            Some(other) => bail!("range answered a `value` that is not a string: {other}"),
        }
    }

    /// Grants a lease of `ttl_s` seconds (`/v3/lease/grant`) and makes it
    /// this client's lock lease. Returns its ID.
    pub fn grant_lease(&mut self, ttl_s: i64) -> Result<i64> {
        let response = self.call("/v3/lease/grant", &json!({ "TTL": ttl_s }))?;
        let id = json_i64(&response, "ID")?;
        if id == 0 {
            bail!("lease grant answered no lease ID: {response}");
        }
        let granted_ttl_s = json_i64(&response, "TTL")?;
        self.lease = Some(Lease {
            id,
            ttl_s: granted_ttl_s.max(1),
            refreshed_at: Instant::now(),
        });
        Ok(id)
    }

    /// The client's lock lease ID, if one was granted.
    pub fn lease_id(&self) -> Option<i64> {
        self.lease.as_ref().map(|lease| lease.id)
    }

    /// Renews the lock lease once (`/v3/lease/keepalive`, which the 3.4
    /// gateway serves as one request → one `{"result":…}` answer).
    pub fn keep_alive_lease(&mut self) -> Result<()> {
        let id = self
            .lease
            .as_ref()
            .map(|lease| lease.id)
            .ok_or_else(|| anyhow!("no lease to keep alive"))?;
        let response = self.call("/v3/lease/keepalive", &json!({ "ID": id.to_string() }))?;
        let result = response
            .get("result")
            .ok_or_else(|| anyhow!("keepalive answered no `result`: {response}"))?;
        let ttl_s = json_i64(result, "TTL")?;
        if ttl_s <= 0 {
            bail!("lease {id:x} has expired (keepalive answered TTL {ttl_s})");
        }
        if let Some(lease) = self.lease.as_mut() {
            lease.ttl_s = ttl_s;
            lease.refreshed_at = Instant::now();
        }
        Ok(())
    }

    /// Renews the lock lease if a third of its TTL has passed, so that a long
    /// run never locks with an expired lease; grants one if there is none.
    /// Call it outside a timed region.
    pub fn refresh_lease_if_stale(&mut self) -> Result<()> {
        match &self.lease {
            None => {
                self.grant_lease(LOCK_LEASE_TTL_S)?;
            }
            Some(lease)
                if lease.refreshed_at.elapsed() >= Duration::from_secs(lease.ttl_s as u64) / 3 =>
            {
                self.keep_alive_lease()?;
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// Acquires the distributed lock `name` (`/v3/lock/lock`) under this
    /// client's lease and returns the lock key to pass to `unlock`. Blocks
    /// server-side while another lease holds it, bounded by the socket
    /// timeout. Re-locking a name this lease already holds returns the same
    /// key at once (etcd's lock key is `name/<lease id in hex>`).
    pub fn lock(&mut self, name: &[u8]) -> Result<Vec<u8>> {
        self.refresh_lease_if_stale()?;
        let lease_id = self
            .lease
            .as_ref()
            .map(|lease| lease.id)
            .ok_or_else(|| anyhow!("no lock lease"))?;
        let response = self.call(
            "/v3/lock/lock",
            &json!({ "name": base64_encode(name), "lease": lease_id.to_string() }),
        )?;
        match response.get("key") {
            Some(Value::String(text)) => base64_decode(text).context("lock key"),
            _ => bail!("lock answered no `key`: {response}"),
        }
    }

    /// Releases a lock by the key `lock` returned (`/v3/lock/unlock`).
    /// etcd answers success for a key that is already gone.
    pub fn unlock(&mut self, key: &[u8]) -> Result<()> {
        self.call("/v3/lock/unlock", &json!({ "key": base64_encode(key) }))?;
        Ok(())
    }

    /// This member's view of the cluster (`/v3/maintenance/status`).
    pub fn status(&mut self) -> Result<MemberStatus> {
        let response = self.call("/v3/maintenance/status", &json!({}))?;
        let header = response
            .get("header")
            .ok_or_else(|| anyhow!("status answered no header: {response}"))?;
        Ok(MemberStatus {
            member_id: json_u64(header, "member_id")?,
            leader_id: json_u64(&response, "leader")?,
            version: response
                .get("version")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            raft_term: json_u64(header, "raft_term")?,
        })
    }

    /// One gateway call: `POST path` with a JSON body, answered JSON.
    /// A non-200 status or an `error` field becomes an `Err` carrying etcd's
    /// message and gRPC code. Any failure drops the connection.
    pub fn call(&mut self, path: &str, body: &Value) -> Result<Value> {
        let result = self.call_inner(path, body).map_err(|err| {
            self.conn = None;
            let timed_out = err.chain().any(|cause| {
                cause.downcast_ref::<std::io::Error>().is_some_and(|io| {
                    matches!(
                        io.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    )
                })
            });
            if timed_out {
                err.context(format!(
                    "no answer within {} ms",
                    self.io_timeout.as_millis()
                ))
            } else {
                err
            }
        });
        result.with_context(|| format!("etcd POST {path} on {}", self.addr))
    }

    fn call_inner(&mut self, path: &str, body: &Value) -> Result<Value> {
        let body_bytes = serde_json::to_vec(body).context("encoding the request")?;
        let response = self.round_trip(path, &body_bytes)?;
        if response.close {
            self.conn = None;
        }
        let parsed: Value = serde_json::from_slice(&response.body).map_err(|err| {
            anyhow!(
                "HTTP {} with a body that is not JSON ({err}): {}",
                response.status,
                preview(&response.body)
            )
        })?;
        if response.status != 200 || parsed.get("error").is_some() {
            let message = parsed
                .get("message")
                .or_else(|| parsed.get("error"))
                .map(|m| {
                    m.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| m.to_string())
                })
                .unwrap_or_else(|| preview(&response.body));
            let code = parsed
                .get("code")
                .map(Value::to_string)
                .unwrap_or_else(|| "?".into());
            bail!("HTTP {}: {message} (gRPC code {code})", response.status);
        }
        Ok(parsed)
    }

    fn open(&self) -> Result<BufReader<TcpStream>> {
        let stream = TcpStream::connect_timeout(&self.addr, self.io_timeout)
            .with_context(|| format!("connecting to etcd at {}", self.addr))?;
        stream.set_read_timeout(Some(self.io_timeout))?;
        stream.set_write_timeout(Some(self.io_timeout))?;
        // Requests are written in one piece; no reason to wait for ACKs.
        stream.set_nodelay(true)?;
        Ok(BufReader::with_capacity(16 << 10, stream))
    }

    /// Sends one request (head and body in a single write) and reads one
    /// response on the keep-alive connection, opening it if needed.
    fn round_trip(&mut self, path: &str, body: &[u8]) -> Result<HttpResponse> {
        if self.conn.is_none() {
            self.conn = Some(self.open()?);
        }
        self.request_buf.clear();
        write!(
            self.request_buf,
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        )?;
        self.request_buf.extend_from_slice(body);
        let conn = self.conn.as_mut().ok_or_else(|| anyhow!("no connection"))?;
        conn.get_mut()
            .write_all(&self.request_buf)
            .context("sending the request")?;
        read_response(conn)
    }
}

/// Reads one HTTP/1.1 response: status line, headers, then a body framed
/// by Content-Length, chunked encoding (trailers skipped) or EOF. Sizes are
/// capped by `MAX_HEADER_BYTES` and `MAX_RESPONSE_BYTES`.
fn read_response(conn: &mut BufReader<TcpStream>) -> Result<HttpResponse> {
    let mut header_budget_bytes = MAX_HEADER_BYTES;
    let status_line =
        read_line_bounded(conn, &mut header_budget_bytes).context("reading the status line")?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        bail!("not an HTTP/1.x status line: {status_line:?}");
    }
    let status: u16 = parts
        .next()
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow!("bad status line: {status_line:?}"))?;

    let mut content_len_bytes: Option<usize> = None;
    let mut chunked = false;
    let mut close = version == "HTTP/1.0";
    loop {
        let line = read_line_bounded(conn, &mut header_budget_bytes).context("reading headers")?;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            bail!("malformed header line: {line:?}")
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_len_bytes = Some(
                value
                    .parse()
                    .with_context(|| format!("bad Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }

    let mut body = Vec::new();
    if chunked {
        loop {
            let size_line = read_line_bounded(conn, &mut header_budget_bytes)
                .context("reading a chunk size")?;
            let size_hex = size_line.split(';').next().unwrap_or("").trim();
            let size_bytes = usize::from_str_radix(size_hex, 16)
                .with_context(|| format!("bad chunk size {size_line:?}"))?;
            if size_bytes == 0 {
                // Trailers (the gateway sends e.g. Grpc-Trailer-*) until a blank line.
                while !read_line_bounded(conn, &mut header_budget_bytes)
                    .context("reading trailers")?
                    .is_empty()
                {}
                break;
            }
            if body.len() + size_bytes > MAX_RESPONSE_BYTES {
                bail!("response body exceeds {MAX_RESPONSE_BYTES} bytes");
            }
            let start = body.len();
            body.resize(start + size_bytes, 0);
            conn.read_exact(&mut body[start..])
                .context("reading a chunk")?;
            let mut crlf = [0u8; 2];
            conn.read_exact(&mut crlf).context("reading a chunk end")?;
            if &crlf != b"\r\n" {
                bail!("chunk not followed by CRLF");
            }
        }
    } else if let Some(len_bytes) = content_len_bytes {
        if len_bytes > MAX_RESPONSE_BYTES {
            bail!("response body of {len_bytes} bytes exceeds {MAX_RESPONSE_BYTES}");
        }
        body.resize(len_bytes, 0);
        conn.read_exact(&mut body).context("reading the body")?;
    } else {
        // No framing: the body runs to EOF and the connection is done.
        conn.take(MAX_RESPONSE_BYTES as u64 + 1)
            .read_to_end(&mut body)
            .context("reading the body")?;
        if body.len() > MAX_RESPONSE_BYTES {
            bail!("response body exceeds {MAX_RESPONSE_BYTES} bytes");
        }
        close = true;
    }
    Ok(HttpResponse {
        status,
        body,
        close,
    })
}

/// Reads one CRLF- (or LF-) terminated line, charging its length to
/// `budget_bytes` so that headers + trailers stay bounded in total.
fn read_line_bounded(conn: &mut BufReader<TcpStream>, budget_bytes: &mut usize) -> Result<String> {
    let mut line = Vec::new();
    let read_bytes = conn
        .by_ref()
        .take(*budget_bytes as u64)
        .read_until(b'\n', &mut line)?;
    if read_bytes == 0 {
        bail!("connection closed by etcd");
    }
    if line.last() != Some(&b'\n') {
        if read_bytes >= *budget_bytes {
            bail!("response headers exceed {MAX_HEADER_BYTES} bytes");
        }
        bail!("connection closed by etcd mid-line");
    }
    *budget_bytes -= read_bytes;
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| anyhow!("non-UTF-8 header line"))
}

/// First 200 bytes of a body, for error messages.
fn preview(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
}

/// Reads an int64 proto field: the gateway sends it as a JSON string, and
/// omits it when zero.
fn json_i64(object: &Value, field: &str) -> Result<i64> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::String(text)) => text
            .parse()
            .with_context(|| format!("field {field} = {text:?}")),
        Some(Value::Number(number)) => number
            .as_i64()
            .ok_or_else(|| anyhow!("field {field} = {number} out of range")),
        Some(other) => bail!("field {field} is not an integer: {other}"),
    }
}

/// Reads a uint64 proto field (member IDs exceed i64): string, omitted when zero.
fn json_u64(object: &Value, field: &str) -> Result<u64> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::String(text)) => text
            .parse()
            .with_context(|| format!("field {field} = {text:?}")),
        Some(Value::Number(number)) => number
            .as_u64()
            .ok_or_else(|| anyhow!("field {field} = {number} out of range")),
        Some(other) => bail!("field {field} is not an integer: {other}"),
    }
}

// ---------------------------------------------------------------------------
// Base64 (standard alphabet, padded), as proto3 JSON uses for `bytes`
// ---------------------------------------------------------------------------

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with `=` padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = [(n >> 18) & 63, (n >> 12) & 63, (n >> 6) & 63, n & 63];
        for (i, &c) in chars.iter().enumerate() {
            if i <= group.len() {
                out.push(char::from(BASE64_ALPHABET[c as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (also URL-safe `-`/`_`), padded or not.
/// Rejects any other character and impossible lengths.
pub fn base64_decode(text: &str) -> Result<Vec<u8>> {
    let trimmed = text.trim_end_matches('=');
    if text.len() - trimmed.len() > 2 || trimmed.len() % 4 == 1 {
        bail!("invalid base64 length in {:?}", preview(text.as_bytes()));
    }
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut acc_bits = 0;
    for &c in trimmed.as_bytes() {
        let sextet = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => bail!("invalid base64 character {:?}", char::from(c)),
        };
        acc = (acc << 6) | u32::from(sextet);
        acc_bits += 6;
        if acc_bits >= 8 {
            acc_bits -= 8;
            out.push((acc >> acc_bits) as u8);
            acc &= (1 << acc_bits) - 1;
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Measurement
// ---------------------------------------------------------------------------

/// What `measure` does.
#[derive(Clone, Debug)]
pub struct MeasureConfig {
    /// Timed operations per kind in the sequential (one client) phase.
    pub sequential_ops: usize,
    /// Untimed operations per kind before timing starts.
    pub warmup_ops: usize,
    /// Client threads in the throughput phase, one connection each.
    pub concurrent_clients: usize,
    /// Puts per client in the throughput phase.
    pub ops_per_client: usize,
    /// Size of every value written.
    pub value_len_bytes: usize,
}

impl Default for MeasureConfig {
    fn default() -> Self {
        MeasureConfig {
            sequential_ops: 1000,
            warmup_ops: 20,
            concurrent_clients: 64,
            ops_per_client: 100,
            value_len_bytes: 100,
        }
    }
}

/// Latency distribution of one operation kind.
#[derive(Clone, Debug, Default)]
pub struct LatencyFigures {
    /// Timed operations.
    pub ops: usize,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl LatencyFigures {
    /// Nearest-rank percentiles of the given per-op latencies.
    pub fn from_samples(mut samples_us: Vec<u64>) -> Self {
        samples_us.sort_unstable();
        let percentile = |p: f64| -> u64 {
            if samples_us.is_empty() {
                return 0;
            }
            let rank = ((p * samples_us.len() as f64).ceil() as usize).clamp(1, samples_us.len());
            samples_us[rank - 1]
        };
        LatencyFigures {
            ops: samples_us.len(),
            p50_us: percentile(0.50),
            p99_us: percentile(0.99),
            max_us: samples_us.last().copied().unwrap_or(0),
        }
    }
}

/// Aggregate put throughput of many concurrent clients.
#[derive(Clone, Debug, Default)]
pub struct ThroughputFigures {
    pub clients: usize,
    /// Puts completed across all clients.
    pub ops: usize,
    /// Wall time from releasing the (already connected) clients to the last
    /// one finishing.
    pub elapsed_ms: u64,
    pub ops_per_s: f64,
    /// Per-put latency seen by the clients while under this load.
    pub latency: LatencyFigures,
}

/// Everything `measure` found.
#[derive(Clone, Debug, Default)]
pub struct EtcdFigures {
    /// e.g. `etcd Version: 3.4.23`.
    pub etcd_version: String,
    pub members: usize,
    /// The sequential client talked to the leader (no forwarding hop).
    pub sequential_via_leader: bool,
    pub value_len_bytes: usize,
    /// One client, `put` one key after another.
    pub put: LatencyFigures,
    /// One client, linearizable `get` of keys just written.
    pub get: LatencyFigures,
    /// One client, `lock` then `unlock` of one name, timed together.
    pub lock_unlock: LatencyFigures,
    /// `concurrent_clients` clients doing puts, spread over all members.
    pub concurrent_put: ThroughputFigures,
}

impl fmt::Display for EtcdFigures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let version = self.etcd_version.trim_start_matches("etcd Version: ");
        writeln!(
            f,
            "etcd {version}: {} members on 127.0.0.1, WAL fsync on, JSON gateway over HTTP/1.1, {} B values, sequential client on the {}",
            self.members,
            self.value_len_bytes,
            if self.sequential_via_leader { "leader" } else { "a follower" }
        )?;
        let row = |f: &mut fmt::Formatter<'_>, label: &str, l: &LatencyFigures| {
            writeln!(
                f,
                "etcd {label:<12} p50 {:>7} µs  p99 {:>7} µs  max {:>7} µs  (n={})",
                l.p50_us, l.p99_us, l.max_us, l.ops
            )
        };
        row(f, "put", &self.put)?;
        row(f, "get", &self.get)?;
        row(f, "lock+unlock", &self.lock_unlock)?;
        let t = &self.concurrent_put;
        write!(
            f,
            "etcd put x{:<3}     {:>9.0} ops/s  ({} ops in {} ms; per-put p50 {} µs p99 {} µs)",
            t.clients, t.ops_per_s, t.ops, t.elapsed_ms, t.latency.p50_us, t.latency.p99_us
        )
    }
}

/// Measures the cluster: per op kind (put, get, lock+unlock) `sequential_ops`
/// back-to-back operations from one client on the leader → p50/p99; then
/// `concurrent_clients` OS threads, each with its own connection (spread
/// round-robin over the members), doing `ops_per_client` puts → ops/s.
pub fn measure(cluster: &EtcdCluster, config: &MeasureConfig) -> Result<EtcdFigures> {
    if config.sequential_ops == 0 || config.concurrent_clients == 0 || config.ops_per_client == 0 {
        bail!("measure needs non-zero op and client counts: {config:?}");
    }
    let value = vec![b'v'; config.value_len_bytes];
    let leader_index = cluster.leader_index().context("finding the leader")?;
    let leader_addr = cluster.client_addrs()[leader_index];
    let mut client = EtcdClient::connect_with_lease(leader_addr, LOCK_LEASE_TTL_S)?;

    let seq_key = |i: usize| format!("shoal-bench/seq/{i:08}").into_bytes();
    for i in 0..config.warmup_ops {
        let key = format!("shoal-bench/warmup/{i}").into_bytes();
        client.put(&key, &value)?;
        client.get(&key)?;
        let lock_key = client.lock(b"shoal-bench/lock")?;
        client.unlock(&lock_key)?;
    }

    let mut samples_us = Vec::with_capacity(config.sequential_ops);
    for i in 0..config.sequential_ops {
        let key = seq_key(i);
        let started = Instant::now();
        client.put(&key, &value)?;
        samples_us.push(elapsed_us(started));
    }
    let put = LatencyFigures::from_samples(std::mem::take(&mut samples_us));

    for i in 0..config.sequential_ops {
        let key = seq_key(i);
        let started = Instant::now();
        let got = client.get(&key)?;
        samples_us.push(elapsed_us(started));
        if got.as_deref() != Some(value.as_slice()) {
            bail!(
                "get of {} did not return the value just put",
                String::from_utf8_lossy(&key)
            );
        }
    }
    let get = LatencyFigures::from_samples(std::mem::take(&mut samples_us));

    for _ in 0..config.sequential_ops {
        client.refresh_lease_if_stale()?;
        let started = Instant::now();
        let lock_key = client.lock(b"shoal-bench/lock")?;
        client.unlock(&lock_key)?;
        samples_us.push(elapsed_us(started));
    }
    let lock_unlock = LatencyFigures::from_samples(std::mem::take(&mut samples_us));

    let concurrent_put = measure_concurrent_puts(cluster, config, &value)?;

    Ok(EtcdFigures {
        etcd_version: cluster.version().to_string(),
        members: cluster.client_addrs().len(),
        sequential_via_leader: true,
        value_len_bytes: config.value_len_bytes,
        put,
        get,
        lock_unlock,
        concurrent_put,
    })
}

/// Start gate of the concurrent phase: clients connect first, then all are
/// released at once so that connection setup is not timed.
struct StartGate {
    state: Mutex<GateState>,
    changed: Condvar,
}

struct GateState {
    /// Clients that finished connecting (successfully or not).
    ready: usize,
    /// `None` while waiting, `Some(true)` to go, `Some(false)` to abort.
    go: Option<bool>,
}

fn measure_concurrent_puts(
    cluster: &EtcdCluster,
    config: &MeasureConfig,
    value: &[u8],
) -> Result<ThroughputFigures> {
    let addrs = cluster.client_addrs();
    let gate = Arc::new(StartGate {
        state: Mutex::new(GateState { ready: 0, go: None }),
        changed: Condvar::new(),
    });
    let start_timeout = Duration::from_millis(CLIENT_START_TIMEOUT_MS);
    let mut handles = Vec::with_capacity(config.concurrent_clients);
    let mut spawn_error = None;

    for client_index in 0..config.concurrent_clients {
        let gate = Arc::clone(&gate);
        let addr = addrs[client_index % addrs.len()];
        let value = value.to_vec();
        let ops = config.ops_per_client;
        let spawned = std::thread::Builder::new()
            .name(format!("etcd-put-{client_index}"))
            .stack_size(256 << 10)
            .spawn(move || -> Result<Vec<u64>> {
                let connected = EtcdClient::connect(addr);
                let go = {
                    let mut state = gate
                        .state
                        .lock()
                        .map_err(|_| anyhow!("start gate poisoned"))?;
                    state.ready += 1;
                    gate.changed.notify_all();
                    let (state, _) = gate
                        .changed
                        .wait_timeout_while(state, start_timeout, |s| s.go.is_none())
                        .map_err(|_| anyhow!("start gate poisoned"))?;
                    state.go
                };
                let mut client = connected?;
                if go != Some(true) {
                    bail!("client {client_index}: run aborted before start");
                }
                let mut samples_us = Vec::with_capacity(ops);
                for i in 0..ops {
                    let key = format!("shoal-bench/conc/{client_index:03}/{i:06}").into_bytes();
                    let started = Instant::now();
                    client
                        .put(&key, &value)
                        .with_context(|| format!("client {client_index}, put {i}"))?;
                    samples_us.push(elapsed_us(started));
                }
                Ok(samples_us)
            });
        match spawned {
            Ok(handle) => handles.push(handle),
            Err(err) => {
                spawn_error = Some(anyhow::Error::new(err).context("spawning a client thread"));
                break;
            }
        }
    }

    // Release (or abort) the clients once all have connected.
    let started = {
        let state = gate
            .state
            .lock()
            .map_err(|_| anyhow!("start gate poisoned"))?;
        let spawned_count = handles.len();
        let (mut state, _) = gate
            .changed
            .wait_timeout_while(state, start_timeout, |s| s.ready < spawned_count)
            .map_err(|_| anyhow!("start gate poisoned"))?;
        let all_ready = state.ready == config.concurrent_clients;
        state.go = Some(spawn_error.is_none() && all_ready);
        gate.changed.notify_all();
        Instant::now()
    };

    let mut all_samples_us = Vec::with_capacity(config.concurrent_clients * config.ops_per_client);
    let mut first_error = spawn_error;
    for handle in handles {
        match handle.join() {
            Ok(Ok(samples_us)) => all_samples_us.extend(samples_us),
            Ok(Err(err)) => {
                first_error.get_or_insert(err);
            }
            Err(_) => {
                first_error.get_or_insert(anyhow!("a client thread panicked"));
            }
        }
    }
    let elapsed = started.elapsed();
    if let Some(err) = first_error {
        return Err(err.context("concurrent put phase"));
    }
    let ops = all_samples_us.len();
    Ok(ThroughputFigures {
        clients: config.concurrent_clients,
        ops,
        elapsed_ms: elapsed.as_millis() as u64,
        ops_per_s: ops as f64 / elapsed.as_secs_f64().max(1e-9),
        latency: LatencyFigures::from_samples(all_samples_us),
    })
}

fn elapsed_us(started: Instant) -> u64 {
    started.elapsed().as_micros() as u64
}

#[cfg(test)]
#[allow(unused_imports)] // benches build with cfg(test) but without the harness
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_matches_known_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
            assert_eq!(base64_decode(encoded).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64_decode(&base64_encode(&all)).unwrap(), all);
        assert!(base64_decode("Zm9v!").is_err());
        assert!(base64_decode("Z").is_err());
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let figures = LatencyFigures::from_samples((1..=100).collect());
        assert_eq!(
            (figures.p50_us, figures.p99_us, figures.max_us, figures.ops),
            (50, 99, 100, 100)
        );
        assert_eq!(LatencyFigures::from_samples(vec![]).p99_us, 0);
    }
}
