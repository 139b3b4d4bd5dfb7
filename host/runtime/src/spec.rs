//! What a node is asked to start: a [`SpawnSpec`] with its granted
//! directories ([`DirGrant`]). Plain data, no behaviour beyond parsing; it
//! sits below the node, the process context and the grants check, which
//! all read it.

use crate::pid::Pid;
use shoal_registry::Sha256;
use std::path::PathBuf;

/// A host directory granted to a process.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirGrant {
    /// Path on the host.
    pub host: PathBuf,
    /// Path the guest sees.
    pub guest: String,
}

impl DirGrant {
    /// Parse the wasmtime CLI spelling `HOST[::GUEST]`.
    pub fn parse(spec: &str) -> DirGrant {
        match spec.split_once("::") {
            Some((host, guest)) => DirGrant {
                host: host.into(),
                guest: guest.to_string(),
            },
            None => DirGrant {
                host: spec.into(),
                guest: spec.to_string(),
            },
        }
    }
}

/// What to start.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SpawnSpec {
    /// The module, by hash (it must be in the node's registry).
    pub module: Sha256,
    /// Full argv, including argv[0].
    pub args: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Directories granted (preopened after the volumes).
    pub dirs: Vec<DirGrant>,
    /// Private volumes (preopened first, in this order).
    #[serde(default)]
    pub volumes: Vec<crate::volume::VolumeMount>,
    /// Give the process the host's stdin (only `shoal run` does).
    pub inherit_stdin: bool,
    /// Echo stdout/stderr to the host's as well as capturing them.
    pub forward_output: bool,
    /// Memory cap, bytes (None = node default).
    pub memory_bytes_max: Option<u64>,
    /// Run the preemptible variant of the module: every loop is a capture
    /// point, so the process can be captured even while it computes (costs
    /// CPU in loops; see `shoal_prepare::PrepareOptions::preempt`).
    #[serde(default)]
    pub preemptible: bool,
    /// The process whose `spawn` starts this one (`None`: the node's
    /// operator or API). Reported to the cluster link so the child gets its
    /// parent's owner; never part of a snapshot.
    #[serde(skip)]
    pub parent: Option<Pid>,
    /// Output commit ([`crate::outbox`]): what it sends waits for a
    /// recorded checkpoint. Set by the cluster for processes that may
    /// resume after the loss of their node; never taken from an image.
    #[serde(skip)]
    pub output_commit: bool,
}

impl SpawnSpec {
    /// How many directories it has preopened: its volumes, then its
    /// granted directories (fds 3 on).
    pub fn preopens(&self) -> usize {
        self.volumes.len() + self.dirs.len()
    }

    /// A spawn of `module` with argv `args` and nothing granted.
    pub fn new(module: Sha256, args: Vec<String>) -> Self {
        SpawnSpec {
            module,
            args,
            env: Vec::new(),
            dirs: Vec::new(),
            volumes: Vec::new(),
            inherit_stdin: false,
            forward_output: false,
            memory_bytes_max: None,
            preemptible: false,
            parent: None,
            output_commit: false,
        }
    }
}
