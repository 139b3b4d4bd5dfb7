//! The server side of the lane: reads frames from a `POST /v1/lane` stream,
//! delivers messages in seq order exactly once per lane id, and streams acks
//! (and Dead frames) back.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use http_body_util::BodyExt;
use tokio::sync::{mpsc, watch, OwnedMutexGuard};

use super::body::{error_reply, BoxBody, ChannelBody, RemoteError};
use super::frame::{self, Decoder, Frame, FrameError};
use super::server::ServerCounters;
use super::{Caller, Delivery, Handler, LaneMessage, NetConfig};
use shoal_pki::Role;

/// Why a lane stream was ended by the receiver.
#[derive(Debug, thiserror::Error)]
pub enum LaneRxError {
    /// A frame broke the protocol.
    #[error("malformed frame: {0}")]
    Frame(#[from] FrameError),
    /// A Data frame before the Hello.
    #[error("data frame before the hello frame")]
    NoHello,
    /// A second Hello on one stream.
    #[error("second hello frame on one lane stream")]
    HelloTwice,
    /// A frame kind only the server sends.
    #[error("frame kind {0} is not allowed from a lane sender")]
    WrongDirection(u8),
    /// A Data frame skipped seqs.
    #[error("seq gap: expected {expected}, got {got}")]
    Gap {
        /// The next seq we would accept.
        expected: u64,
        /// What arrived.
        got: u64,
    },
    /// Every remembered lane id belongs to a live stream.
    #[error("lane table full ({0} live lanes)")]
    TableFull(usize),
    /// The request body failed (connection lost, reset, ...).
    #[error("stream failed: {0}")]
    Stream(String),
}

/// Per lane id: the last seq handled and which stream owns the lane.
#[derive(Debug, Default)]
struct LaneState {
    /// Whether `last_seq` is known (false for a fresh entry before Hello).
    known: bool,
    /// Last seq handled (delivered, dead or dropped).
    last_seq: u64,
    /// Bumped by each Hello; older streams stop when they see a newer one.
    generation: u64,
}

type SharedLane = Arc<tokio::sync::Mutex<LaneState>>;

/// The receiver's memory of lanes, bounded to `ids_max` ids; the least
/// recently opened idle lane is forgotten first.
#[derive(Debug)]
pub struct LaneTable {
    ids_max: usize,
    inner: Mutex<TableInner>,
}

#[derive(Debug, Default)]
struct TableInner {
    tick: u64,
    lanes: HashMap<u128, (SharedLane, u64)>,
}

impl LaneTable {
    /// An empty table remembering at most `ids_max` lane ids.
    pub fn new(ids_max: usize) -> Self {
        LaneTable {
            ids_max: ids_max.max(1),
            inner: Mutex::new(TableInner::default()),
        }
    }

    /// Lane ids remembered.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|t| t.lanes.len()).unwrap_or(0)
    }

    /// Whether no lane is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn open(&self, lane_id: u128) -> Result<SharedLane, LaneRxError> {
        let mut t = self
            .inner
            .lock()
            .map_err(|_| LaneRxError::Stream("lane table lock poisoned".into()))?;
        t.tick += 1;
        let tick = t.tick;
        if let Some((lane, used)) = t.lanes.get_mut(&lane_id) {
            *used = tick;
            return Ok(lane.clone());
        }
        if t.lanes.len() >= self.ids_max {
            // Only idle lanes (no stream holds them) may be forgotten.
            let victim = t
                .lanes
                .iter()
                .filter(|(_, (lane, _))| Arc::strong_count(lane) == 1)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(id, _)| *id);
            match victim {
                Some(id) => {
                    t.lanes.remove(&id);
                }
                None => return Err(LaneRxError::TableFull(t.lanes.len())),
            }
        }
        let lane = SharedLane::default();
        t.lanes.insert(lane_id, (lane.clone(), tick));
        Ok(lane)
    }
}

/// What a lane stream needs from its server.
pub(crate) struct LaneContext {
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) table: Arc<LaneTable>,
    pub(crate) config: NetConfig,
    pub(crate) counters: Arc<ServerCounters>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// Answer `POST /v1/lane`: refuse callers that are not nodes, else answer
