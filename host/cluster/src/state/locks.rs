//! Distributed locks for guests (issue #14): the part of the replicated
//! state machine ([`crate::state`]) behind `lock`, `try_lock`, `unlock` and
//! `lock_check`, and the fencing of key-value writes.
//!
//! - A lock is named within its owner's namespace ([`LockName`]) and held
//!   by one **process** (a pid). A process's locks are released when it
//!   ends (the directory forgets it), when it starts again as a new
//!   incarnation (a restore that replaces it: [`LockBook::release_pid`]),
//!   and, after the lock-delay, when its node is declared dead
//!   ([`crate::state::Command::ExpireLocks`]). A move keeps them: the pid
//!   goes on.
//! - Each grant hands out a **fencing token**: the book's grant counter,
//!   strictly increasing across the whole book, so a later holder of any
//!   lock always has a larger token. A fenced key-value write names a lock
//!   and a token and is applied only if that token is the lock's current
//!   holder's ([`LockBook::check`]): a holder that lost its lock (paused,
//!   partitioned, its node declared dead) can no longer write.
//! - Waiters queue in order (first come, first served). A process waits for
//!   at most one lock at a time (`lock` blocks), so the **wait-for graph**
//!   has at most one edge out of each process: from a waiter to the holder
//!   of the lock it waits for. A wait that would close a cycle is refused
//!   with [`LockRefusal::Deadlock`] at once, inside the apply that would
//!   have closed it: the refused waiter is the youngest wait of the cycle
//!   (every other edge of it was added before). Detection time is zero
//!   after the cycle would close; nothing scans later.
//! - Bounds, each refused with its own [`LockRefusal`]: lock names 1 to
//!   [`LOCK_NAME_BYTES_MAX`] bytes, at most [`LOCKS_HELD_MAX`] locks held
//!   by one process, [`WAITERS_MAX`] waiters on one lock, [`OWNER_LOCKS_MAX`]
//!   locks (held or waited for) per owner.
//! - Deterministic: nothing here reads a clock. Whether a holder's node is
//!   dead is passed in by the caller from the replicated verdicts.

use crate::state::kv::pairs;
use crate::state::Table;
use serde::{Deserialize, Serialize};

pub use shoal_pki::Owner;

/// Longest lock name, in bytes (the ABI's).
pub const LOCK_NAME_BYTES_MAX: usize = shoal_abi::kv::LOCK_NAME_BYTES_MAX;
/// Most locks one process may hold at once.
pub const LOCKS_HELD_MAX: usize = 64;
/// Most processes that may wait for one lock.
pub const WAITERS_MAX: usize = 1024;
/// Most locks (held or waited for) one owner may have at once.
pub const OWNER_LOCKS_MAX: u64 = 10_000;

/// A lock: whose namespace, which name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LockName {
    /// The owner of the namespace.
    pub owner: Owner,
    /// The name.
    pub name: String,
}

/// Who holds a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The process.
    pub pid: u64,
    /// Its fencing token.
    pub token: u64,
}

/// One lock's state. A lock with no holder and no waiters is not kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// The holder (`None` only transiently inside an apply).
    pub holder: Option<Holder>,
    /// The waiting pids, first come first.
    pub waiters: Vec<u64>,
}

