//! The target's half of a migration: arrivals.
//!
//! An [`Arrival`] is a process on its way here. It is built up by the
//! source's requests ([`super::wire`]): the offer (which pages are already
//! in this node's registry), page batches, the delta of the frozen process
//! and its final state. Then it waits, holding a complete image, until the
//! move is decided:
//!
//! - **started** when the source's `Go` arrives on the lane, or when this
//!   node's replicated directory shows the pid here at the new epoch (the
//!   source may have died right after the switch: the target owns it);
//! - **discarded** when the source calls it off ([`super::wire::PATH_ABORT`]),
//!   when the directory shows the pid fenced at a later epoch elsewhere, or
//!   after [`ARRIVAL_TTL`] without a decision while the source stays silent.
//!   One whose final state never came (its source died during the
//!   pre-copy) is dropped after the same time, giving back its memory and
//!   the node's memory budget its instance made ahead was charged to.
//!
//! A started process's messages go through its [`Handoff`] until every
//! node's fence has come through the source, or the source forwarded
//! nothing for [`FENCE_WAIT`] ([`FenceClock`]).

use super::wire::{self, Abort, Final, Offer, OfferAnswer, Started};
use super::Ctx;
use shoal_cluster::NodeId;
use shoal_net::RemoteError;
use shoal_registry::Sha256;
use shoal_runtime::grants::Grants;
use shoal_runtime::handoff::{FenceClock, Handoff, HandoffLimits};
use shoal_runtime::node::PreparedInstance;
use shoal_runtime::pid::Pid;
use shoal_runtime::process::CapturedProcess;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Most arrivals in progress at once on one node.
pub const ARRIVALS_MAX: usize = 256;
/// Most bytes of memory images held by arrivals at once.
pub const ARRIVAL_BYTES_MAX: u64 = 8 << 30;
/// How long an arrival waits for its final state, and then for a decision,
/// before it is dropped (the default of [`super::Ctx::arrival_ttl`]).
pub const ARRIVAL_TTL: Duration = Duration::from_secs(120);
/// How long a started process waits for the other nodes' fences while its
/// source forwards nothing, before releasing what it holds (see
/// [`shoal_runtime::handoff::FenceClock`]).
pub const FENCE_WAIT: Duration = Duration::from_secs(8);
/// The longest a started process waits for the other nodes' fences, even
/// while its source keeps forwarding.
pub const FENCE_WAIT_MAX: Duration = Duration::from_secs(120);

/// Where an arrival is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Receiving pages.
    Transfer,
    /// Complete; waiting for the decision.
    Ready,
    /// Started here (Unix µs of its first instruction).
    Started(u64),
    /// Dropped or failed to start (why).
    Gone(String),
}

struct Data {
    memory: Vec<u8>,
    /// Hash of every page offered (index → hash).
    offered: HashMap<u32, Sha256>,
    /// The complete image, from the final request until the start.
    image: Option<CapturedProcess>,
    /// What the process may touch here: the cluster's record of its
    /// grants, never what the source sent (read at the final request).
    grants: Grants,
    /// Pre-copy batches, kept in the registry (which checks each page
    /// against its offered hash) once the arrival ends (not during its
    /// freeze); at most its memory size in bytes.
    kept: Vec<KeptBatch>,
    kept_bytes: usize,
    /// Its instance, made at the offer and written as `memory` is, so the
    /// start need not write the memory into a fresh one (most of a large
    /// process's freeze). `None` when it could not be made: the start
    /// then makes one, as before.
    prepared: Option<PreparedInstance>,
    /// Held from the offer until the process runs here (or the arrival
    /// ends): this node's page keeper waits meanwhile.
    quiet: Option<super::keep::Quiet>,
}

impl Data {
    /// Write `bytes` at `at` into the instance made ahead too; if that
    /// fails, the start makes its own.
    fn mirror(&mut self, at: usize, bytes: &[u8]) {
        if let Some(p) = &mut self.prepared {
            if let Err(e) = p.write(at, bytes) {
                tracing::warn!("the instance made ahead is dropped: {e}");
                self.prepared = None;
            }
        }
    }
}

/// A pre-copy batch's bytes and its pages (offered hash, range in them).
type KeptBatch = (bytes::Bytes, Vec<(Sha256, std::ops::Range<usize>)>);

