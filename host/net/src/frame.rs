//! Lane frames: `len: u32 | kind: u8 | body`, big-endian (layout in the
//! [module docs](super)). Encoding appends to a caller's buffer so a writer
//! can pack many frames into one chunk; decoding is incremental and checks
//! every length against the limit before buffering a frame.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Kind byte of a Hello frame.
pub const KIND_HELLO: u8 = 1;
/// Kind byte of a Data frame.
pub const KIND_DATA: u8 = 2;
/// Kind byte of an Ack frame.
pub const KIND_ACK: u8 = 3;
/// Kind byte of a Dead frame.
pub const KIND_DEAD: u8 = 4;
/// Kind byte of a Data frame carrying a tag (a call, reply, monitor or
/// DOWN) or a channel number: a Data body with `tag_kind: u8, reference:
/// u64, seq: u64, life: u64` before the payload. Plain unnumbered messages keep kind
/// 2, byte for byte as before.
pub const KIND_TAGGED_DATA: u8 = 5;
/// Bytes a tag adds to a Data frame.
pub const TAG_BYTES: usize = 25;

/// Bytes of the `len` prefix.
pub const LEN_BYTES: usize = 4;
/// What a Data frame's `len` counts besides the payload: kind + seq + from + to.
pub const DATA_OVERHEAD_BYTES: usize = 1 + 24;
/// Whole-frame overhead of one message on the wire (prefix included).
pub const DATA_WIRE_OVERHEAD_BYTES: usize = LEN_BYTES + DATA_OVERHEAD_BYTES;
const HELLO_BODY_BYTES: usize = 24;
const ACK_BODY_BYTES: usize = 8;
const DEAD_BODY_BYTES: usize = 16;

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// First frame of a lane stream.
    Hello {
        /// Random id of the sender's lane instance.
        lane_id: u128,
        /// Seq of the first Data frame that follows.
        first_seq: u64,
    },
    /// One message.
    Data {
        /// Lane sequence number.
        seq: u64,
        /// Sending pid.
        from: u64,
        /// Receiving pid.
        to: u64,
        /// What kind of message it is (plain: the default).
        tag: crate::LaneTag,
        /// The message.
        payload: Bytes,
    },
    /// Everything up to `seq` was handled.
    Ack {
        /// Cumulative seq.
        seq: u64,
    },
    /// Message `seq` was for `pid`, which does not exist.
    Dead {
        /// The message.
        seq: u64,
        /// The missing pid.
        pid: u64,
    },
}

/// A frame the peer sent that breaks the protocol.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// `len` over the limit.
    #[error("frame length {len} exceeds the limit of {max} bytes")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// `len` of 0 (no kind byte).
    #[error("empty frame (length 0)")]
    Empty,
    /// A kind byte we do not know.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// A body size that does not fit the kind.
    #[error("frame kind {kind} with a body of {body_bytes} bytes")]
    BadBody {
        /// The kind.
        kind: u8,
        /// Its body size.
        body_bytes: usize,
    },
}

/// Append a Hello frame.
pub fn put_hello(buf: &mut BytesMut, lane_id: u128, first_seq: u64) {
    buf.reserve(LEN_BYTES + 1 + HELLO_BODY_BYTES);
    buf.put_u32((1 + HELLO_BODY_BYTES) as u32);
    buf.put_u8(KIND_HELLO);
    buf.put_u128(lane_id);
    buf.put_u64(first_seq);
}

/// Append a Data frame. The caller has checked `payload` against the limit
/// (its length plus [`DATA_OVERHEAD_BYTES`] fits a `u32`).
pub fn put_data(
    buf: &mut BytesMut,
    seq: u64,
    from: u64,
    to: u64,
    tag: crate::LaneTag,
    payload: &[u8],
) {
    let tagged = !tag.is_bare();
    let tag_bytes = if tagged { TAG_BYTES } else { 0 };
    buf.reserve(DATA_WIRE_OVERHEAD_BYTES + tag_bytes + payload.len());
    let len = u32::try_from(DATA_OVERHEAD_BYTES + tag_bytes + payload.len()).unwrap_or(u32::MAX);
    buf.put_u32(len);
    buf.put_u8(if tagged { KIND_TAGGED_DATA } else { KIND_DATA });
    buf.put_u64(seq);
    buf.put_u64(from);
    buf.put_u64(to);
    if tagged {
        buf.put_u8(tag.kind);
        buf.put_u64(tag.reference);
        buf.put_u64(tag.seq);
        buf.put_u64(tag.life);
    }
    buf.put_slice(payload);
}

