//! Optional step 0 of preparation: preemption points, so a process that never calls a blocking
//! import can still be captured.
//!
//! A process can only be captured inside a blocking import (see `shoal_runtime::capture`). A
//! guest that computes for a long time without one — a spin loop, a long sieve — is therefore not
//! capturable until it finishes. With [`super::PrepareOptions::preempt`], this pass rewrites the
//! module before the call-graph analysis so that every loop becomes a capture point:
//!
//! * it imports `shoal_v1.preempt: () -> ()` (unless the module already does), a host function
//!   that returns at once unless a capture is requested, in which case it unwinds;
//! * it adds one mutable `i32` global, the countdown (initially [`PREEMPT_INTERVAL`]), shared by
//!   all loops of the module, and to every function containing a loop one `i32` scratch local;
//! * every `loop` becomes a capture point. The obvious rewrite — the check and the call inline at
//!   the top of the loop body — was measured first and costs +33% to +56% CPU (table below):
//!   the call makes the loop body contain a possibly-unwinding call, and Binaryen's Asyncify then
//!   guards every statement of the loop body with a state check. So the call is moved *out of
//!   the loop*; the loop itself only counts down and leaves when the countdown reaches zero:
//!
//!   ```text
//!   block $exit (bt)                     ;; bt: the loop's own block type
//!     loop $outer (bt)
//!       block $preempt_now
//!         loop $l (bt)                   ;; the original loop, label and body unchanged
//!           global.get $countdown  i32.const 1  i32.sub  local.tee $scratch
//!           global.set $countdown  local.get $scratch  i32.eqz  br_if $preempt_now
//!           ...original body...          ;; `br $l` still means "next iteration"
//!         end
//!         br $exit                       ;; the loop ended normally: carry its results out
//!       end
//!       i32.const PREEMPT_INTERVAL+1  global.set $countdown
//!       call $preempt                    ;; the capture point
//!       br $outer                        ;; re-enter $l at its top (it re-checks: INTERVAL left)
//!     end
//!   end
//!   ```
//!
//!   i.e. `countdown -= 1; if countdown == 0 { countdown = PREEMPT_INTERVAL; preempt() }` at the
//!   top of every iteration. The inner loop contains no call that can unwind, so Asyncify
//!   guards it as one unit, and it runs at (nearly) its original speed. (A loop whose body
//!   calls a function that can itself be captured — one with a loop, or a blocking import —
//!   still has its body guarded statement by statement, as it would without this pass.) The three frames added
//!   around a loop move the depth of every branch that leaves it; `br`, `br_if` and `br_table`
//!   are renumbered. A loop whose block type takes parameters cannot be re-entered from
//!   `$outer` without its operands, so it gets the check and the call inline instead (rare:
//!   only multi-value code has such loops), as do the loops of a function using another
//!   branching instruction (`br_on_*`, exceptions: proposals Shoal's validator rejects anyway).
//!
//! Adding a function import shifts the index of every defined function by one. The module is
//! re-encoded with `wasm-encoder`'s `reencode` visitor, which routes every function index through
//! one hook: `call`, `return_call`, `ref.func` (in code, global initialisers and element
//! segments), element segments' function lists, exports, the start function and the `name`
//! section (function, local and label names). The import is appended after the existing ones, so
//! no import moves and the new function index is the number of imported functions. The global is
//! appended after the existing ones, so no global index moves. DWARF sections (`.debug_*`) are
//! dropped: their code offsets no longer hold.
//!
//! Because `shoal_v1.preempt` is a blocking import of the ABI table, the call-graph step that
//! follows instruments every function containing a loop, every function that can call one, and
//! the indirect calls whose type can reach one. The countdown global is exported like every other
//! mutable global, so a snapshot carries it.
//!
//! # Cost (measured)
//!
//! `tests/benches/preempt.rs`: release host, wasmtime 46 (Cranelift), the Rust 1.95 `cpu_bound`
//! guest (87,727 B), both variants of the module on one node, best of 7 runs each, interleaved,
//! on the shared 2-core machine (two runs of the benchmark; the spread is machine noise):
//!
//! | what                                          | normal    | preemptible          |
//! |-----------------------------------------------|-----------|----------------------|
//! | prepared size                                 | 84,820 B  | 154,104 B (×1.82)    |
//! | functions instrumented                        | 9 of 239  | 201 of 239           |
//! | CPU `work 20000000` (hash loop, ~0.18 s)      | 1.00      | 1.01–1.03            |
//! | CPU `sieve 30000000` (tight nested loops)     | 1.00      | 1.09–1.16            |
//! | capture request → image of `spin`, p50 / p99  | never     | 0.17–0.26 / 0.9–1.1 ms (max 2.6–3.9 ms) |
//!
//! With the call inline in the loop body (the first version) the CPU ratios were 1.56 (`work`)
//! and 1.33 (`sieve`); with the inline check but nothing instrumented (an experiment that is
//! not capturable) 1.01 and 1.14. So what remains is the countdown itself, which costs most
//! in loops whose body is a couple of instructions (the sieve's marking loop). Code size grows
//! because nearly every function has or reaches a loop (formatting, allocation, WASI
//! start-up), and all of those are instrumented. (Measured with Binaryen's Asyncify, before
//! Shoal's own replaced it.)
//!
//! The interval does not change the per-iteration cost (the countdown runs every iteration
//! whatever its value); it only sets how often `preempt` is called, so how long a capture
//! request waits for the next call: 4096 iterations of a tight loop take a few microseconds, far
//! below the ~0.2 ms the capture itself takes (stop the unwind, copy memory, send the image).

