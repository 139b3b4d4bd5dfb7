//! What this daemon writes to and reads from the replicated state on
//! behalf of its processes, its clients and itself: owners of pids and
//! snapshots ([`owners`]), process names and groups ([`names`]), guests' key-value and locks
//! ([`kv`]),
//! capabilities granted to processes ([`grants`]), spawns under output
//! commit ([`spawns`]), and node cordons. A
//! refused or failed write comes back as a typed answer ([`write_err`],
//! [`refused`]).
//!
//! This sits below the link, the migration and the API handlers, which all
//! use it; it uses none of them.

pub mod grants;
pub mod kv;
pub mod names;
pub mod owners;
pub mod signed;
pub mod spawns;

use shoal_cluster::{Command, CommandResult, NodeId};
use shoal_net::RemoteError;
use shoal_pki::Owner;

/// A failed write as the client sees it: a refusal keeps its type in the
/// answer's `detail` (not only its text), so a client can tell why.
pub fn write_err(e: shoal_cluster::ClusterError) -> RemoteError {
    match e {
        shoal_cluster::ClusterError::Forbidden(why) => RemoteError::typed(403, &why),
        e => RemoteError::new(503, e.to_string()),
    }
}

/// A command's result as an answer: a refusal or a forbidden write
/// becomes a typed error (status and `detail`), anything else passes.
pub fn refused(r: CommandResult) -> Result<CommandResult, RemoteError> {
    match r {
        CommandResult::Refused(why) => Err(RemoteError::typed(why.http_status(), &why)),
        CommandResult::Forbidden(f) => Err(owners::forbidden(f)),
        other => Ok(other),
    }
}

/// Cordon (or uncordon) node `id` through Raft, on behalf of `by` (an
/// admin), or as this node itself (its own cordon, for a drain).
pub async fn set_cordon(
    raft: &shoal_cluster::Raft,
    id: NodeId,
    cordoned: bool,
    by: Option<&Owner>,
) -> Result<(), RemoteError> {
    let cmd = Command::SetCordon { id, cordoned };
    let r = match by {
        Some(by) => raft.write_as(cmd, by).await,
        None => raft.write(cmd).await,
    }
    .map_err(write_err)?;
    refused(r)?;
    Ok(())
}
