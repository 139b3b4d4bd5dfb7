//! Calls and monitors between processes, host side: why a process went
//! down, what it owes others when it ends, and what a call or monitor that
//! finds nobody gets back.
//!
//! # Design
//!
//! A call, its reply, a monitor and a DOWN notice are messages with a
//! [`Tag`]: they travel exactly as plain messages do (local mailboxes, the
//! lanes between nodes, held mailboxes and handoffs of a moving process,
//! the images of a captured one), so they inherit the ordering and
//! move-safety of messages with no path of their own. What each process
//! knows of its calls and monitors ([`crate::mailbox::CallState`]) lives in
//! its mailbox and its image.
//!
//! - **A call** queues `Call(ref)` in the callee's mailbox, the caller
//!   waiting for `Reply(ref)` or `Down(ref)` with a selective take
//!   ([`Mailbox::take_answer`]) that leaves other mail queued in order. The
//!   answer has a reserved slot (never refused for space); a late one is
//!   dropped.
//! - **The callee is monitored for the call's duration** without a monitor
//!   message: a process that ends owes a `Down(ref)` to the caller of every
//!   call it received and did not answer, queued or taken
//!   ([`on_exit`]). So a dead callee fails the call at once.
//! - **A monitor** queues `Monitor(ref)` in the target's mailbox; the target
//!   records the watcher when it next receives (or when it ends), and sends
//!   `Down(ref)` with its reason when it ends.
//! - **Nobody there**: a call or monitor that reaches no process is answered
//!   `Down(ref)` with [`DownReason::NoProc`] by the node that found out
//!   ([`bounce_for`]), or refused at once when the sender's own node knows.
//! - **A node declared dead**: [`node_down`] turns the cluster's decision
//!   into `node_down` DOWNs for every call and monitor on its processes.
//!   Moving is not ending: a moved process owes nothing, and its calls,
//!   serving list and watchers go on where it arrives.

use crate::mailbox::{Mailbox, Message, Tag};
use crate::pid::Pid;
use crate::process::ExitReason;
use crate::router::Router;
use shoal_abi::calls as abi;

/// Why a monitored or called process went down, as a DOWN carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// It exited with a code.
    Exit(i32),
    /// It trapped (or hit its memory or fuel limit, or failed to start).
    Trap(String),
    /// It was killed (or stopped by a snapshot).
    Killed,
    /// It did not exist.
    NoProc,
    /// Its node was declared dead.
    NodeDown,
    /// It refused: too many calls served or watchers.
    Overloaded,
    /// It cannot receive calls (its module imports neither `recv_any` nor
    /// `recv_match`): a call to it is refused, never queued unseen.
    NotCallable,
}

/// Longest trap message a DOWN carries, in bytes (the rest is cut).
pub const TRAP_MESSAGE_BYTES_MAX: usize = 4096;

impl DownReason {
    /// Why a process that ended with `reason` is down; `None` for a move
    /// (not an end).
    pub fn of_exit(reason: &ExitReason) -> Option<DownReason> {
        Some(match reason {
            ExitReason::Exited { code } => DownReason::Exit(*code),
            ExitReason::Trapped { message } | ExitReason::StartFailed { message } => {
                DownReason::Trap(message.clone())
            }
            ExitReason::MemoryLimit { .. } => DownReason::Trap("memory limit".into()),
            ExitReason::FuelExhausted { .. } => DownReason::Trap("fuel exhausted".into()),
            ExitReason::Killed | ExitReason::Snapshotted => DownReason::Killed,
            ExitReason::Moved => return None,
        })
    }

    /// The ABI's reason code and exit code.
    pub fn codes(&self) -> (i32, i32) {
        match self {
            DownReason::Exit(code) => (abi::REASON_EXIT, *code),
            DownReason::Trap(_) => (abi::REASON_TRAP, 0),
            DownReason::Killed => (abi::REASON_KILLED, 0),
            DownReason::NoProc => (abi::REASON_NOPROC, 0),
            DownReason::NodeDown => (abi::REASON_NODE_DOWN, 0),
            DownReason::Overloaded => (abi::REASON_OVERLOADED, 0),
            DownReason::NotCallable => (abi::REASON_NOT_CALLABLE, 0),
        }
    }

    /// A DOWN's payload: reason (i32 LE), code (i32 LE), then the trap
    /// message (UTF-8, at most [`TRAP_MESSAGE_BYTES_MAX`] bytes).
    pub fn encode(&self) -> Vec<u8> {
        let (reason, code) = self.codes();
        let mut out = Vec::with_capacity(8);
        out.extend_from_slice(&reason.to_le_bytes());
        out.extend_from_slice(&code.to_le_bytes());
        if let DownReason::Trap(message) = self {
            let mut end = message.len().min(TRAP_MESSAGE_BYTES_MAX);
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            out.extend_from_slice(&message.as_bytes()[..end]);
        }
        out
    }

