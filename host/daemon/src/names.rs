//! Guests' process names on this node's side: whose namespace a process
//! registers in, and the Raft writes behind `register`/`unregister`, with
//! refusals turned into ABI codes. The rules live in the state machine
//! (`shoal_cluster::names`); this only asks.

use shoal_cluster::names::{Owner, NAMES_PER_OWNER_MAX};
use shoal_cluster::state::{ClusterState, Command, CommandResult};
use shoal_cluster::Raft;
use shoal_runtime::abi::errno;
use shoal_runtime::pid::Pid;
use std::time::Duration;

/// How long `register` waits for a just-started process to reach the
/// directory (starts are written in batches) before it gives up.
const REGISTER_WAIT: Duration = Duration::from_secs(5);

/// The owner of process `pid`: the identity that deployed it, as the
/// cluster recorded it with its grants; processes with no recorded
/// deployer (started by a guest, or granted nothing) share
/// [`Owner::cluster`].
pub fn owner_of(state: &ClusterState, pid: Pid) -> Owner {
    match state.grants.get(&pid.0) {
        Some(g) => Owner {
            role: g.granted_by.role,
            id: g.granted_by.id.clone(),
        },
        None => Owner::cluster(),
    }
}

/// The ABI code for a refusal, judged from the state (the refusal text is
/// for people; the state says what is true).
fn refusal_code(state: &ClusterState, owner: &Owner, name: &str, pid: Pid) -> i32 {
    match state.names.whereis(owner, name) {
        Some(p) if p != pid.0 => errno::NAME_TAKEN,
        _ if !state.directory.contains_key(&pid.0) => errno::NO_PROCESS,
        _ if state.names.count(owner) >= NAMES_PER_OWNER_MAX => errno::LIMIT,
        _ => errno::INVALID,
    }
}

/// `register`: give `name` to `pid` in its owner's namespace. Exactly one
/// of two racing registrations wins: Raft applies them in one order.
pub async fn register(raft: &Raft, pid: Pid, name: &str) -> Result<(), i32> {
    let deadline = tokio::time::Instant::now() + REGISTER_WAIT;
    // A process that has just started may not be in the directory yet.
    while !raft.state().directory.contains_key(&pid.0) {
        if tokio::time::Instant::now() >= deadline {
            return Err(errno::NO_PROCESS);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let state = raft.state();
    let owner = owner_of(&state, pid);
    if let Some(p) = state.names.whereis(&owner, name) {
        if p == pid.0 {
            return Ok(());
        }
        return Err(errno::NAME_TAKEN);
    }
    let cmd = Command::RegisterName {
        owner: owner.clone(),
        name: name.to_string(),
        pid: pid.0,
    };
    match raft.write(cmd).await {
        Ok(CommandResult::Ok) => Ok(()),
        Ok(_) => Err(refusal_code(&raft.state(), &owner, name, pid)),
        Err(e) => {
            tracing::warn!("register {name:?} for pid {pid}: {e}");
            Err(errno::NO_NODE)
        }
    }
}

/// `unregister`: take `name` away from `pid`.
pub async fn unregister(raft: &Raft, pid: Pid, name: &str) -> Result<(), i32> {
    let owner = owner_of(&raft.state(), pid);
    if raft.state().names.whereis(&owner, name) != Some(pid.0) {
        return Err(errno::INVALID);
    }
    let cmd = Command::UnregisterName {
        owner,
        name: name.to_string(),
        pid: pid.0,
    };
    match raft.write(cmd).await {
        Ok(CommandResult::Ok) => Ok(()),
        Ok(_) => Err(errno::INVALID),
        Err(e) => {
            tracing::warn!("unregister {name:?} for pid {pid}: {e}");
            Err(errno::NO_NODE)
        }
    }
}

/// `whereis`: the pid `name` names in `asker`'s owner's namespace, from
/// this node's applied state (a name registered a moment ago elsewhere may
/// not be seen yet; one whose process ended is gone once the exit is
/// applied).
pub fn whereis(state: &ClusterState, asker: Pid, name: &str) -> Result<Pid, i32> {
    let owner = owner_of(state, asker);
    state
        .names
        .whereis(&owner, name)
        .map(Pid)
        .ok_or(errno::NO_PROCESS)
}