/// One process on its way here.
pub struct Arrival {
    id: String,
    pid: Pid,
    source: NodeId,
    /// The directory epoch it arrives at.
    epoch_next: u64,
    module: Sha256,
    page_bytes: u32,
    created: Instant,
    /// Volume chunk bytes fetched after the freeze.
    chunk_bytes_final: std::sync::atomic::AtomicU64,
    data: Mutex<Data>,
    phase: watch::Sender<Phase>,
}

/// Arrivals on this node, by pid.
#[derive(Default)]
pub struct Arrivals {
    map: Mutex<HashMap<Pid, Arc<Arrival>>>,
}

fn err(status: u16, msg: impl Into<String>) -> RemoteError {
    RemoteError::new(status, msg.into())
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Arrivals {
    fn get(&self, id: &str) -> Result<Arc<Arrival>, RemoteError> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .find(|a| a.id == id)
            .cloned()
            .ok_or_else(|| err(404, format!("no migration {id} in progress here")))
    }

    fn by_pid(&self, pid: Pid) -> Option<Arc<Arrival>> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&pid)
            .cloned()
    }

    fn remove(&self, arrival: &Arrival) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&arrival.pid).is_some_and(|a| a.id == arrival.id) {
            map.remove(&arrival.pid);
        }
    }

    /// Arrivals in progress.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True when none is in progress.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Answer a `/v1/peer/migrate/*` request.
pub async fn handle(
    ctx: &Arc<Ctx>,
    path: &str,
    body: bytes::Bytes,
) -> Result<bytes::Bytes, RemoteError> {
    let ok = || Ok(bytes::Bytes::from_static(b"{}"));
    match path {
        wire::PATH_OFFER => {
            let offer: Offer = serde_json::from_slice(&body)
                .map_err(|e| err(400, format!("bad migration offer: {e}")))?;
            let answer = offer_here(ctx, offer).await?;
            crate::api::answer::encode_json(&answer)
        }
        wire::PATH_PAGES | wire::PATH_DELTA => {
            pages_here(ctx, &body, path == wire::PATH_PAGES).await?;
            ok()
        }
        wire::PATH_FINAL => {
            let fin: Final = serde_json::from_slice(&body)
                .map_err(|e| err(400, format!("bad final migration state: {e}")))?;
            let arrival = ctx.arrivals.get(&fin.id)?;
            // Its capabilities come from the cluster's record, checked
            // against this node's policy: refused here, before the switch,
            // the source resumes the process itself.
            let grants = crate::records::grants::recorded(&ctx.raft, &ctx.node, arrival.pid)?;
            if !fin.state.volumes.is_empty() {
                let n = super::volumes::fetch_final(
                    ctx,
                    arrival.source,
                    &fin.state.volumes,
                    &grants.volumes,
                )
                .await?;
                arrival
                    .chunk_bytes_final
                    .store(n, std::sync::atomic::Ordering::Release);
            }
            if fin.state.open_files.iter().any(|f| f.copy.is_some()) {
                super::volumes::fetch_copies(ctx, arrival.source, &fin.state.open_files).await?;
            }
            final_here(ctx, &arrival, fin, grants)?;
            ok()
        }
        wire::PATH_ABORT => {
            let a: Abort =
                serde_json::from_slice(&body).map_err(|e| err(400, format!("bad abort: {e}")))?;
            if let Ok(arrival) = ctx.arrivals.get(&a.id) {
                discard(ctx, &arrival, "the source called the move off");
            }
            ok()
        }
        wire::PATH_STARTED => {
            let a: Abort =
                serde_json::from_slice(&body).map_err(|e| err(400, format!("bad request: {e}")))?;
            let arrival = ctx.arrivals.get(&a.id);
            let mut rx = match arrival {
                Ok(a) => a.phase.subscribe(),
                Err(e) => return Err(e),
            };
            let waited = tokio::time::timeout(
                Duration::from_secs(30),
                rx.wait_for(|p| matches!(p, Phase::Started(_) | Phase::Gone(_))),
            )
            .await;
            let phase = match waited {
                Ok(Ok(p)) => p.clone(),
                _ => return Err(err(504, "the process has not started here (yet)")),
            };
            match phase {
                Phase::Started(us) => crate::api::answer::encode_json(&Started {
                    chunk_bytes_fetched: ctx
                        .arrivals
                        .get(&a.id)
                        .map(|a| {
                            a.chunk_bytes_final
                                .load(std::sync::atomic::Ordering::Acquire)
                        })
                        .unwrap_or(0),
                    resumed_unix_us: us,
                }),
                Phase::Gone(why) => Err(err(409, why)),
                _ => Err(err(500, "unreachable migration phase")),
            }
        }
        other => Err(err(404, format!("no migration route {other}"))),
    }
}

