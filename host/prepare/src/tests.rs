//! Tests of module preparation. Modules are written in WAT (dev-dependency `wat`).

use super::*;
use std::collections::{BTreeSet, HashMap};
use wasm_encoder::{NameMap, NameSection};
use wasmparser::{KnownCustom, Name, Operator, Parser, Payload};

fn wasm(src: &str) -> Vec<u8> {
    wat::parse_str(src).expect("test WAT parses")
}

fn recv_opts() -> PrepareOptions {
    PrepareOptions::new(vec![("shoal_v1".to_string(), "recv".to_string())])
}

/// Function names from a module's name section, by index.
fn function_names(bytes: &[u8]) -> HashMap<u32, String> {
    let mut out = HashMap::new();
    for payload in Parser::new(0).parse_all(bytes) {
        if let Ok(Payload::CustomSection(c)) = payload {
            if let KnownCustom::Name(reader) = c.as_known() {
                for sub in reader.into_iter().flatten() {
                    if let Name::Function(map) = sub {
                        for n in map.into_iter().flatten() {
                            out.insert(n.index, n.name.to_string());
                        }
                    }
                }
            }
        }
    }
    out
}

/// Names of the functions that Asyncify instrumented in `bytes`: those that read or write the
/// global `asyncify_get_state` returns (without asserts, nothing else touches it).
fn instrumented_in_output(bytes: &[u8]) -> BTreeSet<String> {
    let mut imported = 0u32;
    let mut get_state = None;
    let mut bodies = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.expect("output parses") {
            Payload::ImportSection(r) => {
                for i in r.into_imports() {
                    if matches!(i.expect("import").ty, wasmparser::TypeRef::Func(_)) {
                        imported += 1;
                    }
                }
            }
            Payload::ExportSection(r) => {
                for e in r {
                    let e = e.expect("export");
                    if e.name == "asyncify_get_state" {
                        get_state = Some(e.index);
                    }
                }
            }
            Payload::CodeSectionEntry(body) => {
                let mut globals = BTreeSet::new();
                let mut ops = body.get_operators_reader().expect("ops");
                while !ops.eof() {
                    match ops.read().expect("op") {
                        Operator::GlobalGet { global_index }
                        | Operator::GlobalSet { global_index } => {
                            globals.insert(global_index);
                        }
                        _ => {}
                    }
                }
                bodies.push(globals);
            }
            _ => {}
        }
    }
    let get_state = get_state.expect("asyncify_get_state exported");
    let state_global = *bodies[(get_state - imported) as usize]
        .iter()
        .next()
        .expect("asyncify_get_state reads a global");
    let names = function_names(bytes);
    bodies
        .iter()
        .enumerate()
        .filter(|(_, g)| g.contains(&state_global))
        .map(|(k, _)| names[&(imported + k as u32)].clone())
        .filter(|n| !n.starts_with("asyncify_"))
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Replaces the name section of `bytes` with the given function names.
fn with_function_names(bytes: &[u8], names: &[(u32, &str)]) -> Vec<u8> {
    let mut map = NameMap::new();
    for (i, n) in names {
        map.append(*i, n);
    }
    let mut section = NameSection::new();
    section.functions(&map);
    sections::assemble(bytes, None, Some(&section), &|_| false).expect("assemble")
}

const CALL_GRAPH_WAT: &str = r#"
(module
  (type $blk (func (result i32)))
  (type $other (func (param i64) (result i64)))
  (import "shoal_v1" "recv" (func $recv (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (table 2 funcref)
  (elem (i32.const 0) $via_table $other_sig)
  (global $sp (mut i32) (i32.const 1024))
  (global $counter (mut i64) (i64.const 0))
  (global $k i32 (i32.const 5))
  (global $already (export "already") (mut i32) (i32.const 7))
  (func $leaf (result i32) call $recv)
  (func $middle (result i32) call $leaf i32.const 1 i32.add)
  (func $hot (param $n i32) (result i32) (local $acc i32)
    (loop $l
      local.get $acc local.get $n i32.add local.set $acc
      local.get $n i32.const 1 i32.sub local.tee $n
      br_if $l)
    local.get $acc)
  (func $via_table (type $blk) call $recv)
  (func $indirect_blocking (result i32) i32.const 0 call_indirect (type $blk))
  (func $other_sig (type $other) local.get 0 i64.const 1 i64.add)
  (func $indirect_other (result i64) i64.const 5 i32.const 1 call_indirect (type $other))
  (func $hidden_blocker (type $blk) call $recv)
  (func $main (export "_start")
    call $middle drop
    i32.const 100 call $hot drop
    call $indirect_blocking drop
    call $indirect_other drop
    global.get $counter i64.const 1 i64.add global.set $counter)
)
"#;

#[test]
fn malformed_bytes_are_invalid_with_offset() {
    let err = validate(b"\0asm\x01\0\0\0\x01\x05\x01\x60\x00").unwrap_err();
    match &err {
        PrepareError::Invalid { offset, message } => {
            assert!(*offset >= 8, "offset {offset} points into the type section");
            assert!(!message.is_empty());
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("invalid module at byte offset 0x"),
        "{err}"
    );
    assert!(matches!(
        prepare(b"not wasm", &recv_opts()),
        Err(PrepareError::Invalid { offset: 0, .. })
    ));
}

/// `wasm_features()` must accept exactly what wasmtime (as the workspace builds it) accepts.
#[test]
fn feature_set_agrees_with_wasmtime() {
    let engine = wasmtime::Engine::default();
    let probes = [
        ("mvp", "(module (func))"),
        (
            "externref",
            "(module (global (mut externref) (ref.null extern)))",
        ),
        (
            "funcref table",
            "(module (table 1 funcref) (func (drop (ref.null func))))",
        ),
        ("threads", "(module (memory 1 1 shared))"),
        (
            "atomics",
            "(module (memory 1) (func (drop (i32.atomic.load (i32.const 0)))))",
        ),
        ("memory64", "(module (memory i64 1))"),
        ("multi-memory", "(module (memory 1) (memory 1))"),
        ("tail call", "(module (func return_call 0))"),
        (
            "extended const",
            "(module (global i32 (i32.add (i32.const 1) (i32.const 2))))",
        ),
        ("simd", "(module (func (drop (v128.const i64x2 0 0))))"),
        (
            "relaxed simd",
            "(module (func (drop (f32x4.relaxed_madd (v128.const i64x2 0 0) \
             (v128.const i64x2 0 0) (v128.const i64x2 0 0)))))",
        ),
        ("exceptions", "(module (tag) (func (throw 0)))"),
        ("gc", "(module (type (struct)))"),
        (
            "function references",
            "(module (type $t (func)) (func (param (ref null $t))))",
        ),
    ];
    for (what, src) in probes {
        let bytes = wasm(src);
        let ours = wasmparser::Validator::new_with_features(wasm_features())
            .validate_all(&bytes)
            .is_ok();
        let theirs = wasmtime::Module::validate(&engine, &bytes).is_ok();
        assert_eq!(ours, theirs, "{what}: ours={ours} wasmtime={theirs}");
    }
}

#[test]
fn component_is_unsupported() {
    let err = validate(&wasm("(component)")).unwrap_err();
    assert!(
        matches!(&err, PrepareError::Unsupported { what } if what.contains("component")),
        "{err}"
    );
}

#[test]
fn memory_shapes_are_unsupported() {
    for (src, word) in [
        ("(module (memory 1) (memory 1))", "more than one memory"),
        (
            "(module (import \"e\" \"m\" (memory 1)) (memory 1))",
            "more than one memory",
        ),
        ("(module (memory i64 1))", "memory64"),
    ] {
        let err = prepare(&wasm(src), &recv_opts()).unwrap_err();
        assert!(
            matches!(&err, PrepareError::Unsupported { what } if what.contains(word)),
            "{src}: {err}"
        );
    }
}

#[test]
fn shared_memory_is_refused() {
    // Shoal's wasmtime has no `threads` feature, so this is invalid rather than unsupported;
    // the message still names the problem.
    let err = prepare(&wasm("(module (memory 1 1 shared))"), &recv_opts()).unwrap_err();
    assert!(
        matches!(&err, PrepareError::Invalid { message, .. } if message.contains("shared")),
        "{err}"
    );
}

#[test]
fn summary_describes_the_module() {
    let s = validate(&wasm(CALL_GRAPH_WAT)).unwrap();
    assert_eq!(s.abi_version, Some(1));
    assert_eq!(s.memory_count, 1);
    assert_eq!(s.defined_function_count, 9);
    assert!(s.has_name_section);
    assert_eq!(s.imports[0].ty, "func () -> i32");
    assert_eq!(s.imports[1].ty, "func (i32)");
    assert!(s
        .exports
        .iter()
        .any(|e| e.name == "_start" && e.kind == ExternKind::Func));
    let wasi = validate(&wasm(
        r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func (param i32))))"#,
    ))
    .unwrap();
    assert_eq!(wasi.abi_version, None);
}

#[test]
fn call_graph_selects_only_functions_that_can_block() {
    let prepared = prepare(&wasm(CALL_GRAPH_WAT), &recv_opts()).unwrap();
    let expected = set(&[
        "leaf",
        "middle",
        "via_table",
        "indirect_blocking",
        "hidden_blocker",
        "main",
    ]);
    let reported: BTreeSet<String> = prepared
        .report
        .instrumented_functions
        .iter()
        .cloned()
        .collect();
    assert_eq!(reported, expected);
    assert_eq!(prepared.report.functions_instrumented, 6);
    assert_eq!(prepared.report.functions_total, 9);
    // And Binaryen instrumented exactly those (the only-list was matched).
    assert_eq!(instrumented_in_output(&prepared.bytes), expected);
    assert!(prepared.report.asyncified);
    assert_eq!(prepared.report.open_world, None);
    assert_eq!(
        prepared.report.blocking_imports_used,
        vec![("shoal_v1".to_string(), "recv".to_string())]
    );
}

#[test]
fn indirect_call_to_a_blocking_function_that_is_not_address_taken_is_not_instrumented() {
    let src = r#"
    (module
      (type $blk (func (result i32)))
      (import "shoal_v1" "recv" (func $recv (result i32)))
      (memory 1)
      (table 1 funcref)
      (elem (i32.const 0) $pure)
      (func $pure (type $blk) i32.const 1)
      (func $blocks (type $blk) call $recv)
      (func $caller (result i32) i32.const 0 call_indirect (type $blk))
      ;; Exported, so address-taken: its type must differ from $blk for the test to mean much.
      (func (export "run") (param i32) (result i32) call $caller call $blocks i32.add))
    "#;
    let prepared = prepare(&wasm(src), &recv_opts()).unwrap();
    assert_eq!(
        instrumented_in_output(&prepared.bytes),
        set(&["blocks", "shoal$f4"])
    );
}

#[test]
fn open_world_tables_make_imports_indirect_targets() {
    // The host may put its own `recv` into an imported table.
    let src = |ty: &str| {
        format!(
            r#"(module
              (import "shoal_v1" "recv" (func $recv (result i32)))
              (import "env" "table" (table 1 funcref))
              (memory 1)
              (func $caller (export "caller") {ty} i32.const 0 call_indirect {ty}))"#
        )
    };
    let open = prepare(&wasm(&src("(result i32)")), &recv_opts()).unwrap();
    assert!(open
        .report
        .open_world
        .as_deref()
        .unwrap()
        .contains("imported table"));
    assert_eq!(
        open.report.instrumented_functions,
        vec!["caller".to_string()]
    );
    // A call type no blocking import has: still not instrumented.
    let other = prepare(&wasm(&src("(result i64)")), &recv_opts()).unwrap();
    assert_eq!(other.report.functions_instrumented, 0);
    assert!(!other.report.asyncified);
}

