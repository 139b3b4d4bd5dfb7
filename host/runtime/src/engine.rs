//! The wasmtime engines every process of a node shares.
//!
//! The *optimizing* engine (Cranelift) runs nearly every process: the
//! pooling allocator keeps instantiation in the microseconds, epochs preempt
//! guests that never call the host, and fuel is an optional hard bound on
//! instructions.
//!
//! The *baseline* engine (Winch, wasmtime's single-pass compiler, tier 1 on
//! x86_64 like Cranelift) compiles a big prepared module in a fraction of
//! Cranelift's time (the 12 MB prepared Python interpreter: ~0.9 s against
//! ~5 s on two cores) into code that runs slower. A node uses it only for
//! the first processes of a big module someone waits for, while Cranelift
//! compiles the same prepared bytes in the background
//! ([`crate::modules`]). It has the same epoch, fuel and stack settings, so
//! a guest behaves the same on either; it allocates instances on demand
//! instead of from a second pool, whose address-space reservation (every
//! slot's full memory reservation) would double the node's for a tier that
//! holds few processes, briefly.

use sha2::{Digest, Sha256 as Sha256Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Strategy};

/// The knobs that change compiled code or the instance pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineSettings {
    /// How many processes may be alive at once (pool slots).
    pub processes_max: u32,
    /// Largest linear memory any process may have, in bytes.
    pub memory_bytes_max: u64,
    /// Instrument code with fuel counting (needed for per-process fuel limits).
    pub fuel: bool,
    /// Size of each process's async stack (host calls and guest frames).
    pub stack_bytes: usize,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            processes_max: 1000,
            memory_bytes_max: 512 << 20,
            fuel: false,
            stack_bytes: 2 << 20,
        }
    }
}

/// Build the optimizing engine for `settings`.
pub fn build_engine(settings: &EngineSettings) -> wasmtime::Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_core_instances(settings.processes_max)
        .total_memories(settings.processes_max)
        .total_tables(settings.processes_max)
        .total_stacks(settings.processes_max)
        .max_memory_size(settings.memory_bytes_max as usize)
        .max_memories_per_module(1)
        .max_tables_per_module(1);
    let mut config = common_config(settings);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// Build the baseline engine for `settings` (see the module docs): Winch,
/// instances allocated on demand.
pub fn build_baseline_engine(settings: &EngineSettings) -> wasmtime::Result<Engine> {
    let mut config = common_config(settings);
    config
        .strategy(Strategy::Winch)
        .allocation_strategy(InstanceAllocationStrategy::OnDemand);
    Engine::new(&config)
}

/// What both engines share: what a guest can observe (epochs, fuel, stack).
fn common_config(settings: &EngineSettings) -> Config {
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .consume_fuel(settings.fuel)
        .async_stack_size(settings.stack_bytes)
        .max_wasm_stack(settings.stack_bytes / 2);
    config
}

/// A fingerprint of everything that makes a compiled artifact valid: the
/// wasmtime version, its compatibility hash for this engine, and ours.
///
/// The artifact cache is keyed by (module hash, this fingerprint), so a
/// change of wasmtime or of settings misses the cache instead of loading
/// incompatible code.
pub fn fingerprint(engine: &Engine, settings: &EngineSettings, prepare_tag: &str) -> String {
    use std::hash::{Hash, Hasher};
    struct Sha(Sha256Hasher);
    impl Hasher for Sha {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut h = Sha(Sha256Hasher::new());
    // Only what changes generated code belongs here: wasmtime's own
    // compatibility hash covers its codegen settings; fuel metering is ours.
    // Pool sizes and limits do not change code, so they do not split the cache.
    engine.precompile_compatibility_hash().hash(&mut h);
    settings.fuel.hash(&mut h);
    prepare_tag.hash(&mut h);
    let digest = h.0.finalize();
    format!("wasmtime-46-{}", hex::encode(&digest[..16]))
}

/// Increments the engines' epochs on a timer so running guests yield.
///
/// Dropping the ticker stops its thread.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    /// Start ticking every engine of `engines` every `tick`.
    pub fn start(engines: Vec<Engine>, tick: Duration) -> std::io::Result<EpochTicker> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("shoal-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    for engine in &engines {
                        engine.increment_epoch();
                    }
                }
            })?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
