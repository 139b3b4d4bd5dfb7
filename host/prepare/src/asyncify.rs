//! Step 3 of preparation: Asyncify, written here for Shoal, on exactly the functions the
//! call-graph analysis selected.
//!
//! The result speaks Binaryen's Asyncify protocol, which the runtime drives
//! (`shoal_runtime::capture`): five exports ([`ASYNCIFY_EXPORTS`]), a state global (0 normal,
//! 1 unwinding, 2 rewinding) and a data global pointing at a header `{current: i32, end: i32}`
//! in linear memory. Unwinding, every instrumented frame pushes a record (its locals and where
//! it was) at `current`; rewinding pops them in reverse order.
//!
//! # Why not Binaryen's pass
//!
//! Binaryen 116 took 7.6 s to instrument a 2 MB Go program (1,369 of 1,474 functions) and 21 s
//! for the 7 MB Python interpreter, and wasmtime then needed 2.1–2.6× longer to compile its
//! output than the original: preparation was 10× wasmtime's compile time. Binaryen flattens
//! every instrumented function (each expression's value in its own local) and guards every
//! statement with a state check. This pass works on the stack machine code as it is, streaming,
//! one function per thread, and guards whole runs of code at once.
//!
//! # The transformation of one instrumented function
//!
//! A *capture point* is a call that can unwind: a call of a blocking import or of an
//! instrumented function, or an indirect call whose type can reach one (the call graph says
//! which), in reachable code. A construct (`block`, `loop`, `if`) containing a capture point is
//! itself a point of the sequence it sits in. Points are numbered in code order; a construct
//! covers the range of the numbers inside it.
//!
//! * Every point is reached with an empty operand stack at its level: the values below it and
//!   its operands (arguments, block parameters, the `if` condition) are first stored in
//!   locals ("spilled"), and the operands are loaded back just before it. Cranelift keeps
//!   locals in registers, so this costs nothing at run time.
//! * **Records.** An unwinding frame pushes one record per frame: the point number at offset
//!   0, the values a rewind reads, and the record's size in its last 4 bytes (so the
//!   prologue can pop it: at entry, `if (state == REWINDING)` takes `current - size` as the
//!   record, moves `current` there and reads the point number into a local `target`). Each
//!   sequence lays out the values its points keep after the enclosing constructs' own: the
//!   values below the point, the operands a rewind passes on (an import's arguments, an
//!   indirect call's, an `if` condition, block parameters; not the arguments of a direct
//!   call of an instrumented function, whose rewinding callee restores its own locals), and,
//!   for a call, the function's own locals live right after it (a backward liveness
//!   analysis per point, bounded in work).
//! * **Unwind.** After each point call, `if (state) { record = push(size, k); store what
//!   this point keeps; br $exit }`, where `$exit` wraps the body and returns zeros. Only the
//!   values live at that point are stored, inline, so no value has to reach a shared block.
//! * **Rewind.** A sequence with points opens a `block` per point (its landing) and starts
//!   with `if (state == REWINDING) { load the sequence's layout; zero the operands a rewind
//!   does not read; branch to the landing of the point covering target }` (a `br_table` by
//!   point number, or comparisons when nested points make the range sparse). The normal
//!   path falls into each landing at the end of the segment before the point. A sequence
//!   whose only point comes first needs no landing: the rewind restores and falls in.
//!
//! Why this shape: wasmtime's compile time of the output grows with its blocks and, above
//! all, with values that live long or meet at many joins. A rewind path that restores every
//! local at entry and then skips code (Binaryen's shape, and this pass's before) makes each
//! restored value live from the entry to its point, through every skipped region: the
//! CPython eval loop (50 KB, 371 points, ~50 nested blocks) then took wasmtime 1.6 s to
//! compile alone. Restoring per sequence, at its start, and saving per point, inline, keeps
//! every value's life local: the same function compiles in 0.36 s.
//!
//! Spill locals are shared by points at the same nesting depth (siblings are never live at
//! once); a point inside a construct uses the next depth's locals, so the construct's own
//! spilled values survive it. Locals are appended after the function's own, so no local index
//! moves; branch depths are renumbered for the frames added.
//!
//! Limits, as with Binaryen: a function whose locals or spilled values include references
//! cannot be saved in linear memory (the call graph refuses it), and tail calls are refused.

use super::callgraph::CallGraph;
use super::sections::{sections, Section};
use super::validate::wasm_features;
use super::PrepareError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use wasm_encoder::{
    BlockType, CodeSection, Encode, Function, Instruction, MemArg, ValType as EVal,
};
use wasmparser::{
    BinaryReader, FuncToValidate, FuncValidatorAllocations, FunctionBody, Operator, Parser,
    ValType, ValidPayload, Validator, ValidatorResources, WasmModuleResources,
};

/// Exports Asyncify adds to an instrumented module (its runtime API).
pub const ASYNCIFY_EXPORTS: [&str; 5] = [
    "asyncify_start_unwind",
    "asyncify_stop_unwind",
    "asyncify_start_rewind",
    "asyncify_stop_rewind",
    "asyncify_get_state",
];

/// Name of the internal (not exported) function every unwinding frame calls to reserve its
/// record: `(size, point) -> record address`, trapping if the buffer would overflow.
pub const PUSH_FUNCTION_NAME: &str = "asyncify_push_frame";

/// Names given to the two globals added (in the name section).
pub const ASYNCIFY_GLOBALS: [&str; 2] = ["__asyncify_state", "__asyncify_data"];

const UNWINDING: i32 = 1;
const REWINDING: i32 = 2;

/// Refuses modules this pass cannot instrument.
pub(crate) fn check_supported(
    summary: &super::validate::ModuleSummary,
    graph: &CallGraph,
    display_names: &[String],
) -> Result<(), PrepareError> {
    if let Some((func, offset)) = graph.tail_call {
        return Err(PrepareError::unsupported(format!(
            "tail calls (in function `{}` at byte offset {offset:#x}): a frame replaced by a \
             tail call cannot be saved and rewound",
            display_names
                .get(func as usize)
                .map(String::as_str)
                .unwrap_or("?")
        )));
    }
    if summary.memory_count == 0 {
        return Err(PrepareError::unsupported(
            "no linear memory: Asyncify saves the stack into linear memory",
        ));
    }
    if let Some(i) = summary.imports.iter().find(|i| i.module == "asyncify") {
        return Err(PrepareError::unsupported(format!(
            "an import from the reserved module `asyncify` (`{}`)",
            i.name
        )));
    }
    if let Some(e) = summary
        .exports
        .iter()
        .find(|e| ASYNCIFY_EXPORTS.contains(&e.name.as_str()))
    {
        return Err(PrepareError::unsupported(format!(
            "an export named `{}`: the module looks already Asyncify-instrumented",
            e.name
        )));
    }
    for (f, instrument) in graph.instrument.iter().enumerate() {
        if !instrument {
            continue;
        }
        if let Some(Some(why)) = graph.asyncify_blocker.get(f) {
            return Err(PrepareError::unsupported(format!(
                "function `{}` can be on the stack during a blocking call but contains {why}, \
                 which Asyncify cannot save and restore",
                display_names.get(f).map(String::as_str).unwrap_or("?")
            )));
        }
    }
    Ok(())
}

/// What [`run`] added, by index.
pub(crate) struct Added {
    /// The instrumented module.
    pub bytes: Vec<u8>,
    /// Index of the first of the five API functions (in [`ASYNCIFY_EXPORTS`] order).
    pub first_function: u32,
    /// Index of the state global; the data global follows it.
    pub first_global: u32,
}

fn err(e: wasmparser::BinaryReaderError) -> PrepareError {
    PrepareError::Asyncify(format!("reading the module: {e}"))
}

fn leb(n: u32, out: &mut Vec<u8>) {
    n.encode(out);
}

