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
    /// Which compiler made its code.
    pub tier: Tier,
    /// The compiled, prepared module (its engine is the tier's: a store
    /// for it is made on `module.engine()`).
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

/// Which compiler made a loaded module's code (see
/// [`ModuleCache::with_baseline`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Winch: compiled in a fraction of Cranelift's time, runs slower.
    Baseline,
    /// Cranelift: what the artifact cache holds.
    Optimized,
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
    /// whole preparation, and by the optimizing compile of a module loaded
    /// in the baseline tier ([`Cache::tier_up`]). Neither holds `loaded`
    /// while it works: it waits its turn on the low-priority pool, behind
    /// every other module queued there, and a spawn must never wait behind
    /// that.
    ahead: Mutex<()>,
}

impl Slot {
    fn loaded(&self) -> Option<Arc<LoadedModule>> {
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The loaded module, if it is in the optimizing tier.
    fn optimized(&self) -> Option<Arc<LoadedModule>> {
        self.loaded().filter(|l| l.tier == Tier::Optimized)
    }

    /// Should a load ahead of need give way? Yes when the module is loaded
    /// in the optimizing tier or a load someone waits for is under way (it
    /// holds `loaded`).
    fn ahead_gives_way(&self) -> bool {
        let optimized =
            |l: &Option<Arc<LoadedModule>>| l.as_ref().is_some_and(|l| l.tier == Tier::Optimized);
        match self.loaded.try_lock() {
            Ok(guard) => optimized(&guard),
            Err(std::sync::TryLockError::WouldBlock) => true,
            Err(std::sync::TryLockError::Poisoned(p)) => optimized(&p.into_inner()),
        }
    }
}

/// Loads and caches modules: compiled by the optimizing engine, and first
/// by the baseline engine when someone waits for a big module (see
/// [`ModuleCache::with_baseline`]).
pub struct ModuleCache {
    /// Shared with the background threads that compile the optimizing tier
    /// of modules first loaded in the baseline tier.
    inner: Arc<Cache>,
}

/// What [`ModuleCache`] holds.
struct Cache {
    engine: Engine,
    registry: Registry,
    fingerprint: String,
    options: PrepareOptions,
    instrument: bool,
    slots: Mutex<HashMap<ModuleKey, Arc<Slot>>>,
    /// Where preparation runs: worker processes bounded in time (a node
    /// daemon), or in this process (tests, `shoal run`).
    worker: Option<Worker>,
    baseline: Option<BaselineTier>,
}

/// The baseline tier of a cache: Winch (see [`crate::engine`]).
struct BaselineTier {
    engine: Engine,
    /// Its artifacts' engine fingerprint (see [`super::engine::fingerprint`]).
    fingerprint: String,
    /// The node's imports, registered on `engine`.
    linker: Linker<ProcessCtx>,
    /// Prepared modules of at least this size start in this tier.
    bytes_min: usize,
}

/// A compiled module before it is linked.
struct Compiled {
    module: Module,
    origin: LoadOrigin,
    tier: Tier,
    /// Baseline tier, prepared now: the prepared bytes, for the optimizing
    /// compile (from the artifact cache: `None`, it prepares them again).
    prepared: Option<Vec<u8>>,
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
            inner: Arc::new(Cache {
                engine,
                registry,
                fingerprint,
                options,
                instrument,
                slots: Mutex::new(HashMap::new()),
                worker: None,
                baseline: None,
            }),
        }
    }

    /// Set up, before any load (no tier-up thread shares the cache yet).
    fn configure(mut self, f: impl FnOnce(&mut Cache)) -> Self {
        let cache =
            Arc::get_mut(&mut self.inner).expect("a cache is configured before its first load");
        f(cache);
        self
    }

    /// Prepare modules in worker processes run as `config` says (see
    /// [`shoal_prepare::worker`]).
    pub fn with_worker(self, config: WorkerConfig) -> Self {
        self.configure(|c| c.worker = Some(Worker::new(config)))
    }

    /// Tiered compilation: a load someone waits for, of a module whose
    /// prepared bytes are at least `bytes_min` and whose optimized artifact
    /// is not cached, compiles it with the baseline `engine` (`linker`: the
    /// node's imports on it; its artifacts are cached under `fingerprint`,
    /// so a short-lived process run again does not compile it again) and
    /// returns that at once; a background thread then compiles the same
    /// prepared bytes with the optimizing engine at the lower priority,
    /// writes the artifact (and drops the baseline one) and puts the result
    /// in the cache, so processes started from then on run optimized code.
    /// Processes already running keep the code they started with.
    pub fn with_baseline(
        self,
        engine: Engine,
        fingerprint: String,
        linker: Linker<ProcessCtx>,
        bytes_min: usize,
    ) -> Self {
        self.configure(|c| {
            c.baseline = Some(BaselineTier {
                engine,
                fingerprint,
                linker,
                bytes_min,
            })
        })
    }

    /// The artifact-cache key of the normal variant of a module on this
    /// engine.
    pub fn artifact_key(&self, hash: &Sha256) -> ArtifactKey {
        self.inner.variant_artifact_key(ModuleKey {
            hash: *hash,
            preemptible: false,
        })
    }

    /// The artifact-cache key of a module variant on this engine: the
    /// preemptible variant is a different compiled module, so its engine
    /// fingerprint carries a `preempt` suffix.
    pub fn variant_artifact_key(&self, key: ModuleKey) -> ArtifactKey {
        self.inner.variant_artifact_key(key)
    }

    /// True when a compiled artifact (optimized) for the normal variant of
    /// `hash` is already on disk.
    pub fn is_compiled(&self, hash: &Sha256) -> bool {
        self.inner
            .registry
            .artifact_contains(&self.artifact_key(hash))
    }

    /// True when a baseline-tier artifact for the normal variant of `hash`
    /// is on disk (it is removed once the optimized one is written).
    pub fn is_compiled_baseline(&self, hash: &Sha256) -> bool {
        let key = ModuleKey {
            hash: *hash,
            preemptible: false,
        };
        self.inner
            .baseline_artifact_key(key)
            .is_some_and(|k| self.inner.registry.artifact_contains(&k))
    }

    /// True when the module variant is loaded in memory (in either tier).
    pub fn is_loaded(&self, hash: &Sha256, preemptible: bool) -> bool {
        let key = ModuleKey {
            hash: *hash,
            preemptible: preemptible && self.inner.instrument,
        };
        let slot = self
            .inner
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
    /// A load ahead of need always returns the optimized tier; a load
    /// someone waits for may return the baseline tier (see
    /// [`ModuleCache::with_baseline`]).
    pub fn load(
        &self,
        hash: &Sha256,
        preemptible: bool,
        linker: &Linker<ProcessCtx>,
        priority: Priority,
    ) -> Result<Arc<LoadedModule>, ModuleError> {
        let cache = &self.inner;
        let key = ModuleKey {
            hash: *hash,
            preemptible: preemptible && cache.instrument,
        };
        let slot = {
            let mut slots = cache.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.entry(key).or_default().clone()
        };
        if priority == Priority::Ahead {
            return cache.load_ahead(key, &slot, linker);
        }
        // One loader per module: concurrent spawns of a new module wait here
        // instead of preparing it twice.
        let mut guard = slot.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(loaded) = guard.as_ref() {
            return Ok(loaded.clone());
        }
        let Some(mut compiled) = cache.compile_or_fetch(key, priority, &|| false)? else {
            unreachable!("a load that never gives way returns a module or an error");
        };
        let prepared = compiled.prepared.take();
        let loaded = cache.link(key, compiled, linker)?;
        *guard = Some(loaded.clone());
        drop(guard);
        if loaded.tier == Tier::Baseline {
            self.start_tier_up(key, slot, prepared, linker.clone());
        }
        Ok(loaded)
    }

    /// Compile the optimizing tier of a module loaded in the baseline tier,
    /// on a thread of its own (see [`Cache::tier_up`]).
    fn start_tier_up(
        &self,
        key: ModuleKey,
        slot: Arc<Slot>,
        bytes: Option<Vec<u8>>,
        linker: Linker<ProcessCtx>,
    ) {
        // Weak: a node dropped before the thread starts does not compile.
        let cache = Arc::downgrade(&self.inner);
        let started = std::thread::Builder::new()
            .name("shoal-tier-up".to_string())
            .spawn(move || {
                if let Some(cache) = cache.upgrade() {
                    cache.tier_up(key, &slot, bytes, &linker);
                }
            });
        if let Err(e) = started {
            // The next load ahead of need (or a restart) compiles it.
            tracing::warn!(module = %key.hash, "cannot start the optimizing compile: {e}");
        }
    }
}

