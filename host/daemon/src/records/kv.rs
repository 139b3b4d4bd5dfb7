//! Guests' key-value and locks on this node's side: the Raft writes and
//! reads behind `abi/kv.rs`, with refusals turned into ABI codes, and the
//! per-owner write-rate quota. The rules (owners, bounds, fencing,
//! deadlocks) live in the state machine (`shoal_cluster::state::kv`,
//! `shoal_cluster::state::locks`); this only asks.
//!
//! Each function takes the asking process's owner as the node knows it
//! (`Link::owner_of`); the state machine checks it again at apply.

use shoal_cluster::state::kv::{KvBatchOp, KvOp, KvRefusal, LIST_KEYS_MAX};
use shoal_cluster::state::locks::LockRefusal;
use shoal_cluster::state::{ClusterState, Command, CommandResult, Fence, LockOp, Refusal};
use shoal_cluster::{ClusterError, NodeId, Raft};
use shoal_pki::Owner;
use shoal_runtime::abi::errno;
use shoal_runtime::cluster_link::{EffectKey, KvFence, KvWrite, KvWritten, LockAnswer, ReadMode};
use shoal_runtime::pid::Pid;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a guest's first key-value or lock command waits for its
/// just-started process to reach the directory.
const LIVE_WAIT: Duration = Duration::from_secs(5);

/// Key-value writes and lock commands one owner's guests may make per
/// second in the whole cluster (token buckets refilled continuously): one
/// tenant's guests cannot flood the Raft log that heartbeats share. Each
/// node takes its share ([`share_of`]), so the nodes together stay within
/// it without asking one another.
pub const OWNER_WRITES_PER_S_MAX: u32 = 5_000;

/// How long a node keeps an owner's share before computing it again.
const SHARE_TTL: Duration = Duration::from_secs(1);

/// `owner`'s share, on node `me`, of its cluster-wide write rate: the
/// fraction of its live processes that run on `me` (the directory and the
/// owners table, which every node holds, so the shares of all nodes add
/// up to 1 without coordination). A node asked to write for an owner it
/// runs nothing of yet (a process not in the directory yet) counts one.
pub fn share_of(state: &ClusterState, me: NodeId, owner: &Owner) -> f64 {
    let (mut here, mut total) = (0u64, 0u64);
    for (pid, o) in state.owners.iter() {
        if o != owner {
            continue;
        }
        if let Some(e) = state.directory.get(pid) {
            total += 1;
            if e.node == me {
                here += 1;
            }
        }
    }
    if here == 0 {
        here = 1;
        total += 1;
    }
    here as f64 / total as f64
}

/// Owners a node tracks rates for at once; the least recently seen are
/// forgotten beyond it (their bucket starts full again: at worst one
/// extra burst).
const RATE_OWNERS_MAX: usize = 4_096;

/// The ABI code of a refused key-value or lock command.
pub fn refusal_code(refusal: &Refusal) -> i32 {
    match refusal {
        Refusal::Kv(k) => match k {
            KvRefusal::BadKey { .. } => errno::BAD_KEY,
            KvRefusal::ValueTooLarge { .. } => errno::VALUE_TOO_LARGE,
            KvRefusal::BadBucket { .. } => errno::BAD_BUCKET,
            KvRefusal::BadBatch { .. } => errno::BAD_BATCH,
            KvRefusal::Quota { .. } => errno::QUOTA,
            KvRefusal::VersionMismatch { .. } => errno::VERSION_MISMATCH,
            KvRefusal::NotACounter => errno::NOT_A_COUNTER,
            KvRefusal::Overflow => errno::OVERFLOW,
            KvRefusal::NotLive(_) => errno::NO_PROCESS,
            KvRefusal::NotTheOwner { .. } => errno::INVALID,
        },
        Refusal::Lock(l) => match l {
            LockRefusal::BadName { .. } | LockRefusal::AlreadyWaiting { .. } => errno::INVALID,
            LockRefusal::Busy { .. } => errno::BUSY,
            LockRefusal::Deadlock { .. } => errno::DEADLOCK,
            LockRefusal::Lost { .. } => errno::LOCK_LOST,
            LockRefusal::Fenced { .. } => errno::FENCED,
            LockRefusal::TooManyHeld { .. }
            | LockRefusal::TooManyWaiters { .. }
            | LockRefusal::Quota { .. } => errno::QUOTA,
        },
        _ => errno::INVALID,
    }
}

