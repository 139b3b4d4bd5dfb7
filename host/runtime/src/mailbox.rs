//! Bounded per-process message queues.
//!
//! One mailbox per process, one queue per mailbox: messages from any sender
//! are delivered in arrival order, which keeps every (sender, receiver) pair
//! in the order sent. A mailbox holds at most `messages_max` messages and
//! `bytes_max` bytes; a send beyond that is refused (`MAILBOX_FULL`) rather
//! than growing memory without bound.

use crate::pid::Pid;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;
use tokio::sync::Notify;

/// One queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who sent it.
    pub sender: Pid,
    /// The payload, copied out of the sender's memory.
    pub data: Vec<u8>,
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
}

impl Mailbox {
    /// An empty mailbox with the given bounds.
    pub fn new(limits: MailboxLimits) -> Self {
        Mailbox {
            queue: Mutex::new(Queue::default()),
            arrived: Notify::new(),
            space: Notify::new(),
            limits,
        }
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
        {
            let mut q = self.lock();
            if q.closed {
                return Err((PushError::Closed, message));
            }
            if q.messages.len() >= self.limits.messages_max
                || q.bytes + message.data.len() > self.limits.bytes_max
            {
                return Err((PushError::Full, message));
            }
            q.bytes += message.data.len();
            q.messages.push_back(message);
        }
        self.arrived.notify_one();
        Ok(())
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

    /// A copy of the queued messages, oldest first (for snapshots and
    /// inspection).
    pub fn queued(&self) -> Vec<Message> {
        self.lock().messages.iter().cloned().collect()
    }

    /// Take every queued message, oldest first, leaving the mailbox empty
    /// and open (a migrating process's capture: what is taken travels in
    /// the image, what arrives later is forwarded).
    pub fn drain(&self) -> Vec<Message> {
        let mut q = self.lock();
        q.bytes = 0;
        let taken: Vec<Message> = q.messages.drain(..).collect();
        drop(q);
        self.space.notify_waiters();
        taken
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn msg(n: u8) -> Message {
        Message {
            sender: Pid(1),
            data: vec![n; n as usize],
        }
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
