//! The host ABI guests import.
//!
//! [`table`] is the single list of every import (name, signature, blocks?).
//! Each ABI namespace has one file with a `register(linker)` function that
//! supplies the implementations; [`register_all`] wires every namespace in, and
//! refuses (by panicking at node start, a programming error) any
//! implementation whose name is missing from the table.

pub mod call;
pub mod effect;
pub use shoal_abi::errno;
pub mod kv;
pub mod memory;
pub mod message;
pub mod names;
pub mod process;
pub use shoal_abi::table;
pub mod wasi;
pub mod wasi_shared;

use crate::process::ProcessCtx;
use std::future::Future;
use table::{ImportSpec, Provider, Ty, IMPORTS};
use wasmtime::{Caller, FuncType, Linker, Val, ValType};

/// The boxed future a host function returns.
pub type HostFuture<'a> = Box<dyn Future<Output = wasmtime::Result<Option<Val>>> + Send + 'a>;

fn val_type(t: Ty) -> ValType {
    match t {
        Ty::I32 => ValType::I32,
        Ty::I64 => ValType::I64,
    }
}

/// The wasmtime function type of an import, from the table.
pub fn func_type(engine: &wasmtime::Engine, spec: &ImportSpec) -> FuncType {
    FuncType::new(
        engine,
        spec.params.iter().copied().map(val_type),
        spec.results.iter().copied().map(val_type),
    )
}

/// Collects the Shoal imports each namespace defines, so [`register_all`]
/// can check the table and the implementations agree.
pub struct Registrar<'l> {
    linker: &'l mut Linker<ProcessCtx>,
    defined: Vec<&'static str>,
}

impl Registrar<'_> {
    /// Define the Shoal import `name` with the signature the table gives.
    ///
    /// `handler` receives the call's arguments and returns the single result
    /// (or `None` for imports with no result). The table is the only place a
    /// signature is written down.
    pub fn define<F>(&mut self, name: &str, handler: F) -> wasmtime::Result<()>
    where
        F: for<'a> Fn(Caller<'a, ProcessCtx>, &'a [Val]) -> HostFuture<'a> + Send + Sync + 'static,
    {
        let spec = table::shoal_import(name)
            .unwrap_or_else(|| panic!("host function `{name}` is not in abi::table::IMPORTS"));
        self.define_spec(spec, handler)
    }

    /// Replace wasi-common's implementation of the WASI import `name` (it
    /// must be a WASI entry of the table) with a capturable one.
    pub fn define_wasi<F>(&mut self, name: &str, handler: F) -> wasmtime::Result<()>
    where
        F: for<'a> Fn(Caller<'a, ProcessCtx>, &'a [Val]) -> HostFuture<'a> + Send + Sync + 'static,
    {
        let spec = IMPORTS
            .iter()
            .find(|i| i.provider == Provider::Wasi && i.name == name)
            .unwrap_or_else(|| panic!("WASI function `{name}` is not in abi::table::IMPORTS"));
        self.linker.allow_shadowing(true);
        let r = self.define_spec(spec, handler);
        self.linker.allow_shadowing(false);
        r
    }

    fn define_spec<F>(&mut self, spec: &'static ImportSpec, handler: F) -> wasmtime::Result<()>
    where
        F: for<'a> Fn(Caller<'a, ProcessCtx>, &'a [Val]) -> HostFuture<'a> + Send + Sync + 'static,
    {
        let name = spec.name;
        let ty = func_type(self.linker.engine(), spec);
        let has_result = !spec.results.is_empty();
        self.linker
            .func_new_async(spec.module, name, ty, move |caller, params, results| {
                // Nothing a process does reaches anyone while its node is
                // suspended ([`crate::gate`]).
                let gate = caller.data().gate.clone();
                let fut = handler(caller, params);
                Box::new(async move {
                    gate.pass().await;
                    let value = Box::into_pin(fut).await?;
                    match (value, has_result) {
                        (Some(v), true) => results[0] = v,
                        (None, false) => {}
                        _ => unreachable!("host function returned the wrong number of results"),
                    }
                    Ok(())
                })
            })?;
        self.defined.push(spec.name);
        Ok(())
    }
}

/// Register every namespace (Shoal ABI and WASI) into `linker`, and check
/// that every Shoal import of the table got exactly one implementation.
pub fn register_all(linker: &mut Linker<ProcessCtx>) -> wasmtime::Result<()> {
    wasi_common::tokio::add_to_linker(linker, |ctx: &mut ProcessCtx| &mut ctx.wasi)?;
    let mut registrar = Registrar {
        linker,
        defined: Vec::new(),
    };
    process::register(&mut registrar)?;
    message::register(&mut registrar)?;
    call::register(&mut registrar)?;
    names::register(&mut registrar)?;
    kv::register(&mut registrar)?;
    wasi::register(&mut registrar)?;
    wasi_shared::register(&mut registrar)?;
    for spec in IMPORTS.iter() {
        let count = registrar
            .defined
            .iter()
            .filter(|n| **n == spec.name)
            .count();
        assert_eq!(
            count, 1,
            "import `{}` must be registered exactly once",
            spec.name
        );
    }
    Ok(())
}

/// Read an `i32` argument.
pub(crate) fn arg_i32(params: &[Val], i: usize) -> i32 {
    params[i].unwrap_i32()
}

/// Read an `i64` argument.
pub(crate) fn arg_i64(params: &[Val], i: usize) -> i64 {
    params[i].unwrap_i64()
}

/// The deadline of a call with timeout `timeout_ms` starting now
/// (negative: none).
pub(crate) fn deadline_of(timeout_ms: i64) -> Option<std::time::Instant> {
    (timeout_ms >= 0)
        .then(|| std::time::Instant::now() + std::time::Duration::from_millis(timeout_ms as u64))
}

/// Milliseconds left until `deadline`, as a captured call keeps them
/// ([`crate::capture::PendingCall::remaining_ms`]).
pub(crate) fn remaining_ms(deadline: Option<std::time::Instant>) -> Option<u64> {
    deadline.map(|d| {
        d.saturating_duration_since(std::time::Instant::now())
            .as_millis() as u64
    })
}