use super::sections::rank;
use super::validate::SHOAL_ABI_V1_MODULE;
use super::PrepareError;
use std::convert::Infallible;
use wasm_encoder::reencode::{self, Reencode};
use wasm_encoder::{
    BlockType, CodeSection, ConstExpr, EntityType, Function, GlobalSection, GlobalType,
    ImportSection, Instruction, NameMap, NameSection, SectionId, TypeSection, ValType,
};
use wasmparser::types::Types;
use wasmparser::{CompositeInnerType, Name, Operator, Parser, Payload, TypeRef};

/// Field name of the preemption import in the `shoal_v1` module.
pub const PREEMPT_IMPORT: &str = "preempt";

/// Loop iterations (summed over all loops of a process) between two calls to
/// `shoal_v1.preempt`. A check costs the same whatever this value is; a larger one only makes
/// the call rarer and a capture wait longer for it. 4096 iterations of even a tight loop take a
/// few microseconds, far below the ~0.2 ms a capture itself takes (see the module docs).
pub const PREEMPT_INTERVAL: i32 = 4096;

/// Control frames a wrapped loop adds around itself (`$exit`, `$outer`, `$preempt_now`).
const WRAP_FRAMES: u32 = 3;

/// Name given to the inserted import in the `name` section (when the module has one).
pub const PREEMPT_FUNCTION_NAME: &str = "shoal$preempt";

/// Name given to the countdown global in the `name` section (when the module has one).
pub const COUNTDOWN_GLOBAL_NAME: &str = "shoal$preempt_countdown";

/// What [`insert`] did.
#[derive(Debug)]
pub(crate) struct Rewritten {
    /// The rewritten module.
    pub bytes: Vec<u8>,
    /// `loop` instructions that got a preemption check.
    pub loops: usize,
    /// Custom sections left out (stale DWARF, or a malformed name section).
    pub dropped_custom_sections: Vec<String>,
}

/// Facts about the input, read before rewriting.
#[derive(Default)]
struct Scan {
    imported_funcs: u32,
    /// Function index of an existing `shoal_v1.preempt` import.
    existing_import: Option<u32>,
    /// Per defined function: index of the scratch local to add, if the function has loops.
    scratch: Vec<Option<u32>>,
    /// Per defined function: it uses a branch instruction other than `br`, `br_if` and
    /// `br_table` (only possible with proposals Shoal does not enable), so its loops get the
    /// check inline instead of being wrapped (wrapping moves branch depths).
    other_branches: Vec<bool>,
    loops: usize,
}

fn invalid(e: wasmparser::BinaryReaderError) -> PrepareError {
    PrepareError::invalid(&e)
}

/// Function type index of a `() -> ()` type, if the module has one.
fn empty_func_type(types: &Types) -> Option<u32> {
    let tref = types.as_ref();
    (0..tref.core_type_count_in_module()).find(|&i| {
        matches!(
            &types[tref.core_type_at_in_module(i)].composite_type.inner,
            CompositeInnerType::Func(f) if f.params().is_empty() && f.results().is_empty()
        ) && types[tref.core_type_at_in_module(i)].is_final
            && types[tref.core_type_at_in_module(i)]
                .supertype_idx
                .is_none()
    })
}

