//! Prepared, compiled modules, loaded once per module hash.
//!
//! Loading a module: look in memory; else look for a compiled artifact in
//! the registry under (module hash, engine fingerprint) and deserialize it;
//! else fetch the module's bytes, prepare them (validate, Asyncify the
//! blocking imports, export mutable globals), compile, and store the
//! artifact so the next run — even in another `shoal` process — skips all of
//! that.
//!
//! A module exists in two variants, both keyed by its hash: the normal one
//! and the *preemptible* one (every loop a capture point, see
//! `shoal_prepare::PrepareOptions::preempt`), asked for with
//! `SpawnSpec::preemptible`. They are loaded, compiled and cached
//! independently ([`ModuleKey`]) and may coexist.

use crate::low_priority::Priority;
use crate::process::ProcessCtx;
use shoal_abi::table::blocking_imports;
use shoal_prepare::worker::{Worker, WorkerConfig};
use shoal_prepare::{self, PrepareError, PrepareOptions, PrepareReport};
use shoal_registry::{ArtifactKey, Registry, RegistryError, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::{Engine, InstancePre, Linker, Module};

/// Which prepared variant of which module: the key of loaded modules and
/// compiled artifacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModuleKey {
    /// sha256 of the module as the user gave it.
    pub hash: Sha256,
    /// Prepared with preemption points in every loop.
    pub preemptible: bool,
}

/// A module ready to instantiate.
pub struct LoadedModule {
    /// sha256 of the module as the user gave it.
    pub hash: Sha256,
    /// True for the preemptible variant (preemption points in every loop).
    pub preemptible: bool,
    /// The compiled, prepared module.
    pub module: Module,
    /// Pre-linked against the node's imports: instantiation is just allocation.
    pub pre: InstancePre<ProcessCtx>,
    /// Where it came from and how long that took.
    pub origin: LoadOrigin,
    /// Where a fresh instance's memory may be non-zero (its data
    /// segments, [`shoal_prepare::fresh_memory_nonzero`]); `None`: not
    /// known, anywhere in its initial memory.
    fresh_nonzero: Option<Vec<std::ops::Range<usize>>>,
}

impl LoadedModule {
    /// The byte ranges of a fresh instance's memory (of `initial_bytes`)
    /// that may hold non-zero bytes: where a restore must check for
    /// bytes its snapshot does not list. Sorted, not overlapping.
    pub fn fresh_nonzero(&self, initial_bytes: usize) -> Vec<std::ops::Range<usize>> {
        match &self.fresh_nonzero {
            Some(ranges) => ranges
                .iter()
                .map(|r| r.start.min(initial_bytes)..r.end.min(initial_bytes))
                .filter(|r| !r.is_empty())
                .collect(),
            None => std::iter::once(0..initial_bytes).collect(),
        }
    }
}

/// How a module was obtained.
#[derive(Debug, Clone)]
pub enum LoadOrigin {
    /// Deserialized from the compiled-artifact cache.
    ArtifactCache {
        /// Time to read and deserialize.
        elapsed: Duration,
    },
    /// Prepared and compiled now.
    Compiled {
        /// What preparation did (`None` when the node does not instrument).
        report: Option<Box<PrepareReport>>,
        /// Time spent preparing (Asyncify etc.).
        prepare_elapsed: Duration,
        /// Time spent compiling.
        compile_elapsed: Duration,
    },
}

/// Why a module could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// The registry could not provide it.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// It is malformed or uses something Shoal does not support.
    #[error("module {hash} cannot be prepared: {error}")]
    Prepare {
        /// The module.
        hash: Sha256,
        /// What is wrong (part of the message, not a separate cause, so a
        /// cause chain does not print it twice).
        error: PrepareError,
    },
    /// wasmtime refused to compile it.
    #[error("module {hash} failed to compile: {message}")]
    Compile {
        /// The module.
        hash: Sha256,
        /// wasmtime's explanation.
        message: String,
    },
    /// Its imports do not match what the node provides.
    #[error("module {hash} cannot be linked: {message}")]
    Link {
        /// The module.
        hash: Sha256,
        /// Which import and why.
        message: String,
    },
}

/// One module variant's place in the cache.
#[derive(Default)]
struct Slot {
    /// The loaded module. A load someone waits for holds this lock while
    /// it prepares and compiles, so concurrent spawns of a new module wait
    /// for one preparation instead of doing it twice.
    loaded: Mutex<Option<Arc<LoadedModule>>>,
    /// Held by a load ahead of need (one at a time per variant) for its
    /// whole preparation. Such a load never holds `loaded` while it works:
    /// it waits its turn on the low-priority pool, behind every other
    /// module queued there, and a spawn must never wait behind that.
    ahead: Mutex<()>,
}

