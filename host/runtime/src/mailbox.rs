//! Bounded per-process message queues.
//!
//! One mailbox per process, one queue per mailbox: messages from any sender
//! are delivered in arrival order, which keeps every (sender, receiver) pair
//! in the order sent. A mailbox holds at most `messages_max` messages and
//! `bytes_max` bytes; a send beyond that is refused (`MAILBOX_FULL`) rather
//! than growing memory without bound.

use crate::outbox::{Admit, Inbox, Outbox};
use crate::pid::Pid;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;
use tokio::sync::Notify;

/// One queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who sent it (for a DOWN notice: the process that went down).
    pub sender: Pid,
    /// The payload, copied out of the sender's memory.
    pub data: Vec<u8>,
    /// What it is: a plain message, or part of a call or monitor (see
    /// [`crate::calls`]). Absent (plain) in images from before calls.
    #[serde(default, skip_serializing_if = "Tag::is_plain")]
    pub tag: Tag,
    /// Its number on a numbered channel (0: not numbered; see
    /// [`crate::outbox`]). Absent (0) in images from before issue #16.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seq: u64,
    /// With a numbered message: its sender's life (see
    /// [`crate::outbox`]), so a receiver tells a sender that started
    /// afresh under the same pid from a repeat.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub life: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Message {
    /// A plain message (what `send` sends).
    pub fn plain(sender: Pid, data: Vec<u8>) -> Message {
        Message {
            seq: 0,
            life: 0,
            sender,
            data,
            tag: Tag::Plain,
        }
    }
}

/// What a queued message is. Every kind but [`Tag::Plain`] belongs to a
/// call or a monitor and carries its reference (a number its issuer chose,
/// unique among that issuer's calls and monitors: see [`CallState`]).
///
/// All kinds travel the same way (mailboxes, held mailboxes, handoffs,
/// lanes, images), so calls keep the ordering and move rules of messages.
/// Which kinds a receive may see is decided when it takes
/// ([`Mailbox::take_visible`]): `recv` sees only plain messages, so a guest
/// built before calls existed never meets one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tag {
    /// A plain message.
    #[default]
    Plain,
    /// A call request; the sender waits for a [`Tag::Reply`] with this
    /// reference. Once taken by the callee, the reference is replaced by
    /// the callee's reply handle in what the guest sees.
    Call(u64),
    /// The answer to a call.
    Reply(u64),
    /// The sender went down; the payload is the reason
    /// ([`crate::calls::DownReason`]). Answers a monitor, or a call.
    Down(u64),
    /// The sender asks to be told (with a [`Tag::Down`]) when the receiver
    /// ends. Never seen by a guest.
    Monitor(u64),
    /// The sender no longer wants to be told. Never seen by a guest.
    Demonitor(u64),
    /// The sender (a protected receiver) has in a recorded checkpoint
    /// every numbered message up to this number from the receiver
    /// ([`crate::outbox`]); the payload is its life. Never seen by a guest.
    Ack(u64),
    /// The sender (a receiver) expects this number next from the receiver,
    /// which sends again from it; the payload is its life. Never seen by a
    /// guest.
    Nack(u64),
}

impl Tag {
    /// True for a plain message.
    pub fn is_plain(&self) -> bool {
        matches!(self, Tag::Plain)
    }

    /// True for what answers something the receiver already admitted (a
    /// reply, a DOWN, a demonitor): between nodes it may use lane room that
    /// plain mail cannot take (`shoal_net::Peers::send_owed`).
    pub fn is_owed(&self) -> bool {
        matches!(
            self,
            Tag::Reply(_) | Tag::Down(_) | Tag::Demonitor(_) | Tag::Ack(_) | Tag::Nack(_)
        )
    }

    /// The lane encoding: kind byte (0 plain) and reference.
    pub fn to_wire(self) -> (u8, u64) {
        match self {
            Tag::Plain => (0, 0),
            Tag::Call(r) => (1, r),
            Tag::Reply(r) => (2, r),
            Tag::Down(r) => (3, r),
            Tag::Monitor(r) => (4, r),
            Tag::Demonitor(r) => (5, r),
            Tag::Ack(r) => (6, r),
            Tag::Nack(r) => (7, r),
        }
    }

    /// From the lane encoding; `None` for a kind this build does not know.
    pub fn from_wire(kind: u8, reference: u64) -> Option<Tag> {
        Some(match kind {
            0 => Tag::Plain,
            1 => Tag::Call(reference),
            2 => Tag::Reply(reference),
            3 => Tag::Down(reference),
            4 => Tag::Monitor(reference),
            5 => Tag::Demonitor(reference),
            6 => Tag::Ack(reference),
            7 => Tag::Nack(reference),
            _ => return None,
        })
    }
}

/// The call in progress of a process (at most one: `call` blocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Calling {
    /// Its reference.
    pub reference: u64,
    /// Who was called (for `NODE_DOWN`: was it on the dead node?).
    pub target: Pid,
}

