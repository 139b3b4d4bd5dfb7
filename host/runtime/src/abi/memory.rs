//! Bounds-checked access to a guest's linear memory.
//!
//! Every pointer and length a guest passes goes through these functions: a
//! range that does not lie entirely inside the guest's memory yields
//! [`errno::FAULT`](super::errno::FAULT), a negative length
//! [`errno::INVALID`](super::errno::INVALID). Nothing here can touch host
//! memory outside the guest's own linear memory.

use super::errno;
use crate::process::ProcessCtx;
use wasmtime::{Caller, Extern, Memory};

/// The guest's exported linear memory named `memory`, or `FAULT` when the
/// module exports none (then no pointer can be valid).
pub fn guest_memory(caller: &mut Caller<'_, ProcessCtx>) -> Result<Memory, i32> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => Err(errno::FAULT),
    }
}

/// Turn a guest (ptr, len) pair into a checked host range.
pub fn checked_range(ptr: i32, len: i32, memory_len: usize) -> Result<std::ops::Range<usize>, i32> {
    if len < 0 {
        return Err(errno::INVALID);
    }
    // Guest pointers are unsigned 32-bit offsets.
    let start = ptr as u32 as usize;
    let end = start.checked_add(len as usize).ok_or(errno::FAULT)?;
    if end > memory_len {
        return Err(errno::FAULT);
    }
    Ok(start..end)
}

/// Copy `len` bytes at `ptr` out of guest memory.
pub fn read_bytes(caller: &mut Caller<'_, ProcessCtx>, ptr: i32, len: i32) -> Result<Vec<u8>, i32> {
    let memory = guest_memory(caller)?;
    let data = memory.data(&*caller);
    let range = checked_range(ptr, len, data.len())?;
    Ok(data[range].to_vec())
}

/// Copy `bytes` into guest memory at `ptr`.
pub fn write_bytes(caller: &mut Caller<'_, ProcessCtx>, ptr: i32, bytes: &[u8]) -> Result<(), i32> {
    let len = i32::try_from(bytes.len()).map_err(|_| errno::INVALID)?;
    let memory = guest_memory(caller)?;
    let data = memory.data_mut(&mut *caller);
    let range = checked_range(ptr, len, data.len())?;
    data[range].copy_from_slice(bytes);
    Ok(())
}

/// Check that `len` bytes at `ptr` are writable, without writing.
pub fn check_writable(caller: &mut Caller<'_, ProcessCtx>, ptr: i32, len: i32) -> Result<(), i32> {
    let memory = guest_memory(caller)?;
    let size = memory.data_size(&*caller);
    checked_range(ptr, len, size).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(checked_range(0, 10, 10), Ok(0..10));
        assert_eq!(checked_range(5, 0, 5), Ok(5..5));
        assert_eq!(checked_range(6, 0, 5), Err(errno::FAULT));
        assert_eq!(checked_range(0, 11, 10), Err(errno::FAULT));
        assert_eq!(checked_range(0, -1, 10), Err(errno::INVALID));
        // 0xFFFF_FFF0 as an i32 is negative; it must be read as unsigned.
        assert_eq!(checked_range(-16, 64, 65536), Err(errno::FAULT));
        assert_eq!(
            checked_range(i32::MAX, i32::MAX, usize::MAX),
            Ok((i32::MAX as usize)..(2 * i32::MAX as usize))
        );
    }
}
