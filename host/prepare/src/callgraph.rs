//! Step 2 of preparation: which functions can be on the stack when a blocking import is called.
//!
//! Only those functions need Asyncify instrumentation. The analysis is a sound
//! over-approximation of the call graph of the *original* module:
//!
//! * `call f` / `return_call f`: an edge to `f`.
//! * `call_indirect (type T)` / `return_call_indirect (type T)`: edges to every
//!   *address-taken* function whose type is `T` (canonical type equality, which is exactly what
//!   the runtime signature check of `call_indirect` enforces). `call_ref T` / `return_call_ref T`
//!   are treated the same way.
//! * A function is address-taken if a funcref to it can exist: it appears in an element segment
//!   (active, passive or declared), in a `ref.func` anywhere (code, global or table initialisers,
//!   element expressions), or it is exported (the host can put any exported function in a table).
//!   A function that is none of these can never be the value of a funcref, so no indirect call
//!   can reach it.
//! * "Open world": if funcrefs can enter the module from the host (an imported or exported
//!   funcref table, an imported funcref global, an exported mutable funcref global, an import
//!   returning a funcref, an export taking one), the host could place *its own* functions in a
//!   table, including the blocking imports themselves. Then every imported function is
//!   treated as address-taken too, so an indirect call whose type matches a blocking import's type
//!   is considered blocking.
//! * If the module declares any subtyping between types (GC-style `sub` types), type equality is
//!   no longer the rule of `call_indirect`, and every indirect call is considered able to reach
//!   every address-taken function, whatever its type.
//!
//! A defined function is instrumented iff it can reach, transitively, a call to a blocking import.
//! Indirect calls are modelled with one virtual node per call type, so the graph stays linear in
//! the module size.

use super::validate::func_type_at;
use super::PrepareError;
use std::collections::{HashMap, VecDeque};
use wasmparser::types::{CoreTypeId, Types};
use wasmparser::{
    AbstractHeapType, ConstExpr, ElementItems, ExternalKind, FunctionBody, HeapType, Operator,
    Parser, Payload, RefType, TableInit, TypeRef, ValType,
};

/// The call-graph facts preparation needs.
#[derive(Debug)]
pub(crate) struct CallGraph {
    /// Number of imported functions (they come first in the function index space).
    pub imported_funcs: u32,
    /// Number of functions, imported and defined.
    pub total_funcs: u32,
    /// `(module, name)` of each imported function, by function index.
    pub func_imports: Vec<(String, String)>,
    /// Function indices of the blocking imports present in the module.
    pub blocking: Vec<u32>,
    /// Per function index: must be instrumented (always false for imports).
    pub instrument: Vec<bool>,
    /// Why host funcrefs may reach indirect calls, if they may.
    pub open_world: Option<String>,
    /// First tail call found: (function index, byte offset). A frame a tail call replaced
    /// cannot be saved and rewound, so preparation refuses such modules.
    pub tail_call: Option<(u32, usize)>,
    /// Per function index: why Asyncify could not instrument this function (references cannot
    /// be saved in linear memory; exception handling is not supported), if so.
    pub asyncify_blocker: Vec<Option<String>>,
    /// The start function, if any.
    pub start: Option<u32>,
    /// For each type index used by an indirect call: whether such a call can reach a blocking
    /// import. Calls of a type mapped to `false` need no instrumentation.
    pub indirect_may_block: HashMap<u32, bool>,
}

/// What one function body does that matters here.
#[derive(Default)]
struct BodyFacts {
    direct: Vec<u32>,
    /// (module type index, canonical id) of each indirect call.
    indirect: Vec<(u32, CoreTypeId)>,
}

/// Everything read from the module before the graph is built.
#[derive(Default)]
struct Scan {
    func_types: Vec<Option<CoreTypeId>>,
    func_type_idx: Vec<u32>,
    func_imports: Vec<(String, String)>,
    address_taken: Vec<bool>,
    global_is_ref: Vec<bool>,
    open_world: Option<String>,
    type_agnostic: bool,
    tail_call: Option<(u32, usize)>,
    blocker: Vec<Option<String>>,
    bodies: Vec<BodyFacts>,
    start: Option<u32>,
}

