//! Message routing on one node: where a message for a pid goes.
//!
//! Every message a process, a host mailbox or a peer hands to this node
//! passes through [`Router`]. It owns the node's routing tables — the
//! mailboxes of live processes and host mailboxes (*local*), the mailboxes
//! of processes frozen to move away (*held*), the ordering holds of
//! processes arriving from another node (*handoffs*) — and the way out to
//! the rest of the cluster (*remote*, the attached [`ClusterLink`]).
//!
//! # Where a message goes
//!
//! 1. If `to` is arriving here (a handoff is installed), the handoff takes
//!    it: it keeps each origin node's messages behind that node's fence
//!    until the fence arrives, then passes them on in order
//!    ([`crate::handoff`]). Once the handoff has finished, 2 applies.
//! 2. Else if `to` has a local mailbox (a live process or host mailbox),
//!    the message is queued there; then, if it is frozen to move away, in
//!    its held mailbox (what arrives during a move is kept, and forwarded
//!    once the move is decided).
//! 3. Else it is not here: [`Router::send`] hands it to the cluster link,
//!    which looks `to` up in the replicated directory and queues it on the
//!    lane to that node (`Closed` if no node has it).
//!
//! A mailbox can close between the lookup and the push (its process ended
//! or moved): the lookup is repeated once, so a message never lands in a
//! mailbox that nobody will read.
//!
//! # Calls, replies, monitors and DOWNs
//!
//! They are messages with a [`crate::mailbox::Tag`] and go exactly this way
//! ([`Router::send_message`]), so they keep every rule below across moves.
//! One addition: a call or monitor that arrives from a peer for a pid that
//! is nowhere is answered here with a DOWN `noproc` to its sender
//! ([`crate::calls::bounce_for`]); [`Router::down_targets`] is how a node
//! declared dead fails the calls and monitors that waited on it. And a call
//! request for a process that can never see one (its module imports neither
//! `recv_any` nor `recv_match`) is not queued: its sender gets a DOWN
//! `not_callable` at once ([`crate::calls::refusal_for`]), so calls never
//! pile up unseen in an old guest's mailbox.
//!
//! # Ordering rules
//!
//! - **Per sender, per destination, in order, once.** Messages from one
//!   sender to one pid arrive in the order they were sent, each once, while
//!   neither moves, and across any number of moves of the receiver:
//! - A lane between two nodes is ordered and acknowledged (`shoal_net`).
//! - When a process moves from A to B, every node that applies the
//!   directory switch sends a *fence* to A behind what it sent before;
//!   A appends the fence to the held mailbox; the migration's forwarder
//!   (`shoal_daemon::migrate::source`) passes the held messages and the
//!   fences on to B in order; B's handoff releases a node's direct messages
//!   only after that node's fence came through A. So nothing sent before
//!   the switch is overtaken by something sent after it.
//! - A held mailbox closes only when it is empty and the node's own state
//!   shows the switch; a sender that meets the closed mailbox routes
//!   through the directory, behind everything forwarded.
//! - Back-pressure, never loss: a full mailbox or lane answers `Full`; a
//!   local sender retries (the ABI's `MAILBOX_FULL`), a message from a peer
//!   waits ([`Router::deliver_remote`]) and so slows its lane.

use crate::cluster_link::ClusterLink;
use crate::handoff::{Handoff, Origin, Routed};
use crate::mailbox::{Mailbox, Message, PushError, Tag};
use crate::pid::Pid;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

/// A node's routing tables and its way to the cluster (see the module
/// docs for the rules).
#[derive(Default)]
pub struct Router {
    /// Mailboxes of live processes and host mailboxes on this node.
    local: RwLock<HashMap<Pid, Arc<Mailbox>>>,
    /// Mailboxes of processes frozen to move away: messages keep arriving
    /// here until the move is decided (then they are forwarded, or the
    /// process resumes here with them).
    held: RwLock<HashMap<Pid, Arc<Mailbox>>>,
    /// Ordering holds of processes arriving from another node.
    handoffs: RwLock<HashMap<Pid, Arc<Handoff>>>,
    /// `handoffs.len()`, read without the lock on every send.
    handoff_count: AtomicUsize,
    /// The way to the rest of the cluster, once attached.
    cluster: OnceLock<Arc<dyn ClusterLink>>,
    /// Woken whenever a held mailbox or a handoff is removed
    /// ([`Router::settled`] waits on it).
    unheld: tokio::sync::Notify,
    /// Woken when a process under output commit produces a message, so a
    /// checkpoint that releases it is taken at once ([`Router::output`]).
    output: tokio::sync::Notify,
}