/// `data` of a vector section with `extra` entries (`count` of them) appended.
fn append_entries(s: &Section<'_>, count: u32, extra: &[u8]) -> Result<Vec<u8>, PrepareError> {
    let mut r = BinaryReader::new(s.data, 0);
    let old = r.read_var_u32().map_err(err)?;
    let mut out = Vec::with_capacity(s.data.len() + extra.len() + 5);
    leb(
        old.checked_add(count)
            .ok_or_else(|| PrepareError::Asyncify("section too large".into()))?,
        &mut out,
    );
    out.extend_from_slice(s.data.get(r.current_position()..).unwrap_or_default());
    out.extend_from_slice(extra);
    Ok(out)
}

fn name_bytes(name: &str, out: &mut Vec<u8>) {
    leb(name.len() as u32, out);
    out.extend_from_slice(name.as_bytes());
}

/// One function's rewritten body (locals and code, without its size), or why not.
type Rewritten = Result<Vec<u8>, PrepareError>;

/// A local kept in a saved frame: its index, type and offset in the record.
type SavedLocal = (u32, EVal, u64);

/// One instrumented function waiting for its rewrite.
struct Job<'a> {
    func: FuncToValidate<ValidatorResources>,
    body: FunctionBody<'a>,
}

/// Instruments `wasm` (already validated) as the module docs describe.
pub(crate) fn run(wasm: &[u8], graph: &CallGraph, asserts: bool) -> Result<Added, PrepareError> {
    // Read the module once through the validator: it hands out one function validator per
    // body, which gives the operand types at every capture point.
    let mut validator = Validator::new_with_features(wasm_features());
    let mut jobs: Vec<Option<Job<'_>>> = Vec::new();
    let mut bodies: Vec<&[u8]> = Vec::new();
    let mut type_count = 0u32;
    let mut total_globals = 0u32;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(err)?;
        match validator.payload(&payload).map_err(err)? {
            ValidPayload::Func(func, body) => {
                bodies.push(&wasm[body.range()]);
                let instrument = graph.instrument.get(func.index as usize).copied() == Some(true);
                jobs.push(instrument.then_some(Job { func, body }));
            }
            ValidPayload::End(types) => {
                type_count = types.as_ref().core_type_count_in_module();
                total_globals = types.as_ref().global_count();
            }
            _ => {}
        }
    }
    let state_global = total_globals;
    let data_global = total_globals + 1;
    let first_function = graph.total_funcs;
    let ctx = Ctx {
        graph,
        push_function: first_function + ASYNCIFY_EXPORTS.len() as u32,
        state_global,
        data_global,
        asserts,
    };

    // The rewrite, one function per thread at a time.
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut done: Vec<Option<Rewritten>> = Vec::new();
    done.resize_with(jobs.len(), || None);
    let jobs_ref = &jobs;
    let results: Vec<Vec<(usize, Rewritten)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let next = &next;
                let ctx = &ctx;
                scope.spawn(move || {
                    let mut out = Vec::new();
                    let mut allocs = FuncValidatorAllocations::default();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(slot) = jobs_ref.get(i) else { break };
                        let Some(job) = slot else { continue };
                        let func = FuncToValidate {
                            resources: job.func.resources.clone(),
                            index: job.func.index,
                            ty: job.func.ty,
                            features: job.func.features,
                        };
                        let (r, back) = rewrite(ctx, func, &job.body, allocs);
                        allocs = back;
                        out.push((i, r));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    for (i, r) in results.into_iter().flatten() {
        if let Some(slot) = done.get_mut(i) {
            *slot = Some(r);
        }
    }

    // The five API functions.
    let api = api_functions(state_global, data_global);
    let types = [
        (vec![EVal::I32], vec![]),
        (vec![], vec![]),
        (vec![], vec![EVal::I32]),
        (vec![EVal::I32, EVal::I32], vec![EVal::I32]),
    ];
    // start_unwind, stop_unwind, start_rewind, stop_rewind, get_state, push
    let api_types = [0u32, 1, 0, 1, 2, 3];

    let mut module = wasm_encoder::Module::new();
    let mut saw = [false; 4]; // type, function, global, export
    let emit_globals = |out: &mut Vec<u8>| {
        for _ in 0..2 {
            out.extend_from_slice(&[0x7F, 0x01, 0x41, 0x00, 0x0B]);
        }
    };
    let emit_exports = |out: &mut Vec<u8>| {
        for (k, name) in ASYNCIFY_EXPORTS.iter().enumerate() {
            name_bytes(name, out);
            out.push(0x00);
            leb(first_function + k as u32, out);
        }
    };
    let rank_of = |id: u8| super::sections::rank(id);
    let pending_missing =
        |module: &mut wasm_encoder::Module, before_rank: Option<u8>, saw: &mut [bool; 4]| {
            // Insert a global or export section the module lacks, in format order.
            if !saw[2] && before_rank > rank_of(6) {
                let mut d = Vec::new();
                leb(2, &mut d);
                emit_globals(&mut d);
                module.section(&wasm_encoder::RawSection { id: 6, data: &d });
                saw[2] = true;
            }
            if !saw[3] && before_rank > rank_of(7) {
                let mut d = Vec::new();
                leb(5, &mut d);
                emit_exports(&mut d);
                module.section(&wasm_encoder::RawSection { id: 7, data: &d });
                saw[3] = true;
            }
        };
    for s in sections(wasm)? {
        if let Some(name) = s.custom_name() {
            if name == "name" || name.starts_with(".debug_") {
                continue; // names are rewritten later; DWARF offsets no longer hold
            }
            module.section(&wasm_encoder::RawSection {
                id: s.id,
                data: s.data,
            });
            continue;
        }
        pending_missing(&mut module, rank_of(s.id), &mut saw);
        let data = match s.id {
            1 => {
                saw[0] = true;
                let mut extra = Vec::new();
                for (params, results) in &types {
                    extra.push(0x60);
                    params.as_slice().encode(&mut extra);
                    results.as_slice().encode(&mut extra);
                }
                append_entries(&s, types.len() as u32, &extra)?
            }
            3 => {
                saw[1] = true;
                let mut extra = Vec::new();
                for t in api_types {
                    leb(type_count + t, &mut extra);
                }
                append_entries(&s, api_types.len() as u32, &extra)?
            }
            6 => {
                saw[2] = true;
                let mut extra = Vec::new();
                emit_globals(&mut extra);
                append_entries(&s, 2, &extra)?
            }
            7 => {
                saw[3] = true;
                let mut extra = Vec::new();
                emit_exports(&mut extra);
                append_entries(&s, ASYNCIFY_EXPORTS.len() as u32, &extra)?
            }
            10 => {
                let mut code = CodeSection::new();
                for (i, raw) in bodies.iter().enumerate() {
                    let instrumented = matches!(jobs.get(i), Some(Some(_)));
                    match done.get_mut(i).and_then(Option::take) {
                        Some(rewritten) => {
                            code.raw(&rewritten?);
                        }
                        // A function to instrument must never go out as it came in: a
                        // capture through it would be silently wrong.
                        None if instrumented => {
                            return Err(internal("a function's instrumentation did not finish"));
                        }
                        None => {
                            code.raw(raw);
                        }
                    }
                }
                for f in &api {
                    code.function(f);
                }
                module.section(&code);
                continue;
            }
            _ => s.data.to_vec(),
        };
        module.section(&wasm_encoder::RawSection {
            id: s.id,
            data: &data,
        });
    }
    pending_missing(&mut module, Some(u8::MAX), &mut saw);
    if !saw[0] || !saw[1] {
        return Err(PrepareError::Asyncify(
            "internal: an instrumented module without a type or function section".into(),
        ));
    }
    Ok(Added {
        bytes: module.finish(),
        first_function,
        first_global: state_global,
    })
}

/// What every function rewrite needs to know about the module.
struct Ctx<'a> {
    graph: &'a CallGraph,
    /// The internal [`PUSH_FUNCTION_NAME`] function.
    push_function: u32,
    state_global: u32,
    data_global: u32,
    asserts: bool,
}

impl Ctx<'_> {
    /// Can a direct call of `f` unwind?
    fn call_can_unwind(&self, f: u32) -> bool {
        self.graph.instrument.get(f as usize).copied() == Some(true)
            || self.graph.blocking.contains(&f)
    }

    /// Can an indirect call of type `t` unwind? (Unknown types are assumed to.)
    fn indirect_can_unwind(&self, t: u32) -> bool {
        self.graph
            .indirect_may_block
            .get(&t)
            .copied()
            .unwrap_or(true)
    }
}