/// The ABI code of a write or read the cluster could not confirm.
fn unavailable(what: &str, pid: Pid, e: &ClusterError) -> i32 {
    tracing::warn!("{what} for pid {pid}: {e}");
    errno::UNAVAILABLE
}

/// A guest's fence as the Raft command carries it.
fn raft_fence(f: KvFence) -> Fence {
    Fence {
        lock: f.lock,
        token: f.token,
    }
}

/// An effect's key as the Raft command carries it.
pub(crate) fn raft_effect(e: EffectKey) -> shoal_cluster::state::effects::EffectKey {
    shoal_cluster::state::effects::EffectKey {
        life: e.life,
        seq: e.seq,
    }
}

/// One owner's token bucket on this node.
struct Bucket {
    /// Writes it may make now.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    last: Instant,
    /// This node's share of the owner's rate ([`share_of`]).
    share: f64,
    /// When `share` was computed.
    share_at: Instant,
}

/// Per-owner token buckets for the write-rate quota.
pub struct WriteRates {
    buckets: Mutex<HashMap<Owner, Bucket>>,
    /// Writes per second one owner may make in the cluster (and the
    /// buckets' size, before the shares).
    per_s_max: u32,
}

impl Default for WriteRates {
    fn default() -> Self {
        WriteRates::new(OWNER_WRITES_PER_S_MAX)
    }
}

impl WriteRates {
    /// Buckets of `per_s_max` writes per second each (at least 1).
    pub fn new(per_s_max: u32) -> Self {
        WriteRates {
            buckets: Mutex::new(HashMap::new()),
            per_s_max: per_s_max.max(1),
        }
    }

    /// The writes per second each owner may make.
    pub fn per_s_max(&self) -> u32 {
        self.per_s_max
    }

    /// Take one write from `owner`'s bucket at the whole rate (an
    /// operator's writes: made on the node they asked), or `RATE_LIMITED`.
    pub fn take(&self, owner: &Owner) -> Result<(), i32> {
        self.take_n(owner, 1, || 1.0)
    }

    /// Take `n` writes (a batch's entries) from `owner`'s bucket at once,
    /// or none and `RATE_LIMITED`. The bucket holds, and refills per
    /// second, this node's `share` of the owner's rate (computed by
    /// `share` when the bucket is new or its share older than
    /// [`SHARE_TTL`]), and always at least one write.
    pub fn take_n(&self, owner: &Owner, n: usize, share: impl FnOnce() -> f64) -> Result<(), i32> {
        let n = n as f64;
        let now = Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if b.len() >= RATE_OWNERS_MAX && !b.contains_key(owner) {
            // Forget the owner seen least recently.
            if let Some(oldest) = b
                .iter()
                .min_by_key(|(_, bucket)| bucket.last)
                .map(|(o, _)| o.clone())
            {
                b.remove(&oldest);
            }
        }
        let per_s = f64::from(self.per_s_max);
        let bucket = match b.entry(owner.clone()) {
            std::collections::hash_map::Entry::Occupied(e) => {
                let bucket = e.into_mut();
                if now.duration_since(bucket.share_at) >= SHARE_TTL {
                    bucket.share = share().clamp(0.0, 1.0);
                    bucket.share_at = now;
                }
                bucket
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                let share = share().clamp(0.0, 1.0);
                e.insert(Bucket {
                    tokens: (per_s * share).max(1.0),
                    last: now,
                    share,
                    share_at: now,
                })
            }
        };
        let max = (per_s * bucket.share).max(1.0);
        let refill = now.duration_since(bucket.last).as_secs_f64() * per_s * bucket.share;
        bucket.tokens = (bucket.tokens + refill).min(max);
        bucket.last = now;
        if bucket.tokens < n {
            return Err(errno::RATE_LIMITED);
        }
        bucket.tokens -= n;
        Ok(())
    }
}