/// Read a lock, ignoring poisoning (the maps stay consistent: every update
/// is one insert or remove).
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

/// Write a lock, ignoring poisoning (see [`read`]).
fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

impl Router {
    /// Attach the cluster link (once). `false` if one was attached before.
    pub(crate) fn attach_cluster(&self, link: Arc<dyn ClusterLink>) -> bool {
        self.cluster.set(link).is_ok()
    }

    /// The cluster link, if this node is part of a cluster.
    pub fn cluster(&self) -> Option<&Arc<dyn ClusterLink>> {
        self.cluster.get()
    }

    /// Make `mailbox` the local mailbox of `pid` (a process starting, a
    /// host mailbox opening).
    pub(crate) fn attach(&self, pid: Pid, mailbox: Arc<Mailbox>) {
        write(&self.local).insert(pid, mailbox);
    }

    /// Forget `pid`'s local mailbox (its process ended or moved, its host
    /// mailbox closed).
    pub(crate) fn detach(&self, pid: Pid) -> Option<Arc<Mailbox>> {
        write(&self.local).remove(&pid)
    }

    /// Is `pid` a live process or host mailbox here?
    pub fn is_local(&self, pid: Pid) -> bool {
        read(&self.local).contains_key(&pid)
    }

    /// Keep `pid`'s mailbox reachable while it is frozen to move away.
    pub(crate) fn hold(&self, pid: Pid, mailbox: Arc<Mailbox>) {
        write(&self.held).insert(pid, mailbox);
    }

    /// The held mailbox of a frozen process (see `Node::freeze`).
    pub fn held(&self, pid: Pid) -> Option<Arc<Mailbox>> {
        read(&self.held).get(&pid).cloned()
    }

    /// Stop finding `pid`'s held mailbox: the move happened (lookups go
    /// through the cluster) or was called off (the process has its mailbox
    /// back). The caller keeps the returned mailbox.
    pub fn release_held(&self, pid: Pid) -> Option<Arc<Mailbox>> {
        let mailbox = write(&self.held).remove(&pid);
        self.unheld.notify_waiters();
        mailbox
    }

    /// Prepare for a process arriving from another node: from now on
    /// messages for `pid` here go through `handoff` (see
    /// [`crate::handoff`]) until it is removed.
    pub fn install_handoff(&self, pid: Pid, handoff: Arc<Handoff>) {
        let mut map = write(&self.handoffs);
        map.insert(pid, handoff);
        self.handoff_count.store(map.len(), Ordering::SeqCst);
    }

    /// Stop routing `pid` through its handoff (it finished, or the move was
    /// called off).
    pub fn remove_handoff(&self, pid: Pid) -> Option<Arc<Handoff>> {
        let mut map = write(&self.handoffs);
        let h = map.remove(&pid);
        self.handoff_count.store(map.len(), Ordering::SeqCst);
        drop(map);
        self.unheld.notify_waiters();
        h
    }

    /// [`Router::remove_handoff`], only if `pid`'s handoff is still
    /// `handoff` (a later arrival of the same pid may have its own by now).
    pub fn remove_handoff_if(&self, pid: Pid, handoff: &Arc<Handoff>) {
        let mut map = write(&self.handoffs);
        if map.get(&pid).is_some_and(|h| Arc::ptr_eq(h, handoff)) {
            map.remove(&pid);
        }
        self.handoff_count.store(map.len(), Ordering::SeqCst);
        drop(map);
        self.unheld.notify_waiters();
    }