fn mem(offset: u64) -> MemArg {
    MemArg {
        offset,
        align: 0,
        memory_index: 0,
    }
}

/// The five API functions, in [`ASYNCIFY_EXPORTS`] order.
fn api_functions(state: u32, data: u32) -> Vec<Function> {
    // `current <= end`, or trap: the buffer was overrun (or never set up).
    let check = |f: &mut Function| {
        f.instruction(&Instruction::GlobalGet(data))
            .instruction(&Instruction::I32Load(mem(0)))
            .instruction(&Instruction::GlobalGet(data))
            .instruction(&Instruction::I32Load(mem(4)))
            .instruction(&Instruction::I32GtU)
            .instruction(&Instruction::If(BlockType::Empty))
            .instruction(&Instruction::Unreachable)
            .instruction(&Instruction::End);
    };
    let start = |value: i32| {
        let mut f = Function::new([]);
        f.instruction(&Instruction::I32Const(value))
            .instruction(&Instruction::GlobalSet(state))
            .instruction(&Instruction::LocalGet(0))
            .instruction(&Instruction::GlobalSet(data));
        check(&mut f);
        f.instruction(&Instruction::End);
        f
    };
    let stop = || {
        let mut f = Function::new([]);
        f.instruction(&Instruction::I32Const(0))
            .instruction(&Instruction::GlobalSet(state));
        check(&mut f);
        f.instruction(&Instruction::End);
        f
    };
    let mut get = Function::new([]);
    get.instruction(&Instruction::GlobalGet(state))
        .instruction(&Instruction::End);
    vec![
        start(UNWINDING),
        stop(),
        start(REWINDING),
        stop(),
        get,
        push_frame(data),
    ]
}

/// [`PUSH_FUNCTION_NAME`]`(size, point)`: reserves a record of `size` bytes at `current`,
/// trapping if it would pass `end` (or wrap), writes the point number at its start and the
/// size in its last 4 bytes (so a rewind can pop it), and returns its address.
fn push_frame(data: u32) -> Function {
    let (size, point, at, next) = (0, 1, 2, 3);
    let mut f = Function::new([(2, EVal::I32)]);
    f.instruction(&Instruction::GlobalGet(data))
        .instruction(&Instruction::I32Load(mem(0)))
        .instruction(&Instruction::LocalTee(at))
        .instruction(&Instruction::LocalGet(size))
        .instruction(&Instruction::I32Add)
        .instruction(&Instruction::LocalTee(next))
        .instruction(&Instruction::LocalGet(at))
        .instruction(&Instruction::I32LtU)
        .instruction(&Instruction::LocalGet(next))
        .instruction(&Instruction::GlobalGet(data))
        .instruction(&Instruction::I32Load(mem(4)))
        .instruction(&Instruction::I32GtU)
        .instruction(&Instruction::I32Or)
        .instruction(&Instruction::If(BlockType::Empty))
        .instruction(&Instruction::Unreachable)
        .instruction(&Instruction::End)
        .instruction(&Instruction::GlobalGet(data))
        .instruction(&Instruction::LocalGet(next))
        .instruction(&Instruction::I32Store(mem(0)))
        .instruction(&Instruction::LocalGet(at))
        .instruction(&Instruction::LocalGet(point))
        .instruction(&Instruction::I32Store(mem(RECORD_TARGET_OFFSET)))
        .instruction(&Instruction::LocalGet(next))
        .instruction(&Instruction::I32Const(4))
        .instruction(&Instruction::I32Sub)
        .instruction(&Instruction::LocalGet(size))
        .instruction(&Instruction::I32Store(mem(0)))
        .instruction(&Instruction::LocalGet(at))
        .instruction(&Instruction::End);
    f
}

// ---------------------------------------------------------------------------------------------
// One function.

/// What kind of point, for what a rewind reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PointKind {
    /// A call whose operands a rewind passes on: a blocking import's arguments, an indirect
    /// call's (its callee and arguments).
    CallReadingOperands,
    /// A direct call of an instrumented function: the rewinding callee takes its locals from
    /// its own record and ignores its arguments.
    CallOfInstrumented,
    /// A construct containing points: its `if` condition and block parameters are read.
    Construct,
}

/// What the analysis found at one operator.
#[derive(Debug)]
struct Point {
    kind: PointKind,
    /// Call: (k, k). Construct: the range of point numbers inside.
    first: u32,
    last: u32,
    /// Types of the frame's operand stack at the operator, bottom to top, operands included.
    stack: Vec<ValType>,
    /// How many of the top values the operator consumes.
    consumed: usize,
    /// Types the operator leaves (call results, construct results).
    results: Vec<ValType>,
    /// Block parameters (constructs only).
    params: Vec<ValType>,
}

/// A point of a sequence: its number range and its operator.
#[derive(Debug, Clone, Copy)]
struct SeqPoint {
    first: u32,
    last: u32,
    /// Index of the call or of the construct's opening operator.
    op: usize,
    /// Nothing of its sequence comes before it: a rewind has nothing to skip to reach it.
    at_start: bool,
}

/// A construct being analysed.
struct Frame1 {
    open_op: usize,
    /// Its opening operator was the first of its parent's sequence.
    opened_at_start: bool,
    /// Operators of its current sequence seen so far (nested constructs count as one).
    seq_ops: usize,
    dead: bool,
    seq: usize,
    candidate: Option<Point>,
    first: Option<u32>,
    last: Option<u32>,
}

/// The analysis of one body: which operators are points, and how many points each sequence has.
struct Plan {
    points: HashMap<usize, Point>,
    /// By sequence (in code order): each of its points.
    seq_points: Vec<Vec<SeqPoint>>,
    params: Vec<ValType>,
    results: Vec<ValType>,
    locals: Vec<ValType>,
    /// By call point (operator index): the function's own locals (parameters included) live
    /// right after it, the only ones its record needs (see [`live_after_points`]). `None`:
    /// the analysis ran out of work and every local counts as live.
    live_after: Option<HashMap<usize, Vec<u32>>>,
}

impl Plan {
    /// The function's own locals a record of the call point at operator `at` keeps.
    fn live_after(&self, at: usize) -> Vec<u32> {
        match &self.live_after {
            Some(m) => m.get(&at).cloned().unwrap_or_default(),
            None => (0..self.locals.len() as u32).collect(),
        }
    }
}

fn block_sig<R: WasmModuleResources>(
    r: &R,
    bt: wasmparser::BlockType,
) -> Option<(Vec<ValType>, Vec<ValType>)> {
    Some(match bt {
        wasmparser::BlockType::Empty => (vec![], vec![]),
        wasmparser::BlockType::Type(t) => (vec![], vec![t]),
        wasmparser::BlockType::FuncType(i) => {
            let f = r.sub_type_at(i)?.unwrap_func();
            (f.params().to_vec(), f.results().to_vec())
        }
    })
}

fn internal(what: &str) -> PrepareError {
    PrepareError::Asyncify(format!("internal: {what}"))
}

