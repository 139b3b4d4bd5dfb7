//! Which writes a member may forward to the leader, and as whom.
//!
//! A write that reaches the leader from another node (a forwarded
//! [`Raft::write`](crate::Raft::write)) comes from the node whose
//! certificate the TLS handshake verified (the Raft layer checks the body's
//! `from` against it). The leader applies it only if that node may write
//! it ([`ClusterState::may_forward`]):
//!
//! - **about itself**: its heartbeat, pid blocks, directory entries, grants
//!   (or those of a process it placed elsewhere, on behalf of their
//!   granter), owners, modules it holds, its own cordon (a drain), the moves of a
//!   process it sends or receives, the names of processes it runs;
//! - **as the CA node**: redeeming a join token and adding the joiner (the
//!   token is the joiner's proof, checked when applied);
//! - **on behalf of an identity** (`by`, the certificate of whoever asked
//!   that node over the control API): the role-bearing writes — join
//!   tokens, revocations, node removal, cordoning another node — only for
//!   an admin; module names and an operator's key-value write
//!   (`KvByCaller`) only if the relayed identity is the `by` the command
//!   itself names (the ownership rule judges that `by` when applied);
//! - never: bootstrapping, the failure detector's verdicts (the leader's
//!   own), the legacy ownerless name commands.
//!
//! A hostile member could name an admin as `by`, and a hostile leader
//! skips this check altogether: so the writes that mint or take away
//! credentials also carry the admin's signed request, which every node
//! checks when it applies them ([`proofs`](super::proofs)).

use serde::{Deserialize, Serialize};
use shoal_pki::{need_admin, Forbidden, Owner, Role};

use super::{ClusterState, Command, NodeId};

/// Why the leader refused a write another node forwarded. Travels in the
/// forward's answer as data, never as text to parse.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
// Tagged `refusal`, not `code`: the `Forbidden` variant carries
// shoal_pki's `Forbidden`, itself tagged `code`, flattened beside the tag.
#[serde(tag = "refusal", rename_all = "snake_case")]
pub enum ForwardRefusal {
    /// An at-most-once envelope inside another.
    #[error("a write envelope inside another")]
    NestedEnvelope,
    /// The write is about another node.
    #[error("node {sender} may not write {command} about node {node}")]
    NotAbout {
        /// The forwarding node.
        sender: NodeId,
        /// The command's name.
        command: String,
        /// The node it is about.
        node: NodeId,
    },
    /// The write needs an admin behind it.
    #[error(transparent)]
    Forbidden(Forbidden),
    /// Only the CA node admits joiners.
    #[error("only the CA node admits joiners; node {sender} may not write {command}")]
    NotTheCa {
        /// The forwarding node.
        sender: NodeId,
        /// The command's name.
        command: String,
    },
    /// The leader writes this one itself, or nobody does.
    #[error("{command} is never accepted from another node")]
    Never {
        /// The command's name.
        command: String,
    },
}

