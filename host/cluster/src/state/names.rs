//! Process names held in Raft, each in its owner's namespace: the part of
//! the replicated state machine ([`crate::state`]) that `register`,
//! `unregister` and `whereis` use.
//!
//! - A name is unique within its owner's namespace: two processes of
//!   different owners may use the same name; of one owner, the first
//!   registration applied wins and the other is refused (Raft orders them).
//! - Each owner holds at most [`NAMES_PER_OWNER_MAX`] names.
//! - A name dies with its process (the state machine drops it with the
//!   directory entry) and survives its moves (a move changes the directory
//!   entry's node, never the pid).
//!
//! [`Owner`] (from `shoal_pki::owner`, with the one rule `may_act`) is the
//! identity resources belong to: the certificate (role and id) that
//! deployed the process, inherited by what its guests spawn.
//! Refusals are values ([`NameRefusal`]); the state machine turns them into
//! its refusal text.

use crate::state::Table;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Most names one owner may hold (process names and groups together).
pub const NAMES_PER_OWNER_MAX: usize = 1024;
/// Most members of one group.
pub const GROUP_MEMBERS_MAX: usize = 1024;

pub use shoal_pki::Owner;

/// Why a name command changed nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum NameRefusal {
    /// Another process of the same owner holds it.
    #[error("name {name:?} already names pid {pid}")]
    Taken {
        /// The name.
        name: String,
        /// Its holder.
        pid: u64,
    },
    /// The owner holds as many names as it may.
    #[error("owner {owner} holds {max} names (the most it may)")]
    Quota {
        /// The owner's namespace.
        owner: String,
        /// The bound.
        max: usize,
    },
    /// The name is empty or too long.
    #[error("process name is empty or longer than {max} bytes")]
    BadName {
        /// The bound.
        max: usize,
    },
    /// The process is not live.
    #[error("pid {0} is not a live process")]
    NotLive(u64),
    /// The group has as many members as it may.
    #[error("group {name:?} has {max} members (the most it may)")]
    GroupFull {
        /// The group.
        name: String,
        /// The bound.
        max: usize,
    },
    /// `leave_group` of a group this pid is not in.
    #[error("pid {pid} is not in group {name:?}")]
    NotMember {
        /// The group.
        name: String,
        /// The pid that asked.
        pid: u64,
    },
    /// `unregister` of a name this pid does not hold.
    #[error("pid {pid} holds no name {name:?}")]
    NotHeld {
        /// The name.
        name: String,
        /// The pid that asked.
        pid: u64,
    },
}

/// Every owned name: namespace → name → pid, and namespace → group →
/// members. Groups are a separate kind of name: a group and a process
/// name may be spelled alike.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameBook {
    by_owner: Table<String, Table<String, u64>>,
    #[serde(default)]
    groups: Table<String, Table<String, imbl::OrdSet<u64>>>,
}

impl NameBook {
    /// Give `name` to `pid` (live: `live`) in `owner`'s namespace.
    /// Registering the same pair again is `Ok`.
    pub fn register(
        &mut self,
        owner: &Owner,
        name: &str,
        pid: u64,
        live: bool,
        name_bytes_max: usize,
    ) -> Result<(), NameRefusal> {
        if name.is_empty() || name.len() > name_bytes_max {
            return Err(NameRefusal::BadName {
                max: name_bytes_max,
            });
        }
        if !live {
            return Err(NameRefusal::NotLive(pid));
        }
        let ns = owner.namespace();
        let names = self.by_owner.get(&ns);
        match names.and_then(|n| n.get(name)) {
            Some(&p) if p == pid => return Ok(()),
            Some(&p) => {
                return Err(NameRefusal::Taken {
                    name: name.to_string(),
                    pid: p,
                })
            }
            None => {}
        }
        if self.count(owner) >= NAMES_PER_OWNER_MAX {
            return Err(NameRefusal::Quota {
                owner: ns,
                max: NAMES_PER_OWNER_MAX,
            });
        }
        self.by_owner
            .entry(ns)
            .or_default()
            .insert(name.to_string(), pid);
        Ok(())
    }

