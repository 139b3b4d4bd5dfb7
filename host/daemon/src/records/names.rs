//! Guests' process names on this node's side: whose namespace a process
//! registers in, and the Raft writes behind `register`/`unregister`, with
//! refusals turned into ABI codes. The rules live in the state machine
//! (`shoal_cluster::names`); this only asks.

use shoal_cluster::names::{NameRefusal, Owner};
use shoal_cluster::state::{ClusterState, Command, CommandResult, Refusal};
use shoal_cluster::Raft;
use shoal_runtime::abi::errno;
use shoal_runtime::pid::Pid;
use std::time::Duration;

/// How long `register` waits for a just-started process to reach the
/// directory (starts are written in batches) before it gives up.
const REGISTER_WAIT: Duration = Duration::from_secs(5);

// Whose namespace a process's names live in is its owner's: the identity
// that deployed or restored it, inherited by what its guests spawn
// (`Link::owner_of`, which knows a fresh process's owner before Raft
// shows it; processes nobody deployed share `Owner::cluster()`). Each
// function here takes that owner.

/// The ABI code for a refused name command.
fn refusal_code(refusal: &Refusal) -> i32 {
    match refusal {
        Refusal::Name(NameRefusal::Taken { .. }) => errno::NAME_TAKEN,
        Refusal::Name(NameRefusal::NotLive(_)) => errno::NO_PROCESS,
        Refusal::Name(NameRefusal::Quota { .. } | NameRefusal::GroupFull { .. }) => errno::LIMIT,
        _ => errno::INVALID,
    }
}

/// Write one name command for `pid`, turning a refusal into its ABI code
/// and an unreachable cluster into `NO_NODE`.
/// Write a name command; once the leader has applied it, wait (boundedly)
/// until this node has too (`seen`), so the process reads its own write:
/// a `whereis` or `group_pick` right after `register` / `join_group` on a
/// follower finds it. A wait that runs out still answers the write's
/// success (it is applied; this node is only slow to learn it).
async fn ask(
    raft: &Raft,
    cmd: Command,
    pid: Pid,
    seen: impl Fn(&ClusterState) -> bool,
) -> Result<(), i32> {
    match raft.write(cmd).await {
        Ok(CommandResult::Refused(r)) => Err(refusal_code(&r)),
        Ok(_) => {
            if raft.wait_for(REGISTER_WAIT, seen).await.is_err() {
                tracing::debug!("name command for pid {pid}: applied, not yet seen here");
            }
            Ok(())
        }
        Err(e) => {
            tracing::warn!("name command for pid {pid}: {e}");
            Err(errno::NO_NODE)
        }
    }
}

/// `register`: give `name` to `pid` in its owner's namespace. Exactly one
/// of two racing registrations wins: Raft applies them in one order.
pub async fn register(raft: &Raft, pid: Pid, owner: Owner, name: &str) -> Result<(), i32> {
    // A process that has just started may not be in the directory yet.
    wait_live(raft, pid).await?;
    let state = raft.state();
    if let Some(p) = state.names.whereis(&owner, name) {
        return if p == pid.0 {
            Ok(())
        } else {
            Err(errno::NAME_TAKEN)
        };
    }
    let cmd = Command::RegisterName {
        owner: owner.clone(),
        name: name.to_string(),
        pid: pid.0,
    };
    ask(raft, cmd, pid, |s| {
        s.names.whereis(&owner, name) == Some(pid.0)
    })
    .await
}

/// `unregister`: take `name` away from `pid`.
pub async fn unregister(raft: &Raft, pid: Pid, owner: Owner, name: &str) -> Result<(), i32> {
    if raft.state().names.whereis(&owner, name) != Some(pid.0) {
        return Err(errno::INVALID);
    }
    let cmd = Command::UnregisterName {
        owner: owner.clone(),
        name: name.to_string(),
        pid: pid.0,
    };
    ask(raft, cmd, pid, |s| {
        s.names.whereis(&owner, name) != Some(pid.0)
    })
    .await
}

/// `whereis`: the pid `name` names in `asker`'s owner's namespace, from
/// this node's applied state (a name registered a moment ago elsewhere may
/// not be seen yet; one whose process ended is gone once the exit is
/// applied).
pub fn whereis(state: &ClusterState, owner: &Owner, name: &str) -> Result<Pid, i32> {
    state
        .names
        .whereis(owner, name)
        .map(Pid)
        .ok_or(errno::NO_PROCESS)
}

/// Wait (boundedly) for a just-started `pid` to reach the directory.
async fn wait_live(raft: &Raft, pid: Pid) -> Result<(), i32> {
    raft.wait_for(REGISTER_WAIT, |s| s.directory.contains_key(&pid.0))
        .await
        .map(|_| ())
        .map_err(|_| errno::NO_PROCESS)
}

fn is_member(state: &ClusterState, owner: &Owner, name: &str, pid: Pid) -> bool {
    state
        .names
        .members(owner, name)
        .is_some_and(|m| m.contains(&pid.0))
}

/// `join_group`: add `pid` to group `name` of its owner.
pub async fn join_group(raft: &Raft, pid: Pid, owner: Owner, name: &str) -> Result<(), i32> {
    wait_live(raft, pid).await?;
    if is_member(&raft.state(), &owner, name, pid) {
        return Ok(());
    }
    let cmd = Command::JoinGroup {
        owner: owner.clone(),
        name: name.to_string(),
        pid: pid.0,
    };
    ask(raft, cmd, pid, |s| is_member(s, &owner, name, pid)).await
}

/// `leave_group`: take `pid` out of group `name`.
pub async fn leave_group(raft: &Raft, pid: Pid, owner: Owner, name: &str) -> Result<(), i32> {
    let cmd = Command::LeaveGroup {
        owner: owner.clone(),
        name: name.to_string(),
        pid: pid.0,
    };
    ask(raft, cmd, pid, |s| !is_member(s, &owner, name, pid)).await
}

/// Turns of [`group_pick`]'s round robin (node-wide; only spreads load).
static PICK_TURN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `group_pick`: one live member of group `name` in `asker`'s owner's
/// namespace: a member on node `me` if there is one, else any; members
/// taken in turn so calls spread over them.
///
/// `gone` says which members this node knows have ended though the
/// directory does not show it yet (exits are written in batches): they are
/// never picked.
pub fn group_pick(
    state: &ClusterState,
    me: shoal_cluster::NodeId,
    owner: &Owner,
    name: &str,
    gone: &dyn Fn(Pid, shoal_cluster::NodeId) -> bool,
) -> Result<Pid, i32> {
    let members = state.names.members(owner, name).ok_or(errno::NO_PROCESS)?;
    let live: Vec<(u64, bool)> = members
        .iter()
        .filter_map(|pid| state.directory.get(pid).map(|e| (*pid, e.node)))
        .filter(|(pid, node)| !gone(Pid(*pid), *node))
        .map(|(pid, node)| (pid, node == me))
        .collect();
    let local: Vec<u64> = live.iter().filter(|(_, l)| *l).map(|(p, _)| *p).collect();
    let pool: Vec<u64> = if local.is_empty() {
        live.iter().map(|(p, _)| *p).collect()
    } else {
        local
    };
    if pool.is_empty() {
        return Err(errno::NO_PROCESS);
    }
    let turn = PICK_TURN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let i = usize::try_from(turn % pool.len() as u64).unwrap_or(0);
    Ok(Pid(pool[i]))
}