impl ClusterState {
    /// Refuse (with the reason) a write node `sender` forwarded on behalf
    /// of `by` (`None`: as itself) that it may not make.
    pub fn may_forward(
        &self,
        sender: NodeId,
        by: Option<&Owner>,
        cmd: &Command,
    ) -> Result<(), ForwardRefusal> {
        // A retried write comes in its at-most-once envelope: judge what
        // it carries.
        let cmd = match cmd {
            Command::Once { cmd: inner, .. } => match **inner {
                Command::Once { .. } => return Err(ForwardRefusal::NestedEnvelope),
                ref inner => inner,
            },
            other => other,
        };
        let own = |node: NodeId| {
            if node == sender {
                Ok(())
            } else {
                Err(ForwardRefusal::NotAbout {
                    sender,
                    command: command_name(cmd).to_string(),
                    node,
                })
            }
        };
        let admin = || {
            let who = by.cloned().unwrap_or_else(|| Owner {
                role: Role::Node,
                id: self
                    .member(sender)
                    .map(|n| n.name.clone())
                    .unwrap_or_default(),
            });
            need_admin(&who, command_name(cmd)).map_err(ForwardRefusal::Forbidden)
        };
        let runs_here = |pid: u64| match self.directory.get(&pid) {
            Some(e) => own(e.node),
            None => own(self.block_owner(pid).unwrap_or(0)),
        };
        match cmd {
            // Judged by what it carries; its proof is checked when applied.
            Command::Signed { cmd: inner, .. } => match **inner {
                Command::Once { .. } | Command::Signed { .. } => {
                    Err(ForwardRefusal::NestedEnvelope)
                }
                ref inner => self.may_forward(sender, by, inner),
            },
            Command::Heartbeat { id, .. } => own(*id),
            Command::AllocPidBlock { node }
            | Command::Register { node, .. }
            | Command::Unregister { node, .. }
            | Command::SetOwners { node, .. }
            | Command::ModuleHeld { node, .. } => own(*node),
            // The node that placed a process records its grants, on behalf
            // of the granter, wherever the process runs.
            Command::SetGrants { node, grants, .. } => own(*node).or_else(|e| match by {
                Some(b) if b.role == grants.granted_by.role && b.id == grants.granted_by.id => {
                    Ok(())
                }
                _ => Err(e),
            }),
            Command::SetCordon { id, .. } if *id == sender && by.is_none() => Ok(()),
            Command::SetCordon { .. }
            | Command::CreateToken { .. }
            | Command::Revoke { .. }
            | Command::SetCaNode { .. }
            | Command::RemoveNode { .. } => admin(),
            Command::MovePid { from, to, .. } => own(*from).or_else(|_| own(*to)),
            Command::RegisterName { pid, .. }
            | Command::UnregisterName { pid, .. }
            | Command::JoinGroup { pid, .. }
            | Command::LeaveGroup { pid, .. }
            | Command::Kv { pid, .. }
            | Command::KvBatch { pid, .. }
            | Command::Lock { pid, .. }
            | Command::SpawnEffect { parent: pid, .. }
            | Command::SpawnEffectFailed { parent: pid, .. } => runs_here(*pid),
            Command::Reincarnated { node, .. }
            | Command::SetRestart { node, .. }
            | Command::Checkpointed { node, .. }
            | Command::Restarted { node, .. } => own(*node),
            Command::Volume {
                actor: super::VolumeActor::Process { pid, .. },
                ..
            } => runs_here(*pid),
            Command::RedeemToken { .. } | Command::AddNode { .. } => match self.ca_node {
                Some(ca) if ca == sender => Ok(()),
                _ => Err(ForwardRefusal::NotTheCa {
                    sender,
                    command: command_name(cmd).to_string(),
                }),
            },
            // Writes on behalf of a caller that the ownership rule judges
            // when applied (module names, an operator's key-value write):
            // only from a node that relays, as the identity that asked it,
            // the very `by` the command names — a node cannot name someone
            // else (an admin) as the author of its own write.
            Command::NameModule { by: asker, .. }
            | Command::UnnameModule { by: asker, .. }
            | Command::KvByCaller { by: asker, .. }
            | Command::Volume {
                actor: super::VolumeActor::Caller { by: asker },
                ..
            } => match by {
                Some(relayed) if relayed == asker => Ok(()),
                _ => Err(ForwardRefusal::Forbidden(Forbidden::NotOwner {
                    who: by.cloned().unwrap_or_else(|| Owner {
                        role: Role::Node,
                        id: self
                            .member(sender)
                            .map(|n| n.name.clone())
                            .unwrap_or_default(),
                    }),
                    owner: asker.clone(),
                    what: format!("{} on behalf of {asker}", command_name(cmd)),
                })),
            },
            Command::Once { .. } => Err(ForwardRefusal::NestedEnvelope),
            // Made by the leader of what it was asked, never asked for.
            Command::Batch { .. }
            | Command::Bootstrap { .. }
            | Command::NodeDead { .. }
            | Command::NodeAlive { .. }
            | Command::ExpireLocks { .. }
            | Command::SetModuleName { .. }
            | Command::RemoveModuleName { .. }
            | Command::SetProcessName { .. }
            | Command::RemoveProcessName { .. } => Err(ForwardRefusal::Never {
                command: command_name(cmd).to_string(),
            }),
        }
    }
}