    /// Take `name` away from `pid` (only the holder may).
    pub fn unregister(&mut self, owner: &Owner, name: &str, pid: u64) -> Result<(), NameRefusal> {
        let ns = owner.namespace();
        let held = self
            .by_owner
            .get(&ns)
            .and_then(|n| n.get(name))
            .is_some_and(|&p| p == pid);
        if !held {
            return Err(NameRefusal::NotHeld {
                name: name.to_string(),
                pid,
            });
        }
        if let Some(names) = self.by_owner.get_mut(&ns) {
            names.remove(name);
            if names.is_empty() {
                self.by_owner.remove(&ns);
            }
        }
        Ok(())
    }

    /// The pid `name` names in `owner`'s namespace.
    pub fn whereis(&self, owner: &Owner, name: &str) -> Option<u64> {
        self.by_owner.get(&owner.namespace())?.get(name).copied()
    }

    /// How many names `owner` holds (process names and groups).
    pub fn count(&self, owner: &Owner) -> usize {
        let ns = owner.namespace();
        self.by_owner.get(&ns).map_or(0, |n| n.len()) + self.groups.get(&ns).map_or(0, |g| g.len())
    }

    /// Add `pid` (live: `live`) to group `name` of `owner`, creating it
    /// (which counts against the owner's quota). Joining twice is `Ok`.
    pub fn join_group(
        &mut self,
        owner: &Owner,
        name: &str,
        pid: u64,
        live: bool,
        name_bytes_max: usize,
    ) -> Result<(), NameRefusal> {
        if name.is_empty() || name.len() > name_bytes_max {
            return Err(NameRefusal::BadName {
                max: name_bytes_max,
            });
        }
        if !live {
            return Err(NameRefusal::NotLive(pid));
        }
        let ns = owner.namespace();
        let exists = self.groups.get(&ns).is_some_and(|g| g.contains_key(name));
        if !exists && self.count(owner) >= NAMES_PER_OWNER_MAX {
            return Err(NameRefusal::Quota {
                owner: ns,
                max: NAMES_PER_OWNER_MAX,
            });
        }
        let members = self
            .groups
            .entry(ns)
            .or_default()
            .entry(name.to_string())
            .or_default();
        if !members.contains(&pid) && members.len() >= GROUP_MEMBERS_MAX {
            return Err(NameRefusal::GroupFull {
                name: name.to_string(),
                max: GROUP_MEMBERS_MAX,
            });
        }
        members.insert(pid);
        Ok(())
    }

    /// Take `pid` out of group `name` (the group goes with its last member).
    pub fn leave_group(&mut self, owner: &Owner, name: &str, pid: u64) -> Result<(), NameRefusal> {
        if !self.remove_member(&owner.namespace(), name, pid) {
            return Err(NameRefusal::NotMember {
                name: name.to_string(),
                pid,
            });
        }
        Ok(())
    }

    /// The members of group `name` of `owner`.
    pub fn members(&self, owner: &Owner, name: &str) -> Option<&imbl::OrdSet<u64>> {
        self.groups.get(&owner.namespace())?.get(name)
    }

    /// Drop every name and group membership of a process that is gone.
    ///
    /// Reads the book and changes only what names a gone pid: on the
    /// persistent maps a write copies the path it touches, so a sweep that
    /// wrote every entry would cost the whole book on every exit.
    pub fn forget(&mut self, gone: &BTreeSet<u64>) {
        let names: Vec<(String, String)> = self
            .by_owner
            .iter()
            .flat_map(|(ns, names)| {
                names
                    .iter()
                    .filter(|(_, pid)| gone.contains(pid))
                    .map(move |(name, _)| (ns.clone(), name.clone()))
            })
            .collect();
        for (ns, name) in names {
            let now_empty = self.by_owner.get_mut(&ns).is_some_and(|names| {
                names.remove(&name);
                names.is_empty()
            });
            if now_empty {
                self.by_owner.remove(&ns);
            }
        }
        let memberships: Vec<(String, String, u64)> = self
            .groups
            .iter()
            .flat_map(|(ns, groups)| {
                groups.iter().flat_map(move |(group, members)| {
                    gone.iter()
                        .filter(|pid| members.contains(*pid))
                        .map(move |pid| (ns.clone(), group.clone(), *pid))
                })
            })
            .collect();
        for (ns, group, pid) in memberships {
            self.remove_member(&ns, &group, pid);
        }
    }

