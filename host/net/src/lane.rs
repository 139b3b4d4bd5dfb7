//! The sending side of the lane: a bounded buffer of unacked messages per
//! peer, a writer that packs ready frames into chunks on one long-lived
//! `POST /v1/lane` stream, and the ack reader that frees the buffer. On any
//! stream failure the lane reopens (with backoff) and resends every unacked
//! frame after a Hello carrying the same lane id.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::sync::{mpsc, watch, Notify};

use super::body::{error_detail, error_message, read_limited, ChannelBody};
use super::frame::{self, Decoder, Frame, DATA_OVERHEAD_BYTES, DATA_WIRE_OVERHEAD_BYTES};
use super::peers::{backoff_ms, Inner, Shared};
use super::{classify_hyper_error, LaneMessage, NetConfig, NetError, LANE_PATH};

/// Why [`Peers::send`](super::Peers::send) refused a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LaneError {
    /// The lane's unacked buffer is at its bound: back-pressure, retry later.
    #[error("lane to {addr} full: {frames} messages / {bytes} bytes unacked")]
    LaneFull {
        /// The peer.
        addr: String,
        /// Unacked messages.
        frames: usize,
        /// Unacked bytes.
        bytes: usize,
    },
    /// The payload can never fit in a frame.
    #[error("message of {bytes} bytes exceeds the lane limit of {bytes_max} bytes")]
    MessageTooLarge {
        /// Payload size.
        bytes: usize,
        /// Largest payload.
        bytes_max: usize,
    },
    /// The address is not usable.
    #[error("invalid peer address {addr:?}: {reason}")]
    BadAddress {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The lane was closed ([`Peers::forget`](super::Peers::forget)).
    #[error("lane to {addr} is closed")]
    Closed {
        /// The peer.
        addr: String,
    },
    /// `send` was called outside a tokio runtime.
    #[error("no tokio runtime: the transport must be used from within one")]
    NoRuntime,
}

/// Unacked messages of a lane, for inspection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LaneBacklog {
    /// Messages accepted and not yet acked.
    pub frames: usize,
    /// Their bytes (payload + frame overhead).
    pub bytes: usize,
}

/// One message waiting for its ack.
#[derive(Debug)]
struct Pending {
    seq: u64,
    from: u64,
    to: u64,
    tag: crate::LaneTag,
    payload: Bytes,
}

impl Pending {
    fn wire_bytes(&self) -> usize {
        let tag_bytes = if self.tag.is_bare() {
            0
        } else {
            frame::TAG_BYTES
        };
        DATA_WIRE_OVERHEAD_BYTES + tag_bytes + self.payload.len()
    }
}

#[derive(Debug)]
struct LaneState {
    /// Unacked messages in seq order (written or not).
    queue: VecDeque<Pending>,
    /// Sum of `wire_bytes` over `queue`.
    queued_bytes: usize,
    /// Seq the next accepted message gets.
    next_seq: u64,
    /// Highest seq written on the current stream.
    written_seq: u64,
    /// Highest seq ever written (to count resends).
    high_water_seq: u64,
    closed: bool,
}

/// Which bound a send is held to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Room {
    /// Plain mail and requests: the lane's bounds
    /// ([`NetConfig::lane_unacked_frames_max`], `..._bytes_max`).
    Plain,
    /// What the receiver is owed for something it already admitted — a
    /// call's reply, a DOWN, a demonitor: up to twice the bounds, so plain
    /// mail that fills a lane never makes a reply or a DOWN be dropped.
    /// Still bounded: a sender can owe only what was asked of it.
    Owed,
}

/// The sending half of one lane (one per peer address).
#[derive(Debug)]
pub(crate) struct Lane {
    addr: String,
    lane_id: u128,
    state: Mutex<LaneState>,
    wake: Notify,
    /// Woken when acks free room (or the lane closes): senders that met
    /// `LaneFull` wait on it ([`Lane::send_wait`]).
    space: Notify,
    closed: watch::Sender<bool>,
    config: NetConfig,
}

