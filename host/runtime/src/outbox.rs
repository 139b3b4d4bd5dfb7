//! Exactly-once messages across the death of a node (issue #16): numbered
//! channels, output commit and sender retention.
//!
//! A process that may resume from a checkpoint (`--restart on-failure|always`,
//! *protected*) re-executes after a failover from the state its last
//! recorded checkpoint holds. Re-execution is not a replay (clocks,
//! randomness and arrival order differ), so:
//!
//! - **Output commit** (as Remus does for virtual machines). What a
//!   protected process sends (plain messages, call requests, replies) waits
//!   in its [`Outbox`] until a checkpoint that covers the send is recorded
//!   in Raft ([`Outbox::commit`]); only then is it released. Nobody ever
//!   acts on a message the resumed history did not produce. The outbox is
//!   in the checkpoint, so what was covered but not yet released when the
//!   node died is released by the resumed copy.
//! - **Sender retention.** A message to a protected receiver is kept by its
//!   sender (whatever its own policy) until a recorded checkpoint of the
//!   receiver covers its receipt: the receiver's node then sends an
//!   [`crate::mailbox::Tag::Ack`]. A receiver resumed from an older state
//!   asks for what it lacks ([`crate::mailbox::Tag::Nack`]) and its senders
//!   send it again.
//! - **Numbered channels.** Every message on a channel (one sender, one
//!   receiver) that either rule covers carries a sequence number, 1, 2, 3…
//!   The receiver's [`Inbox`] takes exactly the next one: an older one is a
//!   duplicate and is dropped; a newer one means some were lost (a
//!   failover, a message dropped on the way) and is dropped too, with a
//!   `Nack` naming the one expected. So each message is taken exactly once,
//!   in order, relative to the state the receiver resumed with.
//!
//! A receiver's `life` is a random number drawn when its process is first
//! created and kept across moves and resumes: a `Nack` from another life
//! (the receiver restarted fresh) renumbers what the sender still holds
//! from the number the new life expects, while a stale `Nack` of the same
//! life is ignored.
//!
//! Everything here is bounded: [`OUTBOX_MESSAGES_MAX`] and
//! [`OUTBOX_BYTES_MAX`] per sender (beyond them a send answers
//! `MAILBOX_FULL`: back-pressure), [`SEEN_SENDERS_MAX`] senders remembered
//! per receiver.

use crate::mailbox::{Message, Tag};
use crate::pid::Pid;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Most messages one process's outbox holds (unreleased and retained).
pub const OUTBOX_MESSAGES_MAX: usize = 4096;
/// Most payload bytes one process's outbox holds.
pub const OUTBOX_BYTES_MAX: usize = 8 << 20;
/// Most senders a receiver remembers the last number of. Past it the
/// smallest pid is forgotten (a later message from it then looks like a
/// gap and is asked again from number 1, which its sender no longer has:
/// a channel that quiet for that long is documented as not covered).
pub const SEEN_SENDERS_MAX: usize = 65_536;
/// A receiver asks again for the same missing number at most this often.
pub const NACK_REPEAT: Duration = Duration::from_secs(1);
/// A sender sends again what a protected receiver has not acknowledged
/// after this long without progress (a lost `Nack`).
pub const RETRANSMIT_AFTER: Duration = Duration::from_secs(2);

/// Is a message of this kind numbered (when its channel is covered)? Plain
/// messages, call requests and replies: what a guest sends. DOWNs and
/// monitors stay as they are.
pub fn is_numbered(tag: &Tag) -> bool {
    matches!(tag, Tag::Plain | Tag::Call(_) | Tag::Reply(_))
}

/// One message in an outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its number on its channel.
    pub seq: u64,
    /// Its number among everything its sender produced (what a checkpoint
    /// covers: [`Outbox::commit`]).
    pub gseq: u64,
    /// The message (its `seq` is set when it is released).
    pub message: Message,
}

