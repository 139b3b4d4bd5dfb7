//! The `process` namespace: own pid, spawn, sleep, yield, preempt, exit, log.

use super::memory::{read_bytes, write_bytes};
use super::{arg_i32, arg_i64, errno, Registrar};
use crate::capture::{self, wait_or_capture, Entry, PendingCall, Waited};
use crate::log::Stream;
use std::time::{Duration, Instant};

/// Import names as recorded in a pending call.
const SLEEP: &str = "shoal_v1.sleep_ms";
const YIELD: &str = "shoal_v1.yield_now";
const PREEMPT: &str = "shoal_v1.preempt";
const SPAWN: &str = "shoal_v1.spawn";
const SPAWN_ON: &str = "shoal_v1.spawn_on";
use wasi_common::I32Exit;
use wasmtime::Val;

/// Most arguments a guest may pass to `spawn`, and most bytes of them.
pub const SPAWN_ARGS_MAX: usize = 1024;
/// Most bytes of `spawn` arguments (and of a module reference).
pub const SPAWN_ARG_BYTES_MAX: i32 = 64 << 10;
/// Most bytes of one `log` call.
pub const LOG_BYTES_MAX: i32 = 64 << 10;

/// Split NUL-terminated strings; `None` if the encoding is wrong.
pub fn parse_args(bytes: &[u8]) -> Option<Vec<String>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    if *bytes.last()? != 0 {
        return None;
    }
    let parts: Vec<&[u8]> = bytes[..bytes.len() - 1].split(|b| *b == 0).collect();
    if parts.len() > SPAWN_ARGS_MAX {
        return None;
    }
    parts
        .into_iter()
        .map(|p| String::from_utf8(p.to_vec()).ok())
        .collect()
}

/// Most bytes of a `spawn_on` placement target.
pub const SPAWN_TARGET_BYTES_MAX: i32 = 4 << 10;

/// `spawn` (here, `target` None) and `spawn_on` (`target` a guest string),
/// entered as `import`: read and check the guest's arguments, then (under
/// output commit) wait until a recorded checkpoint covers the spawn
/// ([`super::effect`]), start the process, write its pid.
async fn spawn_call(
    caller: &mut wasmtime::Caller<'_, crate::process::ProcessCtx>,
    import: &str,
    target: Option<(i32, i32)>,
    module: (i32, i32),
    args: (i32, i32),
    out_ptr: i32,
) -> wasmtime::Result<i32> {
    let entry = capture::enter(caller, import).await?;
    let (target, module_ref, args) = match read_spawn(caller, target, module, args, out_ptr) {
        Ok(read) => read,
        Err(code) => return Ok(code),
    };
    let effect = match super::effect::commit_first(caller, import, entry).await? {
        super::effect::Gate::Make(key) => key,
        super::effect::Gate::Unwound => return Ok(super::effect::UNWINDING),
    };
    let host = caller.data().host.clone();
    let forward = caller.data().log.forwards();
    let parent = caller.data().pid;
    let spawned = host
        .spawn(
            parent,
            target.as_deref().map(str::trim),
            &module_ref,
            args,
            forward,
            effect,
        )
        .await;
    Ok(match spawned {
        Ok(pid) => match write_bytes(caller, out_ptr, &pid.0.to_le_bytes()) {
            Ok(()) => errno::OK,
            Err(e) => e,
        },
        Err(code) => code,
    })
}

/// A spawn's checked arguments: target, module reference, arguments.
type SpawnArgs = (Option<String>, String, Vec<String>);

/// Read and check a spawn's arguments (and that `out_ptr` can take a pid).
fn read_spawn(
    caller: &mut wasmtime::Caller<'_, crate::process::ProcessCtx>,
    target: Option<(i32, i32)>,
    (mptr, mlen): (i32, i32),
    (aptr, alen): (i32, i32),
    out_ptr: i32,
) -> Result<SpawnArgs, i32> {
    if mlen > SPAWN_ARG_BYTES_MAX || alen > SPAWN_ARG_BYTES_MAX {
        return Err(errno::INVALID);
    }
    let target = match target {
        None => None,
        Some((_, tlen)) if tlen > SPAWN_TARGET_BYTES_MAX => return Err(errno::INVALID),
        Some((tptr, tlen)) => {
            let bytes = read_bytes(caller, tptr, tlen)?;
            Some(String::from_utf8(bytes).map_err(|_| errno::INVALID)?)
        }
    };
    let module_ref = read_bytes(caller, mptr, mlen)?;
    let args = read_bytes(caller, aptr, alen)?;
    super::memory::check_writable(caller, out_ptr, 8)?;
    let Ok(module_ref) = String::from_utf8(module_ref) else {
        return Err(errno::INVALID);
    };
    let Some(args) = parse_args(&args) else {
        return Err(errno::INVALID);
    };
    Ok((target, module_ref, args))
}

