//! A linearizability checker for histories of a replicated key-value store,
//! in the style of Knossos and Porcupine.
//!
//! Tests record what concurrent clients did (get, set and compare-and-set
//! on keys, with the time each call started and the time its reply came
//! back) and ask [`check`] whether one total order of the operations,
//! consistent with real time, explains every observed result under a plain
//! register model. A history that passes could have come from a single copy
//! of the store; one that fails shows a stale read, a lost write or a value
//! nobody wrote.
//!
//! # Model
//!
//! Every key holds a [`Value`], absent (`None`) until first written.
//! [`Op::Get`] observes it, [`Op::Set`] overwrites it and [`Op::Cas`]
//! overwrites it if and only if it equals `expected` (reporting whether it
//! did). Keys are independent, so the history is split by key and each
//! key's sub-history is checked alone: a history is linearizable exactly
//! when every per-key sub-history is (P-compositionality, as in Porcupine),
//! and small sub-histories are far cheaper to search than one big one.
//!
//! # Recording a history
//!
//! - Take `call_ns` before the request leaves the client and `return_ns`
//!   after its reply arrives, both from one clock (for example nanoseconds
//!   since a shared `Instant`). A call and a return at the same instant
//!   count as concurrent, which can only make the checker more lenient.
//! - An operation whose outcome is unknown (timed out, connection lost) is
//!   recorded with `ret: None`. It is *open-ended*: it may have taken effect
//!   at any moment after its call, even long after the client gave up, or
//!   never.
//! - An operation known to have had no effect (rejected before it could be
//!   applied, say) can simply be left out of the history.
//!
//! # Search
//!
//! Per key this is the Wing & Gong search as improved by Lowe and by
//! Porcupine's `checkSingle`: the call and return events are kept in a
//! doubly linked list in time order; the search walks it, tries to apply
//! each pending call to the model, unlinks an operation once it is applied
//! and backtracks when it reaches the return of an operation it could not
//! apply in time. Visited (set of applied operations, register value) pairs
//! are remembered so that no configuration is explored twice. Every step
//! (one event looked at) counts against a budget, so a pathological history
//! ends in [`Verdict::Exhausted`] instead of a hung test.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fmt::Write as _;

/// What a key holds: `None` while absent, else the last value written.
pub type Value = Option<u64>;

/// An operation a client asked the store to do on one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Read the key.
    Get,
    /// Overwrite the key with a value.
    Set(u64),
    /// Overwrite the key with `new` if and only if it currently holds
    /// `expected` (`None`: if it is absent).
    Cas {
        /// The value the key must hold for the write to happen.
        expected: Value,
        /// The value written when it does.
        new: u64,
    },
}

/// What the store answered to an [`Op`]; the variant must match the op's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ret {
    /// The value a [`Op::Get`] observed.
    Get(Value),
    /// A [`Op::Set`] was acknowledged.
    Set,
    /// Whether a [`Op::Cas`] wrote its value.
    Cas(bool),
}

/// One operation of a recorded history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Who issued it; only used to describe failures.
    pub client: u32,
    /// The key it applies to.
    pub key: u64,
    /// What was asked.
    pub op: Op,
    /// When the call started.
    pub call_ns: u64,
    /// When the reply arrived and what it said; `None` if the outcome is
    /// unknown (the operation is then open-ended, see the module docs).
    pub ret: Option<(u64, Ret)>,
}

impl Operation {
    /// An operation that returned `ret` at `return_ns`.
    #[must_use]
    pub fn completed(
        client: u32,
        key: u64,
        op: Op,
        call_ns: u64,
        return_ns: u64,
        ret: Ret,
    ) -> Self {
        Operation {
            client,
            key,
            op,
            call_ns,
            ret: Some((return_ns, ret)),
        }
    }

    /// An operation whose outcome is unknown (timed out, connection lost).
    #[must_use]
    pub fn timed_out(client: u32, key: u64, op: Op, call_ns: u64) -> Self {
        Operation {
            client,
            key,
            op,
            call_ns,
            ret: None,
        }
    }

    /// When the reply arrived, if it did.
    #[must_use]
    pub fn return_ns(&self) -> Option<u64> {
        self.ret.map(|(return_ns, _)| return_ns)
    }

    /// Why this operation cannot be part of a history (a result of the
    /// wrong kind, a return before the call), if it cannot.
    fn malformation(&self) -> Option<String> {
        let (return_ns, ret) = self.ret?;
        if return_ns < self.call_ns {
            return Some(format!(
                "malformed operation {self}: returns before its call"
            ));
        }
        let fits = matches!(
            (self.op, ret),
            (Op::Get, Ret::Get(_)) | (Op::Set(_), Ret::Set) | (Op::Cas { .. }, Ret::Cas(_))
        );
        (!fits).then(|| {
            format!(
                "malformed operation {self}: {ret:?} does not answer {:?}",
                self.op
            )
        })
    }
}

/// Shows a [`Value`] as the number or `absent`.
struct Shown(Value);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v}"),
            None => f.write_str("absent"),
        }
    }
}