/// A process's calls and monitors: plain data, kept with its mailbox (the
/// one object every message to it passes), captured into its image and
/// restored with it, so calls and monitors follow a process that moves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallState {
    /// The last reference this process issued (calls and monitors).
    pub last_ref: u64,
    /// Its call in progress. A reply or DOWN for it is accepted even when
    /// the mailbox is full (the slot reserved at call time); one for any
    /// other reference is a late answer and is dropped.
    pub calling: Option<Calling>,
    /// The monitors it holds: reference → watched pid.
    pub monitors: BTreeMap<u64, Pid>,
    /// Who watches it: (watcher, reference).
    pub watchers: BTreeSet<(Pid, u64)>,
    /// Calls it took and has not answered: handle → (caller, reference).
    pub serving: BTreeMap<u64, (Pid, u64)>,
    /// The last reply handle it was given.
    pub last_handle: u64,
    /// Requests it made with `send_request` and has not received the
    /// answer to: reference → callee. Each answer (a reply or a DOWN) has
    /// a reserved slot and is seen only by `recv_match` asking for it.
    /// Absent (none) in images from before requests.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<u64, Pid>,
}

/// Which queued entries a receive may take (see [`Mailbox::take_wanted`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// `recv`: plain messages only (what a guest built before calls knows).
    Plain,
    /// `recv_any`: plain messages, call requests, DOWNs of monitors.
    Any,
    /// `recv_match` from a pid: what [`Want::Any`] takes, from that sender.
    From(Pid),
    /// `recv_match` for a request: its reply or DOWN, nothing else.
    Answer(u64),
}

/// A notice the mailbox's owner must send (a monitor or call it refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounce {
    /// Who is told.
    pub to: Pid,
    /// The DOWN notice (its sender is filled in by the owner).
    pub tag: Tag,
    /// Its payload (an encoded reason).
    pub data: Vec<u8>,
}

/// What a process that ends owes others: DOWN notices.
#[derive(Debug, Default)]
pub struct ExitNotices {
    /// Its watchers, (watcher, reference).
    pub watchers: Vec<(Pid, u64)>,
    /// Calls it received and did not answer (queued or taken): (caller,
    /// reference).
    pub callers: Vec<(Pid, u64)>,
    /// Its own monitors (reference, watched pid), to withdraw.
    pub monitors: Vec<(u64, Pid)>,
}

/// Bounds of one mailbox.
#[derive(Debug, Clone, Copy)]
pub struct MailboxLimits {
    /// Most messages queued at once.
    pub messages_max: usize,
    /// Most payload bytes queued at once.
    pub bytes_max: usize,
}

impl Default for MailboxLimits {
    fn default() -> Self {
        MailboxLimits {
            messages_max: 65_536,
            bytes_max: 64 << 20,
        }
    }
}

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The mailbox is at its bound; the sender may retry.
    #[error("mailbox full")]
    Full,
    /// The receiver has exited.
    #[error("receiver has exited")]
    Closed,
}

/// What the receiver finds at the head of its queue.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// A message that fits the caller's buffer, now removed from the queue.
    Taken(Message),
    /// The oldest message needs this many bytes; it stays queued.
    TooBig {
        /// Who sent it.
        sender: Pid,
        /// Its length in bytes.
        len: usize,
    },
    /// Nothing queued.
    Empty,
}

#[derive(Debug, Default)]
struct Queue {
    messages: VecDeque<Message>,
    bytes: usize,
    closed: bool,
    calls: CallState,
    /// Numbered channels out of this process ([`crate::outbox`]).
    outbox: Outbox,
    /// The last numbers taken from each sender, kept with the queue so an
    /// image captures both at one instant.
    inbox: Inbox,
}

impl Queue {
    /// Is `reference` the call in progress?
    fn is_calling(&self, reference: u64) -> bool {
        self.calls.calling.is_some_and(|c| c.reference == reference)
    }

    /// Is `reference` a request (`send_request`) still waiting?
    fn is_requested(&self, reference: u64) -> bool {
        self.calls.requests.contains_key(&reference)
    }
}

/// A process's mailbox. Many senders, one receiver.
#[derive(Debug)]
pub struct Mailbox {
    queue: Mutex<Queue>,
    arrived: Notify,
    /// Woken when a message is taken, for senders waiting for space
    /// ([`Mailbox::push_wait`]: messages arriving from other nodes).
    space: Notify,
    limits: MailboxLimits,
    /// Can its owner ever see a call request? False for a process whose
    /// module imports neither `recv_any` nor `recv_match`: calls to it are
    /// refused (`NOT_CALLABLE`) instead of queued unseen.
    sees_calls: AtomicBool,
    /// Held while its outbox sends (one sender at a time keeps each
    /// channel in order; see `Router::flush`).
    flushing: Mutex<()>,
    /// Its outbox has something to send again (a nack came) or its inbox
    /// a nack to send: the router or the node's tick acts on it.
    kick: AtomicBool,
    /// Woken when a recorded checkpoint commits more of its output, for an
    /// effect waiting to be made ([`Mailbox::committed_to`]).
    committed: Notify,
}

