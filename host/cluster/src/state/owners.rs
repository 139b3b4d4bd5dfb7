//! Who owns what: the replicated half of the ownership rule
//! (`shoal_pki::owner`).
//!
//! - **Processes**: [`ClusterState::owners`] maps each live pid to the
//!   identity that created it (the certificate that deployed or restored
//!   it; a guest's child inherits its parent's). Written by
//!   [`Command::SetOwners`](super::Command::SetOwners) by the node that
//!   started the processes; set once (the first record wins), kept when
//!   the process moves (moves change the directory entry, never this),
//!   dropped with the directory entry. A pid without a record belongs to
//!   [`Owner::cluster`]: only an admin acts on it.
//! - **Module names**: [`ClusterState::module_name_owners`] maps each
//!   module name to whoever first named it. Repointing or removing a name
//!   is authorized here, at apply time, by [`may_act`], so two racing
//!   writers cannot slip past a check made before the write: the loser is
//!   answered [`CommandResult::Forbidden`], typed.
//!
//! Owners live in Raft only: never in a snapshot or a migration stream, so
//! nothing a file or a peer's stream says can change them.

use std::collections::BTreeSet;

use shoal_pki::{may_act, Owner};

use super::{
    valid_hash, valid_name, ClusterState, CommandResult, NameKind, NodeId, Outcome, Refusal,
    NAME_BYTES_MAX, PIDS_PER_COMMAND_MAX,
};

impl ClusterState {
    /// The owner of process `pid`: its record, else [`Owner::cluster`].
    pub fn owner_of(&self, pid: u64) -> Owner {
        self.owners
            .get(&pid)
            .cloned()
            .unwrap_or_else(Owner::cluster)
    }

    /// The owner of module name `name`, if it exists: its record, else
    /// (named before owners were recorded) [`Owner::cluster`].
    pub fn module_name_owner(&self, name: &str) -> Option<Owner> {
        self.module_names.contains_key(name).then(|| {
            self.module_name_owners
                .get(name)
                .cloned()
                .unwrap_or_else(Owner::cluster)
        })
    }

    pub(super) fn set_owners(&mut self, node: NodeId, owners: &[(u64, Owner)]) -> Outcome {
        if owners.len() > PIDS_PER_COMMAND_MAX {
            return Err(Refusal::TooManyPids {
                count: owners.len(),
                max: PIDS_PER_COMMAND_MAX,
            });
        }
        if owners.iter().any(|(_, o)| o.id.len() > NAME_BYTES_MAX) {
            return Err(Refusal::OwnerIdTooLong {
                max_bytes: NAME_BYTES_MAX,
            });
        }
        self.live_member(node)?;
        for (pid, owner) in owners {
            // Live on `node`, or a fresh pid of its block whose
            // registration is still batched; one that ended gets nothing.
            let here = match self.directory.get(pid) {
                Some(e) => e.node == node,
                None => self.block_owner(*pid) == Some(node) && !self.is_gone(*pid),
            };
            if here {
                self.owners.entry(*pid).or_insert_with(|| owner.clone());
            }
        }
        Ok(CommandResult::Ok)
    }

    pub(super) fn name_module(&mut self, name: &str, hash: &str, by: &Owner) -> Outcome {
        valid_name(NameKind::Module, name)?;
        valid_hash(hash)?;
        if by.id.len() > NAME_BYTES_MAX {
            return Err(Refusal::OwnerIdTooLong {
                max_bytes: NAME_BYTES_MAX,
            });
        }
        if let Some(owner) = self.module_name_owner(name) {
            if let Err(f) = may_act(by, &owner, &format!("module name {name:?}")) {
                return Ok(CommandResult::Forbidden(f));
            }
        } else {
            self.module_name_owners.insert(name.to_string(), by.clone());
        }
        self.module_names.insert(name.to_string(), hash.to_string());
        Ok(CommandResult::Ok)
    }

    pub(super) fn unname_module(&mut self, name: &str, by: &Owner) -> Outcome {
        let owner = self
            .module_name_owner(name)
            .ok_or_else(|| Refusal::NoModule {
                name: name.to_string(),
            })?;
        if let Err(f) = may_act(by, &owner, &format!("module name {name:?}")) {
            return Ok(CommandResult::Forbidden(f));
        }
        self.module_names.remove(name);
        self.module_name_owners.remove(name);
        Ok(CommandResult::Ok)
    }

    /// Forget the owners of processes that are gone.
    pub(super) fn forget_owners(&mut self, gone: &BTreeSet<u64>) {
        for pid in gone {
            self.owners.remove(pid);
        }
    }