/// Why a lock command changed nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum LockRefusal {
    /// The name is empty or too long.
    #[error("lock name of {len} bytes: lock names are 1 to {max} bytes")]
    BadName {
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// `try_lock` of a lock another process holds.
    #[error("lock {name:?} is held by pid {holder}")]
    Busy {
        /// The lock.
        name: String,
        /// Its holder.
        holder: u64,
    },
    /// Waiting would close a cycle in the wait-for graph.
    #[error("waiting for lock {name:?} would deadlock (cycle through pids {cycle:?})")]
    Deadlock {
        /// The lock.
        name: String,
        /// The pids of the cycle, from the holder of `name` back to the asker.
        cycle: Vec<u64>,
    },
    /// `unlock` by a process that does not hold the lock under that token
    /// (it was released: its holder ended, restarted, or its node was
    /// declared dead; or it never held it).
    #[error("lock {name:?} is not held by pid {pid} under token {token}")]
    Lost {
        /// The lock.
        name: String,
        /// The asker.
        pid: u64,
        /// The token it named.
        token: u64,
    },
    /// A fenced write or `lock_check` named a token that is not the lock's
    /// current holder's.
    #[error(
        "fencing token {token} is not the current one of lock {name:?} (current: {current:?})"
    )]
    Fenced {
        /// The lock.
        name: String,
        /// The token named.
        token: u64,
        /// The current holder's token, if any.
        current: Option<u64>,
    },
    /// The process already holds as many locks as it may.
    #[error("pid {pid} already holds {max} locks")]
    TooManyHeld {
        /// The asker.
        pid: u64,
        /// The bound.
        max: usize,
    },
    /// The lock already has as many waiters as it may.
    #[error("lock {name:?} already has {max} waiters")]
    TooManyWaiters {
        /// The lock.
        name: String,
        /// The bound.
        max: usize,
    },
    /// The owner already has as many locks as it may.
    #[error("owner {owner} already has {max} locks")]
    Quota {
        /// The owner.
        owner: String,
        /// The bound.
        max: u64,
    },
    /// The asker already waits for another lock (a process waits for one
    /// at a time).
    #[error("pid {pid} already waits for lock {waiting:?}")]
    AlreadyWaiting {
        /// The asker.
        pid: u64,
        /// What it waits for.
        waiting: String,
    },
}

/// What a lock request got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Acquired {
    /// Granted now (or already held by the asker) under this token.
    Granted(u64),
    /// Queued: the grant will come in a later apply.
    Queued,
}

/// The replicated lock book (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockBook {
    #[serde(with = "pairs")]
    locks: Table<LockName, Lock>,
    /// What each waiting pid waits for.
    #[serde(with = "pairs")]
    waiting: Table<u64, LockName>,
    /// What each holding pid holds.
    #[serde(with = "pairs")]
    holding: Table<u64, Vec<LockName>>,
    /// Locks (held or waited for) per owner.
    #[serde(with = "pairs")]
    per_owner: Table<Owner, u64>,
    /// Grants so far: the last token handed out.
    tokens: u64,
}

fn check_name(name: &str) -> Result<(), LockRefusal> {
    if name.is_empty() || name.len() > LOCK_NAME_BYTES_MAX {
        return Err(LockRefusal::BadName {
            len: name.len(),
            max: LOCK_NAME_BYTES_MAX,
        });
    }
    Ok(())
}

impl LockBook {
    /// The lock `name` of `owner`, if held or waited for.
    pub fn get(&self, owner: &Owner, name: &str) -> Option<&Lock> {
        self.locks.get(&LockName {
            owner: owner.clone(),
            name: name.to_string(),
        })
    }

