//! The node daemon: one node of a cluster, on one port.
//!
//! [`Daemon::start`] wires the pieces together:
//!
//! - **identity** ([`shoal_pki`]): a fresh data dir with no `--join` becomes
//!   a new single-node cluster (its CA, its node certificate, an admin
//!   credential in `<data>/pki/admin/`); with `--join` the node joins through
//!   [`join`]; a data dir that already has a certificate restarts as it was.
//! - **Raft** ([`shoal_cluster`]): membership, directory, names, modules,
//!   tokens and revocations, stored under `<data>/cluster/raft`.
//! - **transport** ([`shoal_net`]): HTTP/2 over mutual TLS; peers, CLIs and
//!   joiners all use the node's one address. [`dispatch`] authorizes each
//!   request by the caller's certificate role and routes it.
//! - **the node** ([`shoal_runtime::node`]) with a [`link::Link`] attached, so
//!   processes reach pids, nodes and modules across the cluster.
//! - **background tasks** ([`tasks`]): heartbeats with load figures, pid
//!   blocks, directory batching, revocation sync, certificate renewal.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod access;
pub mod api;
pub mod certs;
pub mod checkpoints;
pub mod cluster_api;
pub mod credentials;
pub mod dispatch;
pub mod failover;
pub mod join;
pub mod lease;
pub mod link;
pub mod local_api;
pub mod lock_expiry;
pub mod logs;
pub mod migrate;
pub mod modules_ahead;
pub mod node_down;
pub mod peer_api;
pub mod proxy;
pub mod records;
pub mod stop;
pub mod tasks;
pub mod transport;
pub mod volumes_api;

mod start_error;
pub(crate) use api::answer::{encode_json, from_net};
pub use start_error::StartError;

/// Longest a joined node waits to hear from its leader at start-up.
const LEADER_CONTACT_WAIT: Duration = Duration::from_secs(30);
/// Pid block requests at start-up before giving up.
const PID_BLOCK_ATTEMPTS: u64 = 20;

use shoal_cluster::{MemberInfo, NodeId, Raft, RaftConfig};
use shoal_net::{NetConfig, Peers};
use shoal_pki::{self, ClusterCa, ClusterTrust, Identity, PkiPaths, SharedRevocations};
use shoal_runtime::node::{Node, NodeConfig};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

impl From<crate::api::ApiError> for shoal_net::RemoteError {
    /// A control-API error as an answer to a peer or a remote CLI: same
    /// status, same text.
    fn from(e: crate::api::ApiError) -> Self {
        shoal_net::RemoteError::new(e.status(), e.to_string())
    }
}

/// Where a node joins.
#[derive(Debug, Clone)]
pub struct JoinSpec {
    /// A member's address.
    pub addr: String,
    /// The one-time token from `shoal token create`.
    pub token: String,
    /// The CA pin, `sha256:<hex>`.
    pub ca_pin: String,
}