/// The command's variant name, for refusals and logs.
pub fn command_name(cmd: &Command) -> &'static str {
    match cmd {
        Command::Once { cmd, .. } | Command::Signed { cmd, .. } => command_name(cmd),
        Command::Batch { .. } => "Batch",
        Command::Bootstrap { .. } => "Bootstrap",
        Command::AddNode { .. } => "AddNode",
        Command::RemoveNode { .. } => "RemoveNode",
        Command::SetCordon { .. } => "SetCordon",
        Command::Heartbeat { .. } => "Heartbeat",
        Command::AllocPidBlock { .. } => "AllocPidBlock",
        Command::Register { .. } => "Register",
        Command::Unregister { .. } => "Unregister",
        Command::MovePid { .. } => "MovePid",
        Command::SetModuleName { .. } => "SetModuleName",
        Command::RemoveModuleName { .. } => "RemoveModuleName",
        Command::ModuleHeld { .. } => "ModuleHeld",
        Command::SetProcessName { .. } => "SetProcessName",
        Command::RemoveProcessName { .. } => "RemoveProcessName",
        Command::CreateToken { .. } => "CreateToken",
        Command::RedeemToken { .. } => "RedeemToken",
        Command::SetGrants { .. } => "SetGrants",
        Command::NodeDead { .. } => "NodeDead",
        Command::NodeAlive { .. } => "NodeAlive",
        Command::RegisterName { .. } => "RegisterName",
        Command::Kv { .. } => "Kv",
        Command::KvBatch { .. } => "KvBatch",
        Command::KvByCaller { .. } => "KvByCaller",
        Command::Lock { .. } => "Lock",
        Command::ExpireLocks { .. } => "ExpireLocks",
        Command::Reincarnated { .. } => "Reincarnated",
        Command::UnregisterName { .. } => "UnregisterName",
        Command::JoinGroup { .. } => "JoinGroup",
        Command::LeaveGroup { .. } => "LeaveGroup",
        Command::Revoke { .. } => "Revoke",
        Command::SetCaNode { .. } => "SetCaNode",
        Command::SetOwners { .. } => "SetOwners",
        Command::NameModule { .. } => "NameModule",
        Command::UnnameModule { .. } => "UnnameModule",
        Command::Volume { .. } => "Volume",
        Command::SetRestart { .. } => "SetRestart",
        Command::Checkpointed { .. } => "Checkpointed",
        Command::Restarted { .. } => "Restarted",
        Command::SpawnEffect { .. } => "SpawnEffect",
        Command::SpawnEffectFailed { .. } => "SpawnEffectFailed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_pki::{JoinToken, TokenRecord};
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn cluster() -> ClusterState {
        let mut s = ClusterState::default();
        s.apply(&Command::Bootstrap {
            ca_cert_pem: String::new(),
            ca_node: 1,
            name: "a".into(),
            addr: "a:1".into(),
            labels: BTreeMap::new(),
            now_ms: 1,
        });
        s.apply(&Command::AddNode {
            name: "b".into(),
            addr: "b:1".into(),
            labels: BTreeMap::new(),
            now_ms: 1,
        });
        s
    }

    /// A node cannot name someone else as the author of a module name: the
    /// command's `by` must be the identity the node relays. (Before, any
    /// node could forward `NameModule { by: <an admin> }` as itself, and
    /// the ownership rule then judged the forged admin.)
    #[test]
    fn a_batch_is_never_accepted_from_another_node() {
        let s = cluster();
        // Node 2 may write its own block alone…
        let own = Command::AllocPidBlock { node: 2 };
        assert_eq!(s.may_forward(2, None, &own), Ok(()));
        // …but not smuggle anything in a batch (the leader makes batches
        // of writes it judged one by one), bare or in an envelope.
        let batch = Command::Batch {
            cmds: vec![own.clone(), Command::AllocPidBlock { node: 1 }],
        };
        assert!(matches!(
            s.may_forward(2, None, &batch),
            Err(ForwardRefusal::Never { .. })
        ));
        let wrapped = Command::Once {
            client: 1,
            seq: 1,
            cmd: Box::new(Command::Batch { cmds: vec![own] }),
        };
        assert!(s.may_forward(2, None, &wrapped).is_err());
    }

    #[test]
    fn a_module_name_is_forwarded_only_as_the_identity_it_names() {
        let s = cluster();
        let admin = Owner {
            role: Role::Admin,
            id: "root".into(),
        };
        let alice = Owner {
            role: Role::Client,
            id: "alice".into(),
        };
        let name = |by: &Owner| Command::NameModule {
            name: "app".into(),
            hash: "00".repeat(32),
            by: by.clone(),
        };
        assert!(s.may_forward(2, None, &name(&admin)).is_err());
        assert!(s.may_forward(2, Some(&alice), &name(&admin)).is_err());
        assert_eq!(s.may_forward(2, Some(&admin), &name(&admin)), Ok(()));
        assert_eq!(s.may_forward(2, Some(&alice), &name(&alice)), Ok(()));
        let unname = Command::UnnameModule {
            name: "app".into(),
            by: admin.clone(),
        };
        assert!(s.may_forward(2, Some(&alice), &unname).is_err());
    }

    #[test]
    fn a_node_writes_about_itself_and_role_bearing_writes_need_an_admin() {
        let s = cluster();
        let token = JoinToken::generate().unwrap();
        let mint = Command::CreateToken {
            record: TokenRecord::new(&token, Role::Admin, 1, Duration::from_secs(60)),
        };
        // The attack: a node certificate writing an admin token as itself.
        assert!(s.may_forward(2, None, &mint).is_err());
        let client = Owner {
            role: Role::Client,
            id: "c".into(),
        };
        let admin = Owner {
            role: Role::Admin,
            id: "root".into(),
        };
        assert!(s.may_forward(2, Some(&client), &mint).is_err());
        assert_eq!(s.may_forward(2, Some(&admin), &mint), Ok(()));
        let beat = |id| Command::Heartbeat {
            id,
            load: Default::default(),
            now_ms: 1,
        };
        assert_eq!(s.may_forward(2, None, &beat(2)), Ok(()));
        assert!(s.may_forward(2, None, &beat(1)).is_err());
        let remove = Command::RemoveNode { id: 1, now_ms: 1 };
        assert!(s.may_forward(2, None, &remove).is_err());
        assert_eq!(s.may_forward(2, Some(&admin), &remove), Ok(()));
        let cordon = |id| Command::SetCordon { id, cordoned: true };
        assert_eq!(s.may_forward(2, None, &cordon(2)), Ok(()));
        assert!(s.may_forward(2, None, &cordon(1)).is_err());
        let redeem = Command::RedeemToken {
            token: "x.y".into(),
            now_ms: 1,
        };
        assert_eq!(s.may_forward(1, None, &redeem), Ok(()));
        assert!(s.may_forward(2, None, &redeem).is_err());
        let dead = Command::NodeDead {
            node: 1,
            epoch: 0,
            silent_ms: 1,
            by: 2,
            now_ms: 1,
        };
        assert!(s.may_forward(2, Some(&admin), &dead).is_err());
    }
}