    /// Wait, at most `wait_max`, until `pid` has neither a held mailbox
    /// nor a handoff here (an earlier move of it has settled). Woken by
    /// their removal, never polling. `false` if it timed out.
    pub async fn settled(&self, pid: Pid, wait_max: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait_max;
        loop {
            // Registered before the check, so a removal in between wakes it.
            let removed = self.unheld.notified();
            if self.handoff(pid).is_none() && self.held(pid).is_none() {
                return true;
            }
            if tokio::time::timeout_at(deadline, removed).await.is_err() {
                return self.handoff(pid).is_none() && self.held(pid).is_none();
            }
        }
    }

    /// True while some process is arriving here.
    pub fn has_handoffs(&self) -> bool {
        self.handoff_count.load(Ordering::SeqCst) > 0
    }

    /// The handoff of an arriving `pid`, if any.
    pub fn handoff(&self, pid: Pid) -> Option<Arc<Handoff>> {
        if !self.has_handoffs() {
            return None;
        }
        read(&self.handoffs).get(&pid).cloned()
    }

    /// The local mailbox of `pid`, else its held one.
    fn mailbox(&self, pid: Pid) -> Option<Arc<Mailbox>> {
        if let Some(mb) = read(&self.local).get(&pid) {
            return Some(mb.clone());
        }
        self.held(pid)
    }

    /// The live mailbox of `pid` (not a held one).
    fn live_mailbox(&self, pid: Pid) -> Option<Arc<Mailbox>> {
        read(&self.local).get(&pid).cloned()
    }

    /// How many watchers the live process `pid` here has (see
    /// [`Mailbox::watcher_count`]); `None` if it is not running here.
    pub fn watcher_count(&self, pid: Pid) -> Option<usize> {
        self.live_mailbox(pid).map(|mb| mb.watcher_count())
    }

    /// Send from `from` (a process or host mailbox here) to `to`, wherever
    /// it is. `Closed`: no such process; `Full`: retry later.
    pub fn send(&self, from: Pid, to: Pid, data: Vec<u8>) -> Result<(), PushError> {
        self.send_message(to, Message::plain(from, data))
    }

    /// [`Router::send`] of any message: plain, or part of a call or a
    /// monitor ([`crate::mailbox::Tag`]), which all go the same way.
    pub fn send_message(&self, to: Pid, message: Message) -> Result<(), PushError> {
        match self.route(None, to, message) {
            Ok(()) => Ok(()),
            Err((PushError::Closed, m)) => match self.cluster.get() {
                Some(link) => link.send_remote(to, m),
                None => Err(PushError::Closed),
            },
            Err((e, _)) => Err(e),
        }
    }

    /// Send `message` from a process here (what its host functions send):
    /// as [`Router::send_message`], through its numbered channels when its
    /// output commit is on or the receiver is protected (see
    /// [`crate::outbox`]).
    ///
    /// With output commit on, the message waits in the outbox until a
    /// recorded checkpoint covers it: `Ok` means it was accepted there
    /// (`Full`: the outbox is at its bound). Otherwise it is sent now, as
    /// before, and a copy is kept until the receiver acknowledges it.
    pub fn send_guest(&self, to: Pid, message: Message) -> Result<(), PushError> {
        let from = message.sender;
        if !crate::outbox::is_numbered(&message.tag) {
            return self.send_message(to, message);
        }
        let Some(mailbox) = self.live_mailbox(from) else {
            return self.send_message(to, message);
        };
        let protected = mailbox.output_commit();
        let retain = self
            .cluster
            .get()
            .is_some_and(|link| link.keeps_checkpoints(to));
        if !protected && !retain {
            return self.send_message(to, message);
        }
        if protected {
            mailbox
                .with_outbox(|o| o.push(to, message, retain, false))
                .map_err(|_| PushError::Full)?;
            self.output.notify_one();
            return Ok(());
        }
        // Sent now, in order behind anything this channel must send again.
        let result = {
            let _flushing = mailbox.flushing();
            if mailbox.with_outbox(|o| o.backlog(to)) {
                Err(PushError::Full)
            } else {
                let mut numbered = message.clone();
                match mailbox.with_outbox(|o| o.push(to, message, retain, true)) {
                    Err(_) => Err(PushError::Full),
                    Ok(seq) => {
                        numbered.seq = seq;
                        numbered.life = mailbox.life();
                        let sent = self.send_message(to, numbered);
                        if sent.is_err() {
                            mailbox.with_outbox(|o| {
                                if o.unsend(to, seq) && sent == Err(PushError::Closed) {
                                    o.gone(to);
                                }
                            });
                        }
                        sent
                    }
                }
            }
        };
        if result == Err(PushError::Full) || mailbox.take_kick() {
            // A backlog to send again first, or a nack that came while the
            // flush lock was held here.
            self.flush(from, &mailbox);
        }
        result
    }