    /// Split a DOWN's payload into (reason, code, message bytes). A payload
    /// too short to hold the codes (only a broken peer sends one) reads as
    /// `noproc`.
    pub fn split(data: &[u8]) -> (i32, i32, &[u8]) {
        if data.len() < 8 {
            return (abi::REASON_NOPROC, 0, &[]);
        }
        let reason = i32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        let code = i32::from_le_bytes([data[4], data[5], data[6], data[7]]);
        (reason, code, &data[8..])
    }
}

/// What the sender of `message`, addressed to `to` that does not exist,
/// gets back: a `noproc` DOWN for a call or a monitor, nothing otherwise.
pub fn bounce_for(to: Pid, message: &Message) -> Option<(Pid, Message)> {
    match message.tag {
        Tag::Call(r) | Tag::Monitor(r) => Some((
            message.sender,
            Message {
                seq: 0,
                life: 0,
                sender: to,
                data: DownReason::NoProc.encode(),
                tag: Tag::Down(r),
            },
        )),
        _ => None,
    }
}

/// What the sender of `message`, addressed to `to` on a node the cluster
/// declared dead, gets back: a `node_down` DOWN for a call or a monitor
/// (which would otherwise wait on a lane nobody drains), nothing otherwise.
pub fn node_down_for(to: Pid, message: &Message) -> Option<(Pid, Message)> {
    match message.tag {
        Tag::Call(r) | Tag::Monitor(r) => Some((
            message.sender,
            Message {
                seq: 0,
                life: 0,
                sender: to,
                data: DownReason::NodeDown.encode(),
                tag: Tag::Down(r),
            },
        )),
        _ => None,
    }
}

/// Does a module with these imports ever see call requests? Only through
/// `recv_any` or `recv_match`; a module importing neither (every guest built
/// before calls) is never queued a call: it is refused with
/// [`DownReason::NotCallable`] (see [`crate::router`]).
pub fn module_sees_calls<'a>(imports: impl IntoIterator<Item = (&'a str, &'a str)>) -> bool {
    imports.into_iter().any(|(module, name)| {
        module == shoal_abi::table::SHOAL_ABI_MODULE && matches!(name, "recv_any" | "recv_match")
    })
}

/// What the sender of call request `message` (reference `reference`),
/// addressed to `to` that cannot see calls, gets back: a DOWN
/// `not_callable` from `to`.
pub fn refusal_for(to: Pid, sender: Pid, reference: u64) -> (Pid, Message) {
    (
        sender,
        Message {
            seq: 0,
            life: 0,
            sender: to,
            data: DownReason::NotCallable.encode(),
            tag: Tag::Down(reference),
        },
    )
}

/// Process `pid` ended with `reason`: close its mailbox and send what it
/// owes — a DOWN to each watcher and to the caller of each call it did not
/// answer, a demonitor to each process it watched. A move is not an end:
/// then nothing is done (the caller keeps the mailbox open for the move).
/// Returns how many DOWNs were sent.
pub fn on_exit(router: &Router, pid: Pid, reason: &ExitReason, mailbox: &Mailbox) -> usize {
    let Some(down) = DownReason::of_exit(reason) else {
        return 0;
    };
    let notices = mailbox.close_for_exit();
    let data = down.encode();
    let mut sent = 0;
    for (to, r) in notices.watchers.into_iter().chain(notices.callers) {
        let notice = Message {
            seq: 0,
            life: 0,
            sender: pid,
            data: data.clone(),
            tag: Tag::Down(r),
        };
        if router.send_message(to, notice).is_ok() {
            sent += 1;
        }
    }
    for (r, target) in notices.monitors {
        let withdraw = Message {
            seq: 0,
            life: 0,
            sender: pid,
            data: Vec::new(),
            tag: Tag::Demonitor(r),
        };
        let _ = router.send_message(target, withdraw);
    }
    if sent > 0 {
        tracing::debug!(%pid, sent, "sent DOWN notices for an ended process");
    }
    sent
}