fn scan(wasm: &[u8], types: &Types) -> Result<Scan, PrepareError> {
    let tref = types.as_ref();
    let mut s = Scan::default();
    let mut body_index = 0u32;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(invalid)? {
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(invalid)?;
                    let is_preempt =
                        import.module == SHOAL_ABI_V1_MODULE && import.name == PREEMPT_IMPORT;
                    match import.ty {
                        TypeRef::Func(ty) | TypeRef::FuncExact(ty) => {
                            if is_preempt {
                                let ok =
                                    super::validate::func_type_at(types, ty).is_some_and(|f| {
                                        f.params().is_empty() && f.results().is_empty()
                                    });
                                if !ok {
                                    return Err(PrepareError::unsupported(format!(
                                        "the module imports `{SHOAL_ABI_V1_MODULE}.{PREEMPT_IMPORT}` \
                                         with a type other than `() -> ()`"
                                    )));
                                }
                                s.existing_import = Some(s.imported_funcs);
                            }
                            s.imported_funcs += 1;
                        }
                        _ if is_preempt => {
                            return Err(PrepareError::unsupported(format!(
                                "the module imports `{SHOAL_ABI_V1_MODULE}.{PREEMPT_IMPORT}` \
                                 as something other than a function"
                            )));
                        }
                        _ => {}
                    }
                }
            }
            Payload::CodeSectionEntry(body) => {
                let func = s.imported_funcs + body_index;
                body_index += 1;
                let mut loops = 0usize;
                let mut other_branches = false;
                let mut reader = body.get_operators_reader().map_err(invalid)?;
                while !reader.eof() {
                    match reader.read().map_err(invalid)? {
                        Operator::Loop { .. } => loops += 1,
                        Operator::BrOnNull { .. }
                        | Operator::BrOnNonNull { .. }
                        | Operator::BrOnCast { .. }
                        | Operator::BrOnCastFail { .. }
                        | Operator::Delegate { .. }
                        | Operator::Rethrow { .. }
                        | Operator::TryTable { .. } => other_branches = true,
                        _ => {}
                    }
                }
                s.other_branches.push(other_branches);
                if loops == 0 {
                    s.scratch.push(None);
                    continue;
                }
                s.loops += loops;
                let params = match &types[tref.core_function_at(func)].composite_type.inner {
                    CompositeInnerType::Func(f) => f.params().len() as u32,
                    _ => 0,
                };
                let mut locals = 0u32;
                for pair in body.get_locals_reader().map_err(invalid)? {
                    let (count, _) = pair.map_err(invalid)?;
                    locals = locals.saturating_add(count);
                }
                let index = params.checked_add(locals).ok_or_else(|| {
                    PrepareError::unsupported("a function with more than 2^32 locals")
                })?;
                s.scratch.push(Some(index));
            }
            _ => {}
        }
    }
    Ok(s)
}

/// Number of `loop` instructions in the module's code (what `shoal inspect` shows). The module
/// must be valid.
pub fn loop_count(wasm: &[u8]) -> Result<usize, PrepareError> {
    let mut loops = 0;
    for payload in Parser::new(0).parse_all(wasm) {
        if let Payload::CodeSectionEntry(body) = payload.map_err(invalid)? {
            let mut reader = body.get_operators_reader().map_err(invalid)?;
            while !reader.eof() {
                if let Operator::Loop { .. } = reader.read().map_err(invalid)? {
                    loops += 1;
                }
            }
        }
    }
    Ok(loops)
}

/// The re-encoder: shifts function indices, appends the import, the type and the global, and
/// inserts the checks.
struct Rewriter {
    imported_funcs: u32,
    /// True when the import is new (every defined function index moves up by one).
    shift: bool,
    preempt_func: u32,
    /// `Some(index)` when a `() -> ()` type has to be appended at that index.
    new_type: Option<u32>,
    preempt_type: u32,
    /// `Some(index)` when the countdown global is added (the module has loops).
    countdown: Option<u32>,
    scratch: Vec<Option<u32>>,
    other_branches: Vec<bool>,
    /// Type indices of function types with parameters (loops of such a block type take
    /// operands, so they are not wrapped).
    types_with_params: std::collections::HashSet<u32>,
    next_body: usize,
    types_done: bool,
    imports_done: bool,
    globals_done: bool,
    loops: usize,
    dropped: Vec<String>,
}