    /// Take `pid` out of `group` of namespace `ns`, dropping the group with
    /// its last member and the namespace with its last group. Whether it
    /// was a member.
    fn remove_member(&mut self, ns: &str, group: &str, pid: u64) -> bool {
        let Some(groups) = self.groups.get_mut(ns) else {
            return false;
        };
        let Some(members) = groups.get_mut(group) else {
            return false;
        };
        let removed = members.remove(&pid).is_some();
        if members.is_empty() {
            groups.remove(group);
        }
        if groups.is_empty() {
            self.groups.remove(ns);
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_pki::Role;

    fn owner(id: &str) -> Owner {
        Owner {
            role: Role::Client,
            id: id.into(),
        }
    }

    #[test]
    fn unique_per_owner_with_a_quota() {
        let mut b = NameBook::default();
        let (alice, bob) = (owner("alice"), owner("bob"));
        assert_eq!(b.register(&alice, "kv", 1, true, 64), Ok(()));
        assert_eq!(b.register(&alice, "kv", 1, true, 64), Ok(()));
        assert_eq!(
            b.register(&alice, "kv", 2, true, 64),
            Err(NameRefusal::Taken {
                name: "kv".into(),
                pid: 1
            })
        );
        assert_eq!(b.register(&bob, "kv", 2, true, 64), Ok(()));
        assert_eq!(b.whereis(&alice, "kv"), Some(1));
        assert_eq!(b.whereis(&bob, "kv"), Some(2));
        assert_eq!(
            b.unregister(&alice, "kv", 2),
            Err(NameRefusal::NotHeld {
                name: "kv".into(),
                pid: 2
            })
        );
        assert!(matches!(
            b.register(&alice, "", 1, true, 64),
            Err(NameRefusal::BadName { .. })
        ));
        assert_eq!(
            b.register(&alice, "x", 9, false, 64),
            Err(NameRefusal::NotLive(9))
        );
        for i in 1..NAMES_PER_OWNER_MAX {
            b.register(&alice, &format!("n{i}"), 1, true, 64).unwrap();
        }
        assert!(matches!(
            b.register(&alice, "one-more", 1, true, 64),
            Err(NameRefusal::Quota { .. })
        ));
        assert!(matches!(
            b.join_group(&alice, "g", 1, true, 64),
            Err(NameRefusal::Quota { .. })
        ));
        assert_eq!(b.join_group(&bob, "g", 2, true, 64), Ok(()));
        assert_eq!(b.join_group(&bob, "g", 3, true, 64), Ok(()));
        assert_eq!(b.join_group(&bob, "g", 3, true, 64), Ok(()));
        assert_eq!(b.members(&bob, "g").map(|m| m.len()), Some(2));
        assert_eq!(b.leave_group(&bob, "g", 3), Ok(()));
        assert!(matches!(
            b.leave_group(&bob, "g", 3),
            Err(NameRefusal::NotMember { .. })
        ));
        b.forget(&BTreeSet::from([1]));
        assert_eq!(b.count(&alice), 0);
        assert_eq!(b.whereis(&bob, "kv"), Some(2));
        assert_eq!(b.unregister(&bob, "kv", 2), Ok(()));
        assert_eq!(b.whereis(&bob, "kv"), None);
        b.forget(&BTreeSet::from([2]));
        assert_eq!(b.members(&bob, "g"), None);
        assert_eq!(b, NameBook::default());
    }
}