fn analyse(
    ctx: &Ctx<'_>,
    func: FuncToValidate<ValidatorResources>,
    body: &FunctionBody<'_>,
    allocs: FuncValidatorAllocations,
) -> (Result<Plan, PrepareError>, FuncValidatorAllocations) {
    let ty_index = func.ty;
    let mut fv = func.into_validator(allocs);
    let r = (|| {
        let resources = fv.resources().clone();
        let fty = resources
            .sub_type_at(ty_index)
            .ok_or_else(|| internal("function type"))?
            .unwrap_func()
            .clone();
        let mut locals: Vec<ValType> = fty.params().to_vec();
        let mut lr = body.get_locals_reader().map_err(err)?;
        for _ in 0..lr.get_count() {
            let offset = lr.original_position();
            let (count, ty) = lr.read().map_err(err)?;
            fv.define_locals(offset, count, ty).map_err(err)?;
            locals.extend(std::iter::repeat_n(ty, count as usize));
        }
        let mut plan = Plan {
            points: HashMap::new(),
            seq_points: vec![vec![]],
            params: fty.params().to_vec(),
            results: fty.results().to_vec(),
            live_after: None,
            locals,
        };
        let mut all_ops: Vec<Operator<'_>> = Vec::new();
        let mut frames = vec![Frame1 {
            open_op: 0,
            opened_at_start: false,
            seq_ops: 0,
            dead: false,
            seq: 0,
            candidate: None,
            first: None,
            last: None,
        }];
        let mut next_point = 0u32;
        let mut ops = body.get_operators_reader().map_err(err)?;
        let mut i = 0usize;
        let stack_types = |fv: &wasmparser::FuncValidator<ValidatorResources>| -> Result<Vec<ValType>, PrepareError> {
            let frame = fv.get_control_frame(0).ok_or_else(|| internal("no frame"))?;
            let height = fv.operand_stack_height() as usize;
            let n = height.checked_sub(frame.height).ok_or_else(|| internal("stack height"))?;
            let mut v = Vec::with_capacity(n);
            for d in (0..n).rev() {
                match fv.get_operand_type(d) {
                    Some(Some(t)) => v.push(t),
                    _ => return Err(internal("an operand of unknown type in reachable code")),
                }
            }
            Ok(v)
        };
        while !ops.eof() {
            let (op, offset) = ops.read_with_offset().map_err(err)?;
            let top = frames.last_mut().ok_or_else(|| internal("frames"))?;
            let at_start = top.seq_ops == 0;
            if !matches!(op, Operator::End | Operator::Else) {
                top.seq_ops += 1;
            }
            let live = !top.dead
                && !fv
                    .get_control_frame(0)
                    .ok_or_else(|| internal("no frame"))?
                    .unreachable;
            let call_type = match &op {
                Operator::Call { function_index }
                    if live && ctx.call_can_unwind(*function_index) =>
                {
                    let t = resources
                        .type_index_of_function(*function_index)
                        .ok_or_else(|| internal("callee type"))?;
                    let kind = if *function_index < ctx.graph.imported_funcs {
                        PointKind::CallReadingOperands
                    } else {
                        PointKind::CallOfInstrumented
                    };
                    Some((t, 0, kind))
                }
                Operator::CallIndirect { type_index, .. }
                    if live && ctx.indirect_can_unwind(*type_index) =>
                {
                    Some((*type_index, 1, PointKind::CallReadingOperands))
                }
                _ => None,
            };
            if let Some((t, extra, kind)) = call_type {
                let f = resources
                    .sub_type_at(t)
                    .ok_or_else(|| internal("call type"))?
                    .unwrap_func();
                let k = next_point;
                next_point += 1;
                plan.points.insert(
                    i,
                    Point {
                        kind,
                        first: k,
                        last: k,
                        stack: stack_types(&fv)?,
                        consumed: f.params().len() + extra,
                        results: f.results().to_vec(),
                        params: vec![],
                    },
                );
                let top = frames.last_mut().ok_or_else(|| internal("frames"))?;
                plan.seq_points[top.seq].push(SeqPoint {
                    first: k,
                    last: k,
                    op: i,
                    at_start,
                });
                top.first.get_or_insert(k);
                top.last = Some(k);
            }
            match &op {
                Operator::Block { blockty }
                | Operator::Loop { blockty }
                | Operator::If { blockty } => {
                    let candidate = if live {
                        let (params, results) = block_sig(&resources, *blockty)
                            .ok_or_else(|| internal("block type"))?;
                        let is_if = matches!(op, Operator::If { .. });
                        Some(Point {
                            kind: PointKind::Construct,
                            first: 0,
                            last: 0,
                            stack: stack_types(&fv)?,
                            consumed: params.len() + usize::from(is_if),
                            results,
                            params,
                        })
                    } else {
                        None
                    };
                    plan.seq_points.push(vec![]);
                    frames.push(Frame1 {
                        open_op: i,
                        opened_at_start: at_start,
                        seq_ops: 0,
                        dead: !live,
                        seq: plan.seq_points.len() - 1,
                        candidate,
                        first: None,
                        last: None,
                    });
                }
                Operator::Else => {
                    plan.seq_points.push(vec![]);
                    let top = frames.last_mut().ok_or_else(|| internal("frames"))?;
                    top.seq = plan.seq_points.len() - 1;
                    top.seq_ops = 0;
                }
                Operator::End if frames.len() > 1 => {
                    let f = frames.pop().ok_or_else(|| internal("frames"))?;
                    if let (Some(first), Some(last), Some(mut p)) = (f.first, f.last, f.candidate) {
                        p.first = first;
                        p.last = last;
                        plan.points.insert(f.open_op, p);
                        let parent = frames.last_mut().ok_or_else(|| internal("frames"))?;
                        plan.seq_points[parent.seq].push(SeqPoint {
                            first,
                            last,
                            op: f.open_op,
                            at_start: f.opened_at_start,
                        });
                        parent.first.get_or_insert(first);
                        parent.last = Some(last);
                    }
                }
                Operator::ReturnCall { .. }
                | Operator::ReturnCallIndirect { .. }
                | Operator::ReturnCallRef { .. }
                | Operator::CallRef { .. }
                | Operator::TryTable { .. }
                | Operator::Try { .. }
                | Operator::Delegate { .. }
                | Operator::Rethrow { .. }
                | Operator::BrOnNull { .. }
                | Operator::BrOnNonNull { .. }
                | Operator::BrOnCast { .. }
                | Operator::BrOnCastFail { .. } => {
                    return Err(PrepareError::unsupported(format!(
                        "`{op:?}` in a function that can be on the stack during a blocking call"
                    )));
                }
                _ => {}
            }
            fv.op(offset, &op).map_err(err)?;
            all_ops.push(op);
            i += 1;
        }
        plan.live_after = live_after_points(&all_ops, &plan.points, plan.locals.len());
        Ok(plan)
    })();
    (r, fv.into_allocations())
}

/// How much one function may grow, at most, by instrumentation: `OUTPUT_GROWTH_MAX` times its
/// size plus `OUTPUT_SLACK_BYTES`. Real code grows by well under 2×; a module that declares
/// tens of thousands of locals in a few bytes and keeps them live across a call would
/// otherwise turn kilobytes into gigabytes.
const OUTPUT_GROWTH_MAX: usize = 32;
const OUTPUT_SLACK_BYTES: usize = 1 << 20;

fn rewrite(
    ctx: &Ctx<'_>,
    func: FuncToValidate<ValidatorResources>,
    body: &FunctionBody<'_>,
    allocs: FuncValidatorAllocations,
) -> (Result<Vec<u8>, PrepareError>, FuncValidatorAllocations) {
    let (plan, allocs) = analyse(ctx, func, body, allocs);
    let r = plan.and_then(|plan| Emitter::new(ctx, &plan).run(body));
    let input = body.range().len();
    let r = r.and_then(|out| {
        if out.len() > OUTPUT_GROWTH_MAX * input + OUTPUT_SLACK_BYTES {
            Err(PrepareError::unsupported(format!(
                "a function of {input} bytes that Asyncify would grow to {} bytes (too many \
                 locals to save at its blocking calls)",
                out.len()
            )))
        } else {
            Ok(out)
        }
    });
    (r, allocs)
}

fn enc(t: ValType) -> Result<EVal, PrepareError> {
    Ok(match t {
        ValType::I32 => EVal::I32,
        ValType::I64 => EVal::I64,
        ValType::F32 => EVal::F32,
        ValType::F64 => EVal::F64,
        ValType::V128 => EVal::V128,
        ValType::Ref(_) => {
            return Err(PrepareError::unsupported(
                "a reference-typed value live across a blocking call (it cannot be saved in \
                 linear memory)",
            ))
        }
    })
}

/// Bytes a value of `t` takes in a saved frame.
fn size_of(t: EVal) -> u64 {
    match t {
        EVal::I32 | EVal::F32 => 4,
        EVal::I64 | EVal::F64 => 8,
        _ => 16,
    }
}

/// Pool of spill locals: (depth, type, n-th) → local index. Depth `usize::MAX` is the
/// momentary pool (results moved past spilled values).
type Pools = HashMap<(usize, EVal, usize), u32>;