impl Rewriter {
    fn append_type(&mut self, types: &mut TypeSection) {
        if self.new_type.is_some() {
            types.ty().function([], []);
        }
        self.types_done = true;
    }

    fn append_import(&mut self, imports: &mut ImportSection) {
        if self.shift {
            imports.import(
                SHOAL_ABI_V1_MODULE,
                PREEMPT_IMPORT,
                EntityType::Function(self.preempt_type),
            );
        }
        self.imports_done = true;
    }

    fn append_global(&mut self, globals: &mut GlobalSection) {
        if self.countdown.is_some() {
            globals.global(
                GlobalType {
                    val_type: ValType::I32,
                    mutable: true,
                    shared: false,
                },
                &ConstExpr::i32_const(PREEMPT_INTERVAL),
            );
        }
        self.globals_done = true;
    }

    /// `countdown -= 1`, leaving the new value in `scratch` and on the stack (as `i32.eqz`
    /// of it: 1 when the countdown reached 0).
    fn decrement(f: &mut Function, countdown: u32, scratch: u32) {
        for ins in [
            Instruction::GlobalGet(countdown),
            Instruction::I32Const(1),
            Instruction::I32Sub,
            Instruction::LocalTee(scratch),
            Instruction::GlobalSet(countdown),
            Instruction::LocalGet(scratch),
            Instruction::I32Eqz,
        ] {
            f.instruction(&ins);
        }
    }

    /// The check for a loop that cannot be wrapped: the whole test and the call inline at the
    /// top of its body.
    fn inline_check(&self, f: &mut Function, countdown: u32, scratch: u32) {
        Self::decrement(f, countdown, scratch);
        for ins in [
            Instruction::If(BlockType::Empty),
            Instruction::I32Const(PREEMPT_INTERVAL),
            Instruction::GlobalSet(countdown),
            Instruction::Call(self.preempt_func),
            Instruction::End,
        ] {
            f.instruction(&ins);
        }
    }

    /// Whether a loop of this block type can be wrapped: it takes no operands.
    fn can_wrap(&self, ty: wasmparser::BlockType) -> bool {
        match ty {
            wasmparser::BlockType::Empty | wasmparser::BlockType::Type(_) => true,
            wasmparser::BlockType::FuncType(i) => !self.types_with_params.contains(&i),
        }
    }

    /// `map` with indices moved by `index` and the entry `extra` added, sorted by index.
    fn name_map(
        &mut self,
        map: wasmparser::NameMap<'_>,
        index: impl Fn(&mut Self, u32) -> u32,
        extra: Option<(u32, &str)>,
    ) -> Result<NameMap, reencode::Error> {
        let mut entries: Vec<(u32, String)> = Vec::new();
        for naming in map {
            let naming = naming?;
            entries.push((index(self, naming.index), naming.name.to_string()));
        }
        if let Some((i, name)) = extra {
            if !entries.iter().any(|(j, _)| *j == i) {
                entries.push((i, name.to_string()));
            }
        }
        entries.sort_by_key(|(i, _)| *i);
        let mut out = NameMap::new();
        for (i, n) in &entries {
            out.append(*i, n);
        }
        Ok(out)
    }
}

impl Reencode for Rewriter {
    type Error = Infallible;

    fn function_index(&mut self, func: u32) -> Result<u32, reencode::Error> {
        Ok(if self.shift && func >= self.imported_funcs {
            func + 1
        } else {
            func
        })
    }

    fn parse_type_section(
        &mut self,
        types: &mut TypeSection,
        section: wasmparser::TypeSectionReader<'_>,
    ) -> Result<(), reencode::Error> {
        reencode::utils::parse_type_section(self, types, section)?;
        self.append_type(types);
        Ok(())
    }

    fn parse_import_section(
        &mut self,
        imports: &mut ImportSection,
        section: wasmparser::ImportSectionReader<'_>,
    ) -> Result<(), reencode::Error> {
        reencode::utils::parse_import_section(self, imports, section)?;
        self.append_import(imports);
        Ok(())
    }

