//! Resource limits enforced through wasmtime's `ResourceLimiter`: each
//! process's own caps, and the node-wide [`MemoryBudget`] every process's
//! linear memory is charged against.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The node's memory budget: the sum of its processes' linear memories may
/// not pass it. A spawn that would is refused with a clear error, and a
/// `memory.grow` that would returns -1 to the guest, before the kernel's
/// OOM killer has to decide for the node.
#[derive(Debug)]
pub struct MemoryBudget {
    budget_bytes: u64,
    used_bytes: AtomicU64,
}

impl MemoryBudget {
    /// A budget of `budget_bytes`, nothing charged yet.
    pub fn new(budget_bytes: u64) -> Self {
        MemoryBudget {
            budget_bytes,
            used_bytes: AtomicU64::new(0),
        }
    }

    /// The budget.
    pub fn budget_bytes(&self) -> u64 {
        self.budget_bytes
    }

    /// Bytes charged now.
    pub fn used_bytes(&self) -> u64 {
        self.used_bytes.load(Ordering::SeqCst)
    }

    /// Charge `bytes` if they fit; `false` (nothing charged) if not.
    pub fn try_charge(&self, bytes: u64) -> bool {
        self.used_bytes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(bytes).filter(|n| *n <= self.budget_bytes)
            })
            .is_ok()
    }

    /// Give back `bytes` charged earlier.
    pub fn release(&self, bytes: u64) {
        let before = self.used_bytes.fetch_sub(bytes, Ordering::SeqCst);
        debug_assert!(before >= bytes, "released more than was charged");
    }
}

/// The default budget: 80% of the machine's memory (`MemTotal`), or no
/// bound where that cannot be read.
pub fn default_memory_budget_bytes() -> u64 {
    let total_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        });
    match total_kib {
        Some(kib) => kib.saturating_mul(1024) / 10 * 8,
        None => u64::MAX,
    }
}

/// Caps a process's linear memory and tables, charges its memory to the
/// node's budget (given back when the limiter, with its store, is dropped),
/// and remembers when the guest asked for more than it may have, so its
/// exit can say why.
#[derive(Debug)]
pub struct ProcessLimiter {
    /// Largest linear memory this process may have, in bytes.
    pub memory_bytes_max: usize,
    /// Largest table this process may have, in elements.
    pub table_elements_max: usize,
    /// The largest memory size (bytes) the guest asked for and was refused.
    pub memory_refused_bytes: Option<usize>,
    /// Whether a refusal came from the node's budget (not the process cap).
    pub budget_refused: bool,
    budget: Option<Arc<MemoryBudget>>,
    charged_bytes: usize,
}

impl ProcessLimiter {
    /// A limiter with the given memory cap and no node budget.
    pub fn new(memory_bytes_max: usize) -> Self {
        ProcessLimiter {
            memory_bytes_max,
            table_elements_max: 1 << 20,
            memory_refused_bytes: None,
            budget_refused: false,
            budget: None,
            charged_bytes: 0,
        }
    }

    /// A limiter with the given memory cap, charging `budget`.
    pub fn with_budget(memory_bytes_max: usize, budget: Arc<MemoryBudget>) -> Self {
        ProcessLimiter {
            budget: Some(budget),
            ..Self::new(memory_bytes_max)
        }
    }

    /// Charge `bytes` to the budget now (a process's initial memory, before
    /// its task instantiates it), so spawns that follow see it. `false`,
    /// charging nothing, if the budget cannot hold it.
    pub fn reserve(&mut self, bytes: usize) -> bool {
        let Some(budget) = &self.budget else {
            return true;
        };
        let more = bytes.saturating_sub(self.charged_bytes);
        if !budget.try_charge(more as u64) {
            return false;
        }
        self.charged_bytes = self.charged_bytes.max(bytes);
        true
    }

    fn refuse(&mut self, desired: usize) -> wasmtime::Result<bool> {
        // Refuse like a real allocator would (memory.grow returns -1), so a
        // guest that copes with allocation failure can; one that aborts is
        // reported as killed by the memory cap.
        self.memory_refused_bytes = Some(
            self.memory_refused_bytes
                .map_or(desired, |d| d.max(desired)),
        );
        Ok(false)
    }
}

impl Drop for ProcessLimiter {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.release(self.charged_bytes as u64);
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
            return self.refuse(desired);
        }
        if let Some(budget) = &self.budget {
            let more = desired.saturating_sub(self.charged_bytes) as u64;
            if !budget.try_charge(more) {
                self.budget_refused = true;
                return self.refuse(desired);
            }
            self.charged_bytes = self.charged_bytes.max(desired);
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

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn the_budget_is_charged_by_growth_and_given_back_on_drop() {
        let budget = Arc::new(MemoryBudget::new(10 << 20));
        let mut a = ProcessLimiter::with_budget(8 << 20, budget.clone());
        let mut b = ProcessLimiter::with_budget(8 << 20, budget.clone());
        assert!(a.memory_growing(0, 4 << 20, None).unwrap());
        assert!(a.memory_growing(4 << 20, 6 << 20, None).unwrap());
        assert_eq!(budget.used_bytes(), 6 << 20);
        // b's growth would pass the node's budget, though not its own cap.
        assert!(!b.memory_growing(0, 5 << 20, None).unwrap());
        assert!(b.budget_refused);
        assert!(b.memory_growing(0, 4 << 20, None).unwrap());
        assert_eq!(budget.used_bytes(), 10 << 20);
        drop(a);
        assert_eq!(budget.used_bytes(), 4 << 20);
        drop(b);
        assert_eq!(budget.used_bytes(), 0);
    }
}