#[test]
fn prepared_module_validates_and_exports_every_mutable_global() {
    let prepared = prepare(&wasm(CALL_GRAPH_WAT), &recv_opts()).unwrap();
    let summary = validate(&prepared.bytes).unwrap();
    for name in ASYNCIFY_EXPORTS {
        assert!(
            summary.exports.iter().any(|e| e.name == name),
            "missing {name}"
        );
    }
    let g = &prepared.report.global_exports;
    // $sp (0), $counter (1), $already (3, existing export), then Asyncify's two globals.
    let by_index: HashMap<u32, &GlobalExport> = g.iter().map(|g| (g.global_index, g)).collect();
    assert_eq!(by_index[&0].export_name, "shoal$global$0");
    assert_eq!(by_index[&0].debug_name.as_deref(), Some("sp"));
    assert_eq!(by_index[&1].ty, "i64");
    assert_eq!(by_index[&3].export_name, "already");
    assert!(!by_index[&3].added);
    assert!(!by_index.contains_key(&2), "immutable global not exported");
    assert_eq!(g.len(), 5, "{g:?}");
    for ge in g {
        assert!(summary.exports.iter().any(|e| e.name == ge.export_name
            && e.kind == ExternKind::Global
            && e.index == ge.global_index));
    }
    assert_eq!(
        prepared.report.exported_globals,
        g.iter().map(|g| g.export_name.clone()).collect::<Vec<_>>()
    );
}

#[test]
fn without_blocking_imports_only_globals_are_exported() {
    let src = r#"(module
      (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
      (memory 1)
      (global (mut i32) (i32.const 0))
      (func (export "_start") nop))"#;
    let input = wasm(src);
    let prepared = prepare(&input, &recv_opts()).unwrap();
    assert!(!prepared.report.asyncified);
    assert_eq!(prepared.report.functions_instrumented, 0);
    assert_eq!(
        prepared.report.exported_globals,
        vec!["shoal$global$0".to_string()]
    );
    let summary = validate(&prepared.bytes).unwrap();
    assert!(!summary
        .exports
        .iter()
        .any(|e| e.name.starts_with("asyncify_")));
    // Everything but the export section is byte-identical.
    let code = |b: &[u8]| {
        sections::sections(b)
            .unwrap()
            .into_iter()
            .filter(|s| s.id != sections::EXPORT_SECTION_ID)
            .map(|s| (s.id, s.data.to_vec()))
            .collect::<Vec<_>>()
    };
    assert_eq!(code(&input), code(&prepared.bytes));
    // An empty blocking list means the same.
    let none = prepare(&input, &PrepareOptions::new(vec![])).unwrap();
    assert_eq!(none.bytes, prepared.bytes);
}

#[test]
fn sections_round_trip_byte_for_byte() {
    let input = wasm(CALL_GRAPH_WAT);
    assert_eq!(
        sections::assemble(&input, None, None, &|_| false).unwrap(),
        input
    );
}

/// Names as Rust emits them (demangled) and worse: commas, spaces, brackets, `*`, `->`, UTF-8,
/// duplicates, unnamed.
const WEIRD_NAMES: [(u32, &str); 8] = [
    (
        1,
        "<alloc::boxed::Box<F,A> as core::ops::function::FnOnce<Args>>::call_once",
    ),
    (2, "core::ptr::drop_in_place<*const [u8]>"),
    (3, "fn() -> i32 {{closure}}"),
    (4, "with space, and comma"),
    (5, "π::λ"),
    (6, "dup"),
    (7, "dup"),
    (8, "a*b"),
];

const WEIRD_WAT: &str = r#"
(module
  (import "shoal_v1" "recv" (func (result i32)))
  (memory 1)
  (func (result i32) call 0)
  (func (result i32) call 1)
  (func (result i32) call 0)
  (func (result i32) i32.const 1)
  (func (result i32) call 3)
  (func (result i32) call 0)
  (func (result i32) i32.const 2)
  (func (result i32) call 2)
  (func (result i32) call 0)
  (func (export "run") (result i32) call 7 call 8 i32.add call 5 i32.add call 9 i32.add))
"#;