impl Slot {
    fn loaded(&self) -> Option<Arc<LoadedModule>> {
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Should a load ahead of need give way? Yes when the module is loaded
    /// or a load someone waits for is under way (it holds `loaded`).
    fn ahead_gives_way(&self) -> bool {
        match self.loaded.try_lock() {
            Ok(guard) => guard.is_some(),
            Err(std::sync::TryLockError::WouldBlock) => true,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner().is_some(),
        }
    }
}

/// Loads and caches modules for one engine.
pub struct ModuleCache {
    engine: Engine,
    registry: Registry,
    fingerprint: String,
    options: PrepareOptions,
    instrument: bool,
    slots: Mutex<HashMap<ModuleKey, Arc<Slot>>>,
    /// Where preparation runs: worker processes bounded in time (a node
    /// daemon), or in this process (tests, `shoal run`).
    worker: Option<Worker>,
}

impl ModuleCache {
    /// A cache for `engine`, storing artifacts in `registry` under
    /// `fingerprint` (see [`super::engine::fingerprint`]).
    pub fn new(
        engine: Engine,
        registry: Registry,
        fingerprint: String,
        asyncify_asserts: bool,
        instrument: bool,
    ) -> Self {
        let options = PrepareOptions {
            blocking_imports: blocking_imports(),
            asyncify_asserts,
            preempt: false,
        };
        ModuleCache {
            engine,
            registry,
            fingerprint,
            options,
            instrument,
            slots: Mutex::new(HashMap::new()),
            worker: None,
        }
    }

    /// Prepare modules in worker processes run as `config` says (see
    /// [`shoal_prepare::worker`]).
    pub fn with_worker(mut self, config: WorkerConfig) -> Self {
        self.worker = Some(Worker::new(config));
        self
    }

    /// The artifact-cache key of the normal variant of a module on this
    /// engine.
    pub fn artifact_key(&self, hash: &Sha256) -> ArtifactKey {
        self.variant_artifact_key(ModuleKey {
            hash: *hash,
            preemptible: false,
        })
    }

    /// The artifact-cache key of a module variant on this engine: the
    /// preemptible variant is a different compiled module, so its engine
    /// fingerprint carries a `preempt` suffix.
    pub fn variant_artifact_key(&self, key: ModuleKey) -> ArtifactKey {
        let engine_fingerprint = if key.preemptible && self.instrument {
            format!("{} preempt", self.fingerprint)
        } else {
            self.fingerprint.clone()
        };
        ArtifactKey {
            module: key.hash,
            engine_fingerprint,
        }
    }

    /// True when a compiled artifact for the normal variant of `hash` is
    /// already on disk.
    pub fn is_compiled(&self, hash: &Sha256) -> bool {
        self.registry.artifact_contains(&self.artifact_key(hash))
    }

    /// True when the module variant is loaded in memory.
    pub fn is_loaded(&self, hash: &Sha256, preemptible: bool) -> bool {
        let key = ModuleKey {
            hash: *hash,
            preemptible,
        };
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        slot.is_some_and(|s| s.loaded().is_some())
    }

    /// Load a variant of `hash` (`preemptible`: with preemption points in
    /// every loop), preparing and compiling it if needed. Blocking: call from
    /// a blocking context (`spawn_blocking`) when in async code.
    ///
    /// A node that does not instrument (`instrument` false) has one variant
    /// only: `preemptible` is then ignored (nothing could be captured anyway).
    ///
    /// `priority` says whether someone waits (see [`crate::low_priority`]).
    pub fn load(
        &self,
        hash: &Sha256,
        preemptible: bool,
        linker: &Linker<ProcessCtx>,
        priority: Priority,
    ) -> Result<Arc<LoadedModule>, ModuleError> {
        let key = ModuleKey {
            hash: *hash,
            preemptible: preemptible && self.instrument,
        };
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.entry(key).or_default().clone()
        };
        if priority == Priority::Ahead {
            return self.load_ahead(key, &slot, linker);
        }
        // One loader per module: concurrent spawns of a new module wait here
        // instead of preparing it twice.
        let mut guard = slot.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(loaded) = guard.as_ref() {
            return Ok(loaded.clone());
        }
        let Some((module, origin)) = self.compile_or_fetch(key, priority, &|| false)? else {
            unreachable!("a load that never gives way returns a module or an error");
        };
        let loaded = self.link(key, module, origin, linker)?;
        *guard = Some(loaded.clone());
        Ok(loaded)
    }