    /// What a push into `pid`'s mailbox may owe: the nacks its inbox asks
    /// for, and the resends its outbox was asked for.
    fn after_push(&self, pid: Pid, mailbox: &Arc<Mailbox>) {
        if mailbox.take_kick() {
            self.send_nacks(pid, mailbox);
            self.flush(pid, mailbox);
        }
    }

    /// Send the nacks `pid`'s inbox owes.
    fn send_nacks(&self, pid: Pid, mailbox: &Mailbox) {
        let nacks = mailbox.take_nacks();
        self.send_notes(
            pid,
            mailbox,
            nacks.into_iter().map(|(s, e)| (s, Tag::Nack(e))),
        );
    }

    /// Send acks or nacks of `pid`'s inbox (`(sender, tag)`), each with
    /// its life. One lost because the way is full costs nothing lasting:
    /// the next gap asks again, the next checkpoint acknowledges more.
    fn send_notes(&self, pid: Pid, mailbox: &Mailbox, notes: impl IntoIterator<Item = (Pid, Tag)>) {
        let life = crate::outbox::life_payload(mailbox.life());
        for (sender, tag) in notes {
            let note = Message {
                sender: pid,
                data: life.clone(),
                tag,
                seq: 0,
                life: 0,
            };
            let _ = self.send_message(sender, note);
        }
    }

    /// Send what `pid`'s outbox may send now, in order per channel. One
    /// flush at a time per outbox: a flush asked for while one runs (a nack
    /// arriving through it) is done by that one before it returns.
    pub fn flush(&self, pid: Pid, mailbox: &Mailbox) {
        let Some(_flushing) = mailbox.try_flushing() else {
            mailbox.set_kick();
            return;
        };
        let life = mailbox.life();
        loop {
            let ready = mailbox.with_outbox(|o| o.ready(256));
            let mut blocked: Vec<Pid> = Vec::new();
            let mut progressed = false;
            for (to, mut message) in ready {
                if blocked.contains(&to) {
                    continue;
                }
                // Always as itself, whatever an image said.
                message.sender = pid;
                message.life = life;
                let seq = message.seq;
                let bounce = crate::calls::bounce_for(to, &message);
                match self.send_message(to, message) {
                    Ok(()) => {
                        progressed = true;
                        mailbox.with_outbox(|o| o.sent(to, seq));
                    }
                    Err(PushError::Full) => blocked.push(to),
                    Err(PushError::Closed) => {
                        // Nobody to send to: a call in it is answered
                        // `noproc` to its caller, this process.
                        progressed = true;
                        blocked.push(to);
                        let unsent = mailbox.with_outbox(|o| o.gone(to));
                        if let Some((back_to, notice)) = bounce {
                            let _ = self.send_message(back_to, notice);
                        }
                        for m in unsent {
                            if let Some((back_to, notice)) = crate::calls::bounce_for(to, &m) {
                                let _ = self.send_message(back_to, notice);
                            }
                        }
                    }
                }
            }
            let kicked = mailbox.take_kick();
            if kicked {
                self.send_nacks(pid, mailbox);
            }
            if !(kicked || progressed && blocked.is_empty()) {
                return;
            }
            if !kicked && mailbox.with_outbox(|o| o.ready(1).is_empty()) {
                return;
            }
        }
    }

    /// The node's tick (see `shoal_daemon`): for every live process here,
    /// send what it owes (released output, resends asked for or overdue,
    /// nacks) — what could not be sent when it was due (a full way).
    pub fn flush_all(&self) {
        let now = Instant::now();
        let mailboxes: Vec<(Pid, Arc<Mailbox>)> = read(&self.local)
            .iter()
            .map(|(p, m)| (*p, m.clone()))
            .collect();
        for (pid, mailbox) in mailboxes {
            let owes = mailbox.take_kick()
                || mailbox.with_outbox(|o| o.resend_stale(now) || !o.ready(1).is_empty());
            if owes {
                self.send_nacks(pid, &mailbox);
                self.flush(pid, &mailbox);
            }
        }
    }