/// How to run a node daemon.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The data directory (registry, PKI, Raft store).
    pub data_dir: PathBuf,
    /// The node's name (its certificate id). Kept across restarts.
    pub name: String,
    /// The address to listen on.
    pub listen: SocketAddr,
    /// The address others use to reach this node (default: `listen`).
    pub advertise: Option<String>,
    /// Labels for placement constraints.
    pub labels: BTreeMap<String, String>,
    /// Join an existing cluster instead of starting one.
    pub join: Option<JoinSpec>,
    /// The node's runtime settings.
    pub node: NodeConfig,
    /// Raft timing.
    pub raft: RaftConfig,
    /// Transport limits.
    pub net: NetConfig,
    /// How often the node reports its load.
    pub heartbeat_interval: Duration,
    /// Lifetime of the certificates this node signs if it holds the CA
    /// (joins and renewals); a node renews its own from 2/3 of it on.
    pub cert_ttl: Duration,
    /// How often the node checks whether its certificate is due for renewal.
    pub renew_check_interval: Duration,
    /// Faults to inject into migrations (tests only; none by default).
    pub faults: crate::migrate::MigrationFaults,
    /// Moving processes from busy nodes to idle ones (on by default).
    pub rebalance: crate::migrate::rebalance::RebalanceConfig,
    /// How long an arrival waits for the rest of its move (its final state,
    /// then the decision) before this node drops it and gives back what it
    /// holds ([`crate::migrate::target::ARRIVAL_TTL`]).
    pub arrival_ttl: Duration,
    /// How long the locks of processes on a node declared dead stay held
    /// after the verdict (Chubby's and Consul's lock-delay): a holder
    /// that was only cut off has this long to notice before another may
    /// take its locks (and its fenced writes are refused from then on).
    pub lock_delay: Duration,
    /// Key-value writes and lock commands one identity may make per second
    /// on this node (a token bucket of this size): guests count against
    /// their owner, operators (`shoal kv set|del`) against themselves, so
    /// no tenant floods the Raft log that heartbeats share.
    pub kv_writes_per_s_max: u32,
    /// Fetch and prepare every module the cluster records, in the
    /// background at a low priority, so nothing waits for a preparation
    /// later ([`modules_ahead`]; on by default).
    pub prepare_ahead: bool,
}

impl DaemonConfig {
    /// Defaults for a node called `name` listening on `listen`.
    pub fn new(data_dir: impl Into<PathBuf>, name: &str, listen: SocketAddr) -> Self {
        let data_dir = data_dir.into();
        DaemonConfig {
            node: NodeConfig::new(&data_dir),
            data_dir,
            name: name.to_string(),
            listen,
            advertise: None,
            labels: BTreeMap::new(),
            join: None,
            raft: RaftConfig::default(),
            net: NetConfig::default(),
            heartbeat_interval: Duration::from_millis(1000),
            cert_ttl: join::NODE_CERT_TTL,
            renew_check_interval: Duration::from_secs(60),
            faults: Default::default(),
            rebalance: Default::default(),
            arrival_ttl: crate::migrate::target::ARRIVAL_TTL,
            lock_delay: LOCK_DELAY_DEFAULT,
            kv_writes_per_s_max: records::kv::OWNER_WRITES_PER_S_MAX,
            prepare_ahead: true,
        }
    }
}

/// The default [`DaemonConfig::lock_delay`].
pub const LOCK_DELAY_DEFAULT: Duration = Duration::from_secs(5);

/// What the daemon's parts share.
pub struct Inner {
    /// This node's id.
    pub me: NodeId,
    /// Its name.
    pub name: String,
    /// The address peers use.
    pub addr: String,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The process host.
    pub node: Node,
    /// Raft.
    pub raft: Raft,
    /// Connections to peers.
    pub peers: Peers,
    /// The cluster link attached to the node.
    pub link: Arc<link::Link>,
    /// The CA, if this node holds it.
    pub ca: Option<ClusterCa>,
    /// The CA and the revocation list every handshake checks.
    pub trust: ClusterTrust,
    /// Transport limits.
    pub net: NetConfig,
    /// Our client TLS config (for connections outside [`Peers`]).
    pub client_tls: Arc<rustls::ClientConfig>,
    /// Our certificate, replaced in place when renewed.
    pub identity: Arc<shoal_pki::tls::LiveIdentity>,
    /// Lifetime of certificates this node signs (if it holds the CA).
    pub cert_ttl: Duration,
    /// How often to check for renewal.
    pub renew_check_interval: Duration,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// See [`DaemonConfig::lock_delay`].
    pub lock_delay: Duration,
    /// See [`DaemonConfig::prepare_ahead`].
    pub prepare_ahead: bool,
    /// What migrations, drains and rebalancing run on.
    pub migration: Arc<crate::migrate::Ctx>,
    /// A stop asked over the API (`shoal node stop`).
    pub stop: stop::StopSignal,
}