async fn offer_here(ctx: &Arc<Ctx>, offer: Offer) -> Result<OfferAnswer, RemoteError> {
    let node = &ctx.node;
    // This node's page keeper waits until the process runs here.
    let quiet = ctx.keeper.quiet();
    let pid = Pid(offer.pid);
    let memory_max = node.config().engine.memory_bytes_max;
    if offer.memory_bytes > memory_max {
        return Err(err(
            413,
            format!(
                "process {pid} has {} bytes of memory; this node allows at most {memory_max}",
                offer.memory_bytes
            ),
        ));
    }
    let pb = offer.page_bytes as u64;
    if !(shoal_runtime::snapshot::format::MIN_PAGE_BYTES as u64..=65536).contains(&pb)
        || !pb.is_power_of_two()
        || !offer.memory_bytes.is_multiple_of(pb)
    {
        return Err(err(
            400,
            format!("bad page size {pb} for {} bytes", offer.memory_bytes),
        ));
    }
    if node.router().is_local(pid) {
        return Err(err(409, format!("process {pid} already runs here")));
    }
    // It may be coming back while this node still forwards what it held
    // from its last stay: let that finish first.
    super::source::settle(ctx, pid).await;
    let module: Sha256 = offer
        .module
        .parse()
        .map_err(|_| err(400, format!("bad module hash {:?}", offer.module)))?;
    let page_count = offer.memory_bytes / pb;
    let mut offered = HashMap::with_capacity(offer.pages.len());
    for (index, hex) in &offer.pages {
        if *index as u64 >= page_count {
            return Err(err(400, format!("page {index} is beyond memory")));
        }
        let h: Sha256 = hex
            .parse()
            .map_err(|_| err(400, format!("bad page hash {hex:?}")))?;
        offered.insert(*index, h);
    }
    {
        let map = ctx.arrivals.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= ARRIVALS_MAX && !map.contains_key(&pid) {
            return Err(err(503, "too many migrations arriving here; retry later"));
        }
        let held: u64 = map.values().map(|a| a.memory_len()).sum();
        if held + offer.memory_bytes > ARRIVAL_BYTES_MAX {
            return Err(err(
                503,
                "too much memory arriving here at once; retry later",
            ));
        }
    }
    // The module: fetched if missing, and compiled now, so the start after
    // the freeze does not wait for it.
    if !node.registry().contains(&module) {
        fetch_from_source(ctx, offer.source, &module).await?;
    }
    // Its volumes' chunks, while it still runs on the source, and the
    // volumes rebuilt from them.
    let chunk_bytes_fetched =
        super::volumes::fetch_offered(ctx, offer.source, &offer.chunks).await?;
    if let Some(trees) = offer.volume_trees.clone() {
        super::volumes::stage(ctx, pid, trees).await?;
    }
    {
        let node = node.clone();
        let preemptible = offer.preemptible;
        tokio::task::spawn_blocking(move || node.load_module_variant(&module, preemptible))
            .await
            .map_err(|e| err(500, format!("module loader failed: {e}")))?
            .map_err(|e| err(409, format!("cannot load module {module}: {e}")))?;
    }
    // Pages this node already holds — in its registry (from earlier
    // migrations or snapshots) or still on their way there (kept from a
    // move a moment ago, [`super::keep::Keeper::page`]) — are read here;
    // the rest are asked for. Read on every core, each a part of memory.
    let registry = node.registry().clone();
    let keeper = ctx.keeper.clone();
    let size = offer.memory_bytes as usize;
    let mut pages: Vec<(u32, Sha256)> = offered.iter().map(|(i, h)| (*i, *h)).collect();
    pages.sort_unstable_by_key(|(i, _)| *i);
    let (memory, mut need) = tokio::task::spawn_blocking(move || {
        let pb = pb as usize;
        let mut memory = vec![0u8; size];
        let threads = super::path_threads();
        let per_part = (size / pb).div_ceil(threads).max(1) * pb;
        let need: Vec<u32> = std::thread::scope(|scope| {
            let mut running = Vec::new();
            let mut rest = &pages[..];
            for (k, part) in memory.chunks_mut(per_part).enumerate() {
                let end = ((k + 1) * per_part / pb) as u64;
                let split = rest.partition_point(|(i, _)| u64::from(*i) < end);
                let (mine, later) = rest.split_at(split);
                rest = later;
                let (registry, keeper) = (&registry, &keeper);
                running.push(scope.spawn(move || {
                    let mut need = Vec::new();
                    for (index, hash) in mine {
                        let at = *index as usize * pb - k * per_part;
                        let dest = &mut part[at..at + pb];
                        if let Some(page) = keeper.page(hash).filter(|p| p.len() == pb) {
                            dest.copy_from_slice(&page);
                            continue;
                        }
                        match registry.get(hash) {
                            Ok(bytes) if bytes.len() == pb => dest.copy_from_slice(&bytes),
                            _ => need.push(*index),
                        }
                    }
                    need
                }));
            }
            running
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        (memory, need)
    })
    .await
    .map_err(|e| err(500, format!("page reader failed: {e}")))?;
    need.sort_unstable();
    let (memory, prepared) = prepare_instance(
        ctx,
        pid,
        module,
        offer.preemptible,
        memory,
        (&offered, &need),
        pb as usize,
    )
    .await?;
    let (phase, _) = watch::channel(Phase::Transfer);
    let arrival = Arc::new(Arrival {
        id: offer.id.clone(),
        pid,
        source: offer.source,
        epoch_next: offer.epoch + 1,
        module,
        page_bytes: offer.page_bytes,
        created: Instant::now(),
        chunk_bytes_final: Default::default(),
        data: Mutex::new(Data {
            memory,
            offered,
            image: None,
            grants: Grants::default(),
            kept: Vec::new(),
            kept_bytes: 0,
            prepared,
            quiet: Some(quiet),
        }),
        phase,
    });
    let arrival_for_expiry = arrival.clone();
    let old = ctx
        .arrivals
        .map
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(pid, arrival);
    if let Some(old) = old {
        discard(
            ctx,
            &old,
            "a newer migration of the same process replaced it",
        );
    }
    tokio::spawn(expire_unfinished(ctx.clone(), arrival_for_expiry));
    Ok(OfferAnswer {
        need,
        chunk_bytes_fetched,
    })
}

/// Make the arriving process's instance now and write the pages `memory`
/// already holds into it (see [`Data::prepared`]): the offered ones but
/// those still needed (sorted; they are written as they arrive). `None`
/// if it cannot be made here now (its start then makes one). Returns
/// `memory` back.
async fn prepare_instance(
    ctx: &Arc<Ctx>,
    pid: Pid,
    module: Sha256,
    preemptible: bool,
    memory: Vec<u8>,
    (offered, need): (&HashMap<u32, Sha256>, &[u32]),
    pb: usize,
) -> Result<(Vec<u8>, Option<PreparedInstance>), RemoteError> {
    let made = ctx
        .node
        .prepare_arrival(pid, module, preemptible, memory.len())
        .await;
    let mut prepared = match made {
        Ok(p) => p,
        Err(e) => {
            tracing::info!("{pid}: no instance made ahead ({e}); its start makes one");
            return Ok((memory, None));
        }
    };
    let mut listed: Vec<u32> = offered.keys().copied().collect();
    listed.sort_unstable();
    let here: Vec<u32> = listed
        .iter()
        .copied()
        .filter(|i| need.binary_search(i).is_err())
        .collect();
    let written = tokio::task::spawn_blocking(move || {
        prepared.zero_except(pb, |i| {
            u32::try_from(i).is_ok_and(|i| listed.binary_search(&i).is_ok())
        });
        // Every offered page is written (now or as it arrives): back them
        // in runs, one call each.
        let mut runs = listed.iter().map(|&i| i as usize * pb).peekable();
        while let Some(start) = runs.next() {
            let mut end = start + pb;
            while runs.peek() == Some(&end) {
                end += pb;
                runs.next();
            }
            prepared.back(start..end);
        }
        for index in &here {
            let at = *index as usize * pb;
            if let Some(page) = memory.get(at..at + pb) {
                if let Err(e) = prepared.write(at, page) {
                    return (memory, Err(e));
                }
            }
        }
        (memory, Ok(prepared))
    })
    .await
    .map_err(|e| err(500, format!("the instance writer failed: {e}")))?;
    Ok(match written {
        (memory, Ok(prepared)) => (memory, Some(prepared)),
        (memory, Err(e)) => {
            tracing::warn!("{pid}: the instance made ahead could not be written: {e}");
            (memory, None)
        }
    })
}

/// Get the module blob from the source, which runs it (the cluster's
/// module index may not show this node the source as a holder yet).
async fn fetch_from_source(
    ctx: &Arc<Ctx>,
    source: NodeId,
    module: &Sha256,
) -> Result<(), RemoteError> {
    let addr = super::volumes::source_addr(ctx, source)?;
    let bytes = super::volumes::peer_blob(ctx, &addr, module)
        .await
        .map_err(|e| {
            err(
                409,
                format!("cannot get module {module} from its source: {e}"),
            )
        })?;
    // Checked against its hash before anything runs it.
    ctx.node
        .registry()
        .put_expecting(module, &bytes)
        .map_err(|e| err(409, format!("the source sent a bad module {module}: {e}")))?;
    let held = shoal_cluster::Command::ModuleHeld {
        hash: module.to_hex(),
        node: ctx.me,
        size_bytes: bytes.len() as u64,
    };
    let raft = ctx.raft.clone();
    tokio::spawn(async move {
        let _ = raft.write(held).await;
    });
    Ok(())
}

impl Arrival {
    fn memory_len(&self) -> u64 {
        self.data
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .memory
            .len() as u64
    }
}

async fn pages_here(ctx: &Arc<Ctx>, body: &bytes::Bytes, verify: bool) -> Result<(), RemoteError> {
    // The id is in the header; the page size comes from the arrival.
    let peek: wire::PagesHeader = {
        let len = body
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .ok_or_else(|| err(400, "page batch without a header"))? as usize;
        let json = body
            .get(4..4 + len)
            .ok_or_else(|| err(400, "page batch header runs past the body"))?;
        serde_json::from_slice(json).map_err(|e| err(400, format!("bad page batch: {e}")))?
    };
    let arrival = ctx.arrivals.get(&peek.id)?;
    let pb = arrival.page_bytes as usize;
    let (header, payload) = wire::decode_pages(body, arrival.page_bytes)
        .map_err(|e| err(400, crate::api::error::error_chain(&e)))?;
    // The frozen process's memory may have grown since the offer: the delta
    // says to what size (pre-copy batches never grow the image).
    let grow_to = match header.memory_bytes {
        Some(_) if verify => return Err(err(400, "a pre-copy batch cannot resize memory")),
        Some(size) => Some(check_growth(ctx, &arrival, size)?),
        None => None,
    };
    // A pre-copy page is kept in this node's registry under the hash the
    // offer gave it, once the process runs here; the registry checks each
    // page against that hash as it writes it ([`super::keep`]), so a page
    // that does not match is never kept. It is not hashed here, on the
    // move's path: what the process's memory holds is the source's to say
    // (it ran the process), only what this node keeps under a name is
    // this node's to check. The bytes are kept as the request's own
    // buffer (no copy).
    let mut checked: Option<KeptBatch> = None;
    if verify {
        let data = arrival.data.lock().unwrap_or_else(|p| p.into_inner());
        let named = header
            .indices
            .iter()
            .enumerate()
            .map(|(k, index)| {
                data.offered
                    .get(index)
                    .map(|hash| (*hash, k * pb..(k + 1) * pb))
                    .ok_or_else(|| err(400, format!("page {index} was not offered")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // `payload` is a part of `body` (decode_pages returns it from it).
        checked = Some((body.slice_ref(payload), named));
    }
    {
        let mut data = arrival.data.lock().unwrap_or_else(|p| p.into_inner());
        if data.image.is_some() {
            return Err(err(409, "pages after the final state"));
        }
        if let Some(size) = grow_to {
            grow_image(&mut data, size)?;
        }
        for (k, index) in header.indices.iter().enumerate() {
            let page = &payload[k * pb..(k + 1) * pb];
            let at = *index as usize * pb;
            if at + pb > data.memory.len() {
                return Err(err(400, format!("page {index} is beyond memory")));
            }
            data.memory[at..at + pb].copy_from_slice(page);
            data.mirror(at, page);
        }
        // Kept when the arrival ends, so the next move here need not send
        // them; a source sending more than its memory gets no more kept.
        if let Some((owned, fresh)) = checked {
            let bytes = fresh.len() * pb;
            if !fresh.is_empty() && data.kept_bytes + bytes <= data.memory.len() {
                data.kept_bytes += bytes;
                data.kept.push((owned, fresh));
            }
        }
    }
    Ok(())
}

/// Check a frozen memory size announced for `arrival` against this node's
/// bounds: whole pages, at most the node's largest memory, and room for the
/// growth among all arrivals' images ([`ARRIVAL_BYTES_MAX`]). Returns it as
/// a length (the image is grown by [`grow_image`]).
fn check_growth(ctx: &Ctx, arrival: &Arrival, size_bytes: u64) -> Result<usize, RemoteError> {
    let memory_max = ctx.node.config().engine.memory_bytes_max;
    if !size_bytes.is_multiple_of(u64::from(arrival.page_bytes)) || size_bytes > memory_max {
        return Err(err(
            400,
            format!(
                "bad frozen memory size {size_bytes} (whole pages of {} bytes, at most {memory_max})",
                arrival.page_bytes
            ),
        ));
    }
    // What the other arrivals hold (each image locked on its own, never
    // under this one's lock).
    let others: u64 = {
        let map = ctx.arrivals.map.lock().unwrap_or_else(|p| p.into_inner());
        map.values()
            .filter(|a| a.id != arrival.id)
            .cloned()
            .collect::<Vec<_>>()
    }
    .iter()
    .map(|a| a.memory_len())
    .sum();
    if others.saturating_add(size_bytes) > ARRIVAL_BYTES_MAX {
        return Err(err(
            503,
            "too much memory arriving here at once; retry later",
        ));
    }
    usize::try_from(size_bytes).map_err(|_| {
        err(
            413,
            format!("memory of {size_bytes} bytes is too large here"),
        )
    })
}

/// Grow an arrival's image to the frozen size (checked by
/// [`check_growth`]); memory never shrinks, so a smaller size is refused.
fn grow_image(data: &mut Data, size: usize) -> Result<(), RemoteError> {
    if size < data.memory.len() {
        return Err(err(
            400,
            format!(
                "frozen memory size {size} is smaller than the {} bytes offered",
                data.memory.len()
            ),
        ));
    }
    data.memory.resize(size, 0);
    if let Some(p) = &mut data.prepared {
        if let Err(e) = p.grow_to(size) {
            tracing::warn!("the instance made ahead is dropped: {e}");
            data.prepared = None;
        }
    }
    Ok(())
}

/// Take the final state of `arrival`, whose capabilities are `grants`
/// (what the cluster recorded for it).
fn final_here(
    ctx: &Arc<Ctx>,
    arrival: &Arc<Arrival>,
    fin: Final,
    grants: Grants,
) -> Result<(), RemoteError> {
    let size = check_growth(ctx, arrival, fin.memory_bytes)?;
    {
        let mut data = arrival.data.lock().unwrap_or_else(|p| p.into_inner());
        if data.image.is_some() {
            return Err(err(409, "final state already received"));
        }
        fin.state
            .check_preparation()
            .map_err(|e| err(409, format!("process {}: {e}", arrival.pid)))?;
        let pb = arrival.page_bytes as usize;
        grow_image(&mut data, size)?;
        let zeros = vec![0u8; pb];
        for index in &fin.zeroed {
            let at = *index as usize * pb;
            if at + pb > data.memory.len() {
                return Err(err(400, format!("page {index} is beyond memory")));
            }
            data.memory[at..at + pb].fill(0);
            data.mirror(at, &zeros);
        }
        let memory = std::mem::take(&mut data.memory);
        let log = shoal_runtime::log::LogView {
            start: fin.log_start,
            chunks: fin.log,
        };
        let image = fin.state.into_image(memory.into(), fin.globals, log);
        let spec = shoal_runtime::grants::spec_for(arrival.module, &image, &grants)
            .map_err(|e| err(403, format!("process {}: {e}", arrival.pid)))?;
        let config = ctx.node.config();
        let memory_max = spec
            .memory_bytes_max
            .unwrap_or(config.process_memory_bytes_max)
            .min(config.engine.memory_bytes_max);
        shoal_runtime::grants::check_image(&image, memory_max, spec.preopens())
            .map_err(|e| err(400, format!("process {}: {e}", arrival.pid)))?;
        data.image = Some(image);
        data.grants = grants;
    }
    // From now on messages for the pid here are held in order until the
    // process starts and each node's fence comes through the source.
    let state = ctx.raft.state();
    let awaiting: Vec<NodeId> = state
        .nodes
        .values()
        .filter(|n| n.status != shoal_cluster::NodeStatus::Removed)
        .map(|n| n.id)
        .collect();
    let limits = ctx.node.config().mailbox;
    let handoff = Handoff::new(
        arrival.source,
        arrival.epoch_next,
        awaiting,
        HandoffLimits {
            messages_max: limits.messages_max,
            bytes_max: limits.bytes_max,
        },
    );
    ctx.node.router().install_handoff(arrival.pid, handoff);
    arrival.phase.send_replace(Phase::Ready);
    tokio::spawn(watch_decision(ctx.clone(), arrival.clone()));
    Ok(())
}

/// Drop `arrival` if its final state has not come within
/// [`super::Ctx::arrival_ttl`] (its source died or gave up during the
/// pre-copy): otherwise it would hold its memory, its instance and its
/// share of [`ARRIVALS_MAX`] / [`ARRIVAL_BYTES_MAX`] until the same process
/// moved here again.
async fn expire_unfinished(ctx: Arc<Ctx>, arrival: Arc<Arrival>) {
    let mut phase = arrival.phase.subscribe();
    let deadline = tokio::time::Instant::from_std(arrival.created + ctx.arrival_ttl);
    let _ = tokio::time::timeout_at(deadline, phase.wait_for(|p| *p != Phase::Transfer)).await;
    if *arrival.phase.borrow() == Phase::Transfer {
        discard(&ctx, &arrival, "no final state from the source in time");
    }
}

/// Start or drop a ready arrival from what the directory shows, for when
/// the source's `Go` or abort never comes.
async fn watch_decision(ctx: Arc<Ctx>, arrival: Arc<Arrival>) {
    let mut applied = ctx.raft.subscribe();
    let mut phase = arrival.phase.subscribe();
    loop {
        if !matches!(*phase.borrow(), Phase::Ready) {
            return;
        }
        let state = ctx.raft.state();
        match state.directory.get(&arrival.pid.0) {
            Some(e) if e.node == ctx.me && e.epoch >= arrival.epoch_next => {
                start(&ctx, arrival.pid).await;
                return;
            }
            Some(e) if e.epoch >= arrival.epoch_next => {
                discard(&ctx, &arrival, "the directory fenced this move");
                return;
            }
            None if state.is_gone(arrival.pid.0) => {
                discard(&ctx, &arrival, "the process is gone from the directory");
                return;
            }
            _ => {}
        }
        if arrival.created.elapsed() > ctx.arrival_ttl {
            discard(&ctx, &arrival, "no decision from the source in time");
            return;
        }
        tokio::select! {
            _ = applied.changed() => {}
            _ = phase.changed() => {}
            _ = tokio::time::sleep_until((arrival.created + ctx.arrival_ttl).into()) => {}
        }
    }
}

/// Start the arrived process `pid` (the move is decided). Idempotent.
pub async fn start(ctx: &Arc<Ctx>, pid: Pid) {
    let Some(arrival) = ctx.arrivals.by_pid(pid) else {
        return;
    };
    let (image, grants, prepared) = {
        let mut data = arrival.data.lock().unwrap_or_else(|p| p.into_inner());
        (data.image.take(), data.grants.clone(), data.prepared.take())
    };
    let Some(image) = image else {
        return; // Already started, or not complete.
    };
    match ctx
        .node
        .start_arrived(arrival.pid, arrival.module, image, &grants, prepared)
        .await
    {
        Ok(_) => {
            // A death decided while it was on the way did not reach it:
            // fail its call and monitors on processes of nodes dead now
            // (as `node_down::on_node_dead` did for those that were here;
            // one DOWN per reference, so a repeat is harmless).
            let gone = ctx.raft.state().pids_on_dead_nodes();
            if !gone.is_empty() {
                ctx.node.router().down_targets_of(
                    arrival.pid,
                    &|p| gone.contains(&p.0),
                    &shoal_runtime::calls::DownReason::NodeDown.encode(),
                );
            }
            // Started once it runs: its memory written into its instance
            // (the end of the freeze the source reports). Only then are
            // its pre-copy pages kept, so their writing takes no CPU from
            // the freeze.
            let (node, here, keeping) = (ctx.node.clone(), arrival.clone(), ctx.clone());
            tokio::spawn(async move {
                node.until_running(here.pid).await;
                here.phase.send_replace(Phase::Started(now_us()));
                keep_batches(&keeping, &here);
            });
            tokio::spawn(finish_handoff(ctx.clone(), arrival.pid));
        }
        Err(e) => {
            keep_batches(ctx, &arrival);
            let why = format!("process {pid} could not start here: {e}");
            tracing::warn!("{why}");
            arrival.phase.send_replace(Phase::Gone(why));
            if let Some(h) = ctx.node.router().remove_handoff(pid) {
                h.expire();
            }
        }
    }
    // Keep the arrival a little, for the source's `started` question.
    let arrivals = ctx.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        arrivals.arrivals.remove(&arrival);
    });
}

/// Wait for every fence (or until [`FenceClock`] says to stop: no progress
/// from the source for [`FENCE_WAIT`], or [`FENCE_WAIT_MAX`] in all), then
/// stop routing through the handoff.
async fn finish_handoff(ctx: Arc<Ctx>, pid: Pid) {
    let Some(first) = ctx.node.router().handoff(pid) else {
        return;
    };
    let mut clock = FenceClock::new(Instant::now(), first.progress(), FENCE_WAIT, FENCE_WAIT_MAX);
    loop {
        let Some(h) = ctx.node.router().handoff(pid) else {
            return;
        };
        // Registered before the check: a fence that finishes the hold in
        // between still wakes it.
        let released = h.released();
        if h.is_finished() {
            ctx.node.router().remove_handoff_if(pid, &h);
            return;
        }
        if clock.expired(Instant::now(), h.progress()) {
            let missing = h.expire();
            ctx.node.router().remove_handoff_if(pid, &h);
            tracing::warn!(
                "process {pid} arrived; no fence from node(s) {missing:?} (the source forwarded nothing for {} s), released what they sent",
                FENCE_WAIT.as_secs()
            );
            return;
        }
        let deadline = tokio::time::Instant::from_std(clock.deadline());
        let _ = tokio::time::timeout_at(deadline, released).await;
    }
}

/// A fence from `origin` came through the source for arriving `pid`, for
/// its move to `epoch`.
pub fn fence(ctx: &Arc<Ctx>, pid: Pid, origin: NodeId, epoch: u64) {
    if let Some(h) = ctx.node.router().handoff(pid) {
        if h.epoch() != epoch {
            return;
        }
        h.fence(origin);
        if h.is_finished() {
            ctx.node.router().remove_handoff_if(pid, &h);
        }
    }
}

/// Hand the arrival's pre-copy pages to the node's keeper ([`super::keep`]),
/// whose writer need no longer wait for it.
fn keep_batches(ctx: &Ctx, arrival: &Arrival) {
    let batches = {
        let mut data = arrival.data.lock().unwrap_or_else(|p| p.into_inner());
        data.quiet = None;
        data.kept_bytes = 0;
        std::mem::take(&mut data.kept)
    };
    for (payload, pages) in batches {
        ctx.keeper.keep(ctx.node.registry().clone(), payload, pages);
    }
}

/// Drop an arrival that will not start here; what its handoff held is sent
/// on to wherever the pid lives.
fn discard(ctx: &Arc<Ctx>, arrival: &Arc<Arrival>, why: &str) {
    {
        let mut data = arrival.data.lock().unwrap_or_else(|p| p.into_inner());
        let phase = arrival.phase.borrow().clone();
        // Started, or starting (the image was taken): it is this node's now.
        if matches!(phase, Phase::Started(_)) || (phase == Phase::Ready && data.image.is_none()) {
            return;
        }
        data.image = None;
        data.memory = Vec::new();
        // Its memory and the budget it was charged to, given back now.
        data.prepared = None;
    }
    keep_batches(ctx, arrival);
    arrival.phase.send_replace(Phase::Gone(why.to_string()));
    ctx.arrivals.remove(arrival);
    ctx.node.unstage_volumes(arrival.pid);
    if let Some(h) = ctx.node.router().remove_handoff(arrival.pid) {
        for m in h.abandon() {
            let _ = ctx.node.send(m.sender, arrival.pid, m.data);
        }
    }
}