#[test]
fn weird_names_survive_and_are_matched() {
    let input = with_function_names(&wasm(WEIRD_WAT), &WEIRD_NAMES);
    let prepared = prepare(&input, &recv_opts()).unwrap();
    let names = function_names(&prepared.bytes);
    assert_eq!(names[&0], "shoal$f0", "unnamed import");
    for (i, n) in &WEIRD_NAMES[..5] {
        assert_eq!(&names[i], n);
    }
    assert_eq!(names[&6], "dup$6");
    assert_eq!(names[&7], "dup$7");
    assert_eq!(names[&8], "a*b");
    assert_eq!(names[&10], "shoal$f10");
    let expected = set(&[
        WEIRD_NAMES[0].1,
        WEIRD_NAMES[1].1,
        WEIRD_NAMES[2].1,
        WEIRD_NAMES[4].1,
        "dup$6",
        "a*b",
        "shoal$f9",
        "shoal$f10",
    ]);
    assert_eq!(instrumented_in_output(&prepared.bytes), expected);
    let reported: BTreeSet<String> = prepared
        .report
        .instrumented_functions
        .iter()
        .cloned()
        .collect();
    assert_eq!(reported, expected);
}

#[test]
fn asyncify_guards_refuse_what_cannot_be_saved() {
    let cases = [
        (
            r#"(module (import "shoal_v1" "recv" (func (result i32))) (memory 1)
                (func (result i32) return_call 0))"#,
            "tail calls",
        ),
        (
            r#"(module (import "shoal_v1" "recv" (func (result i32)))
                (func (export "f") (result i32) call 0))"#,
            "no linear memory",
        ),
        (
            r#"(module (import "shoal_v1" "recv" (func (result i32)))
                (import "asyncify" "start_unwind" (func (param i32))) (memory 1)
                (func (export "f") (result i32) call 0))"#,
            "asyncify",
        ),
        (
            r#"(module (import "shoal_v1" "recv" (func (result i32))) (memory 1)
                (func (export "asyncify_get_state") (result i32) call 0))"#,
            "already Asyncify",
        ),
        (
            r#"(module (import "shoal_v1" "recv" (func (result i32))) (memory 1)
                (func (export "f") (result i32) (local funcref) call 0))"#,
            "reference-typed local",
        ),
    ];
    for (src, word) in cases {
        let err = prepare(&wasm(src), &recv_opts()).unwrap_err();
        assert!(
            matches!(&err, PrepareError::Unsupported { what } if what.contains(word)),
            "{word}: {err}"
        );
    }
    // A reference-typed local in a function that never blocks is fine.
    let ok = r#"(module (import "shoal_v1" "recv" (func (result i32))) (memory 1)
        (func (export "f") (result i32) call 0)
        (func (export "g") (local funcref) nop))"#;
    assert!(prepare(&wasm(ok), &recv_opts()).is_ok());
}

#[test]
fn dwarf_sections_are_dropped_when_instrumenting() {
    let mut module = wasm_encoder::Module::new();
    let input = wasm(CALL_GRAPH_WAT);
    for s in sections::sections(&input).unwrap() {
        module.section(&wasm_encoder::RawSection {
            id: s.id,
            data: s.data,
        });
    }
    module.section(&wasm_encoder::CustomSection {
        name: ".debug_info".into(),
        data: b"stale".as_slice().into(),
    });
    module.section(&wasm_encoder::CustomSection {
        name: "keep_me".into(),
        data: b"x".as_slice().into(),
    });
    let prepared = prepare(&module.finish(), &recv_opts()).unwrap();
    assert_eq!(
        prepared.report.dropped_custom_sections,
        vec![".debug_info".to_string()]
    );
    let customs: Vec<String> = sections::sections(&prepared.bytes)
        .unwrap()
        .iter()
        .filter_map(|s| s.custom_name().map(str::to_string))
        .collect();
    assert!(customs.contains(&"keep_me".to_string()), "{customs:?}");
    assert!(!customs.iter().any(|c| c.starts_with(".debug")));
}

mod end_to_end {
    //! Unwind inside the blocking import, copy memory and globals into a fresh instance in a
    //! fresh store, rewind there, and check the guest finishes as if the call had returned.
    use super::*;
    use wasmtime::{Caller, Engine, Instance, Linker, Module, Store, Val};

    const GUEST: &str = r#"
    (module
      (type $blk (func (param i32) (result i32)))
      (type $pure (func (param i64) (result i64)))
      (import "shoal_v1" "recv" (func $recv (param i32) (result i32)))
      (memory (export "memory") 1)
      (table 2 funcref)
      (elem (i32.const 0) $through_table $twice)
      (func $twice (type $pure) local.get 0 i64.const 2 i64.mul)
      (global $sp (mut i32) (i32.const 512))
      (func $through_table (type $blk) local.get 0 call $recv)
      (func $hot (param $n i32) (result i32) (local $acc i32)
        (loop $l
          local.get $acc local.get $n i32.add local.set $acc
          local.get $n i32.const 1 i32.sub local.tee $n
          br_if $l)
        local.get $acc)
      (func (export "_start") (local $x i32) (local $y i32)
        i32.const 10 call $hot local.set $x           ;; 55, live across the blocking call
        ;; A non-blocking indirect call inside an instrumented function.
        i64.const 21 i32.const 1 call_indirect (type $pure)
        i64.const 42 i64.ne if unreachable end
        global.get $sp i32.const 16 i32.sub global.set $sp
        i32.const 7 i32.const 0 call_indirect (type $blk) local.set $y
        i32.const 0
        local.get $x local.get $y i32.add
        i32.const 8 call $recv i32.add
        i32.store
        global.get $sp i32.const 16 i32.add global.set $sp))
    "#;

    const BUF: i32 = 1024;

    #[derive(Default)]
    struct Host {
        calls: Vec<i32>,
        unwind_next: bool,
    }

    fn instance(engine: &Engine, module: &Module, store: &mut Store<Host>) -> Instance {
        let mut linker = Linker::<Host>::new(engine);
        linker
            .func_wrap(
                "shoal_v1",
                "recv",
                |mut caller: Caller<'_, Host>, arg: i32| -> wasmtime::Result<i32> {
                    let f = |c: &mut Caller<'_, Host>, n: &str| {
                        c.get_export(n).and_then(|e| e.into_func()).expect(n)
                    };
                    let state = f(&mut caller, "asyncify_get_state")
                        .typed::<(), i32>(&caller)?
                        .call(&mut caller, ())?;
                    if state == 2 {
                        f(&mut caller, "asyncify_stop_rewind")
                            .typed::<(), ()>(&caller)?
                            .call(&mut caller, ())?;
                        return Ok(1000);
                    }
                    caller.data_mut().calls.push(arg);
                    if std::mem::take(&mut caller.data_mut().unwind_next) {
                        f(&mut caller, "asyncify_start_unwind")
                            .typed::<i32, ()>(&caller)?
                            .call(&mut caller, BUF)?;
                        return Ok(0);
                    }
                    Ok(arg * 100)
                },
            )
            .unwrap();
        linker.instantiate(&mut *store, module).unwrap()
    }

    fn state(store: &mut Store<Host>, inst: &Instance) -> i32 {
        inst.get_typed_func::<(), i32>(&mut *store, "asyncify_get_state")
            .unwrap()
            .call(&mut *store, ())
            .unwrap()
    }

    #[test]
    fn capture_and_resume_in_a_fresh_store() {
        for asserts in [false, true] {
            let opts = PrepareOptions {
                asyncify_asserts: asserts,
                ..PrepareOptions::new(vec![("shoal_v1".into(), "recv".into())])
            };
            let prepared = prepare(&wasm(GUEST), &opts).unwrap();
            let engine = Engine::default();
            let module = Module::new(&engine, &prepared.bytes).unwrap();

            // Run until the first recv, and unwind there.
            let mut store = Store::new(
                &engine,
                Host {
                    unwind_next: true,
                    ..Host::default()
                },
            );
            let inst = instance(&engine, &module, &mut store);
            let memory = inst.get_memory(&mut store, "memory").unwrap();
            memory
                .write(&mut store, BUF as usize, &(BUF + 8).to_le_bytes())
                .unwrap();
            memory
                .write(&mut store, BUF as usize + 4, &(BUF + 1024).to_le_bytes())
                .unwrap();
            let start = inst.get_typed_func::<(), ()>(&mut store, "_start").unwrap();
            start.call(&mut store, ()).unwrap();
            assert_eq!(store.data().calls, vec![7]);
            assert_eq!(state(&mut store, &inst), 1, "unwinding");
            inst.get_typed_func::<(), ()>(&mut store, "asyncify_stop_unwind")
                .unwrap()
                .call(&mut store, ())
                .unwrap();

            // Capture memory and every mutable global.
            let bytes = memory.data(&store).to_vec();
            let globals: Vec<(String, Val)> = prepared
                .report
                .global_exports
                .iter()
                .map(|g| {
                    let gl = inst.get_global(&mut store, &g.export_name).unwrap();
                    (g.export_name.clone(), gl.get(&mut store))
                })
                .collect();
            assert!(globals.len() >= 3, "sp + asyncify state/data: {globals:?}");
            drop(store);

            // Restore into a brand-new store and rewind.
            let mut store = Store::new(&engine, Host::default());
            let inst = instance(&engine, &module, &mut store);
            let memory = inst.get_memory(&mut store, "memory").unwrap();
            memory.write(&mut store, 0, &bytes).unwrap();
            for (name, v) in globals {
                inst.get_global(&mut store, &name)
                    .unwrap()
                    .set(&mut store, v)
                    .unwrap();
            }
            inst.get_typed_func::<i32, ()>(&mut store, "asyncify_start_rewind")
                .unwrap()
                .call(&mut store, BUF)
                .unwrap();
            let start = inst.get_typed_func::<(), ()>(&mut store, "_start").unwrap();
            start.call(&mut store, ()).unwrap();
            assert_eq!(state(&mut store, &inst), 0);
            // x = 55 survived; y = 1000 (the resumed recv); second recv(8) = 800.
            let mut out = [0u8; 4];
            memory.read(&store, 0, &mut out).unwrap();
            assert_eq!(
                i32::from_le_bytes(out),
                55 + 1000 + 800,
                "asserts={asserts}"
            );
            assert_eq!(store.data().calls, vec![8]);
            let sp = inst.get_global(&mut store, "shoal$global$0").unwrap();
            assert_eq!(sp.get(&mut store).i32(), Some(512));
        }
    }
}