/// What a key-value or lock command for `pid` needs from this node.
pub struct Asker<'a> {
    /// The Raft handle.
    pub raft: &'a Raft,
    /// The process.
    pub pid: Pid,
    /// Its owner.
    pub owner: Owner,
    /// The node's write-rate buckets.
    pub rates: &'a Arc<WriteRates>,
    /// This node (for its share of the owner's rate).
    pub me: NodeId,
}

impl Asker<'_> {
    /// Wait (boundedly) for a just-started process to reach the directory
    /// with its owner recorded (the owner follows the registration in a
    /// later write; until it is applied the state machine would see
    /// another owner and refuse).
    pub(crate) async fn live(&self) -> Result<(), i32> {
        let pid = self.pid.0;
        self.raft
            .wait_for(LIVE_WAIT, |s| {
                s.directory.contains_key(&pid) && s.owner_of(pid) == self.owner
            })
            .await
            .map(|_| ())
            .map_err(|_| errno::NO_PROCESS)
    }

    /// Write `cmd` after the rate check; a refusal as its ABI code.
    async fn write(&self, cmd: Command) -> Result<CommandResult, i32> {
        let writes = match &cmd {
            Command::KvBatch { op, .. } => op.len(),
            _ => 1,
        };
        let share = || share_of(&self.raft.state(), self.me, &self.owner);
        self.rates.take_n(&self.owner, writes, share)?;
        self.live().await?;
        match self.raft.write(cmd).await {
            Ok(CommandResult::Refused(r)) => Err(refusal_code(&r)),
            Ok(done) => Ok(done),
            Err(e) => Err(unavailable("key-value or lock write", self.pid, &e)),
        }
    }

    /// The state a read of `mode` answers from.
    async fn state(&self, mode: ReadMode) -> Result<Arc<ClusterState>, i32> {
        match mode {
            ReadMode::Stale => Ok(self.raft.state()),
            ReadMode::Linearizable => self
                .raft
                .linearizable_state()
                .await
                .map_err(|e| unavailable("linearizable read", self.pid, &e)),
        }
    }

    /// `kv_get` / `kv_exists`.
    pub async fn read(
        &self,
        bucket: &str,
        key: &[u8],
        mode: ReadMode,
    ) -> Result<Option<(Vec<u8>, u64)>, i32> {
        let state = self.state(mode).await?;
        Ok(state
            .kv
            .get(&self.owner, bucket, key)
            .map(|e| (e.value, e.version)))
    }

    /// `kv_get_many`: every key from one state (one ReadIndex when
    /// linearizable), in order.
    pub async fn read_many(
        &self,
        bucket: &str,
        keys: &[Vec<u8>],
        mode: ReadMode,
    ) -> Result<Vec<Option<(Vec<u8>, u64)>>, i32> {
        let state = self.state(mode).await?;
        Ok(keys
            .iter()
            .map(|key| {
                state
                    .kv
                    .get(&self.owner, bucket, key)
                    .map(|e| (e.value, e.version))
            })
            .collect())
    }

    /// `kv_set_many`, `kv_delete_many`: all or nothing; how many were set
    /// (or existed).
    pub async fn write_batch(
        &self,
        bucket: &str,
        op: KvBatchOp,
        fence: Option<KvFence>,
        effect: Option<EffectKey>,
    ) -> Result<u64, i32> {
        let cmd = Command::KvBatch {
            pid: self.pid.0,
            owner: self.owner.clone(),
            bucket: bucket.to_string(),
            op,
            fence: fence.map(raft_fence),
            effect: effect.map(raft_effect),
        };
        match self.write(cmd).await? {
            CommandResult::KvCount(n) => Ok(n),
            _ => Err(errno::INVALID),
        }
    }

    /// `kv_list`.
    pub async fn list(
        &self,
        bucket: &str,
        prefix: &[u8],
        cursor: Option<&[u8]>,
        mode: ReadMode,
    ) -> Result<Vec<Vec<u8>>, i32> {
        let state = self.state(mode).await?;
        Ok(state
            .kv
            .list(&self.owner, bucket, prefix, cursor, LIST_KEYS_MAX))
    }

    /// `kv_set`, `kv_cas`, `kv_increment`, `kv_delete`.
    pub async fn write_kv(
        &self,
        bucket: &str,
        key: &[u8],
        op: KvWrite,
        fence: Option<KvFence>,
        effect: Option<EffectKey>,
    ) -> Result<KvWritten, i32> {
        let op = match op {
            KvWrite::Set(value) => KvOp::Set { value },
            KvWrite::Cas { expected, value } => KvOp::Cas { expected, value },
            KvWrite::Increment(delta) => KvOp::Increment { delta },
            KvWrite::Delete => KvOp::Delete,
        };
        let cmd = Command::Kv {
            pid: self.pid.0,
            owner: self.owner.clone(),
            bucket: bucket.to_string(),
            key: key.to_vec(),
            op,
            fence: fence.map(raft_fence),
            effect: effect.map(raft_effect),
        };
        match self.write(cmd).await? {
            CommandResult::KvVersion(v) => Ok(KvWritten::Version(v)),
            CommandResult::KvCounter(n) => Ok(KvWritten::Counter(n)),
            CommandResult::KvDeleted(d) => Ok(KvWritten::Deleted(d)),
            _ => Err(errno::INVALID),
        }
    }

    fn lock_cmd(&self, name: &str, op: LockOp) -> Command {
        Command::Lock {
            pid: self.pid.0,
            owner: self.owner.clone(),
            name: name.to_string(),
            op,
        }
    }

    /// `lock` (`wait`) and `try_lock`.
    pub async fn lock(&self, name: &str, wait: bool) -> Result<LockAnswer, i32> {
        match self
            .write(self.lock_cmd(name, LockOp::Acquire { wait }))
            .await?
        {
            CommandResult::LockGranted(t) => Ok(LockAnswer::Granted(t)),
            CommandResult::LockQueued if wait => Ok(LockAnswer::Queued),
            CommandResult::LockQueued => Err(errno::BUSY),
            _ => Err(errno::INVALID),
        }
    }

    /// Wait for a queued `lock` (see `ClusterLink::lock_wait`).
    pub async fn lock_wait(&self, name: &str, wait_max: Option<Duration>) -> Result<u64, i32> {
        let (pid, owner) = (self.pid.0, &self.owner);
        let settled = |s: &ClusterState| -> Option<Result<u64, i32>> {
            if let Some(h) = s.locks.get(owner, name).and_then(|l| l.holder) {
                if h.pid == pid {
                    return Some(Ok(h.token));
                }
            }
            match s.locks.waiting_for(pid) {
                Some(l) if l.owner == *owner && l.name == name => None,
                // Neither holding nor waiting: the wait was dropped (its
                // node declared dead, or it was restarted).
                _ => Some(Err(errno::LOCK_LOST)),
            }
        };
        // The Acquire was applied by the leader; this node may not have
        // applied it yet (it would see neither a wait nor a grant). A
        // linearizable read waits until it has.
        match self.raft.linearizable_state().await {
            Ok(s) => {
                if let Some(done) = settled(&s) {
                    return done;
                }
            }
            Err(e) => return Err(unavailable("lock wait", self.pid, &e)),
        }
        // Forever is a long wait, asked again each day.
        let slice = wait_max.unwrap_or(Duration::from_secs(86_400));
        loop {
            match self.raft.wait_for(slice, |s| settled(s).is_some()).await {
                Ok(s) => return settled(&s).unwrap_or(Err(errno::LOCK_LOST)),
                Err(_) if wait_max.is_none() => continue,
                Err(_) => break,
            }
        }
        // Timed out: withdraw the wait (and a grant that came meanwhile).
        // Not rate limited: it frees what the guest will not use.
        match self.raft.write(self.lock_cmd(name, LockOp::Cancel)).await {
            Ok(_) => Err(errno::TIMEOUT),
            Err(e) => Err(unavailable("lock cancel", self.pid, &e)),
        }
    }

    /// `unlock`. Not rate limited: it only frees.
    pub async fn unlock(&self, name: &str, token: u64) -> Result<(), i32> {
        match self
            .raft
            .write(self.lock_cmd(name, LockOp::Release { token }))
            .await
        {
            Ok(CommandResult::Refused(r)) => Err(refusal_code(&r)),
            Ok(_) => Ok(()),
            Err(e) => Err(unavailable("unlock", self.pid, &e)),
        }
    }

    /// `lock_check`: linearizable.
    pub async fn lock_check(&self, name: &str, token: u64) -> Result<(), i32> {
        let state = self.state(ReadMode::Linearizable).await?;
        state
            .locks
            .check(&self.owner, name, token)
            .map_err(|r| refusal_code(&Refusal::Lock(r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_pki::Role;
    use std::collections::BTreeMap;

    fn owner(id: &str) -> Owner {
        Owner {
            role: Role::Client,
            id: id.into(),
        }
    }

    /// Three nodes; alice runs 3 processes on node 1 and 1 on node 2.
    fn state() -> ClusterState {
        let mut s = ClusterState::default();
        s.apply(&Command::Bootstrap {
            ca_cert_pem: String::new(),
            ca_node: 1,
            name: "n1".into(),
            addr: "n1:1".into(),
            labels: BTreeMap::new(),
            now_ms: 1,
        });
        for name in ["n2", "n3"] {
            s.apply(&Command::AddNode {
                name: name.into(),
                addr: format!("{name}:1"),
                labels: BTreeMap::new(),
                now_ms: 1,
            });
        }
        for (node, count) in [(1u64, 3u64), (2, 1)] {
            let CommandResult::PidBlock(first) = s.apply(&Command::AllocPidBlock { node }) else {
                panic!("no block")
            };
            let pids: Vec<u64> = (first..first + count).collect();
            s.apply(&Command::Register {
                node,
                pids: pids.clone(),
            });
            s.apply(&Command::SetOwners {
                node,
                owners: pids.iter().map(|p| (*p, owner("alice"))).collect(),
            });
        }
        s
    }

    /// Before, each node let an owner make the whole rate: N nodes let it
    /// make N times the rate. The shares of the nodes add up to one.
    #[test]
    fn the_nodes_shares_of_an_owners_rate_add_up_to_one() {
        let s = state();
        let alice = owner("alice");
        assert_eq!(share_of(&s, 1, &alice), 0.75);
        assert_eq!(share_of(&s, 2, &alice), 0.25);
        // A node with none of hers yet counts the one asking.
        assert_eq!(share_of(&s, 3, &alice), 0.2);
        // An owner with nothing anywhere: the asking node has it all.
        assert_eq!(share_of(&s, 1, &owner("bob")), 1.0);
    }

    #[test]
    fn a_bucket_holds_and_refills_the_nodes_share_only() {
        let rates = WriteRates::new(100);
        let alice = owner("alice");
        let mut made = 0;
        while rates.take_n(&alice, 1, || 0.25).is_ok() {
            made += 1;
            assert!(made <= 100, "the bucket never ran dry");
        }
        // 25 at once, and maybe one more refilled meanwhile.
        assert!((25..=26).contains(&made), "{made}");
        // Never less than one write of room, even for a tiny share.
        let bob = owner("bob");
        assert_eq!(rates.take_n(&bob, 1, || 0.0001), Ok(()));
        // The whole rate for an operator.
        let carol = owner("carol");
        assert!((0..100).all(|_| rates.take(&carol).is_ok()));
    }
}