    fn parse_global_section(
        &mut self,
        globals: &mut GlobalSection,
        section: wasmparser::GlobalSectionReader<'_>,
    ) -> Result<(), reencode::Error> {
        reencode::utils::parse_global_section(self, globals, section)?;
        self.append_global(globals);
        Ok(())
    }

    /// Emits the type, import and global sections the module lacks, where the format puts them.
    fn intersperse_section_hook(
        &mut self,
        module: &mut wasm_encoder::Module,
        _after: Option<SectionId>,
        before: Option<SectionId>,
    ) -> Result<(), reencode::Error> {
        let next = before.map(|id| rank(id as u8));
        let due = |id: SectionId| next.is_none_or(|n| n > rank(id as u8));
        if !self.types_done && due(SectionId::Type) {
            let mut types = TypeSection::new();
            self.append_type(&mut types);
            if !types.is_empty() {
                module.section(&types);
            }
        }
        if !self.imports_done && due(SectionId::Import) {
            let mut imports = ImportSection::new();
            self.append_import(&mut imports);
            if !imports.is_empty() {
                module.section(&imports);
            }
        }
        if !self.globals_done && due(SectionId::Global) {
            let mut globals = GlobalSection::new();
            self.append_global(&mut globals);
            if !globals.is_empty() {
                module.section(&globals);
            }
        }
        Ok(())
    }

    /// Copies a body, adding the scratch local and the checks (see the module docs for the
    /// shape of a wrapped loop) and moving branch depths past the frames added.
    fn parse_function_body(
        &mut self,
        code: &mut CodeSection,
        func: wasmparser::FunctionBody<'_>,
    ) -> Result<(), reencode::Error> {
        let scratch = self.scratch.get(self.next_body).copied().flatten();
        let may_wrap = !self
            .other_branches
            .get(self.next_body)
            .copied()
            .unwrap_or(true);
        self.next_body += 1;
        let mut locals = Vec::new();
        for pair in func.get_locals_reader()? {
            let (count, ty) = pair?;
            locals.push((count, self.val_type(ty)?));
        }
        let check = scratch.zip(self.countdown);
        if check.is_some() {
            locals.push((1, ValType::I32));
        }
        let mut f = Function::new(locals);
        // Frames added outside each open block/loop/if (WRAP_FRAMES for a wrapped loop).
        let mut frames: Vec<u32> = Vec::new();
        let depth = |frames: &[u32], d: u32| -> u32 {
            d + frames.iter().rev().take(d as usize).sum::<u32>()
        };
        let mut reader = func.get_operators_reader()?;
        while !reader.eof() {
            let op = reader.read()?;
            match op {
                Operator::Loop { blockty } => {
                    let Some((scratch, countdown)) = check else {
                        f.instruction(&self.instruction(op)?);
                        frames.push(0);
                        continue;
                    };
                    self.loops += 1;
                    let bt = self.block_type(blockty)?;
                    if may_wrap && self.can_wrap(blockty) {
                        for ins in [
                            Instruction::Block(bt),               // $exit
                            Instruction::Loop(bt),                // $outer
                            Instruction::Block(BlockType::Empty), // $preempt_now
                            Instruction::Loop(bt),                // the loop itself
                        ] {
                            f.instruction(&ins);
                        }
                        Self::decrement(&mut f, countdown, scratch);
                        f.instruction(&Instruction::BrIf(1)); // to $preempt_now
                        frames.push(WRAP_FRAMES);
                    } else {
                        f.instruction(&Instruction::Loop(bt));
                        self.inline_check(&mut f, countdown, scratch);
                        frames.push(0);
                    }
                }
                Operator::Block { .. }
                | Operator::If { .. }
                | Operator::Try { .. }
                | Operator::TryTable { .. } => {
                    f.instruction(&self.instruction(op)?);
                    frames.push(0);
                }
                Operator::End => {
                    f.instruction(&Instruction::End);
                    if frames.pop() == Some(WRAP_FRAMES) {
                        let countdown = self.countdown.unwrap_or_default();
                        for ins in [
                            Instruction::Br(2), // normal exit, with the loop's results
                            Instruction::End,   // $preempt_now
                            Instruction::I32Const(PREEMPT_INTERVAL + 1),
                            Instruction::GlobalSet(countdown),
                            Instruction::Call(self.preempt_func),
                            Instruction::Br(0), // back into the loop, at its top
                            Instruction::End,   // $outer
                            Instruction::End,   // $exit
                        ] {
                            f.instruction(&ins);
                        }
                    }
                }
                Operator::Br { relative_depth } => {
                    f.instruction(&Instruction::Br(depth(&frames, relative_depth)));
                }
                Operator::BrIf { relative_depth } => {
                    f.instruction(&Instruction::BrIf(depth(&frames, relative_depth)));
                }
                Operator::BrTable { targets } => {
                    let mut to = Vec::with_capacity(targets.len() as usize);
                    for t in targets.targets() {
                        to.push(depth(&frames, t?));
                    }
                    let default = depth(&frames, targets.default());
                    f.instruction(&Instruction::BrTable(to.into(), default));
                }
                other => {
                    f.instruction(&self.instruction(other)?);
                }
            }
        }
        code.function(&f);
        Ok(())
    }

