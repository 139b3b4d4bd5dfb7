//! Capabilities a process is granted, who granted them, and where that is
//! recorded.
//!
//! A process's host directories, environment and memory cap are granted
//! by whoever deploys or restores it, within what their certificate's role
//! may grant ([`authority_of`]): an admin any host directory, a client only
//! those the node's operator lists (`--grantable-dir`), nobody the node's
//! data dir ([`shoal_runtime::grants::admit`]). The grant is recorded in
//! Raft with the granter's identity ([`record`]); a node a process
//! migrates to applies that record ([`recorded`]), never what the source
//! sends, and checks it against its own policy for the granter's role.

use shoal_cluster::{
    Command, CommandResult, GrantedDir, GrantedVolume, Granter, NodeId, ProcessGrants,
};
use shoal_net::{Caller, RemoteError};
use shoal_pki::Role;
use shoal_runtime::grants::{DirAuthority, Grants};
use shoal_runtime::node::DirGrant;
use shoal_runtime::pid::Pid;
use shoal_runtime::volume::VolumeMount;

/// How far a certificate's role may grant host directories.
pub fn authority_of(role: Role) -> DirAuthority {
    match role {
        Role::Admin => DirAuthority::Any,
        Role::Client | Role::Node => DirAuthority::Listed,
    }
}

/// The identity behind a request (an anonymous caller never gets this
/// far: the dispatcher refuses it).
pub fn granter_of(caller: &Caller) -> Granter {
    match &caller.cert {
        Some(c) => Granter {
            role: c.role,
            id: c.id.clone(),
        },
        None => Granter {
            role: Role::Client,
            id: String::new(),
        },
    }
}

/// The cluster's form of admitted grants.
pub fn to_record(grants: &Grants, granted_by: Granter) -> ProcessGrants {
    ProcessGrants {
        dirs: grants
            .dirs
            .iter()
            .map(|d| GrantedDir {
                host: d.host.display().to_string(),
                guest: d.guest.clone(),
            })
            .collect(),
        env: grants.env.clone(),
        memory_bytes_max: grants.memory_bytes_max,
        volumes: grants
            .volumes
            .iter()
            .map(|v| GrantedVolume {
                guest: v.guest.clone(),
                bytes_max: v.bytes_max,
                files_max: v.files_max,
                shared: v.shared.clone(),
            })
            .collect(),
        granted_by,
    }
}

/// The runtime's form of a record.
pub fn from_record(record: &ProcessGrants) -> Grants {
    Grants {
        dirs: record
            .dirs
            .iter()
            .map(|d| DirGrant {
                host: d.host.clone().into(),
                guest: d.guest.clone(),
            })
            .collect(),
        env: record.env.clone(),
        memory_bytes_max: record.memory_bytes_max,
        volumes: record
            .volumes
            .iter()
            .map(|v| VolumeMount {
                guest: v.guest.clone(),
                bytes_max: v.bytes_max,
                files_max: v.files_max,
                shared: v.shared.clone(),
            })
            .collect(),
    }
}

/// Record in Raft what `pid` (running on `node`) was granted and by whom.
/// Nothing is written for a process granted nothing (no record means no
/// grants).
pub async fn record(
    raft: &shoal_cluster::Raft,
    node: NodeId,
    pid: Pid,
    grants: &Grants,
    granted_by: Granter,
) -> Result<(), RemoteError> {
    if grants.is_empty() {
        return Ok(());
    }
    // The node that placed the process may not be the one running it: the
    // write is made on behalf of the granter.
    let by = shoal_pki::Owner {
        role: granted_by.role,
        id: granted_by.id.clone(),
    };
    let r = raft
        .write_as(
            Command::SetGrants {
                node,
                pid: pid.0,
                grants: to_record(grants, granted_by),
            },
            &by,
        )
        .await
        .map_err(|e| RemoteError::new(503, e.to_string()))?;
    match r {
        CommandResult::Refused(why) => Err(RemoteError::typed(why.http_status(), &why)),
        _ => Ok(()),
    }
}

/// What the cluster recorded for `pid`, checked against this node's policy
/// for the granter's role (a directory granted on one node is not granted
/// on another unless this node allows it too). No record: no grants.
pub fn recorded(
    raft: &shoal_cluster::Raft,
    node: &shoal_runtime::Node,
    pid: Pid,
) -> Result<Grants, RemoteError> {
    let Some(record) = raft.state().grants.get(&pid.0).cloned() else {
        return Ok(Grants::default());
    };
    node.admit_grants(&from_record(&record), authority_of(record.granted_by.role))
        .map_err(|e| {
            RemoteError::new(
                403,
                format!(
                    "process {pid} was granted what this node does not allow ({} {:?}): {e}",
                    record.granted_by.role.as_str(),
                    record.granted_by.id
                ),
            )
        })
}