/// An original frame during emission.
struct Frame2 {
    /// Index of its frame in the new control stack.
    new_index: usize,
    /// Points left in its current sequence.
    seq_left: u32,
    /// It is a point (a construct containing points): what to do after its `end`.
    point: Option<PointDone>,
    /// Locals holding its block parameters (a point construct with parameters).
    param_locals: Vec<u32>,
    /// Nesting depth of points (for the spill pools) of the points in it.
    depth: usize,
    /// A point construct: the locals a rewind through it restores (the values below it, its
    /// operands), at their offsets in every record saved inside it.
    part: Vec<SavedLocal>,
    /// Offset in a record where the layout of the points inside this frame begins.
    prefix_end: u64,
    /// End of the layout of the current sequence's points (a record of a point in it ends
    /// there, before its size trailer).
    seq_end: u64,
}

/// What a sequence's start decided for one of its points.
struct PointPlan {
    /// Locals the point's operand stack is spilled to, bottom to top.
    spill: Vec<u32>,
    /// A construct's parameter locals (see [`Emitter::enter_point`]).
    param_locals: Vec<u32>,
    /// What a record of this point keeps of its own frame level, at its offsets.
    saved: Vec<SavedLocal>,
    /// Reached through a landing block (else it is its sequence's only point, with nothing
    /// before it: the dispatch falls into it).
    landing: bool,
}

struct PointDone {
    last_in_seq: bool,
    below: Vec<u32>,
    results: Vec<EVal>,
}

/// Offset of the point number in a record; the record's size is in its last 4 bytes.
const RECORD_TARGET_OFFSET: u64 = 0;

struct Emitter<'a> {
    ctx: &'a Ctx<'a>,
    plan: &'a Plan,
    out: Vec<u8>,
    /// Open frames of the new function (the function frame counts).
    new_depth: usize,
    frames: Vec<Frame2>,
    extra_locals: Vec<EVal>,
    pools: Pools,
    /// The point a rewind goes to, read from the record in the prologue. Never saved.
    target_local: u32,
    /// The record being read (rewind) or written (unwind). Never saved.
    ptr_local: u32,
    seq: usize,
    /// By operator index: the points of the sequences started and not yet reached.
    point_plans: HashMap<usize, PointPlan>,
}

impl<'a> Emitter<'a> {
    fn new(ctx: &'a Ctx<'a>, plan: &'a Plan) -> Self {
        let n = plan.locals.len() as u32;
        Emitter {
            ctx,
            plan,
            out: Vec::new(),
            new_depth: 1,
            frames: Vec::new(),
            extra_locals: vec![EVal::I32, EVal::I32],
            pools: HashMap::new(),
            target_local: n,
            ptr_local: n + 1,
            seq: 0,
            point_plans: HashMap::new(),
        }
    }

    fn ins(&mut self, i: Instruction<'_>) {
        i.encode(&mut self.out);
    }

    fn new_local(&mut self, t: EVal) -> u32 {
        let idx = self.plan.locals.len() as u32 + self.extra_locals.len() as u32;
        self.extra_locals.push(t);
        idx
    }

    /// Type of local `l` (own or added).
    fn local_type(&self, l: u32) -> Result<EVal, PrepareError> {
        let own = self.plan.locals.len();
        match (l as usize).checked_sub(own) {
            None => enc(self.plan.locals[l as usize]),
            Some(i) => self
                .extra_locals
                .get(i)
                .copied()
                .ok_or_else(|| internal("local index")),
        }
    }