/// A running node daemon.
pub struct Daemon {
    inner: Arc<Inner>,
    local_addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
}

/// The file holding this node's id (so a restart keeps it).
fn node_id_path(data_dir: &Path) -> PathBuf {
    data_dir.join("cluster").join("node-id")
}

fn read_node_id(data_dir: &Path) -> Result<Option<NodeId>, StartError> {
    let path = node_id_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(s) => match s.trim().parse() {
            Ok(id) => Ok(Some(id)),
            Err(_) => Err(StartError::BadNodeId { path }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StartError::Io {
            action: "read",
            path,
            source,
        }),
    }
}

/// Create `dir` if missing and make it the node's alone (0700): the data
/// dir holds the CA key, the Raft store, guest memory and compiled code.
pub fn private_dir(dir: &Path) -> Result<(), StartError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let failed = |action: &'static str| {
        move |source| StartError::Io {
            action,
            path: dir.to_path_buf(),
            source,
        }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(failed("create"))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(failed("restrict"))
}

fn write_node_id(data_dir: &Path, id: NodeId) -> Result<(), StartError> {
    let path = node_id_path(data_dir);
    if let Some(dir) = path.parent() {
        private_dir(dir)?;
    }
    shoal_pki::files::write_atomic(
        &path,
        format!("{id}\n").as_bytes(),
        0o600,
        shoal_pki::files::Overwrite::Replace,
    )?;
    Ok(())
}

pub use credentials::{init_cluster_pki, InitReport};