    /// Forget owner records of `node`'s pids that never reached the
    /// directory (the node was removed before registering them).
    pub(super) fn forget_unregistered_owners(&mut self, node: NodeId) {
        let stale: Vec<u64> = self
            .owners
            .keys()
            .copied()
            .filter(|pid| !self.directory.contains_key(pid) && self.block_owner(*pid) == Some(node))
            .collect();
        for pid in stale {
            self.owners.remove(&pid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Command, PID_BLOCK_SIZE};
    use super::*;
    use shoal_pki::{Forbidden, Role};
    use std::collections::BTreeMap;

    const HASH_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const HASH_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn who(role: Role, id: &str) -> Owner {
        Owner {
            role,
            id: id.into(),
        }
    }

    fn two_nodes() -> ClusterState {
        let mut s = ClusterState::default();
        for cmd in [
            Command::Bootstrap {
                ca_cert_pem: String::new(),
                ca_node: 1,
                name: "a".into(),
                addr: "a:1".into(),
                labels: BTreeMap::new(),
                now_ms: 1,
            },
            Command::AddNode {
                name: "b".into(),
                addr: "b:1".into(),
                labels: BTreeMap::new(),
                now_ms: 1,
            },
            Command::AllocPidBlock { node: 1 },
            Command::AllocPidBlock { node: 2 },
        ] {
            assert!(!matches!(s.apply(&cmd), CommandResult::Refused(_)));
        }
        s
    }

    #[test]
    fn process_owners_are_set_once_kept_on_moves_and_dropped_on_exit() {
        let mut s = two_nodes();
        let alice = who(Role::Client, "alice");
        let bob = who(Role::Client, "bob");
        let p = PID_BLOCK_SIZE; // node 1's first pid
        let q = 2 * PID_BLOCK_SIZE; // node 2's first pid
                                    // Before registration (batched): recorded for the node's own pid.
        assert_eq!(
            s.apply(&Command::SetOwners {
                node: 1,
                owners: vec![(p, alice.clone())],
            }),
            CommandResult::Ok
        );
        // Another node cannot claim node 1's pid; the first record wins.
        s.apply(&Command::SetOwners {
            node: 2,
            owners: vec![(p, bob.clone())],
        });
        s.apply(&Command::SetOwners {
            node: 1,
            owners: vec![(p, bob.clone())],
        });
        assert_eq!(s.owner_of(p), alice);
        assert_eq!(s.owner_of(q), Owner::cluster());
        s.apply(&Command::Register {
            node: 1,
            pids: vec![p],
        });
        assert_eq!(
            s.apply(&Command::MovePid {
                pid: p,
                from: 1,
                to: 2,
                epoch: 0
            }),
            CommandResult::Ok
        );
        assert_eq!(s.owner_of(p), alice, "kept across a move");
        s.apply(&Command::Unregister {
            node: 2,
            pids: vec![p],
        });
        assert_eq!(s.owners.get(&p), None, "dropped with the process");
        // A pid that already ended gets no record.
        s.apply(&Command::SetOwners {
            node: 1,
            owners: vec![(p, bob)],
        });
        assert_eq!(s.owners.get(&p), None);
    }

    #[test]
    fn a_module_name_is_repointed_only_by_its_owner_or_an_admin() {
        let mut s = two_nodes();
        let alice = who(Role::Client, "alice");
        let bob = who(Role::Client, "bob");
        let root = who(Role::Admin, "root");
        let name = |by: &Owner, hash: &str| Command::NameModule {
            name: "app".into(),
            hash: hash.into(),
            by: by.clone(),
        };
        assert_eq!(s.apply(&name(&alice, HASH_A)), CommandResult::Ok);
        assert_eq!(s.apply(&name(&alice, HASH_B)), CommandResult::Ok);
        assert!(matches!(
            s.apply(&name(&bob, HASH_A)),
            CommandResult::Forbidden(Forbidden::NotOwner { .. })
        ));
        assert!(matches!(
            s.apply(&Command::UnnameModule {
                name: "app".into(),
                by: bob.clone()
            }),
            CommandResult::Forbidden(_)
        ));
        assert_eq!(s.module_names["app"], HASH_B);
        assert_eq!(s.module_name_owner("app"), Some(alice.clone()));
        assert_eq!(s.apply(&name(&root, HASH_A)), CommandResult::Ok);
        assert_eq!(s.module_name_owner("app"), Some(alice), "owner unchanged");
        assert_eq!(
            s.apply(&Command::UnnameModule {
                name: "app".into(),
                by: root
            }),
            CommandResult::Ok
        );
        assert_eq!(s.module_name_owner("app"), None);
        assert_eq!(s.apply(&name(&bob, HASH_A)), CommandResult::Ok);
        assert_eq!(s.module_name_owner("app"), Some(bob));
    }
}