impl fmt::Display for Operation {
    /// For example `client 2: cas absent -> 7: ok [100..250 ns]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {}: ", self.client)?;
        match self.op {
            Op::Get => f.write_str("get")?,
            Op::Set(v) => write!(f, "set {v}")?,
            Op::Cas { expected, new } => write!(f, "cas {} -> {new}", Shown(expected))?,
        }
        match (self.op, self.ret) {
            (Op::Get, Some((_, Ret::Get(v)))) => write!(f, " -> {}", Shown(v))?,
            (Op::Cas { .. }, Some((_, Ret::Cas(ok)))) => {
                f.write_str(if ok { ": ok" } else { ": failed" })?;
            }
            (Op::Set(_), None | Some((_, Ret::Set))) => {}
            (Op::Get, None) => f.write_str(" -> ?")?,
            (Op::Cas { .. }, None) => f.write_str(": ?")?,
            (_, Some((_, ret))) => write!(f, " (answered {ret:?})")?,
        }
        match self.ret {
            Some((return_ns, _)) => write!(f, " [{}..{return_ns} ns]", self.call_ns),
            None => write!(f, " [{} ns.., timed out]", self.call_ns),
        }
    }
}

/// The register model: the value after applying `op` to `state`, if the
/// operation could have answered `ret` there (`None` = unknown answer).
///
/// An operation with an unknown answer is always applicable: a get then
/// observes nothing, and a cas succeeds exactly when the value matches
/// (it failing for another reason is the same as it never happening).
fn apply(state: Value, op: Op, ret: Option<Ret>) -> Option<Value> {
    match (op, ret) {
        (Op::Get, None) => Some(state),
        (Op::Get, Some(Ret::Get(observed))) => (observed == state).then_some(state),
        (Op::Set(v), None | Some(Ret::Set)) => Some(Some(v)),
        (Op::Cas { expected, new }, None) => {
            Some(if state == expected { Some(new) } else { state })
        }
        (Op::Cas { expected, new }, Some(Ret::Cas(true))) => {
            (state == expected).then_some(Some(new))
        }
        (Op::Cas { expected, .. }, Some(Ret::Cas(false))) => (state != expected).then_some(state),
        _ => None,
    }
}

/// The outcome of checking a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some order of the operations, consistent with real time, explains
    /// every result.
    Linearizable,
    /// No order explains the results on `key` (or the history is
    /// malformed there: `detail` then starts with "malformed").
    NotLinearizable {
        /// The first key, in ascending order, found to fail.
        key: u64,
        /// The smallest failing prefix and the operations involved.
        detail: String,
    },
    /// The search on `key` ran out of steps before deciding; no key found
    /// so far failed. Tests should treat this as a failure.
    Exhausted {
        /// The first key, in ascending order, whose search ran out.
        key: u64,
    },
}

impl Verdict {
    /// Whether the history was found linearizable.
    #[must_use]
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => f.write_str("linearizable"),
            Verdict::NotLinearizable { key, detail } => {
                write!(f, "key {key} is not linearizable: {detail}")
            }
            Verdict::Exhausted { key } => {
                write!(
                    f,
                    "search budget exhausted on key {key}: linearizability undecided"
                )
            }
        }
    }
}

/// A [`Verdict`] with statistics about the check that reached it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The outcome.
    pub verdict: Verdict,
    /// Distinct keys in the history.
    pub keys: usize,
    /// Keys whose search ran (all of them, unless one was found failing).
    pub keys_checked: usize,
    /// Operations in the history.
    pub operations: usize,
    /// Of those, operations with an unknown outcome.
    pub open_operations: usize,
    /// The most operations on one key.
    pub max_operations_per_key: usize,
    /// Search steps used over all keys checked.
    pub steps: u64,
    /// The most search steps used on one key.
    pub max_steps_per_key: u64,
    /// The budget each key had.
    pub budget_steps: u64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; {} of {} keys checked, {} operations ({} open-ended), at most {} on one key, \
             {} search steps (at most {} on one key, budget {} per key)",
            self.verdict,
            self.keys_checked,
            self.keys,
            self.operations,
            self.open_operations,
            self.max_operations_per_key,
            self.steps,
            self.max_steps_per_key,
            self.budget_steps,
        )
    }
}

/// Whether `history` is linearizable, spending at most `budget_steps`
/// search steps on each key. See [`check_report`] for statistics.
#[must_use]
pub fn check(history: &[Operation], budget_steps: u64) -> Verdict {
    check_report(history, budget_steps).verdict
}

/// Like [`check`], with statistics.
///
/// Keys are checked in ascending order, each with its own budget of
/// `budget_steps`. The check stops at the first key that is not
/// linearizable; a key whose search runs out of budget is reported only if
/// no later key turns out not to be linearizable.
#[must_use]
pub fn check_report(history: &[Operation], budget_steps: u64) -> Report {
    let by_key = partition(history);
    let mut report = Report {
        verdict: Verdict::Linearizable,
        keys: by_key.len(),
        keys_checked: 0,
        operations: history.len(),
        open_operations: history.iter().filter(|o| o.ret.is_none()).count(),
        max_operations_per_key: by_key.values().map(Vec::len).max().unwrap_or(0),
        steps: 0,
        max_steps_per_key: 0,
        budget_steps,
    };
    if let Some((key, detail)) = first_malformation(history) {
        report.verdict = Verdict::NotLinearizable { key, detail };
        return report;
    }
    let mut exhausted = None;
    for (&key, ops) in &by_key {
        let (outcome, steps) = Search::new(ops).run(budget_steps);
        report.keys_checked += 1;
        report.steps += steps;
        report.max_steps_per_key = report.max_steps_per_key.max(steps);
        match outcome {
            Outcome::Linearizable => {}
            Outcome::Exhausted => {
                exhausted.get_or_insert(key);
            }
            Outcome::Violation(detail) => {
                report.verdict = Verdict::NotLinearizable { key, detail };
                return report;
            }
        }
    }
    if let Some(key) = exhausted {
        report.verdict = Verdict::Exhausted { key };
    }
    report
}