    /// Locals for `types` in the pool of `depth`, one per value, bottom to top.
    fn pool(&mut self, depth: usize, types: &[ValType]) -> Result<Vec<u32>, PrepareError> {
        let types = types
            .iter()
            .map(|&t| enc(t))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.pool_of(depth, &types))
    }

    /// [`Self::pool`] for encoder types: the n-th value of a type at `depth` always gets the
    /// same local, so sibling points share them.
    fn pool_of(&mut self, depth: usize, types: &[EVal]) -> Vec<u32> {
        let mut nth: HashMap<EVal, usize> = HashMap::new();
        let mut out = Vec::with_capacity(types.len());
        for &t in types {
            let n = nth.entry(t).or_default();
            let key = (depth, t, *n);
            *n += 1;
            let idx = match self.pools.get(&key) {
                Some(&i) => i,
                None => {
                    let i = self.new_local(t);
                    self.pools.insert(key, i);
                    i
                }
            };
            out.push(idx);
        }
        out
    }

    /// `state == value` on the stack.
    fn state_is(&mut self, value: i32) {
        self.ins(Instruction::GlobalGet(self.ctx.state_global));
        self.ins(Instruction::I32Const(value));
        self.ins(Instruction::I32Eq);
    }

    fn open(&mut self, i: Instruction<'_>) {
        self.ins(i);
        self.new_depth += 1;
    }

    fn close(&mut self) {
        self.ins(Instruction::End);
        self.new_depth -= 1;
    }

    fn zero(&mut self, t: EVal) {
        self.ins(match t {
            EVal::I32 => Instruction::I32Const(0),
            EVal::I64 => Instruction::I64Const(0),
            EVal::F32 => Instruction::F32Const(0.0.into()),
            EVal::F64 => Instruction::F64Const(0.0.into()),
            _ => Instruction::V128Const(0),
        });
    }

    /// Loads `saved` from the record at `ptr` into their locals.
    fn load_all(&mut self, saved: &[SavedLocal]) {
        for &(l, t, o) in saved {
            self.ins(Instruction::LocalGet(self.ptr_local));
            self.ins(match t {
                EVal::I32 => Instruction::I32Load(mem(o)),
                EVal::I64 => Instruction::I64Load(mem(o)),
                EVal::F32 => Instruction::F32Load(mem(o)),
                EVal::F64 => Instruction::F64Load(mem(o)),
                _ => Instruction::V128Load(mem(o)),
            });
            self.ins(Instruction::LocalSet(l));
        }
    }

    /// Stores `saved` from their locals into the record at `ptr`.
    fn store_all(&mut self, saved: &[SavedLocal]) {
        for &(l, t, o) in saved {
            self.ins(Instruction::LocalGet(self.ptr_local));
            self.ins(Instruction::LocalGet(l));
            self.ins(match t {
                EVal::I32 => Instruction::I32Store(mem(o)),
                EVal::I64 => Instruction::I64Store(mem(o)),
                EVal::F32 => Instruction::F32Store(mem(o)),
                EVal::F64 => Instruction::F64Store(mem(o)),
                _ => Instruction::V128Store(mem(o)),
            });
        }
    }

    /// New relative depth of an original branch depth `d`.
    fn depth(&self, d: u32) -> Result<u32, PrepareError> {
        let target = self
            .frames
            .len()
            .checked_sub(1 + d as usize)
            .ok_or_else(|| internal("branch depth"))?;
        let new_index = self.frames[target].new_index;
        Ok((self.new_depth - 1 - new_index) as u32)
    }

    /// Starts a sequence of the top frame: parameters into their locals, the layout of its
    /// points' records, a landing block per point, the rewind dispatch.
    ///
    /// The layout: every local a record of one of the sequence's points keeps (the values
    /// below it and the operands a rewind reads, and, for a call, the function's own locals
    /// live after it) gets one offset, after the enclosing constructs' parts. A rewind loads
    /// them all here, once, and branches to the landing of the point it goes to; a local
    /// that is dead there is overwritten before it is read, so what it loads for it does not
    /// matter. The operands a rewind does not read (a direct call's arguments: the rewinding
    /// callee restores its own locals) are set to zero instead, so that no value has to
    /// reach them from before the sequence: a long-lived value on the rewind path costs
    /// wasmtime's register allocator far more than a load.
    fn start_sequence(&mut self) -> Result<(), PrepareError> {
        let plan = self.plan;
        let points = plan
            .seq_points
            .get(self.seq)
            .ok_or_else(|| internal("sequence"))?;
        self.seq += 1;
        let top = self.frames.len() - 1;
        self.frames[top].seq_left = points.len() as u32;
        let (Some(first), Some(last)) = (points.first(), points.last()) else {
            return Ok(());
        };
        let (first, last) = (first.first, last.last);
        let depth = self.frames[top].depth;
        // A sequence whose only point comes first: nothing to skip, so no landing.
        let falls_in = points.len() == 1 && points[0].at_start;

        // The layout.
        let mut offsets: HashMap<u32, (EVal, u64)> = HashMap::new();
        let mut order: Vec<SavedLocal> = Vec::new();
        let mut end = self.frames[top].prefix_end;
        let mut unread: Vec<u32> = Vec::new();
        let mut plans = Vec::with_capacity(points.len());
        for sp in points {
            let p = plan
                .points
                .get(&sp.op)
                .ok_or_else(|| internal("a sequence's point"))?;
            let (param_locals, operands_read, own) = match p.kind {
                PointKind::Construct => {
                    let mut v = Vec::with_capacity(p.params.len());
                    for &t in &p.params {
                        v.push(self.new_local(enc(t)?));
                    }
                    (v, true, vec![])
                }
                PointKind::CallReadingOperands => (vec![], true, plan.live_after(sp.op)),
                PointKind::CallOfInstrumented => (vec![], false, plan.live_after(sp.op)),
            };
            let below = p.stack.len() - p.consumed;
            let mut spill = self.pool(depth, &p.stack)?;
            spill[below..below + param_locals.len()].copy_from_slice(&param_locals);
            let read = if operands_read { spill.len() } else { below };
            unread.extend_from_slice(&spill[read..]);
            // Each local at most once: spill locals are distinct added locals (pooled by
            // depth, type and rank, or the construct's own parameter locals), `own` lists
            // distinct locals of the function's own.
            let mut saved = Vec::with_capacity(read + own.len());
            for &l in spill[..read].iter().chain(own.iter()) {
                let (t, o) = match offsets.get(&l) {
                    Some(&v) => v,
                    None => {
                        let t = self.local_type(l)?;
                        let v = (t, end);
                        end += size_of(t);
                        offsets.insert(l, v);
                        order.push((l, t, v.1));
                        v
                    }
                };
                saved.push((l, t, o));
            }
            plans.push((
                sp.op,
                PointPlan {
                    spill,
                    param_locals,
                    saved,
                    landing: !falls_in,
                },
            ));
        }
        if end + 4 > i32::MAX as u64 {
            return Err(PrepareError::unsupported(
                "a function with too many locals to save",
            ));
        }
        self.frames[top].seq_end = end;
        self.point_plans.extend(plans);
        unread.sort_unstable();
        unread.dedup();
        unread.retain(|l| !offsets.contains_key(l));

        let params = self.frames[top].param_locals.clone();
        for &l in params.iter().rev() {
            self.ins(Instruction::LocalSet(l));
        }
        if falls_in {
            // Nothing to skip: a rewind restores the function's own locals, if any, and falls
            // in. Its operand stack is the sequence's parameters, reloaded below on both
            // paths, so its spill locals are set from them there (they are still saved).
            let spilled = &self
                .point_plans
                .get(&points[0].op)
                .ok_or_else(|| internal("a sequence's point"))?
                .spill;
            order.retain(|(l, _, _)| !spilled.contains(l));
            if !order.is_empty() {
                self.state_is(REWINDING);
                self.open(Instruction::If(BlockType::Empty));
                self.load_all(&order);
                self.close();
            }
            for &l in &params {
                self.ins(Instruction::LocalGet(l));
            }
            return Ok(());
        }
        // `block $p_j` per point j (0-based), the first innermost: the normal path falls
        // into its `end` at the end of the segment before the point, a rewind branches there.
        for _ in 0..points.len() {
            self.open(Instruction::Block(BlockType::Empty));
        }
        self.state_is(REWINDING);
        self.open(Instruction::If(BlockType::Empty));
        self.load_all(&order);
        for l in unread {
            let t = self.local_type(l)?;
            self.zero(t);
            self.ins(Instruction::LocalSet(l));
        }
        let span = u64::from(last - first) + 1;
        if points.len() == 1 {
            // One landing: no choice to make (inside `if`, $p_0 is at 1).
            self.ins(Instruction::Br(1));
        } else if span <= 4 * points.len() as u64 + 4 {
            // A table by point number; inside `if` and `block $bad`, $p_j is at 2 + j.
            self.open(Instruction::Block(BlockType::Empty));
            let mut table = Vec::with_capacity(span as usize);
            for (j, sp) in points.iter().enumerate() {
                while u64::from(first) + table.len() as u64 <= u64::from(sp.last) {
                    table.push(2 + j as u32);
                }
            }
            self.ins(Instruction::LocalGet(self.target_local));
            self.ins(Instruction::I32Const(first as i32));
            self.ins(Instruction::I32Sub);
            self.ins(Instruction::BrTable(table.into(), 0));
            self.close();
            self.ins(Instruction::Unreachable);
        } else {
            // Few points over a wide range of numbers (nested points): compare with each
            // point's last number; inside `if`, $p_j is at 1 + j.
            for (j, sp) in points.iter().enumerate() {
                if j + 1 == points.len() {
                    self.ins(Instruction::Br(1 + j as u32));
                } else {
                    self.ins(Instruction::LocalGet(self.target_local));
                    self.ins(Instruction::I32Const(sp.last as i32));
                    self.ins(Instruction::I32LeU);
                    self.ins(Instruction::BrIf(1 + j as u32));
                }
            }
        }
        self.close(); // if
        for &l in &params {
            self.ins(Instruction::LocalGet(l));
        }
        Ok(())
    }

    /// At the point at operator `at` of the top frame: spill its operand stack (as its
    /// sequence's start planned), the landing, reload the operands. Returns the point's plan,
    /// the locals of the values below the operands and whether it is the last point.
    ///
    /// A construct's block parameters are spilled to its own parameter locals, which hold
    /// them across the construct (a loop's parameters change with each iteration; a rewind
    /// must see the latest).
    fn enter_point(
        &mut self,
        p: &Point,
        at: usize,
    ) -> Result<(PointPlan, Vec<u32>, bool), PrepareError> {
        let top = self.frames.len() - 1;
        let seq_left = self.frames[top].seq_left;
        if seq_left == 0 {
            return Err(internal("more points than the sequence has"));
        }
        let pp = self
            .point_plans
            .remove(&at)
            .ok_or_else(|| internal("a point its sequence did not plan"))?;
        let below = p.stack.len() - p.consumed;
        for &l in pp.spill.iter().rev() {
            self.ins(Instruction::LocalSet(l));
        }
        if pp.landing {
            self.close(); // $p_j
        }
        for &l in &pp.spill[below..] {
            self.ins(Instruction::LocalGet(l));
        }
        let below_locals = pp.spill[..below].to_vec();
        Ok((pp, below_locals, seq_left == 1))
    }

    /// After a point of the top frame (its results on the stack): put the spilled values back
    /// below them.
    fn leave_point(&mut self, done: PointDone) -> Result<(), PrepareError> {
        let top = self.frames.len() - 1;
        if self.frames[top].seq_left == 0 {
            return Err(internal("more points than the sequence has"));
        }
        self.frames[top].seq_left -= 1;
        if (self.frames[top].seq_left > 0) == done.last_in_seq {
            return Err(internal("a point's place in its sequence"));
        }
        if !done.below.is_empty() {
            // The momentary pool: these only pass the values over the spilled ones.
            let temps = self.pool_of(usize::MAX, &done.results);
            for &l in temps.iter().rev() {
                self.ins(Instruction::LocalSet(l));
            }
            for &l in &done.below {
                self.ins(Instruction::LocalGet(l));
            }
            for &l in &temps {
                self.ins(Instruction::LocalGet(l));
            }
        }
        Ok(())
    }

    /// After a point call: if it is unwinding, save the frame (`saved`, which ends at `end`)
    /// as a record for point `k` and return.
    fn unwind_check(&mut self, k: u32, saved: &[SavedLocal], end: u64) {
        // `end` is its sequence's layout end, which `start_sequence` bounded.
        let size = end + 4;
        debug_assert!(
            size <= i32::MAX as u64,
            "a record larger than its sequence allows"
        );
        // After a call returns the state is normal (0) or unwinding (1): rewinding ends in
        // the blocking import (`asyncify_stop_rewind`) before any call returns.
        self.ins(Instruction::GlobalGet(self.ctx.state_global));
        self.open(Instruction::If(BlockType::Empty));
        self.ins(Instruction::I32Const(size as i32));
        self.ins(Instruction::I32Const(k as i32));
        self.ins(Instruction::Call(self.ctx.push_function));
        self.ins(Instruction::LocalSet(self.ptr_local));
        self.store_all(saved);
        // To `block $exit`, around the body, after which the function returns zeros.
        self.ins(Instruction::Br((self.new_depth - 2) as u32));
        self.close();
    }

    /// The parts of every point construct around the top frame's sequence.
    fn enclosing_parts(&self) -> Vec<SavedLocal> {
        self.frames
            .iter()
            .flat_map(|f| f.part.iter().copied())
            .collect()
    }

    fn run(mut self, body: &FunctionBody<'_>) -> Result<Vec<u8>, PrepareError> {
        self.frames.push(Frame2 {
            new_index: 0,
            seq_left: 0,
            point: None,
            param_locals: vec![],
            depth: 0,
            part: vec![],
            prefix_end: RECORD_TARGET_OFFSET + 4,
            seq_end: RECORD_TARGET_OFFSET + 4,
        });
        self.open(Instruction::Block(BlockType::Empty)); // $exit
        self.start_sequence()?;

        let mut ops = body.get_operators_reader().map_err(err)?;
        let data = body.as_bytes();
        let base = body.range().start;
        let mut i = 0usize;
        let mut ended = false;
        while !ops.eof() {
            let start = ops.original_position() - base;
            let op = ops.read().map_err(err)?;
            let end = ops.original_position() - base;
            let raw = data
                .get(start..end)
                .ok_or_else(|| internal("operator bytes"))?;
            let point = self.plan.points.get(&i);
            let at = i;
            i += 1;
            match (&op, point) {
                (Operator::Call { .. } | Operator::CallIndirect { .. }, Some(p)) => {
                    let (pp, below, last) = self.enter_point(p, at)?;
                    self.out.extend_from_slice(raw);
                    let mut saved = self.enclosing_parts();
                    saved.extend(pp.saved);
                    let end = self.frames[self.frames.len() - 1].seq_end;
                    self.unwind_check(p.first, &saved, end);
                    let results = p
                        .results
                        .iter()
                        .map(|&t| enc(t))
                        .collect::<Result<_, _>>()?;
                    self.leave_point(PointDone {
                        last_in_seq: last,
                        below,
                        results,
                    })?;
                }
                (Operator::Block { .. } | Operator::Loop { .. } | Operator::If { .. }, Some(p)) => {
                    let (pp, below, last) = self.enter_point(p, at)?;
                    let parent = &self.frames[self.frames.len() - 1];
                    let (depth, prefix_end) = (parent.depth + 1, parent.seq_end);
                    self.out.extend_from_slice(raw);
                    self.new_depth += 1;
                    let results = p
                        .results
                        .iter()
                        .map(|&t| enc(t))
                        .collect::<Result<_, _>>()?;
                    self.frames.push(Frame2 {
                        new_index: self.new_depth - 1,
                        seq_left: 0,
                        point: Some(PointDone {
                            last_in_seq: last,
                            below,
                            results,
                        }),
                        param_locals: pp.param_locals,
                        depth,
                        part: pp.saved,
                        prefix_end,
                        seq_end: prefix_end,
                    });
                    self.start_sequence()?;
                }
                (Operator::Block { .. } | Operator::Loop { .. } | Operator::If { .. }, None) => {
                    self.out.extend_from_slice(raw);
                    self.new_depth += 1;
                    let top = &self.frames[self.frames.len() - 1];
                    let (depth, prefix_end) = (top.depth, top.prefix_end);
                    self.frames.push(Frame2 {
                        new_index: self.new_depth - 1,
                        seq_left: 0,
                        point: None,
                        param_locals: vec![],
                        depth,
                        part: vec![],
                        prefix_end,
                        seq_end: prefix_end,
                    });
                    self.start_sequence()?;
                }
                (Operator::Else, _) => {
                    let top = self.frames.len() - 1;
                    if self.frames[top].seq_left != 0 {
                        return Err(internal("else inside a segment"));
                    }
                    self.out.extend_from_slice(raw);
                    self.start_sequence()?;
                }
                (Operator::End, _) => {
                    let f = self.frames.pop().ok_or_else(|| internal("frames"))?;
                    if f.seq_left != 0 {
                        return Err(internal("end inside a segment"));
                    }
                    ended = self.frames.is_empty();
                    if ended {
                        // The body returns; an unwind leaves `$exit` and returns zeros.
                        self.ins(Instruction::Return);
                        self.close(); // $exit
                        let plan = self.plan;
                        for &t in &plan.results {
                            self.zero(enc(t)?);
                        }
                    }
                    self.out.extend_from_slice(raw);
                    self.new_depth -= 1;
                    if let Some(done) = f.point {
                        self.leave_point(done)?;
                    }
                }
                (Operator::Br { relative_depth }, _) => {
                    let d = self.depth(*relative_depth)?;
                    self.ins(Instruction::Br(d));
                }
                (Operator::BrIf { relative_depth }, _) => {
                    let d = self.depth(*relative_depth)?;
                    self.ins(Instruction::BrIf(d));
                }
                (Operator::BrTable { targets }, _) => {
                    let mut ts = Vec::with_capacity(targets.len() as usize);
                    for t in targets.targets() {
                        ts.push(self.depth(t.map_err(err)?)?);
                    }
                    let default = self.depth(targets.default())?;
                    self.ins(Instruction::BrTable(ts.into(), default));
                }
                (Operator::Call { .. } | Operator::CallIndirect { .. }, None)
                    if self.ctx.asserts =>
                {
                    // A call the analysis says cannot unwind: check that it did not.
                    self.out.extend_from_slice(raw);
                    self.ins(Instruction::GlobalGet(self.ctx.state_global));
                    self.open(Instruction::If(BlockType::Empty));
                    self.ins(Instruction::Unreachable);
                    self.close();
                }
                _ => self.out.extend_from_slice(raw),
            }
        }
        if !ended || !self.frames.is_empty() {
            return Err(internal("unbalanced body"));
        }
        self.finish()
    }

    /// The prologue (pop the record on rewind) before the body, and the locals declaration.
    fn finish(mut self) -> Result<Vec<u8>, PrepareError> {
        let body = std::mem::take(&mut self.out);
        if !self.plan.points.is_empty() {
            let data = self.ctx.data_global;
            // ptr = current - size (the trailer just below current); current = ptr;
            // target = the record's point number.
            self.state_is(REWINDING);
            self.ins(Instruction::If(BlockType::Empty));
            self.ins(Instruction::GlobalGet(data));
            self.ins(Instruction::I32Load(mem(0)));
            self.ins(Instruction::LocalTee(self.ptr_local));
            self.ins(Instruction::LocalGet(self.ptr_local));
            self.ins(Instruction::I32Const(4));
            self.ins(Instruction::I32Sub);
            self.ins(Instruction::I32Load(mem(0)));
            self.ins(Instruction::I32Sub);
            self.ins(Instruction::LocalSet(self.ptr_local));
            self.ins(Instruction::GlobalGet(data));
            self.ins(Instruction::LocalGet(self.ptr_local));
            self.ins(Instruction::I32Store(mem(0)));
            self.ins(Instruction::LocalGet(self.ptr_local));
            self.ins(Instruction::I32Load(mem(RECORD_TARGET_OFFSET)));
            self.ins(Instruction::LocalSet(self.target_local));
            self.ins(Instruction::End);
        }
        let mut prologue = std::mem::take(&mut self.out);
        prologue.extend_from_slice(&body);

        // Locals: the function's own declarations (params are not declared), then the added.
        let mut decls: Vec<(u32, EVal)> = Vec::new();
        for &t in self.plan.locals[self.plan.params.len()..]
            .iter()
            .map(|t| enc(*t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                PrepareError::unsupported(
                    "a reference-typed local in a function that can be on the stack during a \
                     blocking call (it cannot be saved in linear memory)",
                )
            })?
            .iter()
            .chain(self.extra_locals.iter())
        {
            match decls.last_mut() {
                Some((n, last)) if *last == t => *n += 1,
                _ => decls.push((1, t)),
            }
        }
        let mut f = Function::new(decls);
        f.raw(prologue);
        let mut out = Vec::new();
        f.encode(&mut out);
        // `Function::encode` writes the body's size first; the caller adds it again.
        let mut r = BinaryReader::new(&out, 0);
        let _ = r.read_var_u32().map_err(err)?;
        out.drain(..r.current_position());
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// Liveness.

/// Work allowed to the liveness analysis, in 64-bit set operations per operator and local of
/// the function; past it (deeply nested loops, very many locals), every local counts as live,
/// which is correct, only larger. Keeps preparation linear in the module's size.
const LIVENESS_WORK_PER_OP: usize = 64;

type Bits = Vec<u64>;

fn bit_set(b: &mut Bits, i: u32) {
    if let Some(w) = b.get_mut(i as usize / 64) {
        *w |= 1 << (i % 64);
    }
}

fn bit_clear(b: &mut Bits, i: u32) {
    if let Some(w) = b.get_mut(i as usize / 64) {
        *w &= !(1 << (i % 64));
    }
}

fn bits_or(a: &mut Bits, b: &Bits) {
    for (x, y) in a.iter_mut().zip(b) {
        *x |= *y;
    }
}

/// Backward liveness of the function's locals over its structured control flow.
struct Liveness<'a, 'b> {
    ops: &'a [Operator<'b>],
    points: &'a HashMap<usize, Point>,
    /// For each `end`: the index of the operator opening its construct.
    open_of_end: Vec<usize>,
    /// For each `if` with an `else`: the index of the `else`.
    else_of: HashMap<usize, usize>,
    /// Live sets at each enclosing label (what a branch to it needs).
    labels: Vec<Bits>,
    /// Locals live right after each call point (by operator index).
    at_point: HashMap<usize, Bits>,
    work_left: usize,
    /// Constructs being analysed (the analysis recurses once per level).
    nesting: usize,
}