    /// A recorded checkpoint of `pid` (a process here) covers `point`:
    /// release its output up to there, and acknowledge to its senders what
    /// it had taken.
    pub fn committed(&self, pid: Pid, point: &crate::outbox::CommitPoint) {
        let Some(mailbox) = self.live_mailbox(pid) else {
            return;
        };
        mailbox.with_outbox(|o| o.commit(point.produced));
        mailbox.notify_committed();
        self.flush(pid, &mailbox);
        let acks = mailbox.acks_for(&point.seen);
        self.send_notes(
            pid,
            &mailbox,
            acks.into_iter().map(|(s, n)| (s, Tag::Ack(n))),
        );
    }

    /// Ask every sender `pid` (a process here, just resumed from a
    /// checkpoint) took numbered messages from for what follows the last it
    /// took: what they sent after that checkpoint was lost with the node.
    /// (A sender it had taken nothing from sends again on its own, after
    /// [`crate::outbox::RETRANSMIT_AFTER`].)
    pub fn nack_senders(&self, pid: Pid) {
        let Some(mailbox) = self.live_mailbox(pid) else {
            return;
        };
        let nacks = mailbox
            .seen()
            .into_iter()
            .map(|(s, n)| (s, Tag::Nack(n + 1)));
        self.send_notes(pid, &mailbox, nacks);
    }

    /// Notified when a process under output commit produced a message that
    /// waits for a checkpoint (the checkpointer waits on it beside its
    /// tick).
    pub fn output(&self) -> &tokio::sync::Notify {
        &self.output
    }

    /// Does `pid` (a process here) have output no recorded checkpoint
    /// covers yet?
    pub fn uncommitted(&self, pid: Pid) -> bool {
        self.live_mailbox(pid).is_some_and(|m| m.uncommitted())
    }

    /// Queue a DOWN (`data`: the reason) in every local process's mailbox
    /// for its call in progress and its monitors whose target `gone` says
    /// is gone. Returns how many were queued. See [`crate::calls::node_down`].
    ///
    /// Processes frozen to move away are included (their held mailbox):
    /// if the move is called off they resume with the DOWN; if it goes
    /// ahead the DOWN is forwarded with their other mail. A process that
    /// arrives after the decision is covered by [`Router::down_targets_of`].
    pub fn down_targets(&self, gone: &dyn Fn(Pid) -> bool, data: &[u8]) -> usize {
        let mut mailboxes: Vec<Arc<Mailbox>> = read(&self.local).values().cloned().collect();
        mailboxes.extend(read(&self.held).values().cloned());
        mailboxes.sort_by_key(|mb| Arc::as_ptr(mb) as usize);
        mailboxes.dedup_by(|a, b| Arc::ptr_eq(a, b));
        mailboxes.iter().map(|mb| mb.down_targets(gone, data)).sum()
    }

    /// [`Router::down_targets`] for the one live process `pid` (one that
    /// started here after the decision, e.g. arrived by a move).
    pub fn down_targets_of(&self, pid: Pid, gone: &dyn Fn(Pid) -> bool, data: &[u8]) -> usize {
        self.live_mailbox(pid)
            .map_or(0, |mb| mb.down_targets(gone, data))
    }