    /// Load ahead of need without holding the slot's `loaded` lock (see
    /// [`Slot`]). It gives way to a load someone waits for that is under
    /// way (and then returns what that one loaded); only when that one
    /// failed does it prepare the module itself, without giving way again.
    fn load_ahead(
        &self,
        key: ModuleKey,
        slot: &Slot,
        linker: &Linker<ProcessCtx>,
    ) -> Result<Arc<LoadedModule>, ModuleError> {
        let _one_ahead = slot.ahead.lock().unwrap_or_else(|p| p.into_inner());
        let mut give_way = true;
        loop {
            if let Some(loaded) = slot.loaded() {
                return Ok(loaded);
            }
            let compiled = self
                .compile_or_fetch(key, Priority::Ahead, &|| give_way && slot.ahead_gives_way())?;
            let mut guard = slot.loaded.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(loaded) = guard.as_ref() {
                // A spawn came first and finished: keep what it loaded.
                return Ok(loaded.clone());
            }
            match compiled {
                Some((module, origin)) => {
                    let loaded = self.link(key, module, origin, linker)?;
                    *guard = Some(loaded.clone());
                    return Ok(loaded);
                }
                // Gave way to a load that has since failed (or to a
                // passing look at the slot): once more, to the end.
                None => give_way = false,
            }
        }
    }

