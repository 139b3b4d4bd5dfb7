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
    /// What each pid holds (the reverse of the two above, kept in step by
    /// every change): an exit drops its names without reading the book.
    #[serde(default)]
    by_pid: Table<u64, imbl::OrdSet<Held>>,
}

/// One name a pid holds: a process name or a group membership.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Held {
    /// The owner's namespace.
    ns: String,
    /// The name or group.
    name: String,
    /// A group membership (not a process name).
    group: bool,
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
            .entry(ns.clone())
            .or_default()
            .insert(name.to_string(), pid);
        self.hold(pid, ns, name, false);
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
        self.remove_name(&ns, name);
        self.release(pid, &ns, name, false);
        Ok(())
    }

    /// The pid `name` names in `owner`'s namespace.
    pub fn whereis(&self, owner: &Owner, name: &str) -> Option<u64> {
        self.by_owner.get(&owner.namespace())?.get(name).copied()
    }

    /// Every process name in `owner`'s namespace, with its pid, in name
    /// order.
    pub fn names(&self, owner: &Owner) -> Vec<(String, u64)> {
        self.by_owner
            .get(&owner.namespace())
            .map(|n| n.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
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
            .entry(ns.clone())
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
        self.hold(pid, ns, name, true);
        Ok(())
    }

    /// Take `pid` out of group `name` (the group goes with its last member).
    pub fn leave_group(&mut self, owner: &Owner, name: &str, pid: u64) -> Result<(), NameRefusal> {
        let ns = owner.namespace();
        if !self.remove_member(&ns, name, pid) {
            return Err(NameRefusal::NotMember {
                name: name.to_string(),
                pid,
            });
        }
        self.release(pid, &ns, name, true);
        Ok(())
    }

    /// The members of group `name` of `owner`.
    pub fn members(&self, owner: &Owner, name: &str) -> Option<&imbl::OrdSet<u64>> {
        self.groups.get(&owner.namespace())?.get(name)
    }

    /// Drop every name and group membership of a process that is gone.
    ///
    /// Costs what the gone pids hold, not what the book holds: each pid's
    /// names come from the reverse index, and on the persistent maps a
    /// write copies only the path it touches.
    pub fn forget(&mut self, gone: &BTreeSet<u64>) {
        for pid in gone {
            let Some(held) = self.by_pid.remove(pid) else {
                continue;
            };
            for h in held {
                if h.group {
                    self.remove_member(&h.ns, &h.name, *pid);
                } else {
                    self.remove_name(&h.ns, &h.name);
                }
            }
        }
    }

    /// Record that `pid` holds `name` (a group membership if `group`).
    fn hold(&mut self, pid: u64, ns: String, name: &str, group: bool) {
        self.by_pid.entry(pid).or_default().insert(Held {
            ns,
            name: name.to_string(),
            group,
        });
    }

    /// Forget that `pid` holds `name`.
    fn release(&mut self, pid: u64, ns: &str, name: &str, group: bool) {
        let now_empty = self.by_pid.get_mut(&pid).is_some_and(|held| {
            held.remove(&Held {
                ns: ns.to_string(),
                name: name.to_string(),
                group,
            });
            held.is_empty()
        });
        if now_empty {
            self.by_pid.remove(&pid);
        }
    }

    /// Drop process name `name` of namespace `ns` (and the namespace with
    /// its last name).
    fn remove_name(&mut self, ns: &str, name: &str) {
        let now_empty = self.by_owner.get_mut(ns).is_some_and(|names| {
            names.remove(name);
            names.is_empty()
        });
        if now_empty {
            self.by_owner.remove(ns);
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

    /// The reverse index recomputed from the book itself.
    fn index_from_scan(b: &NameBook) -> Table<u64, imbl::OrdSet<Held>> {
        let mut index: Table<u64, imbl::OrdSet<Held>> = Table::new();
        for (ns, names) in &b.by_owner {
            for (name, pid) in names {
                index.entry(*pid).or_default().insert(Held {
                    ns: ns.clone(),
                    name: name.clone(),
                    group: false,
                });
            }
        }
        for (ns, groups) in &b.groups {
            for (name, members) in groups {
                for pid in members {
                    index.entry(*pid).or_default().insert(Held {
                        ns: ns.clone(),
                        name: name.clone(),
                        group: true,
                    });
                }
            }
        }
        index
    }

    /// Random registrations, groups, leaves and exits (seeded, so a
    /// failure repeats with `SHOAL_NAMES_SEED`): after every step the
    /// reverse index is exactly what a scan of the book gives, and an exit
    /// leaves nothing naming the gone pids.
    #[test]
    fn the_reverse_index_matches_the_book_after_any_sequence() {
        let seed: u64 = std::env::var("SHOAL_NAMES_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5eed);
        let mut x = seed | 1;
        let mut next = move |n: u64| {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        };
        let owners = [owner("a"), owner("b"), owner("c")];
        let mut b = NameBook::default();
        for step in 0..20_000 {
            let who = &owners[next(3) as usize];
            let pid = next(24);
            let name = format!("n{}", next(6));
            match next(6) {
                0 | 1 => {
                    let _ = b.register(who, &name, pid, true, 64);
                }
                2 => {
                    let _ = b.unregister(who, &name, pid);
                }
                3 => {
                    let _ = b.join_group(who, &name, pid, true, 64);
                }
                4 => {
                    let _ = b.leave_group(who, &name, pid);
                }
                _ => {
                    let gone = BTreeSet::from([pid, next(24)]);
                    b.forget(&gone);
                    let scan = index_from_scan(&b);
                    assert!(
                        gone.iter().all(|p| !scan.contains_key(p)),
                        "seed {seed} step {step}: a gone pid still holds a name"
                    );
                }
            }
            assert_eq!(
                b.by_pid,
                index_from_scan(&b),
                "seed {seed} step {step}: the reverse index drifted"
            );
        }
    }
}