/// Calls to `name`'s callees in `bytes`: (direct call targets by name, number of call_indirect).
fn calls_of(bytes: &[u8], name: &str) -> (Vec<String>, usize) {
    let names = function_names(bytes);
    let index = *names
        .iter()
        .find(|(_, n)| n.as_str() == name)
        .expect(name)
        .0;
    let mut imported = 0u32;
    let mut k = 0u32;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.unwrap() {
            Payload::ImportSection(r) => {
                for i in r.into_imports() {
                    if matches!(i.unwrap().ty, wasmparser::TypeRef::Func(_)) {
                        imported += 1;
                    }
                }
            }
            Payload::CodeSectionEntry(body) => {
                if imported + k == index {
                    let (mut direct, mut indirect) = (Vec::new(), 0);
                    let mut ops = body.get_operators_reader().unwrap();
                    while !ops.eof() {
                        match ops.read().unwrap() {
                            Operator::Call { function_index } => {
                                direct.push(names[&function_index].clone())
                            }
                            Operator::CallIndirect { .. } => indirect += 1,
                            _ => {}
                        }
                    }
                    return (direct, indirect);
                }
                k += 1;
            }
            _ => {}
        }
    }
    panic!("no body for {name}")
}

const HOT_INDIRECT_WAT: &str = r#"
(module
  (type $blk (func (result i32)))
  (type $op (func (param i64) (result i64)))
  (import "shoal_v1" "recv" (func $recv (result i32)))
  (memory 1)
  (table 3 funcref)
  (elem (i32.const 0) $inc $blocking $dec)
  (func $inc (type $op) local.get 0 i64.const 1 i64.add)
  (func $dec (type $op) local.get 0 i64.const 1 i64.sub)
  (func $blocking (type $blk) call $recv)
  (func $main (export "_start") (local $i i32) (local $acc i64)
    (loop $l
      local.get $acc local.get $i i32.const 1 i32.and i32.const 2 i32.mul
      call_indirect (type $op) local.set $acc
      local.get $i i32.const 1 i32.add local.tee $i
      i32.const 1000 i32.lt_u br_if $l)
    i32.const 1 call_indirect (type $blk) drop))
"#;

#[test]
fn non_blocking_indirect_calls_in_instrumented_functions_stay_uninstrumented() {
    let prepared = prepare(&wasm(HOT_INDIRECT_WAT), &recv_opts()).unwrap();
    assert_eq!(
        instrumented_in_output(&prepared.bytes),
        set(&["blocking", "main"])
    );
    // Both indirect calls remain; only the one whose type can block is followed by the
    // unwinding check (a read of the state global right after the call).
    let (_, indirect) = calls_of(&prepared.bytes, "main");
    assert_eq!(indirect, 2);
    assert_eq!(checked_indirect_calls(&prepared.bytes, "main"), 1);
}

/// How many `call_indirect`s of function `name` are directly followed by `global.get` of the
/// Asyncify state global (the unwinding check).
fn checked_indirect_calls(bytes: &[u8], name: &str) -> usize {
    let names = function_names(bytes);
    let index = *names
        .iter()
        .find(|(_, n)| n.as_str() == name)
        .expect(name)
        .0;
    let mut imported = 0u32;
    let mut k = 0u32;
    let mut state_global = None;
    let mut found = 0;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.expect("parses") {
            Payload::ImportSection(r) => {
                for i in r.into_imports() {
                    if matches!(i.expect("import").ty, wasmparser::TypeRef::Func(_)) {
                        imported += 1;
                    }
                }
            }
            Payload::GlobalSection(r) => {
                // The state global is the second-to-last one (state, data).
                state_global = Some(r.count() - 2);
            }
            Payload::CodeSectionEntry(body) => {
                if imported + k == index {
                    let mut ops = body.get_operators_reader().expect("ops");
                    let mut after_indirect = false;
                    while !ops.eof() {
                        let op = ops.read().expect("op");
                        if after_indirect
                            && matches!(op, Operator::GlobalGet { global_index } if Some(global_index) == state_global)
                        {
                            found += 1;
                        }
                        after_indirect = matches!(op, Operator::CallIndirect { .. });
                    }
                }
                k += 1;
            }
            _ => {}
        }
    }
    found
}

mod preempt_points {
    //! The preemption pass (`preempt`): index remapping, names, behaviour, and a capture inside
    //! a loop that no blocking import is ever called from.
    use super::*;
    use wasmtime::{Caller, Engine, Instance, Linker, Module, Store, Val};

    /// Loops, direct and indirect calls, `ref.func` in code and in a global initialiser, an
    /// active and a declarative element segment, exports, a start function and names.
    const LOOPY: &str = r#"
    (module $loopy
      (type $ii (func (param i32) (result i32)))
      (import "env" "note" (func $note (param i32)))
      (memory (export "memory") 1)
      (table 2 funcref)
      (global $started (mut i32) (i32.const 0))
      (global $fref funcref (ref.func $double))
      (global $sp (mut i32) (i32.const 512))
      (elem (i32.const 0) $double $sum_to)
      (elem declare func $start)
      (func $double (type $ii) local.get 0 i32.const 2 i32.mul)
      (func $sum_to (type $ii) (local $acc i32)
        (block $done
          (loop $l
            local.get 0 i32.eqz br_if $done
            local.get $acc local.get 0 i32.add local.set $acc
            local.get 0 i32.const 1 i32.sub local.set 0
            br $l))
        local.get $acc)
      (func $start
        ref.func $start drop
        (table.set (i32.const 1) (global.get $fref))
        i32.const 7 global.set $started)
      (func $run (export "run") (param $n i32) (result i32)
        local.get $n call $sum_to
        local.get $n i32.const 1 call_indirect (type $ii)
        i32.add
        local.get $n i32.const 0 call_indirect (type $ii)
        i32.add
        global.get $started i32.add
        (call $note (i32.const 1)))
      (export "double" (func $double))
      (export "start_fn" (func $start))
      (start $start))
    "#;