/// Append an Ack frame.
pub fn put_ack(buf: &mut BytesMut, seq: u64) {
    buf.reserve(LEN_BYTES + 1 + ACK_BODY_BYTES);
    buf.put_u32((1 + ACK_BODY_BYTES) as u32);
    buf.put_u8(KIND_ACK);
    buf.put_u64(seq);
}

/// Append a Dead frame.
pub fn put_dead(buf: &mut BytesMut, seq: u64, pid: u64) {
    buf.reserve(LEN_BYTES + 1 + DEAD_BODY_BYTES);
    buf.put_u32((1 + DEAD_BODY_BYTES) as u32);
    buf.put_u8(KIND_DEAD);
    buf.put_u64(seq);
    buf.put_u64(pid);
}

/// Incremental decoder: feed chunks with [`push`](Self::push), take frames
/// with [`next_frame`](Self::next_frame). Buffers at most one partial frame
/// (≤ `frame_bytes_max` + prefix) plus the unread rest of the last chunk.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    frame_bytes_max: usize,
}

impl Decoder {
    /// A decoder refusing frames whose `len` exceeds `frame_bytes_max`.
    pub fn new(frame_bytes_max: usize) -> Self {
        Decoder {
            buf: BytesMut::new(),
            frame_bytes_max,
        }
    }

    /// Append received bytes. Callers push only after draining
    /// [`next_frame`](Self::next_frame), so the buffer stays bounded by one
    /// frame plus one chunk.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Bytes buffered (a partial frame).
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < LEN_BYTES {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > self.frame_bytes_max {
            return Err(FrameError::TooLarge {
                len,
                max: self.frame_bytes_max,
            });
        }
        if self.buf.len() < LEN_BYTES + len {
            // Reserve the rest of this (checked) frame once.
            self.buf.reserve(LEN_BYTES + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(LEN_BYTES);
        let mut body = self.buf.split_to(len);
        let kind = body.get_u8();
        let body_bytes = len - 1;
        let bad = || FrameError::BadBody { kind, body_bytes };
        let frame = match kind {
            KIND_HELLO if body_bytes == HELLO_BODY_BYTES => Frame::Hello {
                lane_id: body.get_u128(),
                first_seq: body.get_u64(),
            },
            KIND_DATA if body_bytes >= DATA_OVERHEAD_BYTES - 1 => Frame::Data {
                seq: body.get_u64(),
                from: body.get_u64(),
                to: body.get_u64(),
                tag: crate::LaneTag::default(),
                payload: body.freeze(),
            },
            KIND_TAGGED_DATA if body_bytes >= DATA_OVERHEAD_BYTES - 1 + TAG_BYTES => {
                let (seq, from, to) = (body.get_u64(), body.get_u64(), body.get_u64());
                let tag = crate::LaneTag {
                    kind: body.get_u8(),
                    reference: body.get_u64(),
                    seq: body.get_u64(),
                    life: body.get_u64(),
                };
                if tag.is_bare() {
                    // A plain message has its own kind: one encoding each.
                    return Err(bad());
                }
                Frame::Data {
                    seq,
                    from,
                    to,
                    tag,
                    payload: body.freeze(),
                }
            }
            KIND_ACK if body_bytes == ACK_BODY_BYTES => Frame::Ack {
                seq: body.get_u64(),
            },
            KIND_DEAD if body_bytes == DEAD_BODY_BYTES => Frame::Dead {
                seq: body.get_u64(),
                pid: body.get_u64(),
            },
            KIND_HELLO | KIND_DATA | KIND_ACK | KIND_DEAD | KIND_TAGGED_DATA => return Err(bad()),
            other => return Err(FrameError::UnknownKind(other)),
        };
        Ok(Some(frame))
    }
}
