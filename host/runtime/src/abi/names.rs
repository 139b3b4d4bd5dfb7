//! The `names` namespace: `register`, `unregister`, `whereis` — process
//! names held in Raft, unique within the owner's namespace (see
//! `shoal_cluster::names`). Names are looked up in the asking process's
//! own owner's namespace.

use super::memory::{read_bytes, write_bytes};
use super::{arg_i32, errno, Registrar};
use crate::process::ProcessCtx;
use wasmtime::{Caller, Val};

/// Longest name a guest may register, in bytes (the state machine's
/// bound on every name).
pub const NAME_BYTES_MAX: i32 = 255;

/// Read a name argument: UTF-8, 1..=[`NAME_BYTES_MAX`] bytes.
fn read_name(caller: &mut Caller<'_, ProcessCtx>, ptr: i32, len: i32) -> Result<String, i32> {
    if !(1..=NAME_BYTES_MAX).contains(&len) {
        return Err(errno::INVALID);
    }
    let bytes = read_bytes(caller, ptr, len)?;
    String::from_utf8(bytes).map_err(|_| errno::INVALID)
}

/// Register the namespace's imports.
pub fn register(r: &mut Registrar<'_>) -> wasmtime::Result<()> {
    r.define("register", |mut caller, params| {
        let (ptr, len) = (arg_i32(params, 0), arg_i32(params, 1));
        Box::new(async move {
            let name = match read_name(&mut caller, ptr, len) {
                Ok(n) => n,
                Err(e) => return Ok(Some(Val::I32(e))),
            };
            let (host, me) = (caller.data().host.clone(), caller.data().pid);
            let code = host
                .register_name(me, &name)
                .await
                .err()
                .unwrap_or(errno::OK);
            Ok(Some(Val::I32(code)))
        })
    })?;
    r.define("unregister", |mut caller, params| {
        let (ptr, len) = (arg_i32(params, 0), arg_i32(params, 1));
        Box::new(async move {
            let name = match read_name(&mut caller, ptr, len) {
                Ok(n) => n,
                Err(e) => return Ok(Some(Val::I32(e))),
            };
            let (host, me) = (caller.data().host.clone(), caller.data().pid);
            let code = host
                .unregister_name(me, &name)
                .await
                .err()
                .unwrap_or(errno::OK);
            Ok(Some(Val::I32(code)))
        })
    })?;
    r.define("join_group", |mut caller, params| {
        let (ptr, len) = (arg_i32(params, 0), arg_i32(params, 1));
        Box::new(async move {
            let name = match read_name(&mut caller, ptr, len) {
                Ok(n) => n,
                Err(e) => return Ok(Some(Val::I32(e))),
            };
            let (host, me) = (caller.data().host.clone(), caller.data().pid);
            let code = host.join_group(me, &name).await.err().unwrap_or(errno::OK);
            Ok(Some(Val::I32(code)))
        })
    })?;
    r.define("leave_group", |mut caller, params| {
        let (ptr, len) = (arg_i32(params, 0), arg_i32(params, 1));
        Box::new(async move {
            let name = match read_name(&mut caller, ptr, len) {
                Ok(n) => n,
                Err(e) => return Ok(Some(Val::I32(e))),
            };
            let (host, me) = (caller.data().host.clone(), caller.data().pid);
            let code = host.leave_group(me, &name).await.err().unwrap_or(errno::OK);
            Ok(Some(Val::I32(code)))
        })
    })?;
    r.define("group_pick", |mut caller, params| {
        let (ptr, len) = (arg_i32(params, 0), arg_i32(params, 1));
        let out = arg_i32(params, 2);
        Box::new(async move {
            if let Err(e) = super::memory::check_writable(&mut caller, out, 8) {
                return Ok(Some(Val::I32(e)));
            }
            let name = match read_name(&mut caller, ptr, len) {
                Ok(n) => n,
                Err(e) => return Ok(Some(Val::I32(e))),
            };
            let (host, me) = (caller.data().host.clone(), caller.data().pid);
            let code = match host.group_pick(me, &name) {
                Ok(pid) => match write_bytes(&mut caller, out, &pid.0.to_le_bytes()) {
                    Ok(()) => errno::OK,
                    Err(e) => e,
                },
                Err(e) => e,
            };
            Ok(Some(Val::I32(code)))
        })
    })?;
    r.define("whereis", |mut caller, params| {
        let (ptr, len) = (arg_i32(params, 0), arg_i32(params, 1));
        let out = arg_i32(params, 2);
        Box::new(async move {
            if let Err(e) = super::memory::check_writable(&mut caller, out, 8) {
                return Ok(Some(Val::I32(e)));
            }
            let name = match read_name(&mut caller, ptr, len) {
                Ok(n) => n,
                Err(e) => return Ok(Some(Val::I32(e))),
            };
            let (host, me) = (caller.data().host.clone(), caller.data().pid);
            let code = match host.whereis(me, &name) {
                Ok(pid) => match write_bytes(&mut caller, out, &pid.0.to_le_bytes()) {
                    Ok(()) => errno::OK,
                    Err(e) => e,
                },
                Err(e) => e,
            };
            Ok(Some(Val::I32(code)))
        })
    })?;
    Ok(())
}