    /// Pre-link a compiled module against the node's imports.
    fn link(
        &self,
        key: ModuleKey,
        module: Module,
        origin: LoadOrigin,
        linker: &Linker<ProcessCtx>,
    ) -> Result<Arc<LoadedModule>, ModuleError> {
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| ModuleError::Link {
                hash: key.hash,
                message: format!("{e:#}"),
            })?;
        // Read from the module as given: preparation keeps its data
        // segments and adds no start function (a test in shoal-prepare
        // holds it to that). A module that cannot be read is checked
        // everywhere, as before.
        let fresh_nonzero = self
            .registry
            .get(&key.hash)
            .ok()
            .and_then(|wasm| shoal_prepare::fresh_memory_nonzero(&wasm))
            .map(|ranges| {
                ranges
                    .into_iter()
                    .map(|r| {
                        usize::try_from(r.start).unwrap_or(usize::MAX)
                            ..usize::try_from(r.end).unwrap_or(usize::MAX)
                    })
                    .collect()
            });
        Ok(Arc::new(LoadedModule {
            hash: key.hash,
            preemptible: key.preemptible,
            module,
            pre,
            origin,
            fresh_nonzero,
        }))
    }

    /// The compiled module of `variant`: from the artifact cache, or
    /// prepared and compiled (and the artifact written). `None` when
    /// `give_way` said so before the work began: it is asked before
    /// preparing and again when compilation gets its turn on the
    /// low-priority pool.
    // The one `unsafe` of the host: see the SAFETY note inside.
    #[allow(unsafe_code)]
    fn compile_or_fetch(
        &self,
        variant: ModuleKey,
        priority: Priority,
        give_way: &(dyn Fn() -> bool + Sync),
    ) -> Result<Option<(Module, LoadOrigin)>, ModuleError> {
        let hash = &variant.hash;
        let key = self.variant_artifact_key(variant);
        let started = Instant::now();
        if let Some(bytes) = self.registry.artifact_get(&key)? {
            // SAFETY: `Module::deserialize` trusts its input to be code that
            // wasmtime produced. These bytes were written by `Module::serialize`
            // on an engine with this exact fingerprint (wasmtime version,
            // compatibility hash and settings are all in the key), and the
            // registry verified their sha256 on read, so they are what we wrote.
            // wasmtime additionally checks its own header and version.
            match unsafe { Module::deserialize(&self.engine, &bytes) } {
                Ok(module) => {
                    return Ok(Some((
                        module,
                        LoadOrigin::ArtifactCache {
                            elapsed: started.elapsed(),
                        },
                    )));
                }
                Err(_) => {
                    // Incompatible or damaged: fall through and recompile.
                }
            }
        }
        if give_way() {
            return Ok(None);
        }
        let wasm = self.registry.get(hash)?;
        // Ahead of need, preparation (in a worker process, or here on a
        // thread of its own) and compilation (on the compilation pool) run
        // at a lower priority; when someone waits, at normal priority (see
        // `low_priority`).
        let ahead = priority == Priority::Ahead;
        let t0 = Instant::now();
        let prepare_error = |error| ModuleError::Prepare { hash: *hash, error };
        let (bytes, report) = if self.instrument {
            let options = PrepareOptions {
                preempt: variant.preemptible,
                ..self.options.clone()
            };
            let lower: &[&str] = if ahead {
                &[crate::low_priority::WORKER_LOWER_ARG]
            } else {
                &[]
            };
            let prepared = match &self.worker {
                Some(worker) => worker.prepare_with(&wasm, &options, lower),
                None if ahead => {
                    crate::low_priority::on_own_thread(|| shoal_prepare::prepare(&wasm, &options))
                }
                None => shoal_prepare::prepare(&wasm, &options),
            }
            .map_err(prepare_error)?;
            (prepared.bytes, Some(Box::new(prepared.report)))
        } else {
            shoal_prepare::validate(&wasm).map_err(prepare_error)?;
            (wasm, None)
        };
        let prepare_elapsed = t0.elapsed();
        let t1 = Instant::now();
        let compile = || Module::new(&self.engine, &bytes);
        let compiled = if ahead {
            // Asked again when the pool gets to it: a spawn may have come
            // while it waited its turn.
            match crate::low_priority::run(|| (!give_way()).then(compile)) {
                Some(compiled) => compiled,
                None => return Ok(None),
            }
        } else {
            compile()
        };
        let module = compiled.map_err(|e| ModuleError::Compile {
            hash: *hash,
            message: format!("{e:#}"),
        })?;
        let compile_elapsed = t1.elapsed();
        if let Ok(bytes) = module.serialize() {
            // A failed cache write only costs a recompile next time.
            let _ = self.registry.artifact_put(&key, &bytes);
        }
        Ok(Some((
            module,
            LoadOrigin::Compiled {
                report,
                prepare_elapsed,
                compile_elapsed,
            },
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A spawn never waits behind preparation ahead of need: with every
    /// thread of the low-priority pool taken (as when other modules are
    /// being prepared ahead), a load someone waits for still finishes, and
    /// the load ahead of the same module, once it gets its turn, gives way
    /// and returns what the spawn loaded instead of compiling it again.
    #[test]
    fn a_waited_load_never_queues_behind_the_same_module_prepared_ahead() {
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = Registry::open(dir.path()).expect("registry");
        let engine = crate::engine::build_engine(&Default::default()).expect("engine");
        // The module imports nothing, so an empty linker links it.
        let linker = Linker::new(&engine);
        let cache = Arc::new(ModuleCache::new(
            engine,
            registry.clone(),
            "test".to_string(),
            false,
            true,
        ));
        let wasm = wat::parse_str(r#"(module (func (export "_start")))"#).expect("wat");
        let hash = registry.put(&wasm).expect("put");
        let key = ModuleKey {
            hash,
            preemptible: false,
        };

        // Take every thread of the pool, and queue more behind them.
        let threads = 2 * std::thread::available_parallelism().map_or(1, |n| n.get());
        let (release, held) = mpsc::channel::<()>();
        let held = Arc::new(Mutex::new(held));
        let (started_tx, started) = mpsc::channel();
        let blockers: Vec<_> = (0..threads)
            .map(|_| {
                let held = held.clone();
                let started_tx = started_tx.clone();
                std::thread::spawn(move || {
                    crate::low_priority::run(|| {
                        let _ = started_tx.send(());
                        // Released when `release` is dropped.
                        let _ = held.lock().map(|rx| rx.recv());
                    })
                })
            })
            .collect();
        // At least one pool thread is held (the others wait on its lock or
        // in the queue).
        started.recv().expect("a pool thread started");

        let ahead = {
            let cache = cache.clone();
            let linker = linker.clone();
            std::thread::spawn(move || cache.load(&hash, false, &linker, Priority::Ahead))
        };
        // Wait until the load ahead has the module in hand.
        loop {
            let slot = cache.slots.lock().expect("slots").get(&key).cloned();
            if slot.is_some_and(|s| s.ahead.try_lock().is_err() || s.loaded.try_lock().is_err()) {
                break;
            }
            std::thread::yield_now();
        }

        let (done_tx, done) = mpsc::channel();
        {
            let cache = cache.clone();
            let linker = linker.clone();
            std::thread::spawn(move || {
                let _ = done_tx.send(cache.load(&hash, false, &linker, Priority::Waited));
            });
        }
        // A watchdog, not a timing: without the fix this waits until the
        // pool is released, which only happens below.
        let waited = done
            .recv_timeout(Duration::from_secs(120))
            .expect("the waited load finished while the pool was busy")
            .expect("loaded");
        assert!(matches!(waited.origin, LoadOrigin::Compiled { .. }));

        drop(release);
        for b in blockers {
            b.join().expect("blocker");
        }
        let ahead = ahead.join().expect("ahead thread").expect("ahead load");
        assert!(
            Arc::ptr_eq(&ahead, &waited),
            "the load ahead returned the spawn's module instead of compiling it again"
        );
    }
}