impl Mailbox {
    /// An empty mailbox with the given bounds.
    pub fn new(limits: MailboxLimits) -> Self {
        Mailbox {
            queue: Mutex::new(Queue {
                inbox: Inbox::new(),
                ..Queue::default()
            }),
            arrived: Notify::new(),
            space: Notify::new(),
            limits,
            sees_calls: AtomicBool::new(true),
            flushing: Mutex::new(()),
            kick: AtomicBool::new(false),
            committed: Notify::new(),
        }
    }

    /// Say whether the owner can see call requests (set from its module's
    /// imports when the process starts, arrives or is restored).
    pub fn set_sees_calls(&self, sees: bool) {
        self.sees_calls.store(sees, Ordering::Relaxed);
    }

    /// Can the owner see call requests? (See [`Mailbox::set_sees_calls`].)
    pub fn sees_calls(&self) -> bool {
        self.sees_calls.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // (every mutation is a single push/pop), so poisoning is ignored.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue a message, or say why not.
    pub fn push(&self, message: Message) -> Result<(), PushError> {
        self.try_push(message).map_err(|(e, _)| e)
    }

    /// [`Mailbox::push`], handing the message back when it is refused.
    pub fn try_push(&self, message: Message) -> Result<(), (PushError, Message)> {
        self.push_inner(message, true)
    }

    /// Queue a message of a restored image (already taken by its inbox
    /// once: not numbered again).
    pub fn push_image(&self, message: Message) -> Result<(), PushError> {
        self.push_inner(message, false).map_err(|(e, _)| e)
    }

    fn push_inner(&self, message: Message, admit: bool) -> Result<(), (PushError, Message)> {
        {
            let mut q = self.lock();
            if q.closed {
                return Err((PushError::Closed, message));
            }
            // Acks and nacks are for the outbox: never queued.
            match message.tag {
                Tag::Ack(seq) => {
                    if let Some(life) = crate::outbox::life_of(&message.data) {
                        q.outbox.ack(message.sender, seq, life);
                    }
                    return Ok(());
                }
                Tag::Nack(expected) => {
                    if let Some(life) = crate::outbox::life_of(&message.data) {
                        if q.outbox.nack(message.sender, expected, life) {
                            self.kick.store(true, Ordering::SeqCst);
                        }
                    }
                    return Ok(());
                }
                _ => {}
            }
            // A numbered message is taken once, in order.
            let admitted = if admit {
                q.inbox.admit(&message)
            } else {
                Admit::Next
            };
            match admitted {
                Admit::Next => {}
                Admit::Duplicate => return Ok(()),
                Admit::Gap => {
                    self.kick.store(true, Ordering::SeqCst);
                    return Ok(());
                }
            }
            // The answer to the call in progress, or a DOWN for a monitor
            // held, takes its reserved slot: never refused for space (both
            // are bounded: one call, `MONITORS_MAX` monitors). A reply or
            // DOWN for anything else is late (the call timed out, the
            // monitor was withdrawn) and is dropped.
            let reserved = match message.tag {
                Tag::Reply(r) => {
                    if !q.is_calling(r) && !q.is_requested(r) {
                        q.inbox.take(&message);
                        return Ok(());
                    }
                    true
                }
                Tag::Down(r) => {
                    if !q.is_calling(r) && !q.is_requested(r) && !q.calls.monitors.contains_key(&r)
                    {
                        return Ok(());
                    }
                    true
                }
                _ => false,
            };
            if !reserved
                && (q.messages.len() >= self.limits.messages_max
                    || q.bytes + message.data.len() > self.limits.bytes_max)
            {
                return Err((PushError::Full, message));
            }
            if admit {
                q.inbox.take(&message);
            }
            q.bytes += message.data.len();
            q.messages.push_back(message);
        }
        self.arrived.notify_one();
        Ok(())
    }

    /// Record a numbered message as taken without queuing it (refused on
    /// the way in, e.g. a call to a process that cannot see calls: its
    /// sender was answered). False if it is not the next one (then it is
    /// dropped as [`Mailbox::try_push`] would).
    pub fn admit_only(&self, message: &Message) -> bool {
        let mut q = self.lock();
        match q.inbox.admit(message) {
            Admit::Next => {
                q.inbox.take(message);
                true
            }
            Admit::Duplicate => false,
            Admit::Gap => {
                self.kick.store(true, Ordering::SeqCst);
                false
            }
        }
    }

    /// Set whether output commit is on (a new process; see
    /// [`crate::outbox`]).
    pub fn set_output_commit(&self, on: bool) {
        self.lock().outbox.output_commit = on;
    }

    /// Is output commit on?
    pub fn output_commit(&self) -> bool {
        self.lock().outbox.output_commit
    }

    /// Does the outbox hold output no recorded checkpoint covers?
    pub fn uncommitted(&self) -> bool {
        self.lock().outbox.uncommitted()
    }

    /// [`Outbox::produce_effect`].
    pub fn produce_effect(&self) -> Option<u64> {
        self.lock().outbox.produce_effect()
    }

    /// [`Outbox::covers`].
    pub fn is_committed(&self, gseq: u64) -> bool {
        self.lock().outbox.covers(gseq)
    }

    /// Resolves once a recorded checkpoint covers output number `gseq`.
    pub async fn committed_to(&self, gseq: u64) {
        loop {
            let notified = self.committed.notified();
            if self.is_committed(gseq) {
                return;
            }
            notified.await;
        }
    }

    /// Wake what waits in [`Mailbox::committed_to`] (after a commit).
    pub fn notify_committed(&self) {
        self.committed.notify_waiters();
    }

    /// Run `f` on the outbox.
    pub fn with_outbox<T>(&self, f: impl FnOnce(&mut Outbox) -> T) -> T {
        f(&mut self.lock().outbox)
    }

    /// The last number its inbox took from each sender.
    pub fn seen(&self) -> BTreeMap<Pid, u64> {
        self.lock().inbox.seen.clone()
    }

    /// The receiver's life (see [`crate::outbox`]).
    pub fn life(&self) -> u64 {
        self.lock().inbox.life
    }

    /// The nacks its inbox owes: (sender, number expected).
    pub fn take_nacks(&self) -> Vec<(Pid, u64)> {
        self.lock().inbox.take_nacks()
    }

    /// The acks a recorded checkpoint that took `seen` owes.
    pub fn acks_for(&self, seen: &BTreeMap<Pid, u64>) -> Vec<(Pid, u64)> {
        self.lock().inbox.acks_for(seen)
    }

    /// Take the kick (see the field): true if there was one.
    pub fn take_kick(&self) -> bool {
        self.kick.swap(false, Ordering::SeqCst)
    }

    /// Ask for a flush by whoever comes next (the router, the tick).
    pub fn set_kick(&self) {
        self.kick.store(true, Ordering::SeqCst);
    }

    /// Take the flush lock if free (see `Router::flush`).
    pub fn try_flushing(&self) -> Option<std::sync::MutexGuard<'_, ()>> {
        match self.flushing.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Take the flush lock, waiting for it.
    pub fn flushing(&self) -> std::sync::MutexGuard<'_, ()> {
        self.flushing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The queued messages and the outbox and inbox, read at one instant
    /// (a capture); with `take`, the messages are taken out and the outbox
    /// frozen (a move: the new copy sends from now on).
    pub fn capture(&self, take: bool) -> (Vec<Message>, Outbox, Inbox) {
        let mut q = self.lock();
        let messages = if take {
            q.bytes = 0;
            q.messages.drain(..).collect()
        } else {
            q.messages.iter().cloned().collect()
        };
        if take {
            q.outbox.frozen = true;
        }
        let captured = (messages, q.outbox.clone(), q.inbox.clone());
        drop(q);
        if take {
            self.space.notify_waiters();
        }
        captured
    }

    /// Give a restored process its outbox and inbox (see
    /// [`Outbox::restored`]).
    pub fn restore_channels(&self, mut outbox: Outbox, mut inbox: Inbox) {
        outbox.restored();
        if inbox.life == 0 {
            // An image from before lives were drawn.
            inbox.life = Inbox::new().life;
        }
        let mut q = self.lock();
        q.outbox = outbox;
        q.inbox = inbox;
        drop(q);
        self.set_kick();
    }

    /// A move was called off: the outbox sends again.
    pub fn thaw(&self) {
        self.lock().outbox.frozen = false;
        self.set_kick();
    }

    /// Queue a message, waiting for space until `deadline` when the mailbox
    /// is full. For messages that arrived from another node: the sender was
    /// already told "sent", so a full mailbox back-pressures the lane it came
    /// on instead of refusing. Returns `Full` if the deadline passes.
    pub async fn push_wait(&self, message: Message, deadline: Instant) -> Result<(), PushError> {
        let deadline = tokio::time::Instant::from_std(deadline);
        let mut message = message;
        loop {
            // Register interest before trying, so a take between the failed
            // push and the wait is not missed.
            let space = self.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            match self.try_push(message) {
                Ok(()) => return Ok(()),
                Err((PushError::Full, m)) => message = m,
                Err((e, _)) => return Err(e),
            }
            if tokio::time::timeout_at(deadline, space).await.is_err() {
                return Err(PushError::Full);
            }
        }
    }

    /// Wait until a message is taken (or the mailbox closes), if it is full
    /// now; return at once if there is room.
    pub async fn wait_space(&self) {
        let space = self.space.notified();
        tokio::pin!(space);
        space.as_mut().enable();
        {
            let q = self.lock();
            if q.closed || q.messages.len() < self.limits.messages_max {
                return;
            }
        }
        space.await
    }

    /// Take the oldest message a receive may see, if it fits in
    /// `buffer_len` bytes; `calls` is true for `recv_any` (which also sees
    /// call requests and DOWN notices), false for `recv` (plain messages
    /// only: what a guest built before calls can recognise).
    pub fn take_visible(&self, buffer_len: usize, calls: bool, bounces: &mut Vec<Bounce>) -> Head {
        let want = if calls { Want::Any } else { Want::Plain };
        self.take_wanted(buffer_len, want, bounces)
    }

    /// Take the oldest entry `want` selects, if it fits in `buffer_len`
    /// bytes.
    ///
    /// On the way it applies what the guest never sees: monitors and
    /// demonitors of this process are recorded, late replies and DOWNs
    /// dropped, call requests refused when the owner cannot see calls.
    /// Entries it may not take stay queued in order (the call in
    /// progress's answer, requests' answers, and whatever `want` leaves
    /// out). A call request taken is recorded as served and handed out
    /// tagged with its reply handle instead of the caller's reference; a
    /// request's answer taken ends the request. Refusals the owner must
    /// send are appended to `bounces`.
    pub fn take_wanted(&self, buffer_len: usize, want: Want, bounces: &mut Vec<Bounce>) -> Head {
        let sees_calls = self.sees_calls();
        let mut q = self.lock();
        let mut i = 0;
        let head = loop {
            let Some(m) = q.messages.get(i) else {
                break Head::Empty;
            };
            let (tag, sender, len) = (m.tag, m.sender, m.data.len());
            // What `recv_any` sees (`any`); a request's answer is for
            // `recv_match` alone.
            let (any, answer_to) = match tag {
                Tag::Plain => (true, None),
                Tag::Call(r) if !sees_calls => {
                    // Only a process arriving or restored with it queued
                    // gets here (the router refuses it on the way in).
                    remove_at(&mut q, i);
                    bounces.push(Bounce {
                        to: sender,
                        tag: Tag::Down(r),
                        data: crate::calls::DownReason::NotCallable.encode(),
                    });
                    continue;
                }
                Tag::Call(_) => (true, None),
                Tag::Down(r) | Tag::Reply(r) if q.is_calling(r) => (false, None),
                Tag::Down(r) | Tag::Reply(r) if q.is_requested(r) => (false, Some(r)),
                Tag::Down(r) if q.calls.monitors.contains_key(&r) => (true, None),
                Tag::Reply(_) | Tag::Down(_) => {
                    // Late: nobody waits for it any more.
                    remove_at(&mut q, i);
                    continue;
                }
                Tag::Monitor(r) => {
                    remove_at(&mut q, i);
                    if q.calls.watchers.len() >= shoal_abi::calls::WATCHERS_MAX {
                        bounces.push(Bounce {
                            to: sender,
                            tag: Tag::Down(r),
                            data: crate::calls::DownReason::Overloaded.encode(),
                        });
                    } else {
                        q.calls.watchers.insert((sender, r));
                    }
                    continue;
                }
                Tag::Demonitor(r) => {
                    remove_at(&mut q, i);
                    q.calls.watchers.remove(&(sender, r));
                    continue;
                }
                Tag::Ack(_) | Tag::Nack(_) => {
                    // Never queued (taken on the way in); never shown.
                    remove_at(&mut q, i);
                    continue;
                }
            };
            let visible = match want {
                Want::Plain => tag.is_plain(),
                Want::Any => any,
                Want::From(p) => any && sender == p,
                Want::Answer(r) => answer_to == Some(r),
            };
            if !visible {
                i += 1;
                continue;
            }
            if len > buffer_len {
                break Head::TooBig { sender, len };
            }
            let mut m = remove_at(&mut q, i);
            match m.tag {
                Tag::Call(r) => {
                    if q.calls.serving.len() >= shoal_abi::calls::SERVING_MAX {
                        bounces.push(Bounce {
                            to: m.sender,
                            tag: Tag::Down(r),
                            data: crate::calls::DownReason::Overloaded.encode(),
                        });
                        continue;
                    }
                    q.calls.last_handle += 1;
                    let handle = q.calls.last_handle;
                    q.calls.serving.insert(handle, (m.sender, r));
                    m.tag = Tag::Call(handle);
                }
                Tag::Down(r) | Tag::Reply(r) if answer_to == Some(r) => {
                    q.calls.requests.remove(&r);
                }
                Tag::Down(r) => {
                    q.calls.monitors.remove(&r);
                }
                _ => {}
            }
            break Head::Taken(m);
        };
        let taken = matches!(head, Head::Taken(_));
        drop(q);
        if taken {
            self.space.notify_waiters();
        }
        head
    }

    /// Take the answer (a reply or a DOWN) to call `reference`, if it came,
    /// leaving everything else queued in order.
    pub fn take_answer(&self, reference: u64) -> Option<Message> {
        let mut q = self.lock();
        let i = q
            .messages
            .iter()
            .position(|m| matches!(m.tag, Tag::Reply(r) | Tag::Down(r) if r == reference))?;
        let m = remove_at(&mut q, i);
        drop(q);
        self.space.notify_waiters();
        Some(m)
    }

    /// Start a call to `target`: its reference, now the call in progress.
    pub fn begin_call(&self, target: Pid) -> u64 {
        let mut q = self.lock();
        q.calls.last_ref += 1;
        let reference = q.calls.last_ref;
        q.calls.calling = Some(Calling { reference, target });
        reference
    }

    /// Record a request (`send_request`) to `target`: its reference, or
    /// `None` at [`shoal_abi::calls::REQUESTS_MAX`].
    pub fn begin_request(&self, target: Pid) -> Option<u64> {
        let mut q = self.lock();
        if q.calls.requests.len() >= shoal_abi::calls::REQUESTS_MAX {
            return None;
        }
        q.calls.last_ref += 1;
        let reference = q.calls.last_ref;
        q.calls.requests.insert(reference, target);
        Some(reference)
    }

    /// Is `reference` a request still waiting for its answer?
    pub fn has_request(&self, reference: u64) -> bool {
        self.lock().is_requested(reference)
    }

    /// Withdraw request `reference` and drop its answer if queued: the
    /// callee, or `None` if no such request waits.
    pub fn end_request(&self, reference: u64) -> Option<Pid> {
        let mut q = self.lock();
        let target = q.calls.requests.remove(&reference)?;
        q.messages
            .retain(|m| !matches!(m.tag, Tag::Reply(r) | Tag::Down(r) if r == reference));
        q.bytes = q.messages.iter().map(|m| m.data.len()).sum();
        Some(target)
    }

    /// The call in progress, if any.
    pub fn current_call(&self) -> Option<Calling> {
        self.lock().calls.calling
    }

    /// The call in progress ended (answered, timed out, failed): later
    /// answers to it are dropped.
    pub fn end_call(&self) {
        let mut q = self.lock();
        if let Some(c) = q.calls.calling.take() {
            q.messages
                .retain(|m| !matches!(m.tag, Tag::Reply(r) | Tag::Down(r) if r == c.reference));
            q.bytes = q.messages.iter().map(|m| m.data.len()).sum();
        }
    }

    /// Record a monitor of `target`: its reference, or `None` at
    /// [`shoal_abi::calls::MONITORS_MAX`].
    pub fn add_monitor(&self, target: Pid) -> Option<u64> {
        let mut q = self.lock();
        if q.calls.monitors.len() >= shoal_abi::calls::MONITORS_MAX {
            return None;
        }
        q.calls.last_ref += 1;
        let reference = q.calls.last_ref;
        q.calls.monitors.insert(reference, target);
        Some(reference)
    }

    /// Withdraw monitor `reference` (and any DOWN of it still queued): the
    /// pid it watched, or `None` if it was not held.
    pub fn remove_monitor(&self, reference: u64) -> Option<Pid> {
        let mut q = self.lock();
        let target = q.calls.monitors.remove(&reference)?;
        q.messages
            .retain(|m| !matches!(m.tag, Tag::Down(r) if r == reference));
        q.bytes = q.messages.iter().map(|m| m.data.len()).sum();
        Some(target)
    }

    /// Stop serving call `handle`: its (caller, reference), or `None` if
    /// no such call is being served (already answered, or never given).
    pub fn take_serving(&self, handle: u64) -> Option<(Pid, u64)> {
        self.lock().calls.serving.remove(&handle)
    }

    /// Serve call `handle` again (its reply could not be sent: retry).
    pub fn put_back_serving(&self, handle: u64, caller: Pid, reference: u64) {
        self.lock()
            .calls
            .serving
            .insert(handle, (caller, reference));
    }

    /// A copy of the calls and monitors (for an image).
    pub fn calls(&self) -> CallState {
        self.lock().calls.clone()
    }

    /// Install the calls and monitors of a restored or arriving process
    /// (before its messages are queued).
    pub fn restore_calls(&self, calls: CallState) {
        self.lock().calls = calls;
    }

    /// Queue a DOWN with `data` from each pid `gone` says is gone, for the
    /// call in progress and each monitor watching one (a node declared
    /// dead: see [`crate::calls::node_down`]). Returns how many.
    pub fn down_targets(&self, gone: &dyn Fn(Pid) -> bool, data: &[u8]) -> usize {
        let mut q = self.lock();
        if q.closed {
            return 0;
        }
        let mut downs: Vec<(u64, Pid)> = q
            .calls
            .monitors
            .iter()
            .filter(|(_, p)| gone(**p))
            .map(|(r, p)| (*r, *p))
            .collect();
        if let Some(c) = q.calls.calling.filter(|c| gone(c.target)) {
            downs.push((c.reference, c.target));
        }
        downs.extend(
            q.calls
                .requests
                .iter()
                .filter(|(_, p)| gone(**p))
                .map(|(r, p)| (*r, *p)),
        );
        // Once per reference: the same death can be applied here twice (a
        // process that arrived while it was), and one DOWN is its answer.
        if !downs.is_empty() {
            let queued: BTreeSet<u64> = q
                .messages
                .iter()
                .filter_map(|m| match m.tag {
                    Tag::Down(r) => Some(r),
                    _ => None,
                })
                .collect();
            downs.retain(|(r, _)| !queued.contains(r));
        }
        for (r, p) in &downs {
            q.bytes += data.len();
            q.messages.push_back(Message {
                seq: 0,
                life: 0,
                sender: *p,
                data: data.to_vec(),
                tag: Tag::Down(*r),
            });
        }
        drop(q);
        if !downs.is_empty() {
            self.arrived.notify_one();
        }
        downs.len()
    }

    /// How many watchers this process has, counting monitor requests still
    /// queued (and withdrawals still queued): the number that would be owed
    /// a DOWN if it ended now.
    pub fn watcher_count(&self) -> usize {
        let q = self.lock();
        let mut watchers = q.calls.watchers.clone();
        for m in &q.messages {
            match m.tag {
                Tag::Monitor(r) => {
                    watchers.insert((m.sender, r));
                }
                Tag::Demonitor(r) => {
                    watchers.remove(&(m.sender, r));
                }
                _ => {}
            }
        }
        watchers.len()
    }

    /// Close for good (the owner ended) and say whom it owes a DOWN: its
    /// watchers (monitors still queued included), the callers of the calls
    /// it received and did not answer, and its own monitors to withdraw.
    pub fn close_for_exit(&self) -> ExitNotices {
        let mut q = self.lock();
        q.closed = true;
        let mut notices = ExitNotices::default();
        let mut watchers = std::mem::take(&mut q.calls.watchers);
        for m in q.messages.drain(..) {
            match m.tag {
                Tag::Monitor(r) => {
                    watchers.insert((m.sender, r));
                }
                Tag::Demonitor(r) => {
                    watchers.remove(&(m.sender, r));
                }
                Tag::Call(r) => notices.callers.push((m.sender, r)),
                _ => {}
            }
        }
        q.bytes = 0;
        notices.watchers = watchers.into_iter().collect();
        notices
            .callers
            .extend(std::mem::take(&mut q.calls.serving).into_values());
        notices.monitors = std::mem::take(&mut q.calls.monitors).into_iter().collect();
        drop(q);
        self.space.notify_waiters();
        notices
    }

    /// Wait until a message arrives (or `deadline` passes: `false`). May
    /// return early; the owner looks again. For receives that skip what
    /// they may not see, where "non-empty" is not "something to take".
    pub async fn wait_arrival(&self, deadline: Option<Instant>) -> bool {
        let notified = self.arrived.notified();
        match deadline {
            None => {
                notified.await;
                true
            }
            Some(d) => {
                let d = tokio::time::Instant::from_std(d);
                tokio::time::timeout_at(d, notified).await.is_ok()
            }
        }
    }

    /// Take the oldest message if it fits in `buffer_len` bytes.
    pub fn take_if_fits(&self, buffer_len: usize) -> Head {
        let mut q = self.lock();
        match q.messages.front() {
            None => Head::Empty,
            Some(m) if m.data.len() > buffer_len => Head::TooBig {
                sender: m.sender,
                len: m.data.len(),
            },
            Some(_) => {
                let m = q.messages.pop_front().expect("front exists");
                q.bytes -= m.data.len();
                drop(q);
                self.space.notify_waiters();
                Head::Taken(m)
            }
        }
    }

    /// Wait until the queue is non-empty or `deadline` passes. Returns
    /// `false` on timeout. Only the mailbox's owner calls this.
    pub async fn wait_nonempty(&self, deadline: Option<Instant>) -> bool {
        loop {
            if !self.lock().messages.is_empty() {
                return true;
            }
            let notified = self.arrived.notified();
            match deadline {
                None => notified.await,
                Some(d) => {
                    let d = tokio::time::Instant::from_std(d);
                    if tokio::time::timeout_at(d, notified).await.is_err() {
                        return !self.lock().messages.is_empty();
                    }
                }
            }
        }
    }

    /// Refuse further messages (the owner exited) and drop what is queued.
    pub fn close(&self) {
        let mut q = self.lock();
        q.closed = true;
        q.messages.clear();
        q.bytes = 0;
        drop(q);
        self.space.notify_waiters();
    }

    /// Number of queued messages.
    pub fn len(&self) -> usize {
        self.lock().messages.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of the queued messages, oldest first (for inspection; a
    /// capture reads them with its channels: [`Mailbox::capture`]).
    pub fn queued(&self) -> Vec<Message> {
        self.lock().messages.iter().cloned().collect()
    }

    /// Put `messages` back in front of the queue, in their order, ignoring
    /// the bounds (they were queued here before: a migration that is called
    /// off hands its captured messages back). Refused if the mailbox closed.
    pub fn push_front_all(&self, messages: Vec<Message>) -> Result<(), PushError> {
        let mut q = self.lock();
        if q.closed {
            return Err(PushError::Closed);
        }
        for m in messages.into_iter().rev() {
            q.bytes += m.data.len();
            q.messages.push_front(m);
        }
        drop(q);
        self.arrived.notify_one();
        Ok(())
    }

    /// Append `messages` in order, ignoring the bounds (they were counted
    /// against another bound already: see [`super::handoff`]). Refused if
    /// the mailbox closed.
    pub fn append_all(&self, messages: Vec<Message>) -> Result<(), PushError> {
        let mut q = self.lock();
        if q.closed {
            return Err(PushError::Closed);
        }
        for m in messages {
            q.bytes += m.data.len();
            q.messages.push_back(m);
        }
        drop(q);
        self.arrived.notify_one();
        Ok(())
    }

    /// Put one message back at the head (a forwarder that took it and could
    /// not pass it on yet).
    pub fn unshift(&self, message: Message) -> Result<(), PushError> {
        self.push_front_all(vec![message])
    }

    /// Drop queued messages for which `keep` is false.
    pub fn retain(&self, keep: impl Fn(&Message) -> bool) {
        let mut q = self.lock();
        q.messages.retain(|m| keep(m));
        q.bytes = q.messages.iter().map(|m| m.data.len()).sum();
    }

    /// Close the mailbox only if nothing is queued; true if it closed.
    /// (A forwarder's last step: nothing can slip in between the check
    /// and the close.)
    pub fn close_if_empty(&self) -> bool {
        let mut q = self.lock();
        if !q.messages.is_empty() {
            return false;
        }
        q.closed = true;
        drop(q);
        self.space.notify_waiters();
        true
    }

    /// True once [`Mailbox::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

/// Remove the entry at `i` (it exists), keeping the byte count.
fn remove_at(q: &mut Queue, i: usize) -> Message {
    let m = q.messages.remove(i).expect("index checked by the caller");
    q.bytes -= m.data.len();
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn msg(n: u8) -> Message {
        Message::plain(Pid(1), vec![n; n as usize])
    }

    #[tokio::test]
    async fn push_wait_waits_for_space_then_times_out() {
        let mb = Arc::new(Mailbox::new(MailboxLimits {
            messages_max: 1,
            bytes_max: 1 << 20,
        }));
        mb.push(msg(1)).unwrap();
        // Full: a waiting push completes once the receiver takes one.
        let waiter = {
            let mb = mb.clone();
            tokio::spawn(async move {
                mb.push_wait(msg(2), Instant::now() + std::time::Duration::from_secs(30))
                    .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(mb.take_if_fits(100), Head::Taken(msg(1)));
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert_eq!(mb.len(), 1);
        // Still full and nobody takes: the deadline ends the wait.
        let r = mb
            .push_wait(
                msg(3),
                Instant::now() + std::time::Duration::from_millis(30),
            )
            .await;
        assert_eq!(r, Err(PushError::Full));
        // Closing wakes a waiter with Closed.
        let waiter = {
            let mb = mb.clone();
            tokio::spawn(async move {
                mb.push_wait(msg(4), Instant::now() + std::time::Duration::from_secs(30))
                    .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        mb.close();
        assert_eq!(waiter.await.unwrap(), Err(PushError::Closed));
    }

    #[test]
    fn fifo_and_bounds() {
        let mb = Mailbox::new(MailboxLimits {
            messages_max: 2,
            bytes_max: 100,
        });
        mb.push(msg(1)).unwrap();
        mb.push(msg(2)).unwrap();
        assert_eq!(mb.push(msg(3)), Err(PushError::Full));
        assert_eq!(mb.take_if_fits(1), Head::Taken(msg(1)));
        assert_eq!(
            mb.take_if_fits(1),
            Head::TooBig {
                sender: Pid(1),
                len: 2
            }
        );
        assert_eq!(mb.take_if_fits(2), Head::Taken(msg(2)));
        assert_eq!(mb.take_if_fits(2), Head::Empty);
        mb.close();
        assert_eq!(mb.push(msg(1)), Err(PushError::Closed));
    }

    #[test]
    fn byte_bound() {
        let mb = Mailbox::new(MailboxLimits {
            messages_max: 10,
            bytes_max: 3,
        });
        mb.push(msg(3)).unwrap();
        assert_eq!(mb.push(msg(1)), Err(PushError::Full));
    }

    #[tokio::test]
    async fn wait_times_out_then_wakes() {
        let mb = std::sync::Arc::new(Mailbox::new(MailboxLimits::default()));
        let start = Instant::now();
        assert!(
            !mb.wait_nonempty(Some(start + std::time::Duration::from_millis(20)))
                .await
        );
        let mb2 = mb.clone();
        let h = tokio::spawn(async move { mb2.wait_nonempty(None).await });
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        mb.push(msg(1)).unwrap();
        assert!(h.await.unwrap());
    }
}