/// One sender's channel to one receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    /// The number the next new message gets.
    pub next_seq: u64,
    /// The receiver's checkpoints cover everything up to here.
    pub acked: u64,
    /// Sent up to here (reset to resend).
    pub sent: u64,
    /// Keep what was sent until it is acknowledged (the receiver is
    /// protected).
    pub retain: bool,
    /// The receiver's life, from its acks and nacks.
    pub life: Option<u64>,
    /// Unreleased, unsent or unacknowledged messages, numbers ascending and
    /// contiguous.
    pub entries: VecDeque<Entry>,
    /// When it last made progress (an ack, or a resend).
    #[serde(skip)]
    pub progress_at: Option<Instant>,
}

impl Default for Channel {
    fn default() -> Self {
        Channel {
            next_seq: 1,
            acked: 0,
            sent: 0,
            retain: false,
            life: None,
            entries: VecDeque::new(),
            progress_at: None,
        }
    }
}

impl Channel {
    /// Send everything held again.
    fn rewind(&mut self) {
        self.sent = self
            .entries
            .front()
            .map_or(self.next_seq - 1, |e| e.seq - 1);
    }

    /// Number what is held from `first` on (the receiver's new life
    /// expects it).
    fn renumber(&mut self, first: u64) {
        for (i, e) in self.entries.iter_mut().enumerate() {
            e.seq = first + i as u64;
        }
        self.next_seq = first + self.entries.len() as u64;
        self.acked = first - 1;
        self.sent = first - 1;
    }

    /// Drop what is acknowledged (or, unretained, what was sent).
    fn trim(&mut self) -> (usize, usize) {
        let upto = if self.retain { self.acked } else { self.sent };
        let (mut n, mut bytes) = (0, 0);
        while self.entries.front().is_some_and(|e| e.seq <= upto) {
            if let Some(e) = self.entries.pop_front() {
                n += 1;
                bytes += e.message.data.len();
            }
        }
        (n, bytes)
    }
}

/// Why a message was not put in an outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxFull;

/// A process's outgoing numbered channels (see the module docs). Plain
/// data: captured into its image and restored with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbox {
    /// Output commit is on: nothing is released before a recorded
    /// checkpoint covers it.
    pub output_commit: bool,
    /// Channels by receiver.
    pub channels: BTreeMap<Pid, Channel>,
    /// Messages produced so far (the last `gseq`).
    pub produced: u64,
    /// A recorded checkpoint covers everything produced up to here.
    pub committed: u64,
    /// Held by the old copy of a process that is moving: it sends nothing.
    #[serde(skip)]
    pub frozen: bool,
}

/// How an image's channels (hostile data) break their bounds or
/// invariants ([`Outbox::check`], [`Inbox::check`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// More held than an outbox may hold.
    #[error("an outbox of {messages} messages, {bytes} bytes")]
    OutboxTooLarge {
        /// Messages held.
        messages: usize,
        /// Their payload bytes.
        bytes: usize,
    },
    /// More output committed than produced.
    #[error("more committed than produced")]
    CommittedPastProduced,
    /// A channel's counters disagree (next, acknowledged, sent).
    #[error("channel to {to}: numbers out of order")]
    CountersOutOfOrder {
        /// The receiver.
        to: Pid,
    },
    /// A channel's messages are not numbered one after another.
    #[error("channel to {to}: message numbers out of order")]
    MessagesOutOfOrder {
        /// The receiver.
        to: Pid,
    },
    /// A channel holds a message a guest does not send.
    #[error("channel to {to}: a control message")]
    ControlMessage {
        /// The receiver.
        to: Pid,
    },
    /// A channel's messages stop short of its next number.
    #[error("channel to {to}: a gap before its next number")]
    Gap {
        /// The receiver.
        to: Pid,
    },
    /// An inbox remembers more senders than it may.
    #[error("{senders} senders remembered")]
    TooManySenders {
        /// How many.
        senders: usize,
    },
}

impl Outbox {
    /// An outbox for a new process.
    pub fn new(output_commit: bool) -> Outbox {
        Outbox {
            output_commit,
            ..Outbox::default()
        }
    }

