//! Keeping per-sender order while a process arrives from another node.
//!
//! When process P moves from node S to node T, messages for P reach T by
//! two ways: *forwarded* by S (everything S received for P, in the order S
//! received it), and *direct* from nodes that already see P at T in the
//! replicated directory. A sender on node N may have messages for P still
//! in flight to S when N switches to sending to T directly; delivering N's
//! direct messages first would reorder them.
//!
//! So T holds each node's direct messages until that node's *fence* comes
//! through S: every node, when it applies the directory switch, sends a
//! fence for P to S on the same ordered lane its earlier messages took; S
//! forwards it to T after them. A [`Handoff`] is that hold, one per
//! arriving pid:
//!
//! - messages from S (forwarded, or sent by S's own processes on S's lane)
//!   are delivered at once;
//! - messages from any other node N are held until N's fence arrives
//!   ([`Handoff::fence`]), then appended in order;
//! - nodes that never fence (down, or lagging) are waited for while the
//!   source still makes progress, and at most a ceiling ([`FenceClock`]);
//!   then everything held is released ([`Handoff::expire`]). A fixed
//!   deadline is not enough: on a loaded machine the source may still be
//!   forwarding a full lane's backlog (tens of thousands of messages sent
//!   before the fence) when it passes, and releasing the held direct
//!   messages then would put them ahead of that backlog.
//!
//! The hold is bounded like a mailbox: past [`HandoffLimits`] a push is
//! refused as `Full` (back-pressure: the lane waits, a local sender gets
//! `MAILBOX_FULL` and retries).