/// The history's operations grouped by key, in history order within a key.
fn partition(history: &[Operation]) -> BTreeMap<u64, Vec<&Operation>> {
    let mut by_key: BTreeMap<u64, Vec<&Operation>> = BTreeMap::new();
    for operation in history {
        by_key.entry(operation.key).or_default().push(operation);
    }
    by_key
}

/// The key and description of the first malformed operation, if any.
fn first_malformation(history: &[Operation]) -> Option<(u64, String)> {
    history
        .iter()
        .find_map(|o| o.malformation().map(|why| (o.key, why)))
}

/// "No node": the end of the event list, or an open operation's return.
const NONE: usize = usize::MAX;

/// The list head's node number; events are numbered from 1 in time order.
const HEAD: usize = 0;

/// The call and return events of one key's operations in time order, as a
/// doubly linked list with a head node. The search unlinks an operation's
/// events when it applies the operation ("lift") and relinks them, in
/// reverse order, when it backtracks. Open-ended operations have no return
/// event: their return is at +infinity.
struct Events {
    /// Per node: the index of its operation.
    op: Vec<usize>,
    /// Per node: whether it is a call (else a return).
    is_call: Vec<bool>,
    /// Per call node: its return node, or [`NONE`] for open operations.
    partner: Vec<usize>,
    /// Per operation: its call node.
    call_node: Vec<usize>,
    prev: Vec<usize>,
    next: Vec<usize>,
}

impl Events {
    /// The events of `ops`, ordered by time, calls before returns at equal
    /// times (so that they count as concurrent), then by operation index.
    fn new(ops: &[&Operation]) -> Events {
        let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * ops.len());
        for (i, operation) in ops.iter().enumerate() {
            order.push((operation.call_ns, false, i));
            if let Some(return_ns) = operation.return_ns() {
                order.push((return_ns, true, i));
            }
        }
        order.sort_unstable();
        let nodes = order.len() + 1;
        let mut events = Events {
            op: vec![NONE; nodes],
            is_call: vec![false; nodes],
            partner: vec![NONE; nodes],
            call_node: vec![NONE; ops.len()],
            prev: (0..nodes)
                .map(|n| n.checked_sub(1).unwrap_or(NONE))
                .collect(),
            next: (1..=nodes)
                .map(|n| if n < nodes { n } else { NONE })
                .collect(),
        };
        for (k, &(_, is_return, i)) in order.iter().enumerate() {
            let node = k + 1;
            events.op[node] = i;
            events.is_call[node] = !is_return;
            if is_return {
                events.partner[events.call_node[i]] = node;
            } else {
                events.call_node[i] = node;
            }
        }
        events
    }

    /// The earliest event still in the list.
    fn first(&self) -> usize {
        self.next[HEAD]
    }

    /// Removes an applied operation's events from the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        if self.partner[call] != NONE {
            self.unlink(self.partner[call]);
        }
    }

    /// Puts back the events [`Events::lift`] removed.
    fn unlift(&mut self, call: usize) {
        if self.partner[call] != NONE {
            self.relink(self.partner[call]);
        }
        self.relink(call);
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        if next != NONE {
            self.prev[next] = prev;
        }
    }

    /// Undoes [`Events::unlink`]; `node` still knows its neighbours.
    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        if next != NONE {
            self.prev[next] = node;
        }
    }
}

/// A set of operation indices.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bitset(Vec<u64>);

impl Bitset {
    fn new(len: usize) -> Bitset {
        Bitset(vec![0; len.div_ceil(64)])
    }

    fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn remove(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }

    fn contains(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
}

/// How the search of one key ended.
enum Outcome {
    Linearizable,
    Exhausted,
    /// Not linearizable, with a description.
    Violation(String),
}

/// The latest point in time the search got to: the first return event it
/// could not get past, with the valid order that got there.
struct Furthest {
    /// The return node (its number orders it in time).
    node: usize,
    /// Operation indices in the order they were applied.
    order: Vec<usize>,
    /// The register value after them.
    state: Value,
}

/// How many operations of an order or of a pending set a failure shows.
const SHOWN: usize = 4;

/// The search over one key's operations.
struct Search<'a> {
    ops: &'a [&'a Operation],
    events: Events,
    /// The register value after the operations applied so far.
    state: Value,
    /// The operations applied so far.
    applied: Bitset,
    /// Applied call nodes, in order, with the value before each.
    stack: Vec<(usize, Value)>,
    /// Operations with a known outcome not yet applied; the search succeeds
    /// when none is left (open-ended ones may then apply last, or never).
    closed_left: usize,
    /// Configurations already explored.
    visited: HashSet<(Bitset, Value)>,
    furthest: Option<Furthest>,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [&'a Operation]) -> Search<'a> {
        Search {
            ops,
            events: Events::new(ops),
            state: None,
            applied: Bitset::new(ops.len()),
            stack: Vec::new(),
            closed_left: ops.iter().filter(|o| o.ret.is_some()).count(),
            visited: HashSet::new(),
            furthest: None,
        }
    }

    /// Searches for a valid order within `budget_steps`; also returns the
    /// steps used.
    fn run(mut self, budget_steps: u64) -> (Outcome, u64) {
        let mut entry = self.events.first();
        let mut steps = 0;
        loop {
            if self.closed_left == 0 {
                return (Outcome::Linearizable, steps);
            }
            // Everything before `entry` is a call, so while a known return
            // is pending the scan meets a return before the list ends.
            if entry == NONE {
                let bug = "checker bug: the event list ended before every return".to_string();
                return (Outcome::Violation(bug), steps);
            }
            if steps >= budget_steps {
                return (Outcome::Exhausted, steps);
            }
            steps += 1;
            if self.events.is_call[entry] {
                entry = self.try_apply(entry);
            } else {
                match self.backtrack(entry) {
                    Some(next) => entry = next,
                    None => return (Outcome::Violation(self.describe_failure()), steps),
                }
            }
        }
    }

    /// Applies the operation called at `call` if the model allows it and
    /// the resulting configuration is new; returns the event to look at
    /// next (the earliest one after applying, else the following one).
    fn try_apply(&mut self, call: usize) -> usize {
        let i = self.events.op[call];
        let operation = self.ops[i];
        if let Some(state) = apply(self.state, operation.op, operation.ret.map(|(_, r)| r)) {
            self.applied.insert(i);
            if self.visited.insert((self.applied.clone(), state)) {
                self.stack.push((call, self.state));
                self.state = state;
                if operation.ret.is_some() {
                    self.closed_left -= 1;
                }
                self.events.lift(call);
                return self.events.first();
            }
            self.applied.remove(i);
        }
        self.events.next[call]
    }

    /// At the return event `node` of an operation not yet applied: undoes
    /// the last applied operation and returns the event after its call, or
    /// `None` when there is nothing left to undo (not linearizable).
    fn backtrack(&mut self, node: usize) -> Option<usize> {
        self.note_progress(node);
        let (call, state) = self.stack.pop()?;
        let i = self.events.op[call];
        self.applied.remove(i);
        self.state = state;
        if self.ops[i].ret.is_some() {
            self.closed_left += 1;
        }
        self.events.unlift(call);
        Some(self.events.next[call])
    }

    /// Remembers the current order if it got further in time than any
    /// before (to the return event `node`).
    fn note_progress(&mut self, node: usize) {
        if self.furthest.as_ref().is_some_and(|f| f.node >= node) {
            return;
        }
        let order = self
            .stack
            .iter()
            .map(|&(call, _)| self.events.op[call])
            .collect();
        self.furthest = Some(Furthest {
            node,
            order,
            state: self.state,
        });
    }

    /// Describes the smallest failing prefix: the history up to the latest
    /// return the search reached, which no order explains.
    fn describe_failure(&self) -> String {
        let Some(furthest) = &self.furthest else {
            return "no order of the operations explains the results".to_string();
        };
        let stuck_index = self.events.op[furthest.node];
        let stuck = self.ops[stuck_index];
        let end_ns = stuck.return_ns().unwrap_or(stuck.call_ns);
        let mut detail = format!("the history up to {end_ns} ns has no valid order: ");
        if furthest.order.is_empty() {
            let _ = write!(detail, "{stuck} cannot take effect first");
        } else {
            let _ = write!(
                detail,
                "{stuck} cannot take effect after the longest valid order found (length {}{}: {}), \
                 which leaves {}",
                furthest.order.len(),
                if furthest.order.len() > SHOWN { ", last ones" } else { "" },
                self.list(&furthest.order[furthest.order.len().saturating_sub(SHOWN)..]),
                Shown(furthest.state),
            );
        }
        let pending = self.pending_at(furthest, stuck_index);
        if !pending.is_empty() {
            let more = pending.len().saturating_sub(SHOWN);
            let _ = write!(
                detail,
                "; also pending then: {}",
                self.list(&pending[..pending.len() - more])
            );
            if more > 0 {
                let _ = write!(detail, " (+{more} more)");
            }
        }
        detail
    }

    /// Operations called before `furthest`'s return event that are neither
    /// in its order nor the stuck one.
    fn pending_at(&self, furthest: &Furthest, stuck_index: usize) -> Vec<usize> {
        let mut in_order = Bitset::new(self.ops.len());
        for &i in &furthest.order {
            in_order.insert(i);
        }
        (0..self.ops.len())
            .filter(|&i| i != stuck_index && !in_order.contains(i))
            .filter(|&i| self.events.call_node[i] < furthest.node)
            .collect()
    }

    /// The operations at `indices`, separated by semicolons.
    fn list(&self, indices: &[usize]) -> String {
        let shown: Vec<String> = indices.iter().map(|&i| self.ops[i].to_string()).collect();
        shown.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Enough for every history in these tests; keeps a runaway search short.
    const BUDGET: u64 = 1_000_000;

    /// A value no generated operation writes.
    const UNWRITTEN: u64 = 999_999_999;

    fn get(client: u32, call_ns: u64, return_ns: u64, observed: Value) -> Operation {
        Operation::completed(client, 0, Op::Get, call_ns, return_ns, Ret::Get(observed))
    }

    fn set(client: u32, call_ns: u64, return_ns: u64, v: u64) -> Operation {
        Operation::completed(client, 0, Op::Set(v), call_ns, return_ns, Ret::Set)
    }

    fn cas(
        client: u32,
        call_ns: u64,
        return_ns: u64,
        expected: Value,
        new: u64,
        ok: bool,
    ) -> Operation {
        Operation::completed(
            client,
            0,
            Op::Cas { expected, new },
            call_ns,
            return_ns,
            Ret::Cas(ok),
        )
    }

    fn on_key(key: u64, mut operation: Operation) -> Operation {
        operation.key = key;
        operation
    }

    #[track_caller]
    fn assert_linearizable(history: &[Operation]) {
        let report = check_report(history, BUDGET);
        assert!(
            report.verdict.is_linearizable(),
            "{report}\nhistory: {history:#?}"
        );
    }

    /// Asserts the search proved `history` not linearizable; returns the
    /// failure's description.
    #[track_caller]
    fn assert_rejected(history: &[Operation]) -> String {
        match check(history, BUDGET) {
            Verdict::NotLinearizable { detail, .. } => detail,
            other => panic!("expected a violation, got {other}\nhistory: {history:#?}"),
        }
    }

    /// Xorshift64: small, deterministic, good enough to shuffle histories.
    struct Rng(u64);

    impl Rng {
        fn new(seed: u64) -> Rng {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }

        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }

        fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
            if items.is_empty() {
                return None;
            }
            let i = self.below(u64::try_from(items.len()).expect("small"));
            Some(items[usize::try_from(i).expect("small")])
        }
    }

    /// Random operations on a few keys. With `unique`, every set and cas
    /// writes a value written nowhere else, so a read identifies its write.
    struct Gen {
        keys: u64,
        unique: bool,
        last_value: u64,
        written: BTreeMap<u64, Vec<u64>>,
    }

    impl Gen {
        fn new(keys: u64, unique: bool) -> Gen {
            Gen {
                keys,
                unique,
                last_value: 0,
                written: BTreeMap::new(),
            }
        }

        fn op(&mut self, rng: &mut Rng) -> (u64, Op) {
            let key = rng.below(self.keys);
            let value = if self.unique {
                self.last_value += 1;
                self.last_value
            } else {
                1 + rng.below(3)
            };
            let written = self.written.entry(key).or_default();
            let op = match rng.below(10) {
                0..=3 => return (key, Op::Get),
                4..=6 => Op::Set(value),
                _ => {
                    let recent = &written[written.len().saturating_sub(3)..];
                    let expected = if rng.chance(25) {
                        None
                    } else {
                        rng.pick(recent)
                    };
                    Op::Cas {
                        expected,
                        new: value,
                    }
                }
            };
            written.push(value);
            (key, op)
        }
    }

    /// Applies `op` to a register, independently of the checker's model.
    fn run(state: &mut Value, op: Op) -> Ret {
        match op {
            Op::Get => Ret::Get(*state),
            Op::Set(v) => {
                *state = Some(v);
                Ret::Set
            }
            Op::Cas { expected, new } => {
                let ok = *state == expected;
                if ok {
                    *state = Some(new);
                }
                Ret::Cas(ok)
            }
        }
    }

    /// `len` operations one after the other, none overlapping, all completed.
    fn sequential_history(rng: &mut Rng, len: usize, gen: &mut Gen) -> Vec<Operation> {
        let mut states: BTreeMap<u64, Value> = BTreeMap::new();
        let mut history = Vec::new();
        let mut now_ns = 0;
        for i in 0..len {
            let (key, op) = gen.op(rng);
            let call_ns = now_ns + rng.below(3);
            let return_ns = call_ns + 1 + rng.below(5);
            let ret = run(states.entry(key).or_default(), op);
            let client = u32::try_from(i % 3).expect("small");
            history.push(Operation::completed(
                client, key, op, call_ns, return_ns, ret,
            ));
            now_ns = return_ns + 1;
        }
        history
    }

    /// An operation of a simulated history and when it took effect.
    struct Planned {
        client: u32,
        key: u64,
        op: Op,
        call_ns: u64,
        return_ns: u64,
        timed_out: bool,
        effect_ns: Option<u64>,
    }

    /// `clients` clients doing `per_client` operations each, overlapping,
    /// against a linearizable register: each operation takes effect at a
    /// point inside its [call, return] interval, in point order. About
    /// `timeout_percent` of them time out: those take effect at any point
    /// after their call (possibly after the client gave up) or never.
    fn concurrent_history(
        rng: &mut Rng,
        clients: u32,
        per_client: usize,
        gen: &mut Gen,
        timeout_percent: u64,
    ) -> Vec<Operation> {
        let mut planned = Vec::new();
        for client in 0..clients {
            let mut now_ns = rng.below(10);
            for _ in 0..per_client {
                let (key, op) = gen.op(rng);
                let duration_ns = 1 + rng.below(30);
                let timed_out = rng.chance(timeout_percent);
                let effect_ns = match (timed_out, rng.chance(50)) {
                    (false, _) => Some(now_ns + rng.below(duration_ns + 1)),
                    (true, true) => Some(now_ns + rng.below(4 * duration_ns + 1)),
                    (true, false) => None,
                };
                let return_ns = now_ns + duration_ns;
                planned.push(Planned {
                    client,
                    key,
                    op,
                    call_ns: now_ns,
                    return_ns,
                    timed_out,
                    effect_ns,
                });
                now_ns = return_ns + rng.below(10);
            }
        }
        let mut order: Vec<(u64, usize)> = planned
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((p.effect_ns?, i)))
            .collect();
        order.sort_unstable();
        let mut states: BTreeMap<u64, Value> = BTreeMap::new();
        let mut rets = vec![None; planned.len()];
        for (_, i) in order {
            rets[i] = Some(run(
                states.entry(planned[i].key).or_default(),
                planned[i].op,
            ));
        }
        planned
            .iter()
            .zip(rets)
            .map(|(p, ret)| match (p.timed_out, ret) {
                (false, Some(ret)) => {
                    Operation::completed(p.client, p.key, p.op, p.call_ns, p.return_ns, ret)
                }
                _ => Operation::timed_out(p.client, p.key, p.op, p.call_ns),
            })
            .collect()
    }

    /// Indices of the completed gets in `history`.
    fn completed_gets(history: &[Operation]) -> Vec<usize> {
        (0..history.len())
            .filter(|&i| matches!((history[i].op, history[i].ret), (Op::Get, Some(_))))
            .collect()
    }

    /// Makes the completed get at `i` observe `observed`.
    fn observe(history: &mut [Operation], i: usize, observed: Value) {
        if let Some((_, ret)) = history[i].ret.as_mut() {
            *ret = Ret::Get(observed);
        }
    }

    /// A random completed get now reads a value nobody wrote.
    fn corrupt_unwritten_read(rng: &mut Rng, history: &mut [Operation]) -> bool {
        let Some(i) = rng.pick(&completed_gets(history)) else {
            return false;
        };
        observe(history, i, Some(UNWRITTEN));
        true
    }

    /// In a sequential history, a random get that follows a change of its
    /// key now reads the value from before that change.
    fn corrupt_stale_sequential(rng: &mut Rng, history: &mut [Operation]) -> bool {
        let mut states: BTreeMap<u64, (Value, Value)> = BTreeMap::new();
        let mut candidates = Vec::new();
        for (i, operation) in history.iter().enumerate() {
            let (previous, current) = states.entry(operation.key).or_default();
            let mut now = *current;
            run(&mut now, operation.op);
            if now != *current {
                (*previous, *current) = (*current, now);
            } else if operation.op == Op::Get && *previous != *current {
                candidates.push((i, *previous));
            }
        }
        let Some((i, stale)) = rng.pick(&candidates) else {
            return false;
        };
        observe(history, i, stale);
        true
    }

    /// A random cas now reports the opposite outcome.
    fn corrupt_cas_outcome(rng: &mut Rng, history: &mut [Operation]) -> bool {
        let cases: Vec<usize> = (0..history.len())
            .filter(|&i| matches!(history[i].op, Op::Cas { .. }))
            .collect();
        let Some(i) = rng.pick(&cases) else {
            return false;
        };
        if let Some((_, Ret::Cas(ok))) = history[i].ret.as_mut() {
            *ok = !*ok;
        }
        true
    }

    /// The value a completed operation certainly wrote, if it did.
    fn certain_write(operation: &Operation) -> Option<(u64, u64)> {
        let (return_ns, ret) = operation.ret?;
        match (operation.op, ret) {
            (Op::Set(v), Ret::Set) | (Op::Cas { new: v, .. }, Ret::Cas(true)) => {
                Some((return_ns, v))
            }
            _ => None,
        }
    }

    /// In a history with unique values, a random completed get now reads a
    /// value that was certainly overwritten before its call: written by a
    /// completed write W0 followed by a completed write W1 that returned
    /// before the get was called (or absent, if some write completed before
    /// it was called).
    fn corrupt_stale_concurrent(rng: &mut Rng, history: &mut [Operation]) -> bool {
        let mut candidates = Vec::new();
        for g in completed_gets(history) {
            let call_ns = history[g].call_ns;
            let writes: Vec<(&Operation, u64, u64)> = history
                .iter()
                .filter(|o| o.key == history[g].key)
                .filter_map(|o| certain_write(o).map(|(return_ns, v)| (o, return_ns, v)))
                .filter(|&(_, return_ns, _)| return_ns < call_ns)
                .collect();
            for &(_, w0_return_ns, v) in &writes {
                if writes.iter().any(|&(w1, _, _)| w1.call_ns > w0_return_ns) {
                    candidates.push((g, Some(v)));
                }
            }
            if !writes.is_empty() {
                candidates.push((g, None));
            }
        }
        let Some((g, stale)) = rng.pick(&candidates) else {
            return false;
        };
        observe(history, g, stale);
        true
    }

    #[test]
    fn sequential_histories_pass() {
        assert_linearizable(&[]);
        assert_linearizable(&[
            get(1, 0, 10, None),
            set(1, 20, 30, 5),
            get(2, 40, 50, Some(5)),
            cas(1, 60, 70, Some(5), 6, true),
            cas(2, 80, 90, Some(5), 7, false),
            cas(2, 100, 110, None, 8, false),
            get(1, 120, 130, Some(6)),
            set(2, 140, 150, 6),
            get(1, 160, 170, Some(6)),
        ]);
        for seed in 1..=100 {
            let mut rng = Rng::new(seed);
            let history = sequential_history(&mut rng, 60, &mut Gen::new(3, seed % 2 == 0));
            let verdict = check(&history, BUDGET);
            assert!(verdict.is_linearizable(), "seed {seed}: {verdict}");
        }
    }

    #[test]
    fn overlapping_operations_that_can_be_ordered_pass() {
        // set 1 overlaps set 2 and may land after it.
        assert_linearizable(&[
            set(1, 0, 100, 1),
            set(2, 10, 50, 2),
            get(3, 60, 70, Some(1)),
        ]);
        // A get overlapping a set may see it or not.
        assert_linearizable(&[get(1, 0, 30, Some(2)), set(2, 10, 20, 2)]);
        assert_linearizable(&[get(1, 0, 30, None), set(2, 10, 20, 2)]);
        // Two racing cas on an absent key: one wins, a later get sees it.
        assert_linearizable(&[
            cas(1, 0, 20, None, 1, false),
            cas(2, 5, 25, None, 2, true),
            get(3, 30, 40, Some(2)),
        ]);
        // Reads inside a set's interval switch from old to new once.
        assert_linearizable(&[
            set(1, 0, 10, 1),
            set(2, 20, 100, 2),
            get(3, 30, 40, Some(1)),
            get(4, 35, 50, Some(2)),
            get(3, 60, 70, Some(2)),
        ]);
        // A return and a call at the same instant count as concurrent.
        assert_linearizable(&[set(1, 0, 10, 1), get(2, 10, 20, None)]);
    }

    #[test]
    fn random_linearizable_histories_pass() {
        for seed in 1..=300 {
            let mut rng = Rng::new(seed);
            let mut gen = Gen::new(1 + seed % 3, seed % 3 == 0);
            let timeout_percent = [0, 5, 20][usize::try_from(seed % 3).expect("small")];
            let history = concurrent_history(&mut rng, 4, 15, &mut gen, timeout_percent);
            let report = check_report(&history, BUDGET);
            assert!(
                report.verdict.is_linearizable(),
                "seed {seed}: {report}\nhistory: {history:#?}"
            );
        }
    }

    #[test]
    fn handwritten_violations_are_rejected() {
        // Stale read: set 1 completed before a later get that sees nothing.
        let detail = assert_rejected(&[set(1, 0, 10, 1), get(2, 20, 30, None)]);
        assert!(detail.contains("up to 30 ns"), "{detail}");
        assert!(
            detail.contains("client 2: get -> absent [20..30 ns]"),
            "{detail}"
        );
        assert!(detail.contains("leaves 1"), "{detail}");
        // Stale read of an overwritten value.
        assert_rejected(&[set(1, 0, 10, 1), set(1, 20, 30, 2), get(2, 40, 50, Some(1))]);
        // Lost cas: the cas succeeded, yet a later read sees the old value.
        assert_rejected(&[
            set(1, 0, 10, 1),
            cas(2, 20, 30, Some(1), 2, true),
            get(3, 40, 50, Some(1)),
        ]);
        // A cas claims success against a value the key did not hold.
        assert_rejected(&[set(1, 0, 10, 1), cas(2, 20, 30, None, 2, true)]);
        // A cas failed although the key held the expected value.
        assert_rejected(&[set(1, 0, 10, 1), cas(2, 20, 30, Some(1), 2, false)]);
        // A read of a value never written.
        assert_rejected(&[set(1, 0, 10, 1), get(2, 5, 30, Some(7))]);
        // Two reads disagree on the order of two concurrent writes.
        assert_rejected(&[
            set(1, 0, 100, 1),
            set(2, 0, 100, 2),
            get(3, 10, 20, Some(1)),
            get(4, 30, 40, Some(2)),
            get(3, 50, 60, Some(1)),
        ]);
    }

    #[test]
    fn corrupted_sequential_histories_are_rejected() {
        type Corruption = fn(&mut Rng, &mut [Operation]) -> bool;
        let corruptions: [(&str, Corruption); 3] = [
            ("unwritten read", corrupt_unwritten_read),
            ("stale read", corrupt_stale_sequential),
            ("flipped cas", corrupt_cas_outcome),
        ];
        for (name, corrupt) in corruptions {
            let mut rejected = 0;
            for seed in 1..=100 {
                let mut rng = Rng::new(seed);
                let mut history = sequential_history(&mut rng, 40, &mut Gen::new(2, seed % 2 == 0));
                if !corrupt(&mut rng, &mut history) {
                    continue;
                }
                match check(&history, BUDGET) {
                    Verdict::NotLinearizable { .. } => rejected += 1,
                    other => {
                        panic!("seed {seed}: {name} not rejected: {other}\nhistory: {history:#?}")
                    }
                }
            }
            assert!(rejected >= 80, "only {rejected} {name} histories generated");
        }
    }

    #[test]
    fn corrupted_concurrent_histories_are_rejected() {
        type Corruption = fn(&mut Rng, &mut [Operation]) -> bool;
        let corruptions: [(&str, Corruption); 2] = [
            ("unwritten read", corrupt_unwritten_read),
            ("stale read", corrupt_stale_concurrent),
        ];
        for (name, corrupt) in corruptions {
            let mut rejected = 0;
            for seed in 1..=150 {
                let mut rng = Rng::new(seed);
                let mut gen = Gen::new(1 + seed % 2, true);
                let mut history = concurrent_history(&mut rng, 4, 12, &mut gen, 10);
                if !corrupt(&mut rng, &mut history) {
                    continue;
                }
                match check(&history, BUDGET) {
                    Verdict::NotLinearizable { .. } => rejected += 1,
                    other => {
                        panic!("seed {seed}: {name} not rejected: {other}\nhistory: {history:#?}")
                    }
                }
            }
            assert!(
                rejected >= 100,
                "only {rejected} {name} histories generated"
            );
        }
    }

    #[test]
    fn timed_out_operations_are_open_ended() {
        let timed_out_set = |v, call_ns| Operation::timed_out(1, 0, Op::Set(v), call_ns);
        // Observed later, or never: both fine.
        assert_linearizable(&[timed_out_set(1, 0), get(2, 10, 20, Some(1))]);
        assert_linearizable(&[
            timed_out_set(1, 0),
            get(2, 10, 20, None),
            get(2, 30, 40, None),
        ]);
        // It may take effect long after the client gave up, even after a
        // later completed write.
        assert_linearizable(&[
            timed_out_set(1, 0),
            set(2, 50, 60, 2),
            get(3, 70, 80, Some(1)),
        ]);
        // But not before it was called...
        let detail = assert_rejected(&[get(2, 10, 20, Some(1)), timed_out_set(1, 100)]);
        assert!(detail.contains("get -> 1"), "{detail}");
        // ...and once observed it cannot be undone.
        assert_rejected(&[
            timed_out_set(1, 0),
            get(2, 10, 20, Some(1)),
            get(2, 30, 40, None),
        ]);
        // A timed-out cas may or may not have happened.
        let timed_out_cas = Operation::timed_out(
            1,
            0,
            Op::Cas {
                expected: None,
                new: 5,
            },
            0,
        );
        assert_linearizable(&[timed_out_cas.clone(), get(2, 10, 20, Some(5))]);
        assert_linearizable(&[timed_out_cas.clone(), get(2, 10, 20, None)]);
        // It cannot write if the key no longer held what it expected.
        let late_cas = Operation {
            call_ns: 6,
            ..timed_out_cas
        };
        assert_rejected(&[set(2, 0, 5, 1), late_cas, get(2, 10, 20, Some(5))]);
        // A timed-out get constrains nothing.
        let timed_out_get = Operation::timed_out(3, 0, Op::Get, 0);
        assert_linearizable(&[
            timed_out_get.clone(),
            set(1, 5, 10, 1),
            get(2, 20, 30, Some(1)),
        ]);
        assert_rejected(&[timed_out_get, set(1, 5, 10, 1), get(2, 20, 30, None)]);
        // Open operations alone are trivially fine.
        let report = check_report(&[timed_out_set(1, 0), timed_out_set(2, 1)], 0);
        assert!(report.verdict.is_linearizable(), "{report}");
        assert_eq!((report.open_operations, report.steps), (2, 0));
    }

    /// `n` concurrent sets of distinct values, then a read of a value none
    /// of them wrote: the search must try every subset of the sets.
    fn hard_history(n: u64) -> Vec<Operation> {
        let mut history: Vec<Operation> = (0..n).map(|v| set(1, v, 1000 + v, v + 1)).collect();
        history.push(get(2, 2000, 2010, Some(UNWRITTEN)));
        history
    }

    #[test]
    fn a_small_budget_exhausts() {
        let report = check_report(&hard_history(20), 5);
        assert_eq!(report.verdict, Verdict::Exhausted { key: 0 }, "{report}");
        assert_eq!(report.steps, 5);
        assert!(
            report.to_string().contains("budget exhausted on key 0"),
            "{report}"
        );
        // A thousand steps do not decide it either.
        assert_eq!(
            check(&hard_history(20), 1000),
            Verdict::Exhausted { key: 0 }
        );
        // A bigger budget decides a smaller instance.
        assert_rejected(&hard_history(8));
        // Without the bad read, one step per set suffices: the first
        // event is always a call the search can apply.
        let easy = hard_history(8)[..8].to_vec();
        assert_eq!(check(&easy, 5), Verdict::Exhausted { key: 0 });
        assert_eq!(check(&easy, 16), Verdict::Linearizable);
    }

    #[test]
    fn keys_are_checked_independently() {
        // Each key alone is fine; mixed into one register they would not be.
        let history = vec![
            on_key(1, set(1, 0, 10, 1)),
            on_key(2, set(2, 0, 10, 2)),
            on_key(1, get(1, 20, 30, Some(1))),
            on_key(2, get(2, 20, 30, Some(2))),
            on_key(3, Operation::timed_out(3, 3, Op::Set(3), 5)),
        ];
        let report = check_report(&history, BUDGET);
        assert!(report.verdict.is_linearizable(), "{report}");
        assert_eq!((report.keys, report.keys_checked), (3, 3));
        assert_eq!(
            (
                report.operations,
                report.open_operations,
                report.max_operations_per_key
            ),
            (5, 1, 2)
        );
        assert!(
            report.steps > 0 && report.max_steps_per_key <= report.steps,
            "{report}"
        );
        // The failing key is named, and the search stops there.
        let mut bad = history.clone();
        bad.push(on_key(2, get(2, 40, 50, Some(1))));
        let report = check_report(&bad, BUDGET);
        assert!(
            matches!(report.verdict, Verdict::NotLinearizable { key: 2, .. }),
            "{report}"
        );
        assert_eq!(report.keys_checked, 2);
        // A violation on a later key beats an exhausted earlier one.
        let mut mixed: Vec<Operation> =
            hard_history(20).into_iter().map(|o| on_key(0, o)).collect();
        mixed.extend(bad);
        assert!(matches!(
            check(&mixed, 1000),
            Verdict::NotLinearizable { key: 2, .. }
        ));
    }

    #[test]
    fn malformed_operations_are_reported() {
        let wrong_kind = Operation::completed(1, 4, Op::Get, 0, 10, Ret::Set);
        let Verdict::NotLinearizable { key, detail } = check(&[wrong_kind], BUDGET) else {
            panic!("a get answered by Set was accepted");
        };
        assert_eq!(key, 4);
        assert!(detail.starts_with("malformed"), "{detail}");
        let backwards = Operation::completed(1, 4, Op::Set(1), 10, 5, Ret::Set);
        assert!(!check(&[backwards], BUDGET).is_linearizable());
    }

    #[test]
    fn operations_display_readably() {
        assert_eq!(
            cas(2, 100, 250, None, 7, true).to_string(),
            "client 2: cas absent -> 7: ok [100..250 ns]"
        );
        assert_eq!(
            Operation::timed_out(1, 0, Op::Get, 5).to_string(),
            "client 1: get -> ? [5 ns.., timed out]"
        );
        assert_eq!(set(3, 1, 2, 9).to_string(), "client 3: set 9 [1..2 ns]");
    }
}
