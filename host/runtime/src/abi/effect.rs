//! Output commit for effects: key-value writes and spawns of a process
//! that may resume from a checkpoint (issue #16).
//!
//! Messages of such a process wait in its outbox until a recorded
//! checkpoint covers them ([`crate::outbox`]). A key-value write cannot
//! wait there, because the guest needs its answer (a version, a counter)
//! to go on. So the call itself waits:
//!
//! 1. It is numbered among the process's output (its outbox's `gseq`:
//!    [`crate::mailbox::Mailbox::produce_effect`]), which makes output
//!    wait and wakes the checkpointer.
//! 2. The checkpointer captures the process *inside this call* (it is a
//!    blocking import: Asyncify instruments the way to it), with the
//!    effect's number in its [`PendingCall`], and records the checkpoint.
//! 3. Only then is the write sent, keyed by `(pid, life, number)`
//!    ([`EffectKey`]).
//!
//! A copy resumed from that checkpoint after a failover is inside the same
//! call with the same number, and sends the write again: the state machine
//! answers a repeat of a process's newest effect with its first result
//! (`shoal_cluster::state::effects`). A copy resumed from an older
//! checkpoint never made the write, as the resumed history may not. So
//! each effect is made exactly once, relative to the state the process
//! resumed with.
//!
//! Without output commit (no restart policy), or for a module that cannot
//! be captured (never checkpointed: it starts fresh after a failover), the
//! write is made at once, as before.

use super::errno;
use crate::capture::{self, wait_or_capture, Entry, PendingCall, Waited};
use crate::cluster_link::EffectKey;
use crate::process::ProcessCtx;
use std::time::Instant;
use wasmtime::Caller;

/// What an effect's call does after [`commit_first`].
pub enum Gate {
    /// Make the effect now, under this key (`None`: not under output
    /// commit).
    Make(Option<EffectKey>),
    /// The process is being captured inside the call: return at once (the
    /// value is ignored; the guest unwinds).
    Unwound,
}

/// Wait, inside effect import `import` entered as `entry`, until a recorded
/// checkpoint covers the effect (see the module docs). Call after the
/// arguments were checked, so a refused call costs no checkpoint.
pub async fn commit_first(
    caller: &mut Caller<'_, ProcessCtx>,
    import: &str,
    entry: Entry,
) -> wasmtime::Result<Gate> {
    commit_first_within(caller, import, entry, None).await
}

/// [`commit_first`] for a call with a deadline (a `lock`'s timeout): a
/// capture while it waits keeps the time left, so the resumed call waits
/// no longer than the first would have.
pub async fn commit_first_within(
    caller: &mut Caller<'_, ProcessCtx>,
    import: &str,
    entry: Entry,
    deadline: Option<Instant>,
) -> wasmtime::Result<Gate> {
    let mailbox = caller.data().mailbox.clone();
    let seq = match entry {
        Entry::Fresh => {
            if !caller.data().capturable {
                return Ok(Gate::Make(None));
            }
            let Some(seq) = mailbox.produce_effect() else {
                return Ok(Gate::Make(None));
            };
            caller.data().host.output_waiting();
            seq
        }
        Entry::Resumed(PendingCall {
            effect: Some(seq), ..
        }) => seq,
        Entry::Resumed(_) => {
            return Err(wasmtime::Error::msg(format!(
                "snapshot resumed in `{import}` without its effect's number"
            )))
        }
    };
    if !mailbox.is_committed(seq) {
        let signal = caller.data().capture.clone();
        match wait_or_capture(&signal, true, mailbox.committed_to(seq)).await {
            Waited::Done(()) => {}
            Waited::Capture => {
                let pending = PendingCall {
                    import: import.to_string(),
                    remaining_ms: super::remaining_ms(deadline),
                    effect: Some(seq),
                };
                capture::unwind(caller, pending).await?;
                return Ok(Gate::Unwound);
            }
        }
    }
    Ok(Gate::Make(Some(EffectKey {
        life: mailbox.life(),
        seq,
    })))
}

/// The value an effect's call returns while the guest unwinds (ignored).
pub const UNWINDING: i32 = errno::OK;