use super::mailbox::{Mailbox, Message, PushError};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A node, by its cluster id (what a message's origin is).
pub type Origin = u64;

/// Bounds of what a handoff holds.
#[derive(Debug, Clone, Copy)]
pub struct HandoffLimits {
    /// Most messages held at once.
    pub messages_max: usize,
    /// Most payload bytes held at once.
    pub bytes_max: usize,
}

#[derive(Debug, Default)]
struct State {
    /// Nodes whose fence has not come through the source yet.
    awaiting: BTreeSet<Origin>,
    /// Held messages per node, oldest first.
    held: BTreeMap<Origin, VecDeque<Message>>,
    held_count: usize,
    held_bytes: usize,
    /// The arrived process's mailbox, once it runs.
    mailbox: Option<Arc<Mailbox>>,
    /// Ended: everything released (or handed back), no more holding.
    finished: bool,
    /// Messages from the source plus fences seen so far: how the fence
    /// wait tells a source still forwarding from a stalled one.
    progress: u64,
}

/// The ordering hold for one arriving process (see the module docs).
#[derive(Debug)]
pub struct Handoff {
    source: Origin,
    epoch: u64,
    limits: HandoffLimits,
    state: Mutex<State>,
    /// Woken whenever held messages are released (space for a full hold).
    released: tokio::sync::Notify,
}

/// What happened to a pushed message.
#[derive(Debug, PartialEq, Eq)]
pub enum Routed {
    /// Queued in the process's mailbox, or held for later.
    Accepted,
    /// The handoff has ended: deliver it the normal way.
    Finished(Message),
}

impl Handoff {
    /// A hold for a process coming from `source`, waiting for the fences of
    /// `awaiting` (every other member that may have sent to it).
    pub fn new(
        source: Origin,
        epoch: u64,
        awaiting: impl IntoIterator<Item = Origin>,
        limits: HandoffLimits,
    ) -> Arc<Handoff> {
        let awaiting: BTreeSet<Origin> = awaiting.into_iter().filter(|o| *o != source).collect();
        Arc::new(Handoff {
            source,
            epoch,
            limits,
            state: Mutex::new(State {
                awaiting,
                ..State::default()
            }),
            released: tokio::sync::Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every mutation below leaves the state whole before it can panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves when held messages are next released or the hold finishes
    /// (it hears of releases from its creation on, before it is polled:
    /// create it, check [`Handoff::is_finished`], then await it).
    pub fn released(&self) -> tokio::sync::futures::Notified<'_> {
        self.released.notified()
    }

    /// The directory epoch of the move this hold belongs to (fences name it).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The node the process comes from.
    pub fn source(&self) -> Origin {
        self.source
    }

    /// Route a message that arrived from `origin`. A refused message is
    /// handed back.
    pub fn push(&self, origin: Origin, message: Message) -> Result<Routed, (PushError, Message)> {
        let mut st = self.lock();
        if st.finished {
            return Ok(Routed::Finished(message));
        }
        if origin == self.source {
            st.progress += 1;
        }
        let deliver_now = origin == self.source || !st.awaiting.contains(&origin);
        if deliver_now {
            if let Some(mb) = &st.mailbox {
                // Direct from the source, or from a node already fenced.
                return mb.try_push(message).map(|()| Routed::Accepted);
            }
        }
        if st.held_count >= self.limits.messages_max
            || st.held_bytes + message.data.len() > self.limits.bytes_max
        {
            return Err((PushError::Full, message));
        }
        st.held_count += 1;
        st.held_bytes += message.data.len();
        st.held.entry(origin).or_default().push_back(message);
        Ok(Routed::Accepted)
    }

    /// Queue a control message (a later move's fence) from `origin` behind
    /// whatever is held from `origin`, ignoring the bounds (one per move).
    /// `Finished` when the hold has ended.
    pub fn push_marker(&self, origin: Origin, message: Message) -> Routed {
        let mut st = self.lock();
        if st.finished {
            return Routed::Finished(message);
        }
        let held = st.held.contains_key(&origin) || st.awaiting.contains(&origin);
        match &st.mailbox {
            Some(mb) if !held => {
                let _ = mb.append_all(vec![message]);
            }
            _ => {
                st.held_count += 1;
                st.held_bytes += message.data.len();
                st.held.entry(origin).or_default().push_back(message);
            }
        }
        Routed::Accepted
    }

    /// The process runs now, with this mailbox: messages held from the
    /// source (and from nodes already fenced) go in, in order.
    pub fn start(&self, mailbox: Arc<Mailbox>) {
        let mut st = self.lock();
        let mut ready: Vec<Origin> = vec![self.source];
        ready.extend(st.held.keys().copied().filter(|o| !st.awaiting.contains(o)));
        for origin in ready {
            release(&mut st, &mailbox, origin);
        }
        st.mailbox = Some(mailbox);
        if st.awaiting.is_empty() {
            st.finished = true;
        }
        drop(st);
        self.released.notify_waiters();
    }

    /// `origin`'s fence came through the source: nothing it sent before
    /// the switch is still on the way. Its held messages go in.
    pub fn fence(&self, origin: Origin) {
        let mut st = self.lock();
        st.progress += 1;
        st.awaiting.remove(&origin);
        if let Some(mb) = st.mailbox.clone() {
            release(&mut st, &mb, origin);
            if st.awaiting.is_empty() {
                st.finished = true;
            }
        }
        drop(st);
        self.released.notify_waiters();
    }

    /// Stop waiting for fences (the deadline passed): release everything
    /// held, node by node. Returns the nodes that never fenced.
    pub fn expire(&self) -> Vec<Origin> {
        let mut st = self.lock();
        let missing: Vec<Origin> = st.awaiting.iter().copied().collect();
        st.awaiting.clear();
        if let Some(mb) = st.mailbox.clone() {
            let origins: Vec<Origin> = st.held.keys().copied().collect();
            for origin in origins {
                release(&mut st, &mb, origin);
            }
            st.finished = true;
        }
        drop(st);
        self.released.notify_waiters();
        missing
    }

    /// The move was called off before the process started here: end the
    /// hold and hand back what it held, per node in order, to be sent on
    /// (the process stays where it was).
    pub fn abandon(&self) -> Vec<Message> {
        let mut st = self.lock();
        st.finished = true;
        st.held_count = 0;
        st.held_bytes = 0;
        let back = std::mem::take(&mut st.held)
            .into_values()
            .flatten()
            .collect();
        drop(st);
        self.released.notify_waiters();
        back
    }

    /// True once nothing is held or awaited any more.
    pub fn is_finished(&self) -> bool {
        self.lock().finished
    }

    /// Messages held right now.
    pub fn held_count(&self) -> usize {
        self.lock().held_count
    }

    /// How far the hold has come: messages from the source plus fences
    /// (it only grows). See [`FenceClock`].
    pub fn progress(&self) -> u64 {
        self.lock().progress
    }
}

/// When an arrived process stops waiting for missing fences.
///
/// A fence comes behind everything its node sent through the source, so a
/// source that is still forwarding may yet bring it: the wait ends only
/// after `idle` passes with no progress ([`Handoff::progress`]), or after
/// `max` in all (a node that never fences while the source's own
/// processes keep sending must not hold the others' messages forever).
#[derive(Debug, Clone)]
pub struct FenceClock {
    idle: Duration,
    ends_max: Instant,
    progress: u64,
    progress_at: Instant,
}

impl FenceClock {
    /// A clock started at `now`, with the hold's progress then.
    pub fn new(now: Instant, progress: u64, idle: Duration, max: Duration) -> FenceClock {
        assert!(idle <= max, "the idle wait is within the whole wait");
        FenceClock {
            idle,
            ends_max: now + max,
            progress,
            progress_at: now,
        }
    }

    /// Note the hold's `progress` at `now`; true once the wait is over.
    pub fn expired(&mut self, now: Instant, progress: u64) -> bool {
        assert!(progress >= self.progress, "progress only grows");
        if progress != self.progress {
            self.progress = progress;
            self.progress_at = now;
        }
        now >= self.deadline()
    }

    /// When to look again (the wait cannot end before it).
    pub fn deadline(&self) -> Instant {
        (self.progress_at + self.idle).min(self.ends_max)
    }
}

/// Move `origin`'s held messages into `mailbox`, in order. They were
/// counted against the hold's bounds, so the mailbox's own are not checked
/// again (a burst can exceed them once, never grow without bound).
fn release(st: &mut State, mailbox: &Mailbox, origin: Origin) {
    let Some(queue) = st.held.remove(&origin) else {
        return;
    };
    st.held_count -= queue.len();
    st.held_bytes -= queue.iter().map(|m| m.data.len()).sum::<usize>();
    let _ = mailbox.append_all(queue.into_iter().collect());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::{Head, MailboxLimits};
    use crate::pid::Pid;

    fn m(sender: u64, n: u8) -> Message {
        Message::plain(Pid(sender), vec![n])
    }

    fn limits() -> HandoffLimits {
        HandoffLimits {
            messages_max: 4,
            bytes_max: 1 << 20,
        }
    }

    fn drain(mb: &Mailbox) -> Vec<(u64, u8)> {
        let mut out = Vec::new();
        while let Head::Taken(m) = mb.take_if_fits(usize::MAX) {
            out.push((m.sender.0, m.data[0]));
        }
        out
    }

    #[test]
    fn direct_messages_wait_for_their_nodes_fence() {
        // Source 1; nodes 2 and 3 may have messages in flight through 1.
        let h = Handoff::new(1, 1, [1, 2, 3], limits());
        let mb = Arc::new(Mailbox::new(MailboxLimits::default()));
        // Node 2 switched early: its direct message is held.
        assert_eq!(h.push(2, m(20, 2)).unwrap(), Routed::Accepted);
        h.start(mb.clone());
        assert!(drain(&mb).is_empty());
        // Forwarded by the source: delivered at once.
        h.push(1, m(20, 1)).unwrap();
        assert_eq!(drain(&mb), vec![(20, 1)]);
        // Node 2's fence arrives (through the source): its held one follows.
        h.fence(2);
        assert_eq!(drain(&mb), vec![(20, 2)]);
        h.push(2, m(20, 3)).unwrap();
        assert_eq!(drain(&mb), vec![(20, 3)]);
        assert!(!h.is_finished());
        h.fence(3);
        assert!(h.is_finished());
        assert!(matches!(h.push(3, m(30, 1)).unwrap(), Routed::Finished(_)));
    }

    #[test]
    fn hold_is_bounded_and_expiry_releases_everything() {
        let h = Handoff::new(1, 1, [2, 3], limits());
        for n in 0..4 {
            h.push(2 + (n % 2) as u64, m(9, n)).unwrap();
        }
        assert_eq!(h.push(2, m(9, 9)), Err((PushError::Full, m(9, 9))));
        let mb = Arc::new(Mailbox::new(MailboxLimits::default()));
        h.start(mb.clone());
        assert_eq!(h.expire(), vec![2, 3]);
        assert_eq!(drain(&mb), vec![(9, 0), (9, 2), (9, 1), (9, 3)]);
        assert!(h.is_finished());
    }

    #[test]
    fn the_fence_wait_lasts_while_the_source_makes_progress() {
        let idle = Duration::from_secs(8);
        let max = Duration::from_secs(120);
        let t0 = Instant::now();
        let h = Handoff::new(1, 1, [2], limits());
        let mb = Arc::new(Mailbox::new(MailboxLimits::default()));
        h.push(2, m(5, 9)).unwrap();
        h.start(mb.clone());
        let mut clock = FenceClock::new(t0, h.progress(), idle, max);
        // The source forwards node 2's backlog, one message every 5 s: 40 s
        // in all, far past the idle wait, and the hold keeps waiting.
        for n in 0..8u8 {
            let now = t0 + Duration::from_secs(5 * u64::from(n) + 5);
            assert!(!clock.expired(now, h.progress()), "expired at {n}");
            h.push(1, m(5, n)).unwrap();
        }
        // Node 2's fence comes after its backlog: the held message follows it.
        h.fence(2);
        let order: Vec<u8> = drain(&mb).into_iter().map(|(_, n)| n).collect();
        assert_eq!(order, vec![0, 1, 2, 3, 4, 5, 6, 7, 9]);
        // A stalled source: the wait ends `idle` after the last progress.
        let last = t0 + Duration::from_secs(45);
        assert!(!clock.expired(last, h.progress()));
        assert_eq!(clock.deadline(), last + idle);
        assert!(!clock.expired(last + idle - Duration::from_millis(1), h.progress()));
        assert!(clock.expired(last + idle, h.progress()));
        // Progress forever still ends at the ceiling.
        let mut forever = FenceClock::new(t0, 0, idle, max);
        for s in 1..=120u64 {
            assert_eq!(forever.expired(t0 + Duration::from_secs(s), s), s >= 120);
        }
    }

    #[test]
    fn abandon_hands_back_in_order() {
        let h = Handoff::new(1, 1, [2], limits());
        h.push(2, m(5, 1)).unwrap();
        h.push(2, m(5, 2)).unwrap();
        let back: Vec<u8> = h.abandon().into_iter().map(|m| m.data[0]).collect();
        assert_eq!(back, vec![1, 2]);
        assert!(h.is_finished());
    }
}