    /// Check what an image (hostile data) says: within the bounds, every
    /// channel's numbers ascending and contiguous below its next one, and
    /// only what a guest sends (plain, calls, replies).
    pub fn check(&self) -> Result<(), ChannelError> {
        let (messages, bytes) = self.held();
        if messages > OUTBOX_MESSAGES_MAX || bytes > OUTBOX_BYTES_MAX {
            return Err(ChannelError::OutboxTooLarge { messages, bytes });
        }
        if self.committed > self.produced {
            return Err(ChannelError::CommittedPastProduced);
        }
        for (to, c) in &self.channels {
            let to = *to;
            if c.next_seq == 0 || c.acked >= c.next_seq || c.sent >= c.next_seq {
                return Err(ChannelError::CountersOutOfOrder { to });
            }
            let first = c.entries.front().map_or(c.next_seq, |e| e.seq);
            for (i, e) in c.entries.iter().enumerate() {
                if e.seq == 0 || e.seq != first + i as u64 || e.gseq > self.produced {
                    return Err(ChannelError::MessagesOutOfOrder { to });
                }
                if !is_numbered(&e.message.tag) {
                    return Err(ChannelError::ControlMessage { to });
                }
            }
            if first + c.entries.len() as u64 != c.next_seq {
                return Err(ChannelError::Gap { to });
            }
        }
        Ok(())
    }

    /// Messages and payload bytes held.
    pub fn held(&self) -> (usize, usize) {
        self.channels.values().fold((0, 0), |(n, b), c| {
            (
                n + c.entries.len(),
                b + c
                    .entries
                    .iter()
                    .map(|e| e.message.data.len())
                    .sum::<usize>(),
            )
        })
    }

    /// Is anything produced that no recorded checkpoint covers?
    pub fn uncommitted(&self) -> bool {
        self.output_commit && self.produced > self.committed
    }

    /// The last `gseq` a checkpoint taken now covers.
    pub fn produced(&self) -> u64 {
        self.produced
    }

    /// Number an effect (a key-value write: [`crate::abi::effect`]) among
    /// what this process produced, so that it waits for a recorded
    /// checkpoint like a message. `None` when output commit is off.
    pub fn produce_effect(&mut self) -> Option<u64> {
        if !self.output_commit {
            return None;
        }
        self.produced += 1;
        Some(self.produced)
    }

    /// Does a recorded checkpoint cover output number `gseq` (always, when
    /// output commit is off)?
    pub fn covers(&self, gseq: u64) -> bool {
        !self.output_commit || self.committed >= gseq
    }

    /// Hold `message` for `to`; with `sent`, it is being sent right now (a
    /// sender without output commit). Returns its number.
    pub fn push(
        &mut self,
        to: Pid,
        message: Message,
        retain: bool,
        sent: bool,
    ) -> Result<u64, OutboxFull> {
        let (n, bytes) = self.held();
        if n >= OUTBOX_MESSAGES_MAX || bytes + message.data.len() > OUTBOX_BYTES_MAX {
            return Err(OutboxFull);
        }
        self.produced += 1;
        let gseq = self.produced;
        if !self.output_commit {
            self.committed = gseq;
        }
        let channel = self.channels.entry(to).or_default();
        channel.retain |= retain;
        let seq = channel.next_seq;
        channel.next_seq += 1;
        if sent {
            debug_assert_eq!(channel.sent, seq - 1, "a direct send behind a backlog");
            channel.sent = seq;
        }
        if sent && !channel.retain {
            return Ok(seq);
        }
        if channel.progress_at.is_none() {
            channel.progress_at = Some(Instant::now());
        }
        channel.entries.push_back(Entry { seq, gseq, message });
        Ok(seq)
    }

    /// Does `to`'s channel hold anything not yet sent?
    pub fn backlog(&self, to: Pid) -> bool {
        self.channels
            .get(&to)
            .is_some_and(|c| c.sent + 1 < c.next_seq)
    }

    /// Take back message `seq` to `to` that could not be sent right now
    /// (pushed with `sent`): if nothing came after it, it is as if it was
    /// never sent. Returns false if it could not be taken back (a resend
    /// renumbered the channel meanwhile: it stays, and goes later).
    pub fn unsend(&mut self, to: Pid, seq: u64) -> bool {
        let Some(c) = self.channels.get_mut(&to) else {
            return true;
        };
        if c.next_seq != seq + 1 || c.sent != seq {
            return false;
        }
        if c.entries.back().is_some_and(|e| e.seq == seq) {
            c.entries.pop_back();
        }
        c.next_seq = seq;
        c.sent = seq - 1;
        if c.entries.is_empty() && c.next_seq == 1 {
            self.channels.remove(&to);
        }
        true
    }