    fn parse_custom_section(
        &mut self,
        module: &mut wasm_encoder::Module,
        section: wasmparser::CustomSectionReader<'_>,
    ) -> Result<(), reencode::Error> {
        let name = section.name();
        if name.starts_with(".debug_") {
            self.dropped.push(name.to_string());
            return Ok(());
        }
        if let wasmparser::KnownCustom::Name(names) = section.as_known() {
            // Names are debug information: a malformed section is dropped, not an error.
            match self.custom_name_section(names) {
                Ok(s) => {
                    module.section(&s);
                }
                Err(_) => self.dropped.push(name.to_string()),
            }
            return Ok(());
        }
        module.section(&self.custom_section(section)?);
        Ok(())
    }

    fn parse_custom_name_subsection(
        &mut self,
        names: &mut NameSection,
        section: Name<'_>,
    ) -> Result<(), reencode::Error> {
        match section {
            Name::Function(map) => {
                let extra = self
                    .shift
                    .then_some((self.preempt_func, PREEMPT_FUNCTION_NAME));
                let map = self.name_map(map, |s, i| s.function_index(i).unwrap_or(i), extra)?;
                names.functions(&map);
            }
            Name::Global(map) => {
                let extra = self.countdown.map(|g| (g, COUNTDOWN_GLOBAL_NAME));
                let map = self.name_map(map, |_, i| i, extra)?;
                names.globals(&map);
            }
            other => reencode::utils::parse_custom_name_subsection(self, names, other)?,
        }
        Ok(())
    }
}

/// Inserts the preemption checks into `wasm` (valid, with `types` from its validation).
pub(crate) fn insert(wasm: &[u8], types: &Types) -> Result<Rewritten, PrepareError> {
    let s = scan(wasm, types)?;
    let tref = types.as_ref();
    let (new_type, preempt_type) = match (s.existing_import, empty_func_type(types)) {
        (Some(_), _) => (None, 0),
        (None, Some(t)) => (None, t),
        (None, None) => {
            let t = tref.core_type_count_in_module();
            (Some(t), t)
        }
    };
    let mut rewriter = Rewriter {
        imported_funcs: s.imported_funcs,
        shift: s.existing_import.is_none(),
        preempt_func: s.existing_import.unwrap_or(s.imported_funcs),
        new_type,
        preempt_type,
        countdown: (s.loops > 0).then(|| tref.global_count()),
        scratch: s.scratch,
        other_branches: s.other_branches,
        types_with_params: (0..tref.core_type_count_in_module())
            .filter(|&i| {
                super::validate::func_type_at(types, i).is_some_and(|f| !f.params().is_empty())
            })
            .collect(),
        next_body: 0,
        types_done: false,
        imports_done: false,
        globals_done: false,
        loops: 0,
        dropped: Vec::new(),
    };
    let mut module = wasm_encoder::Module::new();
    rewriter
        .parse_core_module(&mut module, Parser::new(0), wasm)
        .map_err(|e| PrepareError::Encode(format!("inserting preemption points: {e}")))?;
    Ok(Rewritten {
        bytes: module.finish(),
        loops: rewriter.loops,
        dropped_custom_sections: rewriter.dropped,
    })
}