/// The cluster declared a node dead: every call in progress and every
/// monitor on this node whose target `was_there` (the processes the
/// directory placed on that node, which will not resume elsewhere) fails
/// with `node_down`. Returns how many DOWNs were queued.
///
/// This is the one place node death enters calls. The cluster's failure
/// decision (the leader's `NodeDead` record in Raft) calls it on every
/// node when applied; nothing here detects failures.
pub fn node_down(router: &Router, was_there: &dyn Fn(Pid) -> bool) -> usize {
    router.down_targets(was_there, &DownReason::NodeDown.encode())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip() {
        for r in [
            DownReason::Exit(-7),
            DownReason::Trap("unreachable".into()),
            DownReason::Killed,
            DownReason::NoProc,
            DownReason::NodeDown,
            DownReason::Overloaded,
            DownReason::NotCallable,
        ] {
            let data = r.encode();
            let (reason, code, msg) = DownReason::split(&data);
            assert_eq!((reason, code), r.codes());
            if let DownReason::Trap(m) = &r {
                assert_eq!(msg, m.as_bytes());
            } else {
                assert!(msg.is_empty());
            }
        }
        assert_eq!(DownReason::split(&[1, 2]).0, abi::REASON_NOPROC);
        let long = "é".repeat(TRAP_MESSAGE_BYTES_MAX);
        let data = DownReason::Trap(long).encode();
        assert!(data.len() <= 8 + TRAP_MESSAGE_BYTES_MAX);
        assert!(std::str::from_utf8(&data[8..]).is_ok());
        assert_eq!(DownReason::of_exit(&ExitReason::Moved), None);
    }

    #[test]
    fn images_from_before_calls_still_read_and_new_ones_keep_tags() {
        // A version 2 host state's messages: no `tag`; no `calls` at all.
        let old: Message = serde_json::from_str(r#"{"sender":5,"data":[1,2]}"#).unwrap();
        assert_eq!(old, Message::plain(Pid(5), vec![1, 2]));
        // A plain message is written exactly as before (no `tag` field).
        let plain = serde_json::to_string(&Message::plain(Pid(5), vec![1])).unwrap();
        assert!(!plain.contains("tag"), "{plain}");
        let call = Message {
            seq: 0,
            life: 0,
            sender: Pid(5),
            data: vec![],
            tag: Tag::Call(9),
        };
        let back: Message = serde_json::from_str(&serde_json::to_string(&call).unwrap()).unwrap();
        assert_eq!(back, call);
        let state = crate::mailbox::CallState {
            last_ref: 3,
            calling: Some(crate::mailbox::Calling {
                reference: 3,
                target: Pid(8),
            }),
            ..Default::default()
        };
        let back: crate::mailbox::CallState =
            serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        assert_eq!(back, state);
        for kind in 0..=7u8 {
            let tag = Tag::from_wire(kind, 77).unwrap();
            assert_eq!(tag.to_wire(), (kind, if kind == 0 { 0 } else { 77 }));
        }
        assert_eq!(Tag::from_wire(8, 1), None);
    }

    #[test]
    fn mailbox_calls_selective_and_reserved() {
        use crate::mailbox::{Head, MailboxLimits};
        let mb = Mailbox::new(MailboxLimits {
            messages_max: 2,
            bytes_max: 1 << 20,
        });
        let r = mb.begin_call(Pid(9));
        mb.push(Message::plain(Pid(5), b"a".to_vec())).unwrap();
        mb.push(Message::plain(Pid(5), b"b".to_vec())).unwrap();
        // Full for plain mail, but the reply has its slot; a late one is dropped.
        assert!(mb.push(Message::plain(Pid(5), b"c".to_vec())).is_err());
        mb.push(Message {
            seq: 0,
            life: 0,
            sender: Pid(9),
            data: b"late".to_vec(),
            tag: Tag::Reply(r + 100),
        })
        .unwrap();
        mb.push(Message {
            seq: 0,
            life: 0,
            sender: Pid(9),
            data: b"ok".to_vec(),
            tag: Tag::Reply(r),
        })
        .unwrap();
        assert_eq!(mb.len(), 3);
        assert_eq!(mb.take_answer(r).unwrap().data, b"ok");
        mb.end_call();
        let mut bounces = Vec::new();
        for want in [&b"a"[..], b"b"] {
            match mb.take_visible(100, false, &mut bounces) {
                Head::Taken(m) => assert_eq!(m.data, want),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(mb.take_visible(100, false, &mut bounces), Head::Empty);
        // A reply after the call ended is dropped.
        mb.push(Message {
            seq: 0,
            life: 0,
            sender: Pid(9),
            data: b"ok".to_vec(),
            tag: Tag::Reply(r),
        })
        .unwrap();
        assert!(mb.is_empty());
    }

    #[test]
    fn recv_never_sees_calls_or_downs() {
        use crate::mailbox::{Head, MailboxLimits};
        let mb = Mailbox::new(MailboxLimits::default());
        let m = mb.add_monitor(Pid(3)).unwrap();
        mb.push(Message {
            seq: 0,
            life: 0,
            sender: Pid(2),
            data: b"req".to_vec(),
            tag: Tag::Call(77),
        })
        .unwrap();
        mb.push(Message {
            seq: 0,
            life: 0,
            sender: Pid(3),
            data: DownReason::Exit(4).encode(),
            tag: Tag::Down(m),
        })
        .unwrap();
        mb.push(Message {
            seq: 0,
            life: 0,
            sender: Pid(4),
            data: Vec::new(),
            tag: Tag::Monitor(1),
        })
        .unwrap();
        mb.push(Message::plain(Pid(2), b"hi".to_vec())).unwrap();
        let mut bounces = Vec::new();
        match mb.take_visible(100, false, &mut bounces) {
            Head::Taken(m) => assert_eq!(m.data, b"hi"),
            other => panic!("{other:?}"),
        }
        assert_eq!(mb.take_visible(100, false, &mut bounces), Head::Empty);
        assert_eq!(mb.calls().watchers.len(), 1);
        // recv_any sees the call (with a handle) then the DOWN, in order.
        let Head::Taken(call) = mb.take_visible(100, true, &mut bounces) else {
            panic!()
        };
        let Tag::Call(handle) = call.tag else {
            panic!()
        };
        assert_eq!(mb.take_serving(handle), Some((Pid(2), 77)));
        let Head::Taken(down) = mb.take_visible(100, true, &mut bounces) else {
            panic!()
        };
        assert_eq!(down.tag, Tag::Down(m));
        assert!(mb.calls().monitors.is_empty());
        let notices = mb.close_for_exit();
        assert_eq!(notices.watchers, vec![(Pid(4), 1)]);
        assert!(bounces.is_empty());
    }

    fn tagged(sender: u64, data: &[u8], tag: Tag) -> Message {
        Message {
            seq: 0,
            life: 0,
            sender: Pid(sender),
            data: data.to_vec(),
            tag,
        }
    }

    #[test]
    fn requests_answers_are_seen_only_by_their_match() {
        use crate::mailbox::{Head, MailboxLimits, Want};
        let mb = Mailbox::new(MailboxLimits {
            messages_max: 2,
            bytes_max: 1 << 20,
        });
        let r1 = mb.begin_request(Pid(7)).unwrap();
        let r2 = mb.begin_request(Pid(8)).unwrap();
        mb.push(Message::plain(Pid(7), b"a".to_vec())).unwrap();
        mb.push(Message::plain(Pid(8), b"b".to_vec())).unwrap();
        // Full for plain mail; each request's answer has its slot, and an
        // answer nobody waits for is dropped.
        assert!(mb.push(Message::plain(Pid(9), b"c".to_vec())).is_err());
        mb.push(tagged(8, b"two", Tag::Reply(r2))).unwrap();
        mb.push(tagged(7, &DownReason::Exit(1).encode(), Tag::Down(r1)))
            .unwrap();
        mb.push(tagged(7, b"late", Tag::Reply(r2 + 100))).unwrap();
        assert_eq!(mb.len(), 4);
        let mut bounces = Vec::new();
        let mut take = |want| match mb.take_wanted(100, want, &mut bounces) {
            Head::Taken(m) => m,
            other => panic!("{want:?}: {other:?}"),
        };
        assert_eq!(take(Want::From(Pid(8))).data, b"b");
        let answer = take(Want::Answer(r2));
        assert_eq!(
            (answer.tag, &answer.data[..]),
            (Tag::Reply(r2), &b"two"[..])
        );
        assert!(!mb.has_request(r2));
        // `recv_any` sees "a" and nothing more: the DOWN is r1's answer.
        assert_eq!(take(Want::Any).data, b"a");
        assert_eq!(mb.take_wanted(100, Want::Any, &mut bounces), Head::Empty);
        assert_eq!(mb.take_wanted(100, Want::Plain, &mut bounces), Head::Empty);
        assert_eq!(
            mb.take_wanted(100, Want::From(Pid(7)), &mut bounces),
            Head::Empty
        );
        assert_eq!(mb.len(), 1);
        // Too small a buffer leaves it queued.
        assert!(matches!(
            mb.take_wanted(0, Want::Answer(r1), &mut bounces),
            Head::TooBig { len: 8, .. }
        ));
        let Head::Taken(down) = mb.take_wanted(100, Want::Answer(r1), &mut bounces) else {
            panic!()
        };
        assert_eq!(down.tag, Tag::Down(r1));
        assert!(mb.is_empty() && bounces.is_empty());
        // Withdrawn: its answer is dropped.
        let r3 = mb.begin_request(Pid(7)).unwrap();
        assert_eq!(mb.end_request(r3), Some(Pid(7)));
        assert_eq!(mb.end_request(r3), None);
        mb.push(tagged(7, b"x", Tag::Reply(r3))).unwrap();
        assert!(mb.is_empty());
        // Bounded; a dead node answers each request to it once per verdict.
        for _ in 0..abi::REQUESTS_MAX {
            mb.begin_request(Pid(7)).unwrap();
        }
        assert_eq!(mb.begin_request(Pid(7)), None);
        let downs = mb.down_targets(&|p| p == Pid(7), &DownReason::NodeDown.encode());
        assert_eq!(downs, abi::REQUESTS_MAX);
        assert_eq!(mb.len(), abi::REQUESTS_MAX);
        // The same verdict applied again (a process that arrived while it
        // was made) queues nothing more: one DOWN per reference.
        let again = mb.down_targets(&|p| p == Pid(7), &DownReason::NodeDown.encode());
        assert_eq!(again, 0);
        assert_eq!(mb.len(), abi::REQUESTS_MAX);
    }

    #[test]
    fn a_node_death_reaches_a_process_frozen_to_move_and_one_that_arrived() {
        use crate::mailbox::MailboxLimits;
        use std::sync::Arc;
        let router = Router::default();
        let data = DownReason::NodeDown.encode();
        // A process frozen to move away: its mailbox is held, not local.
        let frozen = Arc::new(Mailbox::new(MailboxLimits::default()));
        let r = frozen.begin_call(Pid(7));
        router.hold(Pid(1), frozen.clone());
        assert_eq!(router.down_targets(&|p| p == Pid(7), &data), 1);
        assert_eq!(frozen.take_answer(r).map(|m| m.tag), Some(Tag::Down(r)));
        // A process that arrived after the verdict: one DOWN, once.
        let arrived = Arc::new(Mailbox::new(MailboxLimits::default()));
        let m = arrived.add_monitor(Pid(7)).unwrap();
        router.attach(Pid(2), arrived.clone());
        assert_eq!(router.down_targets_of(Pid(2), &|p| p == Pid(7), &data), 1);
        assert_eq!(router.down_targets_of(Pid(2), &|p| p == Pid(7), &data), 0);
        assert_eq!(router.down_targets_of(Pid(3), &|p| p == Pid(7), &data), 0);
        assert_eq!(arrived.queued().len(), 1);
        assert_eq!(arrived.queued()[0].tag, Tag::Down(m));
    }

    #[test]
    fn calls_to_a_process_that_cannot_see_them_are_refused_not_queued() {
        use crate::mailbox::{Bounce, Head, MailboxLimits};
        use std::sync::Arc;
        assert!(!module_sees_calls([
            ("shoal_v1", "recv"),
            ("shoal_v1", "send")
        ]));
        assert!(!module_sees_calls([("env", "recv_any")]));
        assert!(module_sees_calls([("shoal_v1", "recv_match")]));
        assert!(module_sees_calls([
            ("shoal_v1", "recv"),
            ("shoal_v1", "recv_any")
        ]));
        let router = Router::default();
        let old = Arc::new(Mailbox::new(MailboxLimits::default()));
        old.set_sees_calls(false);
        let caller = Arc::new(Mailbox::new(MailboxLimits::default()));
        router.attach(Pid(1), old.clone());
        router.attach(Pid(2), caller.clone());
        let r = caller.begin_call(Pid(1));
        router
            .send_message(Pid(1), tagged(2, b"req", Tag::Call(r)))
            .unwrap();
        assert!(old.is_empty(), "nothing queued unseen");
        let answer = caller.take_answer(r).expect("refused at once");
        assert_eq!(answer.tag, Tag::Down(r));
        assert_eq!(answer.sender, Pid(1));
        assert_eq!(DownReason::split(&answer.data).0, abi::REASON_NOT_CALLABLE);
        // A request that got in some other way (an image) is refused when
        // the owner next receives; plain mail still goes in.
        old.push(tagged(3, b"r", Tag::Call(5))).unwrap();
        router
            .send_message(Pid(1), Message::plain(Pid(2), b"p".to_vec()))
            .unwrap();
        let mut bounces = Vec::new();
        let Head::Taken(m) = old.take_visible(100, false, &mut bounces) else {
            panic!()
        };
        assert_eq!(m.data, b"p");
        assert!(old.is_empty());
        assert_eq!(
            bounces,
            vec![Bounce {
                to: Pid(3),
                tag: Tag::Down(5),
                data: DownReason::NotCallable.encode(),
            }]
        );
    }
}