    /// What may be sent now, in order per channel: released (committed)
    /// and not yet sent; at most `limit`. Each message carries its number.
    pub fn ready(&self, limit: usize) -> Vec<(Pid, Message)> {
        if self.frozen {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (to, c) in &self.channels {
            for e in c.entries.iter().filter(|e| e.seq > c.sent) {
                if e.gseq > self.committed || out.len() >= limit {
                    break;
                }
                let mut m = e.message.clone();
                m.seq = e.seq;
                out.push((*to, m));
            }
        }
        out
    }

    /// Message `seq` to `to` was sent.
    pub fn sent(&mut self, to: Pid, seq: u64) {
        if let Some(c) = self.channels.get_mut(&to) {
            c.sent = c.sent.max(seq);
            c.trim();
        }
    }

    /// `to` is nowhere: forget its channel. Returns what it held, unsent.
    pub fn gone(&mut self, to: Pid) -> Vec<Message> {
        self.channels
            .remove(&to)
            .map(|c| {
                c.entries
                    .into_iter()
                    .filter(|e| e.seq > c.sent)
                    .map(|e| e.message)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A recorded checkpoint covers everything produced up to `gseq`.
    pub fn commit(&mut self, gseq: u64) {
        self.committed = self.committed.max(gseq.min(self.produced));
    }

    /// Receiver `from` (of `life`) has everything up to `seq` in a recorded
    /// checkpoint.
    pub fn ack(&mut self, from: Pid, seq: u64, life: u64) {
        let Some(c) = self.channels.get_mut(&from) else {
            return;
        };
        if c.life.is_some_and(|l| l != life) {
            // From another life: a later nack settles which is current.
            return;
        }
        c.life = Some(life);
        if seq > c.acked && seq < c.next_seq {
            c.acked = seq;
            c.sent = c.sent.max(seq);
            c.progress_at = Some(Instant::now());
            c.trim();
        }
    }

    /// Receiver `from` (of `life`) expects number `expected` next. Returns
    /// true if something must be sent again.
    pub fn nack(&mut self, from: Pid, expected: u64, life: u64) -> bool {
        let Some(c) = self.channels.get_mut(&from) else {
            return false;
        };
        if expected == 0 {
            return false;
        }
        let first = c.entries.front().map_or(c.next_seq, |e| e.seq);
        let new_life = c.life.is_some_and(|l| l != life);
        c.life = Some(life);
        if new_life {
            // Restarted fresh: it expects numbers it never saw.
            c.renumber(expected);
        } else if expected <= c.acked || expected >= c.next_seq {
            // Stale (already acknowledged, or nothing that far yet).
            return false;
        } else if expected < first {
            // Sent without being kept (an unprotected receiver) and lost
            // on the way: what is held goes on from the number expected.
            c.renumber(expected);
        } else {
            c.sent = c.sent.min(expected - 1);
        }
        c.progress_at = Some(Instant::now());
        true
    }

    /// Send again, on channels to protected receivers, what has waited
    /// [`RETRANSMIT_AFTER`] without an acknowledgement. True if any.
    pub fn resend_stale(&mut self, now: Instant) -> bool {
        let mut any = false;
        for c in self.channels.values_mut() {
            let waiting = c.retain && c.sent > c.acked;
            let stale = c
                .progress_at
                .is_some_and(|at| now.saturating_duration_since(at) >= RETRANSMIT_AFTER);
            if waiting && stale {
                c.sent = c.acked;
                c.progress_at = Some(now);
                any = true;
            }
        }
        any
    }

    /// After a restore (a move, a resume): send everything held again (the
    /// receivers drop what they had). What it may release is as the image
    /// says: a resume from a recorded checkpoint commits the image's output
    /// before it restores (`Node::resume_checkpoint`).
    pub fn restored(&mut self) {
        self.frozen = false;
        for c in self.channels.values_mut() {
            c.rewind();
            c.progress_at = None;
        }
    }
}

/// What a receiver does with a numbered message ([`Inbox::admit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// The next one: take it ([`Inbox::take`] then records it).
    Next,
    /// Taken before: drop it.
    Duplicate,
    /// Some before it are missing: drop it (a `Nack` asks for them).
    Gap,
}

/// A process's incoming side: the last number taken from each sender.
/// Captured into its image with its queued messages, atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inbox {
    /// Drawn when the process was first created (see the module docs).
    pub life: u64,
    /// Sender → the last number taken.
    pub seen: BTreeMap<Pid, u64>,
    /// Sender → its life when it sent that: a message of another life is
    /// from a sender that started afresh under the same pid (a restart),
    /// whose numbers start again at 1.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lives: BTreeMap<Pid, u64>,
    /// Sender → (number asked for, when): asks are not repeated more often
    /// than [`NACK_REPEAT`].
    #[serde(skip)]
    nacked: BTreeMap<Pid, (u64, Instant)>,
    /// Nacks to send: (sender, number expected).
    #[serde(skip)]
    nacks_out: Vec<(Pid, u64)>,
    /// What the last acknowledgements said, per sender.
    #[serde(skip)]
    acked_out: BTreeMap<Pid, u64>,
}

impl Inbox {
    /// Check what an image (hostile data) says: within the bounds.
    pub fn check(&self) -> Result<(), ChannelError> {
        if self.seen.len() > SEEN_SENDERS_MAX || self.lives.len() > SEEN_SENDERS_MAX {
            return Err(ChannelError::TooManySenders {
                senders: self.seen.len().max(self.lives.len()),
            });
        }
        Ok(())
    }

    /// The inbox of a process created now.
    pub fn new() -> Inbox {
        Inbox {
            life: fresh_life(),
            ..Inbox::default()
        }
    }

    /// What to do with `message` (numbered: `seq > 0`). A gap queues a
    /// `Nack` ([`Inbox::take_nacks`]).
    pub fn admit(&mut self, message: &Message) -> Admit {
        if message.seq == 0 || !is_numbered(&message.tag) {
            return Admit::Next;
        }
        let seen = self.last_from(message);
        if message.seq <= seen {
            return Admit::Duplicate;
        }
        if message.seq == seen + 1 {
            return Admit::Next;
        }
        let expected = seen + 1;
        let now = Instant::now();
        let repeat = self
            .nacked
            .get(&message.sender)
            .is_none_or(|(e, at)| *e != expected || now.duration_since(*at) >= NACK_REPEAT);
        if repeat && self.nacked.len() < SEEN_SENDERS_MAX {
            self.nacked.insert(message.sender, (expected, now));
            self.nacks_out.push((message.sender, expected));
        }
        Admit::Gap
    }

    /// The last number taken from `message`'s sender in its life (0: none
    /// yet, or the sender started afresh).
    fn last_from(&self, message: &Message) -> u64 {
        let afresh = message.life != 0
            && self
                .lives
                .get(&message.sender)
                .is_some_and(|l| *l != message.life);
        if afresh {
            0
        } else {
            self.seen.get(&message.sender).copied().unwrap_or(0)
        }
    }

    /// Record that `message`, admitted as [`Admit::Next`], was taken.
    pub fn take(&mut self, message: &Message) {
        if message.seq == 0 || !is_numbered(&message.tag) {
            return;
        }
        if !self.seen.contains_key(&message.sender) && self.seen.len() >= SEEN_SENDERS_MAX {
            if let Some((&oldest, _)) = self.seen.iter().next() {
                self.seen.remove(&oldest);
                self.lives.remove(&oldest);
            }
        }
        let last = self.last_from(message);
        self.seen.insert(message.sender, last.max(message.seq));
        if message.life != 0 {
            self.lives.insert(message.sender, message.life);
        }
        self.nacked.remove(&message.sender);
    }

    /// The nacks to send now: (sender, number expected).
    pub fn take_nacks(&mut self) -> Vec<(Pid, u64)> {
        std::mem::take(&mut self.nacks_out)
    }

    /// The acknowledgements a recorded checkpoint whose inbox was `seen`
    /// owes: those that say more than the last ones sent.
    pub fn acks_for(&mut self, seen: &BTreeMap<Pid, u64>) -> Vec<(Pid, u64)> {
        let mut out = Vec::new();
        for (sender, seq) in seen {
            if self.acked_out.get(sender).is_none_or(|s| s < seq) {
                self.acked_out.insert(*sender, *seq);
                out.push((*sender, *seq));
            }
        }
        self.acked_out.retain(|s, _| seen.contains_key(s));
        out
    }
}

/// A random life number (never 0).
fn fresh_life() -> u64 {
    loop {
        let n: u64 = rand::random();
        if n != 0 {
            return n;
        }
    }
}

/// The payload of an ack or nack: the receiver's life.
pub fn life_payload(life: u64) -> Vec<u8> {
    life.to_le_bytes().to_vec()
}

/// The life in an ack's or nack's payload (`None`: malformed).
pub fn life_of(data: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(data.try_into().ok()?))
}

/// What a recorded checkpoint covers, read at its capture: the sender side
/// (`produced`: release up to it) and the receiver side (`seen`: what to
/// acknowledge).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitPoint {
    /// The outbox's last `gseq` at capture.
    pub produced: u64,
    /// The inbox's last numbers at capture.
    pub seen: BTreeMap<Pid, u64>,
    /// The log's end position at capture.
    pub log_end: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_effect_is_numbered_with_the_messages_and_covered_by_a_commit() {
        assert_eq!(Outbox::new(false).produce_effect(), None);
        assert!(Outbox::new(false).covers(7));
        let mut o = Outbox::new(true);
        assert_eq!(o.produce_effect(), Some(1));
        assert!(o.uncommitted() && !o.covers(1));
        o.commit(1);
        assert!(o.covers(1) && !o.uncommitted());
        assert_eq!(o.produce_effect(), Some(2));
        assert!(!o.covers(2));
    }