    /// Queue a message for a pid on this node (rules 1 and 2). `origin` is
    /// the node it came from (`None`: this one). `Closed`, with the message
    /// handed back, when the pid is not here.
    fn route(
        &self,
        origin: Option<Origin>,
        to: Pid,
        message: Message,
    ) -> Result<(), (PushError, Message)> {
        let mut message = message;
        if let Some(h) = self.handoff(to) {
            let origin = origin
                .or_else(|| self.cluster.get().map(|l| l.node_id()))
                .unwrap_or(0);
            match h.push(origin, message) {
                Ok(Routed::Accepted) => return Ok(()),
                Ok(Routed::Finished(m)) => message = m,
                Err(refused) => return Err(refused),
            }
        }
        // A mailbox can close between the lookup and the push (its process
        // ended, or moved away): look again once.
        for _ in 0..2 {
            let Some(mailbox) = self.mailbox(to) else {
                return Err((PushError::Closed, message));
            };
            if let Tag::Call(reference) = message.tag {
                if !mailbox.sees_calls() {
                    if mailbox.admit_only(&message) {
                        let (back_to, refusal) =
                            crate::calls::refusal_for(to, message.sender, reference);
                        let _ = self.send_message(back_to, refusal);
                    }
                    self.after_push(to, &mailbox);
                    return Ok(());
                }
            }
            match mailbox.try_push(message) {
                Err((PushError::Closed, m)) => message = m,
                other => {
                    self.after_push(to, &mailbox);
                    return other;
                }
            }
        }
        Err((PushError::Closed, message))
    }

    /// Deliver a message that arrived from node `origin` to a process here,
    /// waiting up to `wait` for space if its mailbox is full (which
    /// back-pressures the lane it came on). If the pid is not here (any
    /// more), pass it on to wherever the directory says it lives now.
    pub async fn deliver_remote(
        &self,
        origin: Origin,
        to: Pid,
        message: Message,
        wait: Duration,
    ) -> Result<(), PushError> {
        let bounce = crate::calls::bounce_for(to, &message);
        let r = self.deliver_remote_inner(origin, to, message, wait).await;
        if r == Err(PushError::Closed) {
            // A call or monitor that found nobody: its sender is told
            // (DOWN `noproc`) from here, where that is known.
            if let Some((back_to, notice)) = bounce {
                let _ = self.send_message(back_to, notice);
            }
        }
        r
    }

    async fn deliver_remote_inner(
        &self,
        origin: Origin,
        to: Pid,
        message: Message,
        wait: Duration,
    ) -> Result<(), PushError> {
        let deadline = Instant::now() + wait;
        let mut message = message;
        loop {
            // A hold's release is heard from here on: registered before the
            // attempt, so one between the refusal and the wait wakes it.
            let hold = self.handoff(to);
            let released = hold.as_ref().map(|h| h.released());
            match self.route(Some(origin), to, message) {
                Ok(()) => return Ok(()),
                Err((PushError::Closed, m)) => {
                    let Some(link) = self.cluster.get() else {
                        return Err(PushError::Closed);
                    };
                    let room = link.room();
                    loop {
                        // Registered before the attempt: an ack in between
                        // wakes it.
                        let freed = room.notified();
                        match link.send_remote(to, m.clone()) {
                            Err(PushError::Full) if Instant::now() < deadline => {
                                let _ = tokio::time::timeout_at(deadline.into(), freed).await;
                            }
                            other => return other,
                        }
                    }
                }
                Err((PushError::Full, m)) => {
                    if Instant::now() >= deadline {
                        return Err(PushError::Full);
                    }
                    message = m;
                    let now_held = self.handoff(to);
                    if let (Some(h), Some(released)) = (&now_held, released) {
                        if !hold.as_ref().is_some_and(|before| Arc::ptr_eq(before, h)) {
                            // A new hold since the attempt: try again with
                            // its releases registered.
                            continue;
                        }
                        // The hold or the arrived process's mailbox is full:
                        // wait for a release or a take.
                        let mailbox = self.live_mailbox(to);
                        let taken = async {
                            match mailbox {
                                Some(mb) => mb.wait_space().await,
                                None => std::future::pending().await,
                            }
                        };
                        tokio::select! {
                            _ = released => {}
                            _ = taken => {}
                            _ = tokio::time::sleep_until(deadline.into()) => {}
                        }
                    } else if now_held.is_some() {
                        // A hold appeared since the attempt.
                        continue;
                    } else if let Some(mailbox) = self.mailbox(to) {
                        match mailbox.push_wait(message.clone(), deadline).await {
                            // Closed meanwhile (moved away): route again.
                            Err(PushError::Closed) => {}
                            other => return other,
                        }
                    }
                }
            }
        }
    }
}