/// Runs the analysis. `blocking` lists the `(module, name)` pairs that may unwind.
pub(crate) fn analyse(
    wasm: &[u8],
    types: &Types,
    blocking: &[(String, String)],
) -> Result<CallGraph, PrepareError> {
    let scan = scan(wasm, types)?;
    let imported_funcs = scan.func_imports.len() as u32;
    let total_funcs = scan.func_types.len() as u32;

    let blocking_idx: Vec<u32> = scan
        .func_imports
        .iter()
        .enumerate()
        .filter(|(_, (m, n))| blocking.iter().any(|(bm, bn)| bm == m && bn == n))
        .map(|(i, _)| i as u32)
        .collect();

    // Virtual node per indirect-call type.
    let mut type_nodes: HashMap<Option<CoreTypeId>, usize> = HashMap::new();
    let n = total_funcs as usize;
    let key = |t: CoreTypeId| if scan.type_agnostic { None } else { Some(t) };
    for body in &scan.bodies {
        for (_, t) in &body.indirect {
            let next = n + type_nodes.len();
            type_nodes.entry(key(*t)).or_insert(next);
        }
    }
    // Reverse adjacency: callers[x] = nodes with an edge to x.
    let mut callers: Vec<Vec<usize>> = vec![Vec::new(); n + type_nodes.len()];
    for (k, body) in scan.bodies.iter().enumerate() {
        let f = imported_funcs as usize + k;
        for &callee in &body.direct {
            if let Some(list) = callers.get_mut(callee as usize) {
                list.push(f);
            }
        }
        for (_, t) in &body.indirect {
            if let Some(&node) = type_nodes.get(&key(*t)) {
                callers[node].push(f);
            }
        }
    }
    for (func, ty) in scan.func_types.iter().enumerate() {
        let imported = func < imported_funcs as usize;
        let reachable_indirectly =
            scan.address_taken[func] || (imported && scan.open_world.is_some());
        if !reachable_indirectly {
            continue;
        }
        let node = if scan.type_agnostic {
            type_nodes.get(&None)
        } else {
            ty.and_then(|t| type_nodes.get(&Some(t)))
        };
        if let Some(&node) = node {
            callers[func].push(node);
        }
    }

    // Backwards reachability from the blocking imports.
    let mut reaches = vec![false; callers.len()];
    let mut queue: VecDeque<usize> = blocking_idx.iter().map(|&i| i as usize).collect();
    for &i in &blocking_idx {
        reaches[i as usize] = true;
    }
    while let Some(x) = queue.pop_front() {
        for &c in &callers[x] {
            if !reaches[c] {
                reaches[c] = true;
                queue.push_back(c);
            }
        }
    }
    let instrument = (0..n)
        .map(|f| f >= imported_funcs as usize && reaches[f])
        .collect();
    let mut indirect_may_block = HashMap::new();
    for body in &scan.bodies {
        for (index, t) in &body.indirect {
            let may = type_nodes.get(&key(*t)).is_none_or(|&node| reaches[node]);
            indirect_may_block.insert(*index, may);
        }
    }

    Ok(CallGraph {
        imported_funcs,
        total_funcs,
        func_imports: scan.func_imports,
        blocking: blocking_idx,
        instrument,
        open_world: scan.open_world,
        tail_call: scan.tail_call,
        asyncify_blocker: scan.blocker,
        start: scan.start,
        indirect_may_block,
    })
}

/// Whether a value of this reference type can be a function reference.
fn may_hold_funcref(r: &RefType) -> bool {
    match r.heap_type() {
        HeapType::Abstract { ty, .. } => matches!(ty, AbstractHeapType::Func),
        // Concrete types: func types, or (with GC) structs/arrays that could hold one.
        HeapType::Concrete(_) | HeapType::Exact(_) => true,
    }
}

fn val_may_hold_funcref(v: &ValType) -> bool {
    matches!(v, ValType::Ref(r) if may_hold_funcref(r))
}

fn set_open(scan: &mut Scan, why: impl FnOnce() -> String) {
    if scan.open_world.is_none() {
        scan.open_world = Some(why());
    }
}

fn err(e: wasmparser::BinaryReaderError) -> PrepareError {
    PrepareError::invalid(&e)
}