    /// Every lock held or waited for, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&LockName, &Lock)> {
        self.locks.iter()
    }

    /// The lock `pid` waits for, if any.
    pub fn waiting_for(&self, pid: u64) -> Option<&LockName> {
        self.waiting.get(&pid)
    }

    /// The locks `pid` holds.
    pub fn held_by(&self, pid: u64) -> &[LockName] {
        self.holding.get(&pid).map_or(&[], |v| v.as_slice())
    }

    /// The last token handed out.
    pub fn last_token(&self) -> u64 {
        self.tokens
    }

    /// `lock` / `try_lock` by `pid` of `owner`'s lock `name`. `wait`:
    /// queue behind the holder (else [`LockRefusal::Busy`]).
    pub fn acquire(
        &mut self,
        owner: &Owner,
        name: &str,
        pid: u64,
        wait: bool,
    ) -> Result<Acquired, LockRefusal> {
        check_name(name)?;
        let at = LockName {
            owner: owner.clone(),
            name: name.to_string(),
        };
        if let Some(waiting) = self.waiting.get(&pid) {
            // The same wait asked again (the process resumed it after a
            // move or a retry): still queued.
            if *waiting == at {
                return Ok(Acquired::Queued);
            }
            return Err(LockRefusal::AlreadyWaiting {
                pid,
                waiting: waiting.name.clone(),
            });
        }
        let holder = match self.locks.get(&at).and_then(|l| l.holder) {
            // Asked again by its holder: the same grant (idempotent, so a
            // process that resumes its `lock` after a move sees its token).
            Some(h) if h.pid == pid => return Ok(Acquired::Granted(h.token)),
            Some(h) => h,
            None => {
                self.check_held_bound(pid)?;
                self.check_owner_bound(owner)?;
                let token = self.grant(&at, pid);
                return Ok(Acquired::Granted(token));
            }
        };
        if !wait {
            return Err(LockRefusal::Busy {
                name: name.to_string(),
                holder: holder.pid,
            });
        }
        if let Some(cycle) = self.cycle_from(holder.pid, pid) {
            return Err(LockRefusal::Deadlock {
                name: name.to_string(),
                cycle,
            });
        }
        let waiters = self.locks.get(&at).map_or(0, |l| l.waiters.len());
        if waiters >= WAITERS_MAX {
            return Err(LockRefusal::TooManyWaiters {
                name: name.to_string(),
                max: WAITERS_MAX,
            });
        }
        if let Some(lock) = self.locks.get_mut(&at) {
            lock.waiters.push(pid);
        }
        self.waiting.insert(pid, at);
        Ok(Acquired::Queued)
    }

    /// The wait-for path from `start` (a holder) that reaches `asker`, if
    /// one does: following each process to the holder of the lock it
    /// waits for. At most one edge leaves each process, so this walks a
    /// chain; it is bounded by the number of waiting processes.
    fn cycle_from(&self, start: u64, asker: u64) -> Option<Vec<u64>> {
        let mut path = vec![start];
        let mut at = start;
        for _ in 0..=self.waiting.len() {
            if at == asker {
                return Some(path);
            }
            let next = self
                .waiting
                .get(&at)
                .and_then(|l| self.locks.get(l))
                .and_then(|l| l.holder)?;
            at = next.pid;
            path.push(at);
        }
        // A longer chain than there are waiters would be a cycle not
        // through the asker, which the refusals above never let form.
        debug_assert!(false, "the wait-for graph has a cycle");
        None
    }

    fn check_held_bound(&self, pid: u64) -> Result<(), LockRefusal> {
        if self.held_by(pid).len() >= LOCKS_HELD_MAX {
            return Err(LockRefusal::TooManyHeld {
                pid,
                max: LOCKS_HELD_MAX,
            });
        }
        Ok(())
    }

    fn check_owner_bound(&self, owner: &Owner) -> Result<(), LockRefusal> {
        if self.per_owner.get(owner).copied().unwrap_or(0) >= OWNER_LOCKS_MAX {
            return Err(LockRefusal::Quota {
                owner: owner.to_string(),
                max: OWNER_LOCKS_MAX,
            });
        }
        Ok(())
    }

    /// Make `pid` the holder of the free lock `at` (creating it): its new
    /// token.
    fn grant(&mut self, at: &LockName, pid: u64) -> u64 {
        self.tokens += 1;
        let token = self.tokens;
        match self.locks.get_mut(at) {
            Some(lock) => {
                debug_assert!(lock.holder.is_none());
                lock.holder = Some(Holder { pid, token });
            }
            None => {
                *self.per_owner.entry(at.owner.clone()).or_insert(0) += 1;
                self.locks.insert(
                    at.clone(),
                    Lock {
                        holder: Some(Holder { pid, token }),
                        waiters: Vec::new(),
                    },
                );
            }
        }
        self.holding.entry(pid).or_default().push(at.clone());
        token
    }

    /// `unlock` by `pid` of the lock it holds under `token`; the next
    /// waiter (if any) is granted it. `gone` says which waiters may not be
    /// granted (their node is declared dead): they are skipped and dropped.
    pub fn release(
        &mut self,
        owner: &Owner,
        name: &str,
        pid: u64,
        token: u64,
        gone: &dyn Fn(u64) -> bool,
    ) -> Result<(), LockRefusal> {
        check_name(name)?;
        let at = LockName {
            owner: owner.clone(),
            name: name.to_string(),
        };
        match self.locks.get(&at).and_then(|l| l.holder) {
            Some(h) if h.pid == pid && h.token == token => {
                self.free(&at, gone);
                Ok(())
            }
            _ => Err(LockRefusal::Lost {
                name: name.to_string(),
                pid,
                token,
            }),
        }
    }

    /// `lock_check`, and the check of a fenced write: `Ok` only if `token`
    /// is the current holder's token of `owner`'s lock `name`.
    pub fn check(&self, owner: &Owner, name: &str, token: u64) -> Result<(), LockRefusal> {
        let current = self
            .get(owner, name)
            .and_then(|l| l.holder)
            .map(|h| h.token);
        if current == Some(token) {
            Ok(())
        } else {
            Err(LockRefusal::Fenced {
                name: name.to_string(),
                token,
                current,
            })
        }
    }

    /// A `lock` that gave up waiting (its timeout passed): withdraw `pid`'s
    /// wait for `name`, and if the grant came meanwhile (the process never
    /// saw it), release that too. Nothing to withdraw is not an error.
    pub fn cancel(&mut self, owner: &Owner, name: &str, pid: u64, gone: &dyn Fn(u64) -> bool) {
        let at = LockName {
            owner: owner.clone(),
            name: name.to_string(),
        };
        if self.waiting.get(&pid) == Some(&at) {
            self.unwait(pid);
        } else if self
            .locks
            .get(&at)
            .and_then(|l| l.holder)
            .is_some_and(|h| h.pid == pid)
        {
            // A process never waits for a lock it holds (asking again
            // returns its grant at once), so this grant came from the wait
            // being withdrawn.
            self.free(&at, gone);
        }
    }

    /// Drop `pid`'s wait (if any), deleting the lock if nothing is left.
    fn unwait(&mut self, pid: u64) {
        let Some(at) = self.waiting.remove(&pid) else {
            return;
        };
        if let Some(lock) = self.locks.get_mut(&at) {
            lock.waiters.retain(|w| *w != pid);
        }
        self.drop_if_unused(&at);
    }

    fn drop_if_unused(&mut self, at: &LockName) {
        let unused = self
            .locks
            .get(at)
            .is_some_and(|l| l.holder.is_none() && l.waiters.is_empty());
        if unused {
            self.locks.remove(at);
            if let Some(n) = self.per_owner.get_mut(&at.owner) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_owner.remove(&at.owner);
                }
            }
        }
    }

    /// Take lock `at` from its holder and grant it to the first waiter
    /// `gone` does not rule out (dropping those it does).
    fn free(&mut self, at: &LockName, gone: &dyn Fn(u64) -> bool) {
        let Some(lock) = self.locks.get_mut(at) else {
            return;
        };
        let Some(old) = lock.holder.take() else {
            return;
        };
        if let Some(held) = self.holding.get_mut(&old.pid) {
            held.retain(|l| l != at);
            if held.is_empty() {
                self.holding.remove(&old.pid);
            }
        }
        loop {
            let next = match self.locks.get_mut(at) {
                Some(lock) if !lock.waiters.is_empty() => lock.waiters.remove(0),
                _ => break,
            };
            self.waiting.remove(&next);
            if gone(next) {
                continue;
            }
            if self.held_by(next).len() >= LOCKS_HELD_MAX {
                // Cannot happen: a process at its bound is refused before
                // it may queue... unless it gained locks while waiting,
                // which a blocked process cannot. Skip it all the same.
                continue;
            }
            self.grant(at, next);
            break;
        }
        self.drop_if_unused(at);
    }

    /// Release everything `pid` holds and withdraw its wait: it ended, or
    /// it starts again as a new incarnation. Returns how many locks it
    /// held.
    pub fn release_pid(&mut self, pid: u64, gone: &dyn Fn(u64) -> bool) -> usize {
        self.unwait(pid);
        let held = self.holding.get(&pid).cloned().unwrap_or_default();
        for at in &held {
            self.free(at, gone);
        }
        debug_assert!(self.holding.get(&pid).is_none());
        held.len()
    }

    /// Whether `pid` holds or waits for any lock.
    pub fn involves(&self, pid: u64) -> bool {
        self.holding.contains_key(&pid) || self.waiting.contains_key(&pid)
    }

    /// The pids that hold or wait for a lock, for [`crate::state`] to find
    /// those of a dead node.
    pub fn pids(&self) -> Vec<u64> {
        let mut pids: Vec<u64> = self
            .holding
            .keys()
            .chain(self.waiting.keys())
            .copied()
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Check the book's invariants (tests and debug builds): every holder
    /// is indexed, every waiter is indexed, no lock is empty, tokens are
    /// all at most the counter.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (at, lock) in self.locks.iter() {
            let Some(h) = lock.holder else {
                return Err(format!("lock {at:?} has no holder"));
            };
            if h.token > self.tokens {
                return Err(format!("lock {at:?} token {} > {}", h.token, self.tokens));
            }
            if !self.held_by(h.pid).contains(at) {
                return Err(format!("holder {} of {at:?} not indexed", h.pid));
            }
            for w in &lock.waiters {
                if self.waiting.get(w) != Some(at) {
                    return Err(format!("waiter {w} of {at:?} not indexed"));
                }
            }
        }
        for (pid, at) in self.waiting.iter() {
            if !self.locks.get(at).is_some_and(|l| l.waiters.contains(pid)) {
                return Err(format!("pid {pid} indexed as waiting for {at:?}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> Owner {
        Owner {
            role: shoal_pki::Role::Client,
            id: id.to_string(),
        }
    }

    fn alice() -> Owner {
        user("alice")
    }

    const NOBODY_GONE: &dyn Fn(u64) -> bool = &|_| false;

    #[test]
    fn grants_queue_in_order_with_increasing_tokens() {
        let mut b = LockBook::default();
        let a = alice();
        let Ok(Acquired::Granted(t1)) = b.acquire(&a, "x", 1, true) else {
            panic!("free lock not granted");
        };
        assert_eq!(b.acquire(&a, "x", 1, true), Ok(Acquired::Granted(t1)));
        assert_eq!(b.acquire(&a, "x", 2, true), Ok(Acquired::Queued));
        assert_eq!(b.acquire(&a, "x", 3, true), Ok(Acquired::Queued));
        assert!(matches!(
            b.acquire(&a, "x", 4, false),
            Err(LockRefusal::Busy { holder: 1, .. })
        ));
        assert!(matches!(
            b.release(&a, "x", 2, t1, NOBODY_GONE),
            Err(LockRefusal::Lost { .. })
        ));
        b.release(&a, "x", 1, t1, NOBODY_GONE)
            .expect("holder releases");
        let h = b.get(&a, "x").and_then(|l| l.holder).expect("granted on");
        assert_eq!(h.pid, 2);
        assert!(h.token > t1);
        // A stale token is fenced; the current one passes.
        assert!(matches!(
            b.check(&a, "x", t1),
            Err(LockRefusal::Fenced { .. })
        ));
        b.check(&a, "x", h.token).expect("current token");
        // Another owner's lock of the same name is another lock.
        let bob = user("bob");
        assert!(matches!(
            b.acquire(&bob, "x", 9, false),
            Ok(Acquired::Granted(_))
        ));
        b.check_invariants().expect("invariants");
    }

    #[test]
    fn a_wait_closing_a_cycle_is_refused_and_the_others_proceed() {
        let mut b = LockBook::default();
        let a = alice();
        // 1 holds x, 2 holds y, 3 holds z; 1 waits y, 2 waits z; 3 asks x.
        for (pid, name) in [(1, "x"), (2, "y"), (3, "z")] {
            assert!(matches!(
                b.acquire(&a, name, pid, true),
                Ok(Acquired::Granted(_))
            ));
        }
        assert_eq!(b.acquire(&a, "y", 1, true), Ok(Acquired::Queued));
        assert_eq!(b.acquire(&a, "z", 2, true), Ok(Acquired::Queued));
        let Err(LockRefusal::Deadlock { cycle, .. }) = b.acquire(&a, "x", 3, true) else {
            panic!("cycle not detected");
        };
        assert_eq!(cycle, vec![1, 2, 3]);
        b.check_invariants().expect("invariants");
        // 3 gives up z: 2 gets it, finishes, 1 gets y.
        b.release_pid(3, NOBODY_GONE);
        assert_eq!(
            b.get(&a, "z").and_then(|l| l.holder).map(|h| h.pid),
            Some(2)
        );
        b.release_pid(2, NOBODY_GONE);
        assert_eq!(
            b.get(&a, "y").and_then(|l| l.holder).map(|h| h.pid),
            Some(1)
        );
        b.release_pid(1, NOBODY_GONE);
        assert!(b.iter().next().is_none(), "everything released");
        b.check_invariants().expect("invariants");
    }

    #[test]
    fn cancel_withdraws_a_wait_or_releases_an_unseen_grant() {
        let mut b = LockBook::default();
        let a = alice();
        let Ok(Acquired::Granted(t1)) = b.acquire(&a, "x", 1, true) else {
            panic!()
        };
        assert_eq!(b.acquire(&a, "x", 2, true), Ok(Acquired::Queued));
        b.cancel(&a, "x", 2, NOBODY_GONE);
        assert!(b.waiting_for(2).is_none());
        assert_eq!(b.acquire(&a, "x", 2, true), Ok(Acquired::Queued));
        b.release(&a, "x", 1, t1, NOBODY_GONE).expect("release");
        // The grant reached 2, which timed out before seeing it.
        b.cancel(&a, "x", 2, NOBODY_GONE);
        assert!(b.get(&a, "x").is_none());
        b.check_invariants().expect("invariants");
    }

    #[test]
    fn gone_waiters_are_skipped_and_bounds_hold() {
        let mut b = LockBook::default();
        let a = alice();
        let Ok(Acquired::Granted(t1)) = b.acquire(&a, "x", 1, true) else {
            panic!()
        };
        b.acquire(&a, "x", 2, true).expect("queue 2");
        b.acquire(&a, "x", 3, true).expect("queue 3");
        b.release(&a, "x", 1, t1, &|p| p == 2).expect("release");
        assert_eq!(
            b.get(&a, "x").and_then(|l| l.holder).map(|h| h.pid),
            Some(3)
        );
        assert!(b.waiting_for(2).is_none());
        assert!(matches!(
            b.acquire(&a, "", 5, true),
            Err(LockRefusal::BadName { .. })
        ));
        let long = "n".repeat(LOCK_NAME_BYTES_MAX + 1);
        assert!(matches!(
            b.acquire(&a, &long, 5, true),
            Err(LockRefusal::BadName { .. })
        ));
        for i in 0..LOCKS_HELD_MAX {
            b.acquire(&a, &format!("l{i}"), 7, false)
                .expect("under the bound");
        }
        assert!(matches!(
            b.acquire(&a, "one-more", 7, false),
            Err(LockRefusal::TooManyHeld { .. })
        ));
        assert_eq!(b.release_pid(7, NOBODY_GONE), LOCKS_HELD_MAX);
        b.check_invariants().expect("invariants");
    }
}