    fn m(sender: u64, seq: u64) -> Message {
        let mut m = Message::plain(Pid(sender), vec![seq as u8]);
        m.seq = seq;
        m
    }

    #[test]
    fn output_commit_releases_only_what_a_checkpoint_covers() {
        let mut o = Outbox::new(true);
        for i in 0..3 {
            o.push(Pid(9), Message::plain(Pid(1), vec![i]), false, false)
                .unwrap();
        }
        assert!(o.ready(10).is_empty(), "nothing before a checkpoint");
        assert!(o.uncommitted());
        o.commit(2);
        let r = o.ready(10);
        assert_eq!(r.iter().map(|(_, m)| m.seq).collect::<Vec<_>>(), vec![1, 2]);
        o.sent(Pid(9), 2);
        o.commit(3);
        assert_eq!(o.ready(10)[0].1.seq, 3);
        o.sent(Pid(9), 3);
        assert_eq!(o.held(), (0, 0), "unretained: dropped once sent");
    }

    #[test]
    fn retention_until_ack_and_resend_on_nack() {
        let mut o = Outbox::new(false);
        for i in 1..=4 {
            assert_eq!(o.push(Pid(9), m(1, 0), true, true), Ok(i));
        }
        assert_eq!(o.held().0, 4);
        o.ack(Pid(9), 2, 77);
        assert_eq!(o.held().0, 2);
        // The receiver resumed from a checkpoint that had 2: resend 3, 4.
        assert!(o.nack(Pid(9), 3, 77));
        let r = o.ready(10);
        assert_eq!(r.iter().map(|(_, m)| m.seq).collect::<Vec<_>>(), vec![3, 4]);
        // A stale nack of the same life changes nothing.
        o.sent(Pid(9), 4);
        assert!(!o.nack(Pid(9), 2, 77));
        // A new life renumbers what is held from what it expects.
        assert!(o.nack(Pid(9), 1, 78));
        let r = o.ready(10);
        assert_eq!(r.iter().map(|(_, m)| m.seq).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn a_direct_send_that_failed_is_taken_back() {
        let mut o = Outbox::new(false);
        let s = o.push(Pid(9), m(1, 0), true, true).unwrap();
        assert!(o.unsend(Pid(9), s));
        assert_eq!(o.push(Pid(9), m(1, 0), true, true), Ok(1));
    }

    #[test]
    fn bounds_refuse_before_allocating() {
        let mut o = Outbox::new(true);
        for _ in 0..OUTBOX_MESSAGES_MAX {
            o.push(Pid(9), m(1, 0), false, false).unwrap();
        }
        assert_eq!(o.push(Pid(9), m(1, 0), false, false), Err(OutboxFull));
        let mut o = Outbox::new(true);
        let big = Message::plain(Pid(1), vec![0; OUTBOX_BYTES_MAX]);
        o.push(Pid(9), big, false, false).unwrap();
        assert_eq!(o.push(Pid(9), m(1, 0), false, false), Err(OutboxFull));
    }

    #[test]
    fn a_forged_outbox_is_refused() {
        let mut o = Outbox::new(true);
        o.push(Pid(9), m(1, 0), true, false).unwrap();
        o.push(Pid(9), m(1, 0), true, false).unwrap();
        assert_eq!(o.check(), Ok(()));
        let mut zero = o.clone();
        zero.channels.get_mut(&Pid(9)).unwrap().entries[0].seq = 0;
        assert_eq!(
            zero.check(),
            Err(ChannelError::MessagesOutOfOrder { to: Pid(9) })
        );
        let mut gap = o.clone();
        gap.channels.get_mut(&Pid(9)).unwrap().entries[1].seq = 5;
        assert_eq!(
            gap.check(),
            Err(ChannelError::MessagesOutOfOrder { to: Pid(9) })
        );
        let mut control = o.clone();
        control.channels.get_mut(&Pid(9)).unwrap().entries[0]
            .message
            .tag = Tag::Ack(1);
        assert_eq!(
            control.check(),
            Err(ChannelError::ControlMessage { to: Pid(9) })
        );
        let mut over = o.clone();
        over.committed = 99;
        assert_eq!(over.check(), Err(ChannelError::CommittedPastProduced));
    }

    #[test]
    fn inbox_takes_each_number_once_in_order_and_asks_for_gaps() {
        let mut i = Inbox::new();
        assert_eq!(i.admit(&m(5, 1)), Admit::Next);
        i.take(&m(5, 1));
        assert_eq!(i.admit(&m(5, 1)), Admit::Duplicate);
        assert_eq!(i.admit(&m(5, 3)), Admit::Gap);
        assert_eq!(i.take_nacks(), vec![(Pid(5), 2)]);
        // Not asked again at once.
        assert_eq!(i.admit(&m(5, 4)), Admit::Gap);
        assert!(i.take_nacks().is_empty());
        assert_eq!(i.admit(&m(5, 2)), Admit::Next);
        // Unnumbered messages pass.
        assert_eq!(i.admit(&Message::plain(Pid(5), vec![])), Admit::Next);
    }

    #[test]
    fn a_sender_that_started_afresh_is_taken_from_1_again() {
        let mut i = Inbox::new();
        let numbered = |seq: u64, life: u64| {
            let mut m = m(5, seq);
            m.life = life;
            m
        };
        for seq in 1..=3 {
            assert_eq!(i.admit(&numbered(seq, 11)), Admit::Next);
            i.take(&numbered(seq, 11));
        }
        assert_eq!(i.admit(&numbered(3, 11)), Admit::Duplicate);
        // Restarted fresh under the same pid: its 1 is new.
        assert_eq!(i.admit(&numbered(1, 12)), Admit::Next);
        i.take(&numbered(1, 12));
        assert_eq!(i.admit(&numbered(2, 12)), Admit::Next);
        assert_eq!(i.admit(&numbered(1, 12)), Admit::Duplicate);
    }

    #[test]
    fn acks_say_only_what_changed() {
        let mut i = Inbox::new();
        let seen: BTreeMap<Pid, u64> = [(Pid(1), 3), (Pid(2), 5)].into();
        assert_eq!(i.acks_for(&seen).len(), 2);
        assert!(i.acks_for(&seen).is_empty());
        let seen: BTreeMap<Pid, u64> = [(Pid(1), 4), (Pid(2), 5)].into();
        assert_eq!(i.acks_for(&seen), vec![(Pid(1), 4)]);
    }
}