fn scan(wasm: &[u8], types: &Types) -> Result<Scan, PrepareError> {
    let tref = types.as_ref();
    let mut s = Scan::default();
    let func_type_id = |type_index: u32| -> Option<CoreTypeId> {
        (type_index < tref.core_type_count_in_module())
            .then(|| tref.core_type_at_in_module(type_index))
    };
    let type_has_ref = |type_index: u32| -> bool {
        func_type_at(types, type_index).is_some_and(|f| {
            f.params()
                .iter()
                .chain(f.results())
                .any(|v| v.is_reference_type())
        })
    };
    let mut defined_seen = 0u32;

    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(err)? {
            Payload::TypeSection(reader) => {
                for group in reader {
                    for sub in group.map_err(err)?.into_types() {
                        if sub.supertype_idx.is_some() || !sub.is_final {
                            s.type_agnostic = true;
                        }
                    }
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(err)?;
                    match import.ty {
                        TypeRef::Func(t) | TypeRef::FuncExact(t) => {
                            s.func_types.push(func_type_id(t));
                            s.func_type_idx.push(t);
                            s.address_taken.push(false);
                            s.blocker.push(None);
                            s.func_imports
                                .push((import.module.to_string(), import.name.to_string()));
                            if func_type_at(types, t)
                                .is_some_and(|f| f.results().iter().any(val_may_hold_funcref))
                            {
                                set_open(&mut s, || {
                                    format!(
                                        "import {}.{} returns a funcref",
                                        import.module, import.name
                                    )
                                });
                            }
                        }
                        TypeRef::Table(t) if may_hold_funcref(&t.element_type) => {
                            set_open(&mut s, || {
                                format!("imported table {}.{}", import.module, import.name)
                            });
                        }
                        TypeRef::Global(g) => {
                            s.global_is_ref.push(g.content_type.is_reference_type());
                            if val_may_hold_funcref(&g.content_type) {
                                set_open(&mut s, || {
                                    format!(
                                        "imported funcref global {}.{}",
                                        import.module, import.name
                                    )
                                });
                            }
                        }
                        _ => {}
                    }
                }
            }
            Payload::FunctionSection(reader) => {
                for t in reader {
                    let t = t.map_err(err)?;
                    s.func_types.push(func_type_id(t));
                    s.func_type_idx.push(t);
                    s.address_taken.push(false);
                    s.blocker.push(if type_has_ref(t) {
                        Some("a reference-typed parameter or result".to_string())
                    } else {
                        None
                    });
                }
            }
            Payload::TableSection(reader) => {
                for table in reader {
                    if let TableInit::Expr(e) = table.map_err(err)?.init {
                        mark_ref_funcs(&e, &mut s.address_taken)?;
                    }
                }
            }
            Payload::GlobalSection(reader) => {
                for global in reader {
                    let global = global.map_err(err)?;
                    s.global_is_ref
                        .push(global.ty.content_type.is_reference_type());
                    mark_ref_funcs(&global.init_expr, &mut s.address_taken)?;
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(err)?;
                    match export.kind {
                        ExternalKind::Func | ExternalKind::FuncExact => {
                            if let Some(at) = s.address_taken.get_mut(export.index as usize) {
                                *at = true;
                            }
                            let takes_funcref = s
                                .func_types
                                .get(export.index as usize)
                                .copied()
                                .flatten()
                                .and_then(|id| match &tref[id].composite_type.inner {
                                    wasmparser::CompositeInnerType::Func(f) => {
                                        Some(f.params().iter().any(val_may_hold_funcref))
                                    }
                                    _ => None,
                                })
                                .unwrap_or(false);
                            if takes_funcref {
                                set_open(&mut s, || {
                                    format!("export {} takes a funcref", export.name)
                                });
                            }
                        }
                        ExternalKind::Table
                            if export.index < tref.table_count()
                                && may_hold_funcref(&tref.table_at(export.index).element_type) =>
                        {
                            set_open(&mut s, || format!("exported table {}", export.name));
                        }
                        ExternalKind::Global
                            if export.index < tref.global_count()
                                && tref.global_at(export.index).mutable
                                && val_may_hold_funcref(
                                    &tref.global_at(export.index).content_type,
                                ) =>
                        {
                            set_open(&mut s, || {
                                format!("exported mutable funcref global {}", export.name)
                            });
                        }
                        _ => {}
                    }
                }
            }
            Payload::StartSection { func, .. } => s.start = Some(func),
            Payload::ElementSection(reader) => {
                for element in reader {
                    match element.map_err(err)?.items {
                        ElementItems::Functions(funcs) => {
                            for f in funcs {
                                let f = f.map_err(err)?;
                                if let Some(at) = s.address_taken.get_mut(f as usize) {
                                    *at = true;
                                }
                            }
                        }
                        ElementItems::Expressions(_, exprs) => {
                            for e in exprs {
                                mark_ref_funcs(&e.map_err(err)?, &mut s.address_taken)?;
                            }
                        }
                    }
                }
            }
            Payload::CodeSectionEntry(body) => {
                let index = s.func_imports.len() as u32 + defined_seen;
                defined_seen += 1;
                let facts = scan_body(&body, index, &mut s, &func_type_id, &type_has_ref)?;
                s.bodies.push(facts);
            }
            _ => {}
        }
    }
    Ok(s)
}