impl Daemon {
    /// Start the node: identity, Raft, listener, link, tasks. Returns once
    /// the node serves and is a member of its cluster.
    pub async fn start(config: DaemonConfig) -> Result<Daemon, StartError> {
        let data_dir = config.data_dir.clone();
        private_dir(&data_dir)?;
        private_dir(&data_dir.join("cluster"))?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
        let addr = config
            .advertise
            .clone()
            .unwrap_or_else(|| local_addr.to_string());
        let paths = PkiPaths::new(&data_dir);
        enum Start {
            Fresh,
            Joined,
            Restart,
        }
        let (start, me) = if paths.node_cert().exists() {
            match read_node_id(&data_dir)? {
                Some(id) => (Start::Restart, id),
                // `shoal cluster init` made the CA and this node's
                // certificate; the node now starts the cluster as node 1.
                None if paths.ca_key().exists() && config.join.is_none() => {
                    write_node_id(&data_dir, 1)?;
                    (Start::Fresh, 1)
                }
                None => {
                    return Err(StartError::Damaged {
                        id_path: node_id_path(&data_dir),
                        data_dir,
                    })
                }
            }
        } else if let Some(j) = &config.join {
            let (_identity, id) = join::join(
                &data_dir,
                &j.addr,
                &j.token,
                &j.ca_pin,
                &config.name,
                &addr,
                &config.labels,
            )
            .await?;
            write_node_id(&data_dir, id)?;
            (Start::Joined, id)
        } else {
            let report = init_cluster_pki(&data_dir, &config.name)?;
            tracing::info!(
                "created cluster CA (pin {}), admin credential in {}",
                report.ca_pin,
                report.admin_dir.display()
            );
            write_node_id(&data_dir, 1)?;
            (Start::Fresh, 1)
        };
        let identity = Identity::load(&data_dir)?;
        let name = identity.info().id.clone();
        let ca_pem = shoal_pki::files::read_certificate(&paths.ca_cert())?;
        let revocations = SharedRevocations::default();
        let trust = ClusterTrust::new(&ca_pem, revocations.clone())?;
        let live = shoal_pki::tls::LiveIdentity::new(&identity)?;
        let client_tls = shoal_pki::tls::client_config_live(&live, &trust)?;
        let peers = Peers::new(client_tls.clone(), config.net.clone());
        // A peer whose certificate is revoked (a removed node) loses our
        // connections to it as soon as the revocation applies here.
        peers.watch_revocations(revocations.clone());
        let transport = Arc::new(transport::PeersTransport::new(peers.clone()));
        let raft = Raft::open(
            me,
            MemberInfo {
                name: name.clone(),
                addr: addr.clone(),
            },
            &data_dir.join("cluster").join("raft"),
            transport,
            config.raft.clone(),
        )
        .await
        .map_err(StartError::Raft)?;
        // The Raft store is open (and locked): no other daemon runs on this
        // data dir, and no process outlives its daemon, so volume
        // directories still here were left by a crash and belong to nobody.
        shoal_runtime::volume::remove_leftovers(&config.node.data_dir.join("volumes"));
        let node = Node::new(config.node.clone()).map_err(StartError::Node)?;
        let link = link::Link::new(
            me,
            raft.clone(),
            peers.clone(),
            node.downgrade(),
            config.node.engine.processes_max,
            config.kv_writes_per_s_max,
        );
        {
            let link = link.clone();
            peers.set_dead_letter_hook(Arc::new(move |pid| link.mark_dead(pid)));
        }
        node.attach_cluster(link.clone())
            .map_err(StartError::Node)?;
        let migration = Arc::new(crate::migrate::Ctx {
            me,
            name: name.clone(),
            node: node.clone(),
            raft: raft.clone(),
            peers: peers.clone(),
            link: link.clone(),
            arrivals: Default::default(),
            keeper: Default::default(),
            faults: config.faults.clone(),
            drains: Default::default(),
            rebalance: config.rebalance.clone(),
            arrival_ttl: config.arrival_ttl,
        });
        let inner = Arc::new(Inner {
            me,
            name: name.clone(),
            addr: addr.clone(),
            data_dir: data_dir.clone(),
            node,
            raft: raft.clone(),
            peers: peers.clone(),
            link,
            ca: join::local_ca(&data_dir),
            trust: trust.clone(),
            net: config.net.clone(),
            client_tls,
            identity: live.clone(),
            cert_ttl: config.cert_ttl,
            renew_check_interval: config.renew_check_interval,
            heartbeat_interval: config.heartbeat_interval,
            lock_delay: config.lock_delay,
            prepare_ahead: config.prepare_ahead,
            migration,
            stop: Default::default(),
        });
        let server_tls =
            shoal_pki::tls::server_config_live(&live, &trust, shoal_pki::tls::CONTROL_API, true)?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let handler = Arc::new(dispatch::Dispatch::new(inner.clone()));
        let net_config = config.net.clone();
        let server = tokio::spawn(async move {
            shoal_net::serve(listener, server_tls, handler, net_config, async move {
                let _ = stop_rx.await;
            })
            .await;
        });
        let step = |what: &str| tracing::debug!(node = %name, "start-up: {what}");
        step("raft open, serving");
        match start {
            Start::Fresh => raft
                .bootstrap(
                    config.labels.clone(),
                    ca_pem.clone(),
                    shoal_pki::now_unix_ms(),
                )
                .await
                .map_err(StartError::Bootstrap)?,
            Start::Joined => {
                let j = config.join.as_ref().expect("joined with a join spec");
                cluster_api::ask_membership(&peers, &j.addr, me, &name, &addr)
                    .await
                    .map_err(StartError::Membership)?;
            }
            Start::Restart => {}
        }
        // A new member learns the membership from the leader's first
        // append; until then it cannot forward writes.
        if !raft.wait_initialized(LEADER_CONTACT_WAIT).await {
            return Err(StartError::NoLeaderContact {
                waited_ms: LEADER_CONTACT_WAIT.as_millis() as u64,
            });
        }
        step("member");
        // From here on pids come from cluster blocks: take the first one now,
        // before anything can spawn (retrying while a fresh member settles).
        let mut attempt = 0;
        while let Err(e) = tasks::grant_pid_block(&inner).await {
            attempt += 1;
            if attempt >= PID_BLOCK_ATTEMPTS {
                return Err(StartError::PidBlock {
                    attempts: attempt,
                    source: e,
                });
            }
            tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
        }
        step("pid block granted");
        let tasks = tasks::start(inner.clone(), revocations);
        Ok(Daemon {
            inner,
            local_addr,
            stop: Some(stop_tx),
            server: Some(server),
            tasks,
        })
    }

