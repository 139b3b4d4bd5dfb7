//! Per-process resource limits enforced through wasmtime's `ResourceLimiter`.

/// Caps a process's linear memory and tables, and remembers when the guest
/// asked for more than it may have, so its exit can say why.
#[derive(Debug, Clone)]
pub struct ProcessLimiter {
    /// Largest linear memory this process may have, in bytes.
    pub memory_bytes_max: usize,
    /// Largest table this process may have, in elements.
    pub table_elements_max: usize,
    /// The largest memory size (bytes) the guest asked for and was refused.
    pub memory_refused_bytes: Option<usize>,
}

impl ProcessLimiter {
    /// A limiter with the given memory cap.
    pub fn new(memory_bytes_max: usize) -> Self {
        ProcessLimiter {
            memory_bytes_max,
            table_elements_max: 1 << 20,
            memory_refused_bytes: None,
        }
    }
}

impl wasmtime::ResourceLimiter for ProcessLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes_max {
            // Refuse like a real allocator would (memory.grow returns -1), so a
            // guest that copes with allocation failure can; one that aborts is
            // reported as killed by the memory cap.
            self.memory_refused_bytes = Some(
                self.memory_refused_bytes
                    .map_or(desired, |d| d.max(desired)),
            );
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements_max)
    }

    fn instances(&self) -> usize {
        1
    }
    fn tables(&self) -> usize {
        1
    }
    fn memories(&self) -> usize {
        1
    }
}