/// Register the namespace's imports.
pub fn register(r: &mut Registrar<'_>) -> wasmtime::Result<()> {
    r.define("self_pid", |caller, _params| {
        let pid = caller.data().pid;
        Box::new(async move { Ok(Some(Val::I64(pid.0 as i64))) })
    })?;

    r.define("spawn", |mut caller, params| {
        let (mptr, mlen) = (arg_i32(params, 0), arg_i32(params, 1));
        let (aptr, alen) = (arg_i32(params, 2), arg_i32(params, 3));
        let out_ptr = arg_i32(params, 4);
        Box::new(async move {
            let code = spawn_call(
                &mut caller,
                SPAWN,
                None,
                (mptr, mlen),
                (aptr, alen),
                out_ptr,
            )
            .await?;
            Ok(Some(Val::I32(code)))
        })
    })?;

    r.define("spawn_on", |mut caller, params| {
        let (tptr, tlen) = (arg_i32(params, 0), arg_i32(params, 1));
        let (mptr, mlen) = (arg_i32(params, 2), arg_i32(params, 3));
        let (aptr, alen) = (arg_i32(params, 4), arg_i32(params, 5));
        let out_ptr = arg_i32(params, 6);
        Box::new(async move {
            let target = Some((tptr, tlen));
            let (module, args) = ((mptr, mlen), (aptr, alen));
            let code = spawn_call(&mut caller, SPAWN_ON, target, module, args, out_ptr).await?;
            Ok(Some(Val::I32(code)))
        })
    })?;

    r.define("sleep_ms", |mut caller, params| {
        let ms = arg_i64(params, 0);
        Box::new(async move {
            let ms = match capture::enter(&mut caller, SLEEP).await? {
                Entry::Fresh => ms,
                Entry::Resumed(p) => p.remaining_ms.unwrap_or(0) as i64,
            };
            if ms < 0 {
                return Ok(Some(Val::I32(errno::INVALID)));
            }
            let deadline = Instant::now() + Duration::from_millis(ms as u64);
            let signal = caller.data().capture.clone();
            let capturable = caller.data().capturable;
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline));
            if let Waited::Capture = wait_or_capture(&signal, capturable, sleep).await {
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .as_millis() as u64;
                let pending = PendingCall {
                    import: SLEEP.to_string(),
                    remaining_ms: Some(left),
                    effect: None,
                };
                capture::unwind(&mut caller, pending).await?;
            }
            Ok(Some(Val::I32(errno::OK)))
        })
    })?;

    r.define("yield_now", |mut caller, _params| {
        Box::new(async move {
            if let Entry::Resumed(_) = capture::enter(&mut caller, YIELD).await? {
                return Ok(Some(Val::I32(errno::OK)));
            }
            if caller.data().capturable && caller.data().capture.is_requested() {
                let pending = PendingCall {
                    import: YIELD.to_string(),
                    remaining_ms: None,
                    effect: None,
                };
                capture::unwind(&mut caller, pending).await?;
                return Ok(Some(Val::I32(errno::OK)));
            }
            tokio::task::yield_now().await;
            Ok(Some(Val::I32(errno::OK)))
        })
    })?;

    // Host-inserted into every loop of a preemptible module, every
    // `PREEMPT_INTERVAL` iterations: a capture point that costs nothing
    // unless a capture is requested. No yield here: epoch interruption
    // already gives other processes their turn.
    r.define("preempt", |mut caller, _params| {
        Box::new(async move {
            if let Entry::Resumed(_) = capture::enter(&mut caller, PREEMPT).await? {
                return Ok(None);
            }
            if caller.data().capturable && caller.data().capture.is_requested() {
                let pending = PendingCall {
                    import: PREEMPT.to_string(),
                    remaining_ms: None,
                    effect: None,
                };
                capture::unwind(&mut caller, pending).await?;
            }
            Ok(None)
        })
    })?;

    r.define("exit", |_caller, params| {
        let code = arg_i32(params, 0);
        Box::new(async move { Err(wasmtime::Error::new(I32Exit(code))) })
    })?;

    r.define("log", |mut caller, params| {
        let (level, ptr, len) = (arg_i32(params, 0), arg_i32(params, 1), arg_i32(params, 2));
        Box::new(async move {
            if !(0..=4).contains(&level) || len > LOG_BYTES_MAX {
                return Ok(Some(Val::I32(errno::INVALID)));
            }
            let code = match read_bytes(&mut caller, ptr, len) {
                Ok(mut text) => {
                    if std::str::from_utf8(&text).is_err() {
                        errno::INVALID
                    } else {
                        text.push(b'\n');
                        caller.data().log.append(Stream::Log(level as u8), &text);
                        errno::OK
                    }
                }
                Err(e) => e,
            };
            Ok(Some(Val::I32(code)))
        })
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_encoding() {
        assert_eq!(parse_args(b""), Some(vec![]));
        assert_eq!(
            parse_args(b"a\0bc\0"),
            Some(vec!["a".to_string(), "bc".to_string()])
        );
        assert_eq!(parse_args(b"\0"), Some(vec![String::new()]));
        assert_eq!(parse_args(b"a"), None);
        assert_eq!(parse_args(b"\xff\0"), None);
    }
}