/// 200 with a streaming ack body and process the request body in a task.
pub(crate) fn open_lane(
    caller: Arc<Caller>,
    req: hyper::Request<hyper::body::Incoming>,
    ctx: LaneContext,
) -> hyper::Response<BoxBody> {
    let is_node = matches!(&caller.cert, Some(c) if c.role == Role::Node);
    if !is_node {
        ctx.counters.lanes_refused.fetch_add(1, Relaxed);
        let who = match &caller.cert {
            Some(c) => format!("{}/{}", c.role, c.id),
            None => "a caller without a certificate".to_string(),
        };
        tracing::warn!("lane from {} refused: {who} is not a node", caller.addr);
        return error_reply(&RemoteError::new(
            403,
            format!("only nodes may open a lane, not {who}"),
        ));
    }
    ctx.counters.lanes_opened.fetch_add(1, Relaxed);
    let (tx, body) = ChannelBody::channel(ctx.config.lane_chunks_queued_max);
    tokio::spawn(async move {
        let counters = ctx.counters.clone();
        if let Err(e) = run_lane(&caller, req.into_body(), tx, ctx).await {
            counters.lane_errors.fetch_add(1, Relaxed);
            let id = caller.cert.as_ref().map(|c| c.id.as_str()).unwrap_or("?");
            tracing::debug!("lane from node {id} at {}: {e}", caller.addr);
        }
    });
    hyper::Response::new(http_body_util::BodyExt::boxed(body))
}

/// Process one lane stream until it ends, fails, is superseded, or the
/// server shuts down.
async fn run_lane(
    caller: &Caller,
    mut body: hyper::body::Incoming,
    acks: mpsc::Sender<bytes::Bytes>,
    mut ctx: LaneContext,
) -> Result<(), LaneRxError> {
    let mut decoder = Decoder::new(ctx.config.frame_bytes_max);
    let mut lane: Option<(SharedLane, u64)> = None;
    loop {
        let next = tokio::select! {
            f = body.frame() => f,
            _ = super::until_true(&mut ctx.shutdown) => return Ok(()),
        };
        let chunk = match next {
            None => return Ok(()),
            Some(Err(e)) => return Err(LaneRxError::Stream(e.to_string())),
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => d,
                Err(_) => continue, // trailers: nothing for us
            },
        };
        decoder.push(&chunk);
        let mut out = BytesMut::new();
        let mut guard: Option<OwnedMutexGuard<LaneState>> = None;
        let mut handled_to: Option<u64> = None;
        while let Some(frame) = decoder.next_frame()? {
            match frame {
                Frame::Hello { lane_id, first_seq } => {
                    if lane.is_some() {
                        return Err(LaneRxError::HelloTwice);
                    }
                    let shared = ctx.table.open(lane_id)?;
                    let mut st = shared.lock().await;
                    st.generation += 1;
                    if st.known {
                        if st.last_seq > 0 {
                            frame::put_ack(&mut out, st.last_seq);
                        }
                    } else {
                        st.known = true;
                        st.last_seq = first_seq.saturating_sub(1);
                    }
                    let generation = st.generation;
                    drop(st);
                    lane = Some((shared, generation));
                }
                Frame::Data {
                    seq,
                    from,
                    to,
                    tag,
                    payload,
                } => {
                    let Some((shared, generation)) = &lane else {
                        return Err(LaneRxError::NoHello);
                    };
                    let st = match &mut guard {
                        Some(g) => g,
                        None => {
                            let g = shared.clone().lock_owned().await;
                            if g.generation != *generation {
                                // A newer stream of this lane took over.
                                return Ok(());
                            }
                            guard.insert(g)
                        }
                    };
                    if seq <= st.last_seq {
                        ctx.counters.lane_frames_duplicate.fetch_add(1, Relaxed);
                        continue;
                    }
                    if seq != st.last_seq + 1 {
                        return Err(LaneRxError::Gap {
                            expected: st.last_seq + 1,
                            got: seq,
                        });
                    }
                    let msg = LaneMessage {
                        from,
                        to,
                        tag,
                        data: payload,
                    };
                    match ctx.handler.deliver(caller, msg).await {
                        Delivery::Delivered => {
                            ctx.counters.lane_frames_delivered.fetch_add(1, Relaxed);
                        }
                        Delivery::NoSuchProcess => {
                            ctx.counters.lane_frames_dead.fetch_add(1, Relaxed);
                            frame::put_dead(&mut out, seq, to);
                        }
                        Delivery::Dropped => {
                            ctx.counters.lane_frames_dropped.fetch_add(1, Relaxed);
                        }
                    }
                    st.last_seq = seq;
                    handled_to = Some(seq);
                }
                Frame::Ack { .. } => return Err(LaneRxError::WrongDirection(frame::KIND_ACK)),
                Frame::Dead { .. } => return Err(LaneRxError::WrongDirection(frame::KIND_DEAD)),
            }
        }
        drop(guard);
        if let Some(seq) = handled_to {
            frame::put_ack(&mut out, seq);
        }
        if !out.is_empty() && acks.send(out.freeze()).await.is_err() {
            // The response stream is gone: the connection ended.
            return Ok(());
        }
    }
}