    /// A module that calls and exports but never loops.
    const NO_LOOPS: &str = r#"
    (module
      (type $v (func))
      (import "env" "note" (func $note (param i32)))
      (memory (export "memory") 1)
      (global $g (mut i32) (i32.const 1))
      (table 1 funcref)
      (elem (i32.const 0) $f)
      (func $f (param i32) (result i32) local.get 0 call $g2)
      (func $g2 (param i32) (result i32) local.get 0 i32.const 1 i32.add)
      (func (export "main") (param i32) (result i32)
        local.get 0 call $f (call $note (i32.const 3))))
    "#;

    fn imports(bytes: &[u8]) -> Vec<(String, String)> {
        validate(bytes)
            .unwrap()
            .imports
            .into_iter()
            .map(|i| (i.module, i.name))
            .collect()
    }

    fn global_names(bytes: &[u8]) -> HashMap<u32, String> {
        let mut out = HashMap::new();
        for payload in Parser::new(0).parse_all(bytes) {
            if let Ok(Payload::CustomSection(c)) = payload {
                if let KnownCustom::Name(reader) = c.as_known() {
                    for sub in reader.into_iter().flatten() {
                        if let Name::Global(map) = sub {
                            for n in map.into_iter().flatten() {
                                out.insert(n.index, n.name.to_string());
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// Operators of every defined function body, as text.
    fn bodies(bytes: &[u8]) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        for payload in Parser::new(0).parse_all(bytes) {
            if let Payload::CodeSectionEntry(body) = payload.unwrap() {
                let mut ops = body.get_operators_reader().unwrap();
                let mut v = Vec::new();
                while !ops.eof() {
                    v.push(format!("{:?}", ops.read().unwrap()));
                }
                out.push(v);
            }
        }
        out
    }

    fn rewrite(src: &str) -> (Vec<u8>, preempt::Rewritten) {
        let input = wasm(src);
        let checked = validate::check(&input).unwrap();
        let out = preempt::insert(&input, &checked.types).unwrap();
        (input, out)
    }

    /// Runs `run(n)` with `env.note` and a counting `shoal_v1.preempt`; returns (result, notes,
    /// preempt calls).
    fn run_plain(bytes: &[u8], n: i32) -> (i32, Vec<i32>, u32) {
        #[derive(Default)]
        struct H {
            notes: Vec<i32>,
            preempts: u32,
        }
        let engine = Engine::default();
        let module = Module::new(&engine, bytes).unwrap();
        let mut linker = Linker::<H>::new(&engine);
        linker
            .func_wrap("env", "note", |mut c: Caller<'_, H>, v: i32| {
                c.data_mut().notes.push(v)
            })
            .unwrap();
        linker
            .func_wrap("shoal_v1", "preempt", |mut c: Caller<'_, H>| {
                c.data_mut().preempts += 1
            })
            .unwrap();
        let mut store = Store::new(&engine, H::default());
        let inst = linker.instantiate(&mut store, &module).unwrap();
        let run = inst
            .get_typed_func::<i32, i32>(&mut store, "run")
            .or_else(|_| inst.get_typed_func::<i32, i32>(&mut store, "main"))
            .unwrap();
        let r = run.call(&mut store, n).unwrap();
        let double = inst.get_typed_func::<i32, i32>(&mut store, "double");
        if let Ok(d) = double {
            assert_eq!(
                d.call(&mut store, 21).unwrap(),
                42,
                "export still reaches $double"
            );
        }
        let h = store.into_data();
        (r, h.notes, h.preempts)
    }

    #[test]
    fn rewrite_remaps_every_function_index_and_behaves_the_same() {
        let (input, out) = rewrite(LOOPY);
        assert_eq!(out.loops, 1);
        validate(&out.bytes).expect("the rewritten module validates");
        let mut want = imports(&input);
        want.push((SHOAL_ABI_V1_MODULE.into(), PREEMPT_IMPORT.into()));
        assert_eq!(imports(&out.bytes), want);

        // Names moved with their functions; the import and the countdown are named.
        let before = function_names(&input);
        let after = function_names(&out.bytes);
        assert_eq!(after[&0], "note");
        assert_eq!(after[&1], PREEMPT_FUNCTION_NAME);
        for (i, name) in &before {
            let j = if *i >= 1 { i + 1 } else { *i };
            assert_eq!(&after[&j], name, "function {i} -> {j}");
        }
        let globals = global_names(&out.bytes);
        assert_eq!(globals[&3], COUNTDOWN_GLOBAL_NAME);
        assert_eq!(globals[&0], "started");

        // Same results; 10,000 iterations of the one loop call preempt twice (every 4096).
        for n in [0, 5, 10_000] {
            let (r0, notes0, p0) = run_plain(&input, n);
            let (r1, notes1, p1) = run_plain(&out.bytes, n);
            assert_eq!(r0, r1, "n={n}");
            assert_eq!(notes0, notes1);
            assert_eq!(p0, 0);
            assert_eq!(p1, (n / PREEMPT_INTERVAL) as u32, "n={n}");
        }
        // Hand-checked: sum 1..=10000 + 2*10000 (twice, table slot 1 was re-pointed to $double
        // through the global's ref.func; slot 0 is $double too) + 7 from the start function.
        assert_eq!(run_plain(&out.bytes, 10_000).0, 50_005_000 + 40_000 + 7);
    }

    /// Nested loops left by branches that cross both (`br_if`, `br_table`), a loop with a
    /// result and a loop with a parameter (not wrapped: its check stays inline).
    const BRANCHY: &str = r#"
    (module
      (type $p (func (param i32) (result i32)))
      (memory 1)
      (func (export "run") (param $n i32) (result i32) (local $i i32) (local $j i32) (local $acc i32)
        (block $out
          (loop $rows
            (local.set $j (i32.const 0))
            (loop $cols
              (local.set $acc (i32.add (local.get $acc) (i32.mul (local.get $i) (local.get $j))))
              (br_if $out (i32.gt_u (local.get $acc) (i32.const 50000000)))
              (local.set $j (i32.add (local.get $j) (i32.const 1)))
              (block $next
                (br_table $cols $next $cols (i32.rem_u (local.get $j) (i32.const 3))))
              (br_if $cols (i32.lt_u (local.get $j) (local.get $n))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br_if $rows (i32.lt_u (local.get $i) (local.get $n)))))
        (local.get $acc)
        (loop $down (result i32)
          (local.set $i (i32.sub (local.get $i) (i32.const 1)))
          (br_if $down (i32.gt_s (local.get $i) (i32.const 0)))
          (local.get $i))
        i32.add
        (i32.const 0)
        (loop $up (type $p)
          (local.set $j (i32.add (i32.const 1)))
          (br_if $up (local.get $j) (i32.lt_u (local.get $j) (i32.const 100))))
        i32.add))
    "#;

    #[test]
    fn wrapped_loops_keep_every_branch_target() {
        let (input, out) = rewrite(BRANCHY);
        assert_eq!(out.loops, 4);
        validate(&out.bytes).expect("the rewritten module validates");
        for n in [0, 1, 2, 7, 300, 3000] {
            let (r0, _, _) = run_plain(&input, n);
            let (r1, _, calls) = run_plain(&out.bytes, n);
            assert_eq!(r0, r1, "n={n}");
            if n == 3000 {
                assert!(calls >= 2, "{calls} preempt calls");
            }
        }
    }

    #[test]
    fn a_module_without_loops_only_gains_the_import() {
        let (input, out) = rewrite(NO_LOOPS);
        assert_eq!(out.loops, 0);
        validate(&out.bytes).unwrap();
        let mut want = imports(&input);
        want.push((SHOAL_ABI_V1_MODULE.into(), PREEMPT_IMPORT.into()));
        assert_eq!(imports(&out.bytes), want);
        let (a, b) = (validate(&input).unwrap(), validate(&out.bytes).unwrap());
        assert_eq!(a.defined_function_count, b.defined_function_count);
        // No global was added (only the original one is exported, under its own index) and
        // the bodies are the same up to the shifted callee indices.
        let count_globals = |bytes: &[u8]| {
            let checked = validate::check(bytes).unwrap();
            checked.types.as_ref().global_count()
        };
        assert_eq!(count_globals(&input), count_globals(&out.bytes));
        let shifted: Vec<Vec<String>> = bodies(&input)
            .into_iter()
            .map(|ops| {
                ops.into_iter()
                    .map(|op| match op.strip_prefix("Call { function_index: ") {
                        Some(rest) => {
                            let i: u32 = rest.trim_end_matches(" }").parse().unwrap();
                            let i = if i >= 1 { i + 1 } else { i };
                            format!("Call {{ function_index: {i} }}")
                        }
                        None => op,
                    })
                    .collect()
            })
            .collect();
        assert_eq!(bodies(&out.bytes), shifted);
        assert_eq!(run_plain(&input, 4).0, run_plain(&out.bytes, 4).0);
    }

    #[test]
    fn an_existing_preempt_import_is_reused() {
        let src = r#"(module
          (import "shoal_v1" "preempt" (func $p))
          (memory 1)
          (func (export "run") (param i32) (result i32)
            (loop $l local.get 0 i32.const 1 i32.sub local.tee 0 br_if $l)
            call $p
            local.get 0))"#;
        let (input, out) = rewrite(src);
        assert_eq!(imports(&out.bytes), imports(&input));
        assert_eq!(out.loops, 1);
        assert_eq!(run_plain(&out.bytes, 9000), (0, vec![], 2 + 1));

        let wrong = r#"(module (import "shoal_v1" "preempt" (func (param i32))))"#;
        let checked = validate::check(&wasm(wrong)).unwrap();
        assert!(matches!(
            preempt::insert(&wasm(wrong), &checked.types),
            Err(PrepareError::Unsupported { .. })
        ));
    }

    fn preempt_opts() -> PrepareOptions {
        PrepareOptions {
            preempt: true,
            ..PrepareOptions::new(vec![
                ("shoal_v1".into(), "recv".into()),
                (SHOAL_ABI_V1_MODULE.into(), PREEMPT_IMPORT.into()),
            ])
        }
    }

    #[test]
    fn prepare_instruments_loops_only_when_asked() {
        let plain = prepare(&wasm(LOOPY), &preempt_opts_off()).unwrap();
        assert!(
            !plain.report.asyncified,
            "nothing blocks without preemption points"
        );
        assert_eq!(plain.report.preempt_loops, 0);

        let p = prepare(&wasm(LOOPY), &preempt_opts()).unwrap();
        assert!(p.report.asyncified);
        assert_eq!(p.report.preempt_loops, 1);
        assert_eq!(
            p.report.blocking_imports_used,
            vec![(SHOAL_ABI_V1_MODULE.to_string(), PREEMPT_IMPORT.to_string())]
        );
        // The loop function and everything that can call it (directly, or through the
        // table: `run` calls indirectly with $sum_to's type).
        assert_eq!(
            p.report
                .instrumented_functions
                .iter()
                .cloned()
                .collect::<BTreeSet<_>>(),
            set(&["sum_to", "run"])
        );
        // The countdown is a mutable global like any other: exported, so snapshots carry it.
        assert!(p
            .report
            .global_exports
            .iter()
            .any(|g| g.debug_name.as_deref() == Some(COUNTDOWN_GLOBAL_NAME) && g.added));

        let missing = PrepareOptions {
            preempt: true,
            ..recv_opts()
        };
        assert!(matches!(
            prepare(&wasm(LOOPY), &missing),
            Err(PrepareError::InvalidOptions(_))
        ));
    }

    fn preempt_opts_off() -> PrepareOptions {
        PrepareOptions {
            preempt: false,
            ..preempt_opts()
        }
    }

    const BUF: i32 = 2048;

    #[derive(Default)]
    struct Host {
        preempts: u32,
        unwind_at: Option<u32>,
    }

    fn instance(engine: &Engine, module: &Module, store: &mut Store<Host>) -> Instance {
        let mut linker = Linker::<Host>::new(engine);
        linker
            .func_wrap("env", "note", |_: Caller<'_, Host>, _: i32| {})
            .unwrap();
        linker
            .func_wrap(
                "shoal_v1",
                "preempt",
                |mut caller: Caller<'_, Host>| -> wasmtime::Result<()> {
                    let f = |c: &mut Caller<'_, Host>, n: &str| {
                        c.get_export(n).and_then(|e| e.into_func()).expect(n)
                    };
                    let state = f(&mut caller, "asyncify_get_state")
                        .typed::<(), i32>(&caller)?
                        .call(&mut caller, ())?;
                    if state == 2 {
                        return f(&mut caller, "asyncify_stop_rewind")
                            .typed::<(), ()>(&caller)?
                            .call(&mut caller, ());
                    }
                    caller.data_mut().preempts += 1;
                    if caller.data().unwind_at == Some(caller.data().preempts) {
                        f(&mut caller, "asyncify_start_unwind")
                            .typed::<i32, ()>(&caller)?
                            .call(&mut caller, BUF)?;
                    }
                    Ok(())
                },
            )
            .unwrap();
        linker.instantiate(&mut *store, module).unwrap()
    }

    /// A loop that never calls a blocking import is captured at its third preemption point,
    /// moved into a fresh store, and finishes with the uninterrupted result.
    #[test]
    fn a_loop_is_captured_and_resumed_in_a_fresh_store() {
        for asserts in [false, true] {
            let opts = PrepareOptions {
                asyncify_asserts: asserts,
                ..preempt_opts()
            };
            let prepared = prepare(&wasm(LOOPY), &opts).unwrap();
            let engine = Engine::default();
            let module = Module::new(&engine, &prepared.bytes).unwrap();
            let n = 20_000;
            let want = (1..=n).sum::<i32>() + 4 * n + 7;

            let mut store = Store::new(
                &engine,
                Host {
                    unwind_at: Some(3),
                    ..Host::default()
                },
            );
            let inst = instance(&engine, &module, &mut store);
            let memory = inst.get_memory(&mut store, "memory").unwrap();
            memory
                .write(&mut store, BUF as usize, &(BUF + 8).to_le_bytes())
                .unwrap();
            memory
                .write(&mut store, BUF as usize + 4, &(BUF + 1024).to_le_bytes())
                .unwrap();
            let run = inst.get_typed_func::<i32, i32>(&mut store, "run").unwrap();
            run.call(&mut store, n).unwrap(); // returns a dummy while unwinding
            let get_state = inst
                .get_typed_func::<(), i32>(&mut store, "asyncify_get_state")
                .unwrap();
            assert_eq!(get_state.call(&mut store, ()).unwrap(), 1, "unwinding");
            inst.get_typed_func::<(), ()>(&mut store, "asyncify_stop_unwind")
                .unwrap()
                .call(&mut store, ())
                .unwrap();
            let bytes = memory.data(&store).to_vec();
            let globals: Vec<(String, Val)> = prepared
                .report
                .global_exports
                .iter()
                .map(|g| {
                    let gl = inst.get_global(&mut store, &g.export_name).unwrap();
                    (g.export_name.clone(), gl.get(&mut store))
                })
                .collect();
            drop(store);

            let mut store = Store::new(&engine, Host::default());
            let inst = instance(&engine, &module, &mut store);
            let memory = inst.get_memory(&mut store, "memory").unwrap();
            memory.write(&mut store, 0, &bytes).unwrap();
            for (name, v) in globals {
                inst.get_global(&mut store, &name)
                    .unwrap()
                    .set(&mut store, v)
                    .unwrap();
            }
            inst.get_typed_func::<i32, ()>(&mut store, "asyncify_start_rewind")
                .unwrap()
                .call(&mut store, BUF)
                .unwrap();
            let run = inst.get_typed_func::<i32, i32>(&mut store, "run").unwrap();
            assert_eq!(run.call(&mut store, n).unwrap(), want, "asserts={asserts}");
            // 20,000 iterations: preempt at 4096·k; 3 before the capture, 1 after it.
            assert_eq!(store.data().preempts, 1, "asserts={asserts}");
        }
    }
}

/// 100,000 blocks nested around a blocking call (valid WebAssembly; Binaryen took a minute on
/// it): preparation does not recurse once per level (the liveness analysis gives up past its
/// nesting bound and saves every local), and the result validates.
#[test]
fn deeply_nested_blocks_prepare_without_recursing_per_level() {
    let depth = 100_000;
    let mut w = String::from(
        r#"(module
  (import "shoal_v1" "recv" (func $recv (param i32 i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start") (local $kept i32)
    i32.const 7 local.set $kept
"#,
    );
    w.push_str(&"block\n".repeat(depth));
    w.push_str("i32.const 0 i32.const 0 i64.const 0 i32.const 0 call $recv drop\n");
    w.push_str(&"end\n".repeat(depth));
    w.push_str("local.get $kept drop))\n");
    let input = wasm(&w);
    let prepared = prepare(&input, &recv_opts()).unwrap();
    assert_eq!(prepared.report.functions_instrumented, 1);
}

mod asyncify_edge_cases {
    //! Shoal's Asyncify against the uninstrumented module, on code that compilers rarely emit
    //! but WebAssembly allows: values below a blocking call at several nesting levels, a loop
    //! and an `if` with block parameters, `br_table` out of blocks around calls, blocking and
    //! non-blocking indirect calls, a callee with two results, direct calls of instrumented
    //! functions with values below them (saved by the caller, where the arguments are not:
    //! the rewinding callee takes its own from its record), a construct that is the only
    //! point of its sequence and comes first in it, a sequence whose few points cover many
    //! numbers (nested ones). For every blocking call of a
    //! run, the process is unwound there, copied into a fresh store, rewound, and must end
    //! with the same result and the same sequence of calls as an uninterrupted run of the
    //! original module.
    use super::*;
    use wasmtime::{Caller, Engine, Instance, Linker, Module, Store, Val};

    const EDGES: &str = r#"
    (module
      (type $ri (func (param i32) (result i32)))
      (import "shoal_v1" "recv" (func $recv (param i32) (result i32)))
      (memory (export "memory") 1)
      (global $sp (mut i32) (i32.const 512))
      (table 2 funcref)
      (elem (i32.const 0) $twice $plain)
      (func $pair (param $x i32) (result i32 i64) (local $t i64)
        local.get $x
        i64.const 5 local.set $t
        local.get $x i32.const 1 i32.add call $recv
        i32.add
        local.get $t
        local.get $x call $recv i64.extend_i32_u i64.add)
      (func $twice (type $ri) local.get 0 call $recv local.get 0 call $recv i32.add)
      (func $plain (type $ri) local.get 0 i32.const 2 i32.mul)
      (func $cond (param $c i32) (result i32)
        local.get $c
        (if (result i32)
          (then i32.const 13 call $recv i32.const 1 i32.add)
          (else i32.const 14 call $recv i32.const 2 i32.mul)))
      (func $start (export "_start") (local $i i32) (local $acc i64) (local $dead i32)
        global.get $sp i32.const 16 i32.sub global.set $sp
        i64.const 1
        i32.const 0
        (loop $l (param i64 i32) (result i64 i32)
          local.set $i
          local.get $i i32.const 10 i32.add call $recv
          i64.extend_i32_u i64.add
          local.get $i i32.const 1 i32.add local.tee $i
          local.get $i i32.const 3 i32.lt_u br_if $l)
        drop local.set $acc
        i32.const 100
        i32.const 7
        local.get $acc i64.const 2 i64.rem_u i32.wrap_i64
        (if (param i32) (result i32)
          (then call $recv i32.const 1 i32.add)
          (else i32.const 3 i32.add call $recv))
        i32.add
        i64.extend_i32_u local.get $acc i64.add local.set $acc
        (block $a (block $b (block $c
              local.get $acc i32.wrap_i64 i32.const 3 i32.rem_u call $recv drop
              local.get $acc i32.wrap_i64 i32.const 3 i32.rem_u
              br_table $a $b $c)
            local.get $acc i64.const 11 i64.add local.set $acc)
          i32.const 42 call $recv i64.extend_i32_u local.get $acc i64.add local.set $acc)
        i32.const 5 i32.const 0 call_indirect (type $ri)
        i32.const 6 i32.const 1 call_indirect (type $ri) i32.add
        i64.extend_i32_u local.get $acc i64.add local.set $acc
        i32.const 9 call $pair
        local.get $acc i64.add local.set $acc
        i64.extend_i32_u local.get $acc i64.add local.set $acc
        i32.const 1000
        (block (result i32)
          i32.const 2000
          (block (result i32) i32.const 77 call $recv)
          i32.add)
        i32.add i64.extend_i32_u local.get $acc i64.add local.set $acc
        i32.const 3
        local.get $acc i64.eqz i32.eqz
        (if (then i32.const 8 call $recv local.set $dead))
        i32.const 4 local.set $dead
        local.get $dead i32.add
        i64.extend_i32_u local.get $acc i64.mul local.set $acc
        i32.const 500
        i32.const 3 call $twice
        i32.add
        i32.const 600
        (block (param i32) (result i32)
          i32.const 50 local.get $acc i32.wrap_i64 i32.const 7 i32.and call $twice i32.add
          i32.add)
        i32.mul
        i64.extend_i32_u local.get $acc i64.add local.set $acc
        local.get $acc i64.const 0 i64.ne call $cond
        i64.extend_i32_u local.get $acc i64.add local.set $acc
        ;; Two points over fifteen numbers: the rewind chooses by comparison, not a table.
        (block
          ;; Code a rewind must skip, with an effect a restore does not undo.
          i32.const 8 i32.const 8 i32.load i32.const 1 i32.add i32.store
          (block
            i32.const 20 call $recv i64.extend_i32_u local.get $acc i64.add local.set $acc
            i32.const 21 call $recv i64.extend_i32_u local.get $acc i64.add local.set $acc
            i32.const 22 call $recv i64.extend_i32_u local.get $acc i64.add local.set $acc
            i32.const 23 call $recv i64.extend_i32_u local.get $acc i64.add local.set $acc
            i32.const 24 call $recv i64.extend_i32_u local.get $acc i64.add local.set $acc
            i32.const 25 call $recv i64.extend_i32_u local.get $acc i64.add local.set $acc
            i32.const 26 call $recv i64.extend_i32_u local.get $acc i64.add local.set $acc
            i32.const 27 call $recv i64.extend_i32_u local.get $acc i64.add local.set $acc
            i32.const 28 call $recv i64.extend_i32_u local.get $acc i64.add local.set $acc
            i32.const 29 call $recv i64.extend_i32_u local.get $acc i64.add local.set $acc
            i32.const 30 call $recv i64.extend_i32_u local.get $acc i64.add local.set $acc
            i32.const 31 call $recv i64.extend_i32_u local.get $acc i64.add local.set $acc
            i32.const 32 call $recv i64.extend_i32_u local.get $acc i64.add local.set $acc
            i32.const 33 call $recv i64.extend_i32_u local.get $acc i64.add local.set $acc
          )
          i32.const 34 call $recv i64.extend_i32_u local.get $acc i64.add local.set $acc)
        i32.const 8 i32.load i64.extend_i32_u local.get $acc i64.add local.set $acc
        (block (loop
          i32.const 35 call $recv i64.extend_i32_u local.get $acc i64.add local.set $acc))
        i32.const 0 local.get $acc i64.store
        global.get $sp i32.const 16 i32.add global.set $sp))
    "#;

    const BUF: i32 = 4096;

    /// What recv answers for `arg` (the same on a rewind: the call is made again).
    fn answer(arg: i32) -> i32 {
        arg.wrapping_mul(31).wrapping_add(7)
    }

    #[derive(Default)]
    struct Host {
        calls: Vec<i32>,
        /// Unwind at the call with this index (counted over the whole run).
        unwind_at: Option<usize>,
        seen: usize,
    }

    fn instance(engine: &Engine, module: &Module, store: &mut Store<Host>) -> Instance {
        let mut linker = Linker::<Host>::new(engine);
        linker
            .func_wrap(
                "shoal_v1",
                "recv",
                |mut caller: Caller<'_, Host>, arg: i32| -> wasmtime::Result<i32> {
                    let get = |c: &mut Caller<'_, Host>, n: &str| {
                        c.get_export(n).and_then(|e| e.into_func())
                    };
                    if let Some(f) = get(&mut caller, "asyncify_get_state") {
                        let state = f.typed::<(), i32>(&caller)?.call(&mut caller, ())?;
                        if state == 2 {
                            get(&mut caller, "asyncify_stop_rewind")
                                .expect("stop_rewind")
                                .typed::<(), ()>(&caller)?
                                .call(&mut caller, ())?;
                            caller.data_mut().calls.push(arg);
                            caller.data_mut().seen += 1;
                            return Ok(answer(arg));
                        }
                    }
                    let k = caller.data().seen;
                    if caller.data().unwind_at == Some(k) {
                        get(&mut caller, "asyncify_start_unwind")
                            .expect("start_unwind")
                            .typed::<i32, ()>(&caller)?
                            .call(&mut caller, BUF)?;
                        return Ok(0);
                    }
                    caller.data_mut().calls.push(arg);
                    caller.data_mut().seen += 1;
                    Ok(answer(arg))
                },
            )
            .unwrap();
        linker.instantiate(&mut *store, module).unwrap()
    }

    /// The i64 the guest stores at address 0 when it ends.
    fn result(inst: &Instance, store: &mut Store<Host>) -> i64 {
        let memory = inst.get_memory(&mut *store, "memory").unwrap();
        let mut out = [0u8; 8];
        memory.read(&*store, 0, &mut out).unwrap();
        i64::from_le_bytes(out)
    }

    fn run_plain(bytes: &[u8]) -> (i64, Vec<i32>) {
        let engine = Engine::default();
        let module = Module::new(&engine, bytes).unwrap();
        let mut store = Store::new(&engine, Host::default());
        let inst = instance(&engine, &module, &mut store);
        inst.get_typed_func::<(), ()>(&mut store, "_start")
            .unwrap()
            .call(&mut store, ())
            .unwrap();
        (result(&inst, &mut store), store.data().calls.clone())
    }

    #[test]
    fn every_capture_point_resumes_to_the_uninterrupted_result() {
        let original = wasm(EDGES);
        let (want, want_calls) = run_plain(&original);
        assert!(want_calls.len() >= 16, "{want_calls:?}");
        for asserts in [false, true] {
            let opts = PrepareOptions {
                asyncify_asserts: asserts,
                ..PrepareOptions::new(vec![("shoal_v1".into(), "recv".into())])
            };
            let prepared = prepare(&original, &opts).unwrap();
            assert_eq!(
                instrumented_in_output(&prepared.bytes),
                set(&["start", "pair", "twice", "cond"]),
                "plain is reached only by an indirect call of a blocking type, but cannot block"
            );
            // Uninterrupted, the prepared module computes what the original does.
            assert_eq!(run_plain(&prepared.bytes), (want, want_calls.clone()));
            let engine = Engine::default();
            let module = Module::new(&engine, &prepared.bytes).unwrap();
            for at in 0..want_calls.len() {
                let mut store = Store::new(
                    &engine,
                    Host {
                        unwind_at: Some(at),
                        ..Host::default()
                    },
                );
                let inst = instance(&engine, &module, &mut store);
                let memory = inst.get_memory(&mut store, "memory").unwrap();
                memory
                    .write(&mut store, BUF as usize, &(BUF + 8).to_le_bytes())
                    .unwrap();
                memory
                    .write(&mut store, BUF as usize + 4, &(BUF + 4096).to_le_bytes())
                    .unwrap();
                inst.get_typed_func::<(), ()>(&mut store, "_start")
                    .unwrap()
                    .call(&mut store, ())
                    .unwrap();
                inst.get_typed_func::<(), ()>(&mut store, "asyncify_stop_unwind")
                    .unwrap()
                    .call(&mut store, ())
                    .unwrap();
                let bytes = memory.data(&store).to_vec();
                let globals: Vec<(String, Val)> = prepared
                    .report
                    .global_exports
                    .iter()
                    .map(|g| {
                        let gl = inst.get_global(&mut store, &g.export_name).unwrap();
                        (g.export_name.clone(), gl.get(&mut store))
                    })
                    .collect();
                let before = store.data().calls.clone();
                assert_eq!(before, want_calls[..at], "calls before the capture at {at}");
                drop(store);

                let mut store = Store::new(
                    &engine,
                    Host {
                        seen: at,
                        ..Host::default()
                    },
                );
                let inst = instance(&engine, &module, &mut store);
                let memory = inst.get_memory(&mut store, "memory").unwrap();
                memory.write(&mut store, 0, &bytes).unwrap();
                for (name, v) in globals {
                    inst.get_global(&mut store, &name)
                        .unwrap()
                        .set(&mut store, v)
                        .unwrap();
                }
                inst.get_typed_func::<i32, ()>(&mut store, "asyncify_start_rewind")
                    .unwrap()
                    .call(&mut store, BUF)
                    .unwrap();
                inst.get_typed_func::<(), ()>(&mut store, "_start")
                    .unwrap()
                    .call(&mut store, ())
                    .unwrap();
                let mut all = before;
                all.extend(store.data().calls.iter().copied());
                assert_eq!(
                    all, want_calls,
                    "calls, captured at {at}, asserts={asserts}"
                );
                let got = result(&inst, &mut store);
                assert_eq!(got, want, "result, captured at {at}, asserts={asserts}");
                let sp = inst.get_global(&mut store, "shoal$global$0").unwrap();
                assert_eq!(sp.get(&mut store).i32(), Some(512), "the stack pointer");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Where a fresh instance's memory may be non-zero.

#[test]
fn fresh_memory_ranges_are_the_active_data_segments_merged() {
    let m = wasm(
        r#"(module (memory 2)
             (data (i32.const 70000) "zz")
             (data (i32.const 16) "abcd")
             (data (i32.const 18) "xyzxyz")
             (data "passive, never written at instantiation")
             (data (i32.const 100) ""))"#,
    );
    assert_eq!(fresh_memory_nonzero(&m), Some(vec![16..24, 70000..70002]));
    let none = wasm("(module (memory 1))");
    assert_eq!(fresh_memory_nonzero(&none), Some(vec![]));
}

#[test]
fn fresh_memory_is_unknown_when_the_module_alone_cannot_say() {
    for src in [
        // A start function may write anything.
        r#"(module (memory 1) (func $s i32.const 0 i32.const 7 i32.store) (start $s))"#,
        // An offset the host decides.
        r#"(module (import "env" "base" (global $g i32)) (memory 1) (data (global.get $g) "x"))"#,
        // Memory the host gives.
        r#"(module (import "env" "mem" (memory 1)) (data (i32.const 0) "x"))"#,
    ] {
        assert_eq!(fresh_memory_nonzero(&wasm(src)), None, "{src}");
    }
    assert_eq!(
        fresh_memory_nonzero(b"\0asm\x01\0\0\0\x05"),
        None,
        "truncated"
    );
}

#[test]
fn fresh_memory_ranges_survive_preparation() {
    // The runtime reads the ranges from the module as given and applies them to each prepared
    // variant: preparation must keep the data segments and add no start function.
    let src = r#"(module
      (import "shoal_v1" "recv" (func $recv (result i32)))
      (memory 1)
      (data (i32.const 1024) "hello")
      (data (i32.const 4096) "world")
      (func (export "_start") (loop $l call $recv drop br $l)))"#;
    let input = wasm(src);
    let given = fresh_memory_nonzero(&input).expect("known");
    assert_eq!(given, vec![1024..1029, 4096..4101]);
    for preempt in [false, true] {
        let opts = PrepareOptions {
            preempt,
            ..PrepareOptions::new(vec![
                ("shoal_v1".into(), "recv".into()),
                (SHOAL_ABI_V1_MODULE.into(), PREEMPT_IMPORT.into()),
            ])
        };
        let prepared = prepare(&input, &opts).unwrap();
        assert_eq!(
            fresh_memory_nonzero(&prepared.bytes).as_ref(),
            Some(&given),
            "preempt {preempt}"
        );
    }
}