impl Cache {
    /// The artifact-cache key of a module variant's baseline tier, if the
    /// cache has one.
    fn baseline_artifact_key(&self, key: ModuleKey) -> Option<ArtifactKey> {
        let baseline = self.baseline.as_ref()?;
        let mut artifact = self.variant_artifact_key(key);
        // The suffix keeps it apart from the optimized artifact even if the
        // two engines' fingerprints were equal.
        artifact.engine_fingerprint = format!(
            "{} baseline",
            artifact
                .engine_fingerprint
                .replacen(&self.fingerprint, &baseline.fingerprint, 1)
        );
        Some(artifact)
    }

    fn variant_artifact_key(&self, key: ModuleKey) -> ArtifactKey {
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

    /// Load ahead of need without holding the slot's `loaded` lock (see
    /// [`Slot`]). It gives way to a load someone waits for that is under
    /// way (and then returns what that one loaded, if optimized); only when
    /// that one failed (or loaded the baseline tier) does it prepare the
    /// module itself, without giving way again.
    fn load_ahead(
        &self,
        key: ModuleKey,
        slot: &Slot,
        linker: &Linker<ProcessCtx>,
    ) -> Result<Arc<LoadedModule>, ModuleError> {
        let _one_ahead = slot.ahead.lock().unwrap_or_else(|p| p.into_inner());
        let mut give_way = true;
        loop {
            if let Some(loaded) = slot.optimized() {
                return Ok(loaded);
            }
            let compiled = self
                .compile_or_fetch(key, Priority::Ahead, &|| give_way && slot.ahead_gives_way())?;
            let mut guard = slot.loaded.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(loaded) = guard.as_ref().filter(|l| l.tier == Tier::Optimized) {
                // A spawn came first and finished: keep what it loaded.
                return Ok(loaded.clone());
            }
            match compiled {
                Some(compiled) => {
                    let loaded = self.link(key, compiled, linker)?;
                    *guard = Some(loaded.clone());
                    return Ok(loaded);
                }
                // Gave way to a load that has since failed or loaded the
                // baseline tier (or to a passing look at the slot): once
                // more, to the end.
                None => give_way = false,
            }
        }
    }

    /// The optimizing tier of a module loaded in the baseline tier: compile
    /// its prepared `bytes` (or, when the baseline tier came from the
    /// artifact cache, the module prepared again) at the lower priority,
    /// write the artifact, drop the baseline one and make it the slot's
    /// module. Holds the slot's `ahead` lock throughout, so a load ahead of
    /// the same variant waits for it and then finds it loaded instead of
    /// compiling it again.
    fn tier_up(
        &self,
        key: ModuleKey,
        slot: &Slot,
        bytes: Option<Vec<u8>>,
        linker: &Linker<ProcessCtx>,
    ) {
        let _one_ahead = slot.ahead.lock().unwrap_or_else(|p| p.into_inner());
        if slot.optimized().is_some() {
            return;
        }
        let t = Instant::now();
        let compiled = match bytes {
            Some(bytes) => {
                self.compile_optimized(key, bytes, None, Duration::ZERO, true, &|| false)
            }
            None => self.compile_or_fetch(key, Priority::Ahead, &|| false),
        };
        let compiled = compiled.and_then(|c| match c {
            Some(c) => self.link(key, c, linker).map(Some),
            None => Ok(None),
        });
        match compiled {
            Ok(Some(loaded)) => {
                let mut guard = slot.loaded.lock().unwrap_or_else(|p| p.into_inner());
                if guard.as_ref().is_none_or(|l| l.tier == Tier::Baseline) {
                    *guard = Some(loaded);
                }
                drop(guard);
                if let Some(key) = self.baseline_artifact_key(key) {
                    // Only a disk cost if it stays: an optimized artifact is
                    // looked up first.
                    let _ = self.registry.artifact_remove(&key);
                }
                tracing::info!(
                    module = %key.hash,
                    compile_ms = t.elapsed().as_millis() as u64,
                    "optimizing tier ready: new processes run it"
                );
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(
                module = %key.hash,
                "the optimizing compile failed, processes stay in the baseline tier: {e}"
            ),
        }
    }

    /// Pre-link a compiled module against the node's imports (`linker` for
    /// the optimizing tier; the baseline tier has its own).
    fn link(
        &self,
        key: ModuleKey,
        compiled: Compiled,
        linker: &Linker<ProcessCtx>,
    ) -> Result<Arc<LoadedModule>, ModuleError> {
        let linker = match (compiled.tier, &self.baseline) {
            (Tier::Baseline, Some(b)) => &b.linker,
            _ => linker,
        };
        let module = compiled.module;
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
            tier: compiled.tier,
            module,
            pre,
            origin: compiled.origin,
            fresh_nonzero,
        }))
    }

    /// The artifact under `key`, deserialized for `engine` (the engine of
    /// `tier`), if it is cached and loads.
    // The one `unsafe` of the host: see the SAFETY note inside.
    #[allow(unsafe_code)]
    fn fetch_artifact(
        &self,
        engine: &Engine,
        key: &ArtifactKey,
        tier: Tier,
    ) -> Result<Option<Compiled>, ModuleError> {
        let started = Instant::now();
        let Some(bytes) = self.registry.artifact_get(key)? else {
            return Ok(None);
        };
        // SAFETY: `Module::deserialize` trusts its input to be code that
        // wasmtime produced. These bytes were written by `Module::serialize`
        // ([`Cache::keep_artifact`]) on an engine with this exact fingerprint
        // (wasmtime version, compatibility hash and settings, and for the
        // baseline tier its own engine's, are all in the key), and the
        // registry verified their sha256 on read, so they are what we wrote.
        // wasmtime additionally checks its own header and version.
        match unsafe { Module::deserialize(engine, &bytes) } {
            Ok(module) => Ok(Some(Compiled {
                module,
                origin: LoadOrigin::ArtifactCache {
                    elapsed: started.elapsed(),
                },
                tier,
                prepared: None,
            })),
            // Incompatible or damaged: the caller compiles it again.
            Err(_) => Ok(None),
        }
    }

    /// Write a compiled module's artifact under `key`. A failed write only
    /// costs a compile next time.
    fn keep_artifact(&self, key: &ArtifactKey, module: &Module) {
        if let Ok(bytes) = module.serialize() {
            let _ = self.registry.artifact_put(key, &bytes);
        }
    }

    /// The compiled module of `variant`: from the artifact cache, or
    /// prepared and compiled (and the artifact written), or — someone
    /// waits, and it is big — prepared and compiled in the baseline tier.
    /// `None` when `give_way` said so before the work began: it is asked
    /// before preparing and again when compilation gets its turn on the
    /// low-priority pool.
    fn compile_or_fetch(
        &self,
        variant: ModuleKey,
        priority: Priority,
        give_way: &(dyn Fn() -> bool + Sync),
    ) -> Result<Option<Compiled>, ModuleError> {
        let hash = &variant.hash;
        let key = self.variant_artifact_key(variant);
        if let Some(compiled) = self.fetch_artifact(&self.engine, &key, Tier::Optimized)? {
            return Ok(Some(compiled));
        }
        let ahead = priority == Priority::Ahead;
        let baseline_key = self.baseline_artifact_key(variant).filter(|_| !ahead);
        if let (Some(baseline), Some(key)) = (&self.baseline, &baseline_key) {
            if let Some(compiled) = self.fetch_artifact(&baseline.engine, key, Tier::Baseline)? {
                return Ok(Some(compiled));
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
        let baseline = self
            .baseline
            .as_ref()
            .zip(baseline_key)
            .filter(|(b, _)| bytes.len() >= b.bytes_min);
        if let Some((baseline, baseline_key)) = baseline {
            let t1 = Instant::now();
            match Module::new(&baseline.engine, &bytes) {
                Ok(module) => {
                    // Written here, on the spawn's path (~0.4 s of the
                    // Python interpreter's 58 MB), not by the tier-up
                    // thread: a short-lived `shoal run` ends before that
                    // thread would, and its next run would compile the
                    // baseline tier again.
                    self.keep_artifact(&baseline_key, &module);
                    return Ok(Some(Compiled {
                        module,
                        origin: LoadOrigin::Compiled {
                            report,
                            prepare_elapsed,
                            compile_elapsed: t1.elapsed(),
                        },
                        tier: Tier::Baseline,
                        prepared: Some(bytes),
                    }));
                }
                // Winch does not compile everything Cranelift does (some
                // proposals, some CPUs): the module then waits for Cranelift.
                Err(e) => tracing::info!(
                    module = %hash,
                    "the baseline tier cannot compile it, compiling it optimized: {e:#}"
                ),
            }
        }
        self.compile_optimized(variant, bytes, report, prepare_elapsed, ahead, give_way)
    }

    /// Compile prepared `bytes` with the optimizing engine (at the lower
    /// priority when `ahead`) and write the artifact.
    fn compile_optimized(
        &self,
        variant: ModuleKey,
        bytes: Vec<u8>,
        report: Option<Box<PrepareReport>>,
        prepare_elapsed: Duration,
        ahead: bool,
        give_way: &(dyn Fn() -> bool + Sync),
    ) -> Result<Option<Compiled>, ModuleError> {
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
            hash: variant.hash,
            message: format!("{e:#}"),
        })?;
        let compile_elapsed = t1.elapsed();
        self.keep_artifact(&self.variant_artifact_key(variant), &module);
        Ok(Some(Compiled {
            module,
            origin: LoadOrigin::Compiled {
                report,
                prepare_elapsed,
                compile_elapsed,
            },
            tier: Tier::Optimized,
            prepared: None,
        }))
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
            let slot = cache.inner.slots.lock().expect("slots").get(&key).cloned();
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