impl Lane {
    pub(crate) fn new(addr: &str, config: NetConfig) -> Self {
        Lane {
            addr: addr.to_string(),
            lane_id: rand::random::<u128>(),
            state: Mutex::new(LaneState {
                queue: VecDeque::new(),
                queued_bytes: 0,
                next_seq: 1,
                written_seq: 0,
                high_water_seq: 0,
                closed: false,
            }),
            wake: Notify::new(),
            space: Notify::new(),
            closed: watch::Sender::new(false),
            config,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LaneState> {
        // A panic while holding this lock cannot leave the state
        // inconsistent in a way worse than losing the lane, so recover.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue one message; never blocks.
    pub(crate) fn send(&self, msg: LaneMessage, shared: &Shared) -> Result<(), LaneError> {
        self.send_in(msg, shared, Room::Plain)
    }

    /// [`Lane::send`] for a message the receiver is owed (see
    /// [`Room::Owed`]).
    pub(crate) fn send_owed(&self, msg: LaneMessage, shared: &Shared) -> Result<(), LaneError> {
        self.send_in(msg, shared, Room::Owed)
    }

    fn send_in(&self, msg: LaneMessage, shared: &Shared, room: Room) -> Result<(), LaneError> {
        let tag_bytes = if msg.tag.is_bare() {
            0
        } else {
            frame::TAG_BYTES
        };
        let payload_max = self
            .config
            .frame_bytes_max
            .saturating_sub(DATA_OVERHEAD_BYTES + tag_bytes);
        if msg.data.len() > payload_max {
            return Err(LaneError::MessageTooLarge {
                bytes: msg.data.len(),
                bytes_max: payload_max,
            });
        }
        let wire = DATA_WIRE_OVERHEAD_BYTES + tag_bytes + msg.data.len();
        let mut st = self.lock();
        if st.closed {
            return Err(LaneError::Closed {
                addr: self.addr.clone(),
            });
        }
        // An empty lane always takes one message, so a message up to the
        // frame limit can always be sent whatever the byte bound.
        let (frames_max, bytes_max) = match room {
            Room::Plain => (
                self.config.lane_unacked_frames_max,
                self.config.lane_unacked_bytes_max,
            ),
            Room::Owed => (
                self.config.lane_unacked_frames_max.saturating_mul(2),
                self.config.lane_unacked_bytes_max.saturating_mul(2),
            ),
        };
        let over = st.queue.len() >= frames_max
            || (!st.queue.is_empty() && st.queued_bytes + wire > bytes_max);
        if over {
            shared.counters.lane_full.fetch_add(1, Relaxed);
            return Err(LaneError::LaneFull {
                addr: self.addr.clone(),
                frames: st.queue.len(),
                bytes: st.queued_bytes,
            });
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        st.queued_bytes += wire;
        st.queue.push_back(Pending {
            seq,
            from: msg.from,
            to: msg.to,
            tag: msg.tag,
            payload: msg.data,
        });
        drop(st);
        shared.counters.frames_queued.fetch_add(1, Relaxed);
        self.wake.notify_one();
        Ok(())
    }

    /// Unacked messages now.
    pub(crate) fn backlog(&self) -> LaneBacklog {
        let st = self.lock();
        LaneBacklog {
            frames: st.queue.len(),
            bytes: st.queued_bytes,
        }
    }

    /// Stop the lane: refuse further sends, end its driver, drop the
    /// buffer.
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.queue.clear();
        st.queued_bytes = 0;
        drop(st);
        self.closed.send_replace(true);
        self.space.notify_waiters();
    }

    /// Start a new stream: everything unacked will be written again.
    /// Returns the first seq the stream carries.
    fn rewind(&self) -> u64 {
        let mut st = self.lock();
        let first = st.queue.front().map(|p| p.seq).unwrap_or(st.next_seq);
        st.written_seq = first - 1;
        first
    }

    /// Pack the frames not yet written on this stream into one chunk of at
    /// most `lane_chunk_bytes_max` (or one bigger frame).
    fn next_chunk(&self, shared: &Shared) -> Option<Bytes> {
        let mut st = self.lock();
        let front_seq = st.queue.front()?.seq;
        let start = usize::try_from((st.written_seq + 1).saturating_sub(front_seq)).ok()?;
        if start >= st.queue.len() {
            return None;
        }
        let chunk_max = self.config.lane_chunk_bytes_max;
        let mut buf = BytesMut::new();
        let mut last = st.written_seq;
        for p in st.queue.range(start..) {
            if !buf.is_empty() && buf.len() + p.wire_bytes() > chunk_max {
                break;
            }
            frame::put_data(&mut buf, p.seq, p.from, p.to, p.tag, &p.payload);
            last = p.seq;
        }
        let written = last - st.written_seq;
        let resent = last.min(st.high_water_seq).saturating_sub(st.written_seq);
        st.written_seq = last;
        st.high_water_seq = st.high_water_seq.max(last);
        drop(st);
        shared.counters.frames_sent.fetch_add(written, Relaxed);
        shared.counters.frames_resent.fetch_add(resent, Relaxed);
        Some(buf.freeze())
    }

    /// Everything up to `seq` was handled by the peer: free it.
    fn ack(&self, seq: u64, shared: &Shared) -> Result<(), AckBeyondSent> {
        let mut st = self.lock();
        if seq >= st.next_seq {
            return Err(AckBeyondSent {
                seq,
                last_sent: st.next_seq - 1,
            });
        }
        let mut freed = 0u64;
        while st.queue.front().is_some_and(|p| p.seq <= seq) {
            if let Some(p) = st.queue.pop_front() {
                st.queued_bytes -= p.wire_bytes();
                freed += 1;
            }
        }
        // Acked on an earlier stream but not yet rewritten here: skip them.
        st.written_seq = st.written_seq.max(seq);
        drop(st);
        shared.counters.frames_acked.fetch_add(freed, Relaxed);
        if freed > 0 {
            self.space.notify_waiters();
            shared.room.notify_waiters();
        }
        Ok(())
    }

    /// [`Lane::send`], waiting (until `deadline`) for acks to free room
    /// while the lane is full: woken by the acks, never polling. Other
    /// errors return at once; past the deadline, the last `LaneFull`.
    pub(crate) async fn send_wait(
        &self,
        msg: LaneMessage,
        shared: &Shared,
        deadline: tokio::time::Instant,
    ) -> Result<(), LaneError> {
        loop {
            // Registered before the attempt, so an ack in between wakes it.
            let space = self.space.notified();
            match self.send(msg.clone(), shared) {
                Err(LaneError::LaneFull { .. }) if tokio::time::Instant::now() < deadline => {
                    let _ = tokio::time::timeout_at(deadline, space).await;
                }
                other => return other,
            }
        }
    }
}

/// A peer acknowledged a message this lane never sent: it is confused or
/// hostile, and the stream is dropped.
#[derive(Debug, thiserror::Error)]
#[error("ack for seq {seq}, but the last message sent has seq {last_sent}")]
struct AckBeyondSent {
    seq: u64,
    last_sent: u64,
}

/// How one lane stream ended.
enum StreamEnd {
    /// The lane was closed: stop.
    Closed,
    /// The stream failed; `progressed` if it got any ack first.
    Failed { reason: String, progressed: bool },
}

/// Run a lane until it is closed or its pool is dropped: open a stream,
/// write and read acks until it fails, back off, repeat.
pub(crate) async fn drive(lane: Arc<Lane>, pool: Weak<Inner>, shared: Arc<Shared>) {
    let mut closed = lane.closed.subscribe();
    let mut failures: u32 = 0;
    loop {
        if *closed.borrow() {
            return;
        }
        let Some(inner) = pool.upgrade() else { return };
        let got = tokio::select! {
            s = inner.sender(&lane.addr) => s,
            _ = super::until_true(&mut closed) => return,
        };
        drop(inner);
        let end = match got {
            Ok(sender) => run_stream(&lane, sender, &shared, &mut closed).await,
            Err(e) => StreamEnd::Failed {
                reason: e.to_string(),
                progressed: false,
            },
        };
        match end {
            StreamEnd::Closed => return,
            StreamEnd::Failed { reason, progressed } => {
                shared.counters.lane_stream_failures.fetch_add(1, Relaxed);
                if progressed {
                    failures = 0;
                }
                failures = failures.saturating_add(1);
                // Log the first failure of a streak, then sparsely.
                if failures.is_power_of_two() {
                    tracing::warn!(
                        "lane to {} failed ({failures} in a row): {reason}",
                        lane.addr
                    );
                }
                let wait = Duration::from_millis(backoff_ms(&lane.config, failures));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = super::until_true(&mut closed) => return,
                }
            }
        }
    }
}

/// One `POST /v1/lane` stream: Hello, then unacked frames, then new ones
/// as they come; acks read concurrently.
async fn run_stream(
    lane: &Lane,
    mut sender: hyper::client::conn::http2::SendRequest<super::BoxBody>,
    shared: &Shared,
    closed: &mut watch::Receiver<bool>,
) -> StreamEnd {
    let failed = |reason: String, progressed: bool| StreamEnd::Failed { reason, progressed };
    let (tx, body) = ChannelBody::channel(lane.config.lane_chunks_queued_max);
    let first_seq = lane.rewind();
    let mut hello = BytesMut::new();
    frame::put_hello(&mut hello, lane.lane_id, first_seq);
    if tx.try_send(hello.freeze()).is_err() {
        return failed("cannot queue the hello frame".into(), false);
    }
    let req = match hyper::Request::post(format!("https://{}{LANE_PATH}", lane.addr))
        .body(body.boxed())
    {
        Ok(r) => r,
        Err(e) => return failed(format!("building the lane request: {e}"), false),
    };
    shared.counters.lane_streams_opened.fetch_add(1, Relaxed);
    let response = sender.send_request(req);
    let mut progressed = false;
    let reader = read_acks(lane, response, shared, &mut progressed);
    let writer = write_frames(lane, tx, shared);
    let reason = tokio::select! {
        r = reader => r,
        r = writer => r,
        _ = super::until_true(closed) => return StreamEnd::Closed,
    };
    match reason {
        Err(e) => failed(e.to_string(), progressed),
        Ok(()) => failed("the peer ended the lane stream".into(), progressed),
    }
}

/// Feed new frames into the stream until it is gone.
async fn write_frames(
    lane: &Lane,
    tx: mpsc::Sender<Bytes>,
    shared: &Shared,
) -> Result<(), NetError> {
    loop {
        let notified = lane.wake.notified();
        match lane.next_chunk(shared) {
            Some(chunk) => {
                if tx.send(chunk).await.is_err() {
                    return Err(NetError::Http {
                        addr: lane.addr.clone(),
                        reason: "the lane stream closed".into(),
                    });
                }
            }
            None => notified.await,
        }
    }
}

/// Await the response, then apply Ack and Dead frames until it ends.
async fn read_acks(
    lane: &Lane,
    response: impl std::future::Future<Output = hyper::Result<hyper::Response<hyper::body::Incoming>>>,
    shared: &Shared,
    progressed: &mut bool,
) -> Result<(), NetError> {
    let http = |reason: String| NetError::Http {
        addr: lane.addr.clone(),
        reason,
    };
    let resp = response
        .await
        .map_err(|e| classify_hyper_error(&lane.addr, &e))?;
    let status = resp.status();
    let mut body = resp.into_body();
    if status != hyper::StatusCode::OK {
        let text = read_limited(body, 64 * 1024).await.unwrap_or_default();
        return Err(NetError::Remote {
            status: status.as_u16(),
            message: error_message(&text),
            detail: error_detail(&text),
        });
    }
    let mut decoder = Decoder::new(lane.config.frame_bytes_max);
    while let Some(next) = body.frame().await {
        let chunk = match next {
            Ok(f) => match f.into_data() {
                Ok(d) => d,
                Err(_) => continue,
            },
            Err(e) => return Err(classify_hyper_error(&lane.addr, &e)),
        };
        decoder.push(&chunk);
        loop {
            let frame = decoder
                .next_frame()
                .map_err(|e| http(format!("malformed frame from the peer: {e}")))?;
            match frame {
                None => break,
                Some(Frame::Ack { seq }) => {
                    lane.ack(seq, shared).map_err(|e| http(e.to_string()))?;
                    *progressed = true;
                }
                Some(Frame::Dead { pid, .. }) => {
                    shared.counters.dead_letters.fetch_add(1, Relaxed);
                    shared.dead_letter(pid);
                }
                Some(other) => {
                    return Err(http(format!("unexpected frame from the peer: {other:?}")))
                }
            }
        }
    }
    Ok(())
}