/// Marks every `ref.func` of a constant expression as address-taken.
fn mark_ref_funcs(expr: &ConstExpr<'_>, address_taken: &mut [bool]) -> Result<(), PrepareError> {
    let mut ops = expr.get_operators_reader();
    while !ops.eof() {
        if let Operator::RefFunc { function_index } = ops.read().map_err(err)? {
            if let Some(at) = address_taken.get_mut(function_index as usize) {
                *at = true;
            }
        }
    }
    Ok(())
}

fn scan_body(
    body: &FunctionBody<'_>,
    index: u32,
    s: &mut Scan,
    func_type_id: &dyn Fn(u32) -> Option<CoreTypeId>,
    type_has_ref: &dyn Fn(u32) -> bool,
) -> Result<BodyFacts, PrepareError> {
    let mut facts = BodyFacts::default();
    let mut blocker: Option<String> = None;
    let mut block = |why: &str| {
        if blocker.is_none() {
            blocker = Some(why.to_string());
        }
    };

    let mut locals = body.get_locals_reader().map_err(err)?;
    for _ in 0..locals.get_count() {
        let (_, ty) = locals.read().map_err(err)?;
        if ty.is_reference_type() {
            block("a reference-typed local");
        }
    }

    let mut ops = body.get_operators_reader().map_err(err)?;
    while !ops.eof() {
        let (op, offset) = ops.read_with_offset().map_err(err)?;
        let mut tail = false;
        match op {
            Operator::Call { function_index } => {
                facts.direct.push(function_index);
                if s.func_type_idx
                    .get(function_index as usize)
                    .is_some_and(|t| type_has_ref(*t))
                {
                    block("a call passing or returning references");
                }
            }
            Operator::ReturnCall { function_index } => {
                facts.direct.push(function_index);
                tail = true;
            }
            Operator::CallIndirect { type_index, .. } | Operator::CallRef { type_index } => {
                if let Some(t) = func_type_id(type_index) {
                    facts.indirect.push((type_index, t));
                }
                if type_has_ref(type_index) {
                    block("an indirect call passing or returning references");
                }
            }
            Operator::ReturnCallIndirect { type_index, .. }
            | Operator::ReturnCallRef { type_index } => {
                if let Some(t) = func_type_id(type_index) {
                    facts.indirect.push((type_index, t));
                }
                tail = true;
            }
            Operator::RefFunc { function_index } => {
                if let Some(at) = s.address_taken.get_mut(function_index as usize) {
                    *at = true;
                }
                block("a reference-typed value (ref.func)");
            }
            Operator::RefNull { .. }
            | Operator::RefIsNull
            | Operator::TableGet { .. }
            | Operator::TableSet { .. }
            | Operator::TableGrow { .. }
            | Operator::TableFill { .. } => block("a reference-typed value (ref/table operator)"),
            Operator::TypedSelect { ty } if ty.is_reference_type() => {
                block("a reference-typed value (select)")
            }
            Operator::TypedSelectMulti { ref tys } if tys.iter().any(|t| t.is_reference_type()) => {
                block("a reference-typed value (select)")
            }
            Operator::GlobalGet { global_index } | Operator::GlobalSet { global_index }
                if s.global_is_ref
                    .get(global_index as usize)
                    .copied()
                    .unwrap_or(true) =>
            {
                block("a reference-typed global")
            }
            Operator::Try { .. }
            | Operator::TryTable { .. }
            | Operator::Throw { .. }
            | Operator::ThrowRef
            | Operator::Rethrow { .. }
            | Operator::Delegate { .. }
            | Operator::Catch { .. }
            | Operator::CatchAll => block("exception handling"),
            _ => {}
        }
        if tail && s.tail_call.is_none() {
            s.tail_call = Some((index, offset));
        }
    }
    if let Some(slot) = s.blocker.get_mut(index as usize) {
        if slot.is_none() {
            *slot = blocker;
        }
    }
    Ok(facts)
}