/// Nesting past which the liveness analysis gives up (everything live) rather than recurse
/// deeper: valid modules may nest blocks 100,000 deep.
const LIVENESS_NESTING_MAX: usize = 512;

/// Which of the function's locals are live right after each call point (read on some path
/// before being written), by operator index. Those are the only locals of the function's own
/// the point's record must hold: a local that is dead after the call it is captured in is
/// overwritten before any read once the rewind completes. A sound over-approximation: loops
/// iterate to a fixpoint (a point's set is the union over the iterations, which only grow),
/// every branch target counts; past [`LIVENESS_WORK_PER_OP`], `None`: everything is live.
fn live_after_points(
    ops: &[Operator<'_>],
    points: &HashMap<usize, Point>,
    locals: usize,
) -> Option<HashMap<usize, Vec<u32>>> {
    if points.is_empty() {
        return Some(HashMap::new());
    }
    let words = locals.div_ceil(64);
    let mut open_of_end = vec![usize::MAX; ops.len()];
    let mut else_of = HashMap::new();
    let mut stack = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        match op {
            Operator::Block { .. } | Operator::Loop { .. } | Operator::If { .. } => stack.push(i),
            Operator::Else => {
                if let Some(&o) = stack.last() {
                    else_of.insert(o, i);
                }
            }
            Operator::End => {
                if let Some(o) = stack.pop() {
                    open_of_end[i] = o;
                }
            }
            _ => {}
        }
    }
    let mut l = Liveness {
        ops,
        points,
        open_of_end,
        else_of,
        labels: vec![vec![0; words]],
        at_point: HashMap::new(),
        work_left: (ops.len() + locals).saturating_mul(LIVENESS_WORK_PER_OP),
        nesting: 0,
    };
    // The body is ops[0 .. last) with the function's `end` last.
    let last = ops.len().saturating_sub(1);
    l.seq(0, last, vec![0; words])?;
    Some(
        l.at_point
            .into_iter()
            .map(|(at, bits)| {
                let live = (0..locals as u32)
                    .filter(|&i| {
                        bits.get(i as usize / 64)
                            .is_some_and(|w| w & (1 << (i % 64)) != 0)
                    })
                    .collect();
                (at, live)
            })
            .collect(),
    )
}

