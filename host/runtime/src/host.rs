//! [`ProcessHost`]: everything a host function may ask of the system outside
//! its own process.
//!
//! Host functions (`abi/*`) see their process's own state through
//! [`ProcessCtx`](crate::process::ProcessCtx) and reach beyond it only through
//! this trait: they never hold the node, so a host function cannot touch the
//! process table, the module cache or the cluster link except through the
//! calls listed here. The node implements it ([`crate::node`]); each new
//! namespace (calls, names, key-value, locks, files) adds its methods here,
//! where a review sees the whole surface at once.

use crate::cluster_link::KvLocks;
use crate::mailbox::{Message, PushError};
use crate::pid::Pid;
use async_trait::async_trait;

/// The services a running process may use, whichever node runs it.
#[async_trait]
pub trait ProcessHost: Send + Sync + 'static {
    /// The largest message this node accepts, in bytes (`send` refuses
    /// larger ones with `TOO_LARGE` before reading them from the guest).
    fn message_bytes_max(&self) -> usize;

    /// Queue `data` from `from` for `to`, wherever `to` runs: its local
    /// mailbox, or the lane to the node that runs it.
    fn send(&self, from: Pid, to: Pid, data: Vec<u8>) -> Result<(), PushError>;

    /// Queue any message (a call, reply, monitor or DOWN: see
    /// [`crate::calls`]) for `to`, wherever it runs, as [`ProcessHost::send`].
    fn send_message(&self, to: Pid, message: Message) -> Result<(), PushError>;

    /// Give process `pid` a name in its owner's namespace (held in Raft).
    /// Errors are ABI codes; `NO_NODE` off a cluster.
    async fn register_name(&self, pid: Pid, name: &str) -> Result<(), i32>;

    /// Take `name` away from `pid`. Errors are ABI codes.
    async fn unregister_name(&self, pid: Pid, name: &str) -> Result<(), i32>;

    /// The pid `name` names in `asker`'s owner's namespace. Errors are ABI
    /// codes (`NO_PROCESS`: no such name).
    fn whereis(&self, asker: Pid, name: &str) -> Result<Pid, i32>;

    /// Add `pid` to group `name` of its owner. Errors are ABI codes.
    async fn join_group(&self, pid: Pid, name: &str) -> Result<(), i32>;

    /// Take `pid` out of group `name`. Errors are ABI codes.
    async fn leave_group(&self, pid: Pid, name: &str) -> Result<(), i32>;

    /// One live member of group `name` (in `asker`'s owner's namespace),
    /// preferring members on `asker`'s node. Errors are ABI codes.
    fn group_pick(&self, asker: Pid, name: &str) -> Result<Pid, i32>;

    /// A process under output commit has output waiting for a recorded
    /// checkpoint (an effect, [`crate::abi::effect`]): wake whoever takes
    /// checkpoints, so it waits a checkpoint's time, not an interval.
    fn output_waiting(&self);

    /// Key-value and locks (`abi/kv.rs`): the cluster's, through its link;
    /// `NO_NODE` off a cluster.
    fn kv(&self) -> Result<std::sync::Arc<dyn KvLocks>, i32>;

    /// Start a process of module `reference` (a name or `sha256:` hash) with
    /// `args`, as a child of `parent` (the calling process: the cluster
    /// gives the child its parent's owner). `target` is `None` for "on
    /// this node", else a placement target (a node name, `key=value`
    /// labels, or empty for the scheduler's choice). `forward_output`
    /// copies the child's output to the host's stdio like the parent's.
    /// `effect`: the spawn is an effect of a parent under output commit
    /// ([`crate::abi::effect`]), made once per key. Errors are ABI error
    /// codes.
    async fn spawn(
        &self,
        parent: Pid,
        target: Option<&str>,
        reference: &str,
        args: Vec<String>,
        forward_output: bool,
        effect: Option<crate::cluster_link::EffectKey>,
    ) -> Result<Pid, i32>;
}