    /// The address the node listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The process host.
    pub fn node(&self) -> &Node {
        &self.inner.node
    }

    /// Raft.
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.me
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Create a one-time join token for `role` (`"node"`, `"client"`,
    /// `"admin"`) valid for `ttl`, as `shoal token create` does.
    pub async fn create_join_token(
        &self,
        role: &str,
        ttl: Duration,
    ) -> Result<cluster_api::TokenCreated, shoal_net::RemoteError> {
        let role: shoal_pki::Role = role
            .parse()
            .map_err(|e: shoal_pki::PkiError| shoal_net::RemoteError::new(400, e.to_string()))?;
        let ttl_ms = ttl.as_millis().min(u128::from(u64::MAX)) as u64;
        // Signed like the CLI's request, with this data directory's admin
        // credential (the first node's `pki/admin/`).
        let admin = shoal_pki::PkiPaths::new(&self.inner.data_dir).admin_dir();
        let signer = shoal_pki::Signer::load(&admin).map_err(|e| {
            shoal_net::RemoteError::new(
                403,
                format!("a join token needs an admin's signature: {e}"),
            )
        })?;
        self.create_join_token_signed(role, ttl_ms, &signer).await
    }

    /// [`Daemon::create_join_token`] signed by `signer` (an admin's
    /// credential from anywhere).
    pub async fn create_join_token_signed(
        &self,
        role: shoal_pki::Role,
        ttl_ms: u64,
        signer: &shoal_pki::Signer,
    ) -> Result<cluster_api::TokenCreated, shoal_net::RemoteError> {
        let (token, req, proof) = shoal_api::cluster::signed_token_request(signer, role, ttl_ms)
            .map_err(|e| shoal_net::RemoteError::new(500, e.to_string()))?;
        let mut headers = hyper::HeaderMap::new();
        let value = hyper::header::HeaderValue::from_str(&shoal_pki::proof::to_header(&proof))
            .map_err(|e| shoal_net::RemoteError::new(500, e.to_string()))?;
        headers.insert(shoal_pki::proof::PROOF_HEADER, value);
        let created =
            cluster_api::create_token(&self.inner, req, &cluster_api::operator(), &headers).await?;
        Ok(shoal_api::cluster::with_token(created, &token))
    }

    /// Store a module on this node and record it (and `name`) cluster-wide,
    /// as `shoal deploy --name` does.
    pub async fn add_module(
        &self,
        wasm: &[u8],
        name: Option<&str>,
    ) -> Result<shoal_registry::Sha256, shoal_net::RemoteError> {
        cluster_api::add_module(
            &self.inner,
            bytes::Bytes::copy_from_slice(wasm),
            name.map(str::to_string),
        )
        .await
    }

    /// The shared parts (for tests and tools).
    pub fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// What migrations run on: pass it to [`migrate::source::migrate`] and
    /// [`migrate::drain`].
    pub fn migration(&self) -> &Arc<migrate::Ctx> {
        &self.inner.migration
    }

    /// Stop: kill local processes, stop serving, stop Raft.
    pub async fn shutdown(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        crate::api::handlers::kill_all(&self.inner.node).await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
        let _ = self.inner.raft.shutdown().await;
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
            // Dropped without `shutdown`: stop Raft too, so a dropped node
            // does not linger as a member that still votes.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let raft = self.inner.raft.clone();
                let node = self.inner.node.clone();
                rt.spawn(async move {
                    crate::api::handlers::kill_all(&node).await;
                    let _ = raft.shutdown().await;
                });
            }
        }
    }
}