impl Liveness<'_, '_> {
    /// Live set before `ops[from..to]` given the live set `live` after it (None: out of work).
    fn seq(&mut self, from: usize, to: usize, mut live: Bits) -> Option<Bits> {
        let mut i = to;
        while i > from {
            i -= 1;
            let cost = match &self.ops[i] {
                Operator::Br { .. }
                | Operator::BrIf { .. }
                | Operator::BrTable { .. }
                | Operator::Return
                | Operator::Unreachable
                | Operator::Call { .. }
                | Operator::CallIndirect { .. }
                | Operator::End => 1 + live.len(),
                _ => 1,
            };
            self.work_left = self.work_left.checked_sub(cost)?;
            match &self.ops[i] {
                Operator::End => {
                    let o = *self.open_of_end.get(i)?;
                    live = self.construct(o, i, live)?;
                    i = o;
                }
                Operator::LocalGet { local_index } => bit_set(&mut live, *local_index),
                Operator::LocalSet { local_index } | Operator::LocalTee { local_index } => {
                    bit_clear(&mut live, *local_index)
                }
                Operator::Br { relative_depth } => live = self.label(*relative_depth)?.clone(),
                Operator::BrIf { relative_depth } => {
                    let t = self.label(*relative_depth)?.clone();
                    bits_or(&mut live, &t);
                }
                Operator::BrTable { targets } => {
                    let mut t = self.label(targets.default())?.clone();
                    for d in targets.targets() {
                        let d = d.ok()?;
                        let more = self.label(d)?.clone();
                        bits_or(&mut t, &more);
                    }
                    live = t;
                }
                Operator::Return | Operator::Unreachable => live.iter_mut().for_each(|w| *w = 0),
                Operator::Call { .. } | Operator::CallIndirect { .. }
                    if self.points.contains_key(&i) =>
                {
                    let words = live.len();
                    bits_or(
                        self.at_point.entry(i).or_insert_with(|| vec![0; words]),
                        &live,
                    );
                }
                _ => {}
            }
        }
        Some(live)
    }

    fn label(&self, depth: u32) -> Option<&Bits> {
        self.labels
            .len()
            .checked_sub(1 + depth as usize)
            .and_then(|k| self.labels.get(k))
    }

    /// Live set before the construct opened at `o` and ended at `e`.
    fn construct(&mut self, o: usize, e: usize, after: Bits) -> Option<Bits> {
        if self.nesting >= LIVENESS_NESTING_MAX {
            return None;
        }
        self.nesting += 1;
        let r = self.construct_inner(o, e, after);
        self.nesting -= 1;
        r
    }

    fn construct_inner(&mut self, o: usize, e: usize, after: Bits) -> Option<Bits> {
        match &self.ops[o] {
            Operator::Loop { .. } => {
                let mut head = vec![0; after.len()];
                loop {
                    self.labels.push(head.clone());
                    let r = self.seq(o + 1, e, after.clone());
                    self.labels.pop();
                    let mut r = r?;
                    bits_or(&mut r, &head);
                    if r == head {
                        return Some(r);
                    }
                    head = r;
                }
            }
            Operator::If { .. } => {
                self.labels.push(after.clone());
                let r = match self.else_of.get(&o).copied() {
                    Some(el) => {
                        let le = self.seq(el + 1, e, after.clone());
                        let lt = self.seq(o + 1, el, after);
                        le.zip(lt).map(|(mut a, b)| {
                            bits_or(&mut a, &b);
                            a
                        })
                    }
                    None => self.seq(o + 1, e, after.clone()).map(|mut t| {
                        bits_or(&mut t, &after);
                        t
                    }),
                };
                self.labels.pop();
                r
            }
            _ => {
                self.labels.push(after.clone());
                let r = self.seq(o + 1, e, after);
                self.labels.pop();
                r
            }
        }
    }
}
