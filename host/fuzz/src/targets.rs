//! One function per parser of hostile bytes. Each returns for every input
//! and panics (an `assert!`) only when a property breaks: that is a bug in
//! the parser, and the fuzzer's finding.

use bytes::BytesMut;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::Digest;
use shoal_net::frame::{self, Decoder, Frame};
use shoal_snapshot_format::{decode_file, decode_stream, encode_file};

/// Lane frames larger than this are refused by the decoder under test.
pub const FRAME_BYTES_MAX: usize = 1 << 16;

/// A snapshot file (`shoal restore FILE`, `POST /v1/snapshots`), as given
/// and re-sealed: a file anyone can write may carry a correct checksum, so
/// the parser behind the envelope must be safe on its own. The whole-file
/// and the streaming decoder must agree; what decodes must re-encode to a
/// file that decodes to the same manifest.
pub fn snapshot_file(data: &[u8]) {
    check_snapshot(data);
    check_snapshot(&seal(data));
}

/// `data` with a valid envelope: magic, length (plain and inverted) and
/// the trailing sha256, so the decoder reads past them.
pub fn seal(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    if out.len() < 32 {
        out.resize(32, 0);
    }
    out[..8].copy_from_slice(b"SHOALSNP");
    let total = out.len() as u64 + 32;
    out[16..24].copy_from_slice(&total.to_le_bytes());
    out[24..32].copy_from_slice(&(!total).to_le_bytes());
    let sum = sha2::Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

fn check_snapshot(bytes: &[u8]) {
    let whole = decode_file(bytes, None);
    let mut pages_streamed = 0usize;
    let streamed = decode_stream(
        &mut &bytes[..],
        u64::MAX,
        |_, _| {
            pages_streamed += 1;
            Ok(())
        },
        |_, _| Ok(()),
    );
    match (&whole, &streamed) {
        (Ok((m, _)), Ok(s)) => assert_eq!(m, s, "the two decoders read different manifests"),
        (Err(_), Err(_)) => {}
        (w, s) => panic!(
            "the decoders disagree: whole file {:?}, stream {:?}",
            w.as_ref().map(|_| "accepted"),
            s.as_ref().map(|_| "accepted")
        ),
    }
    if let Ok((manifest, pages)) = whole {
        let again = encode_file(&manifest, |h| {
            pages
                .get(h)
                .cloned()
                .ok_or(shoal_snapshot_format::SnapshotFormatError::BadHeader(
                    "a page the decoder returned is missing".into(),
                ))
        })
        .expect("a decoded snapshot re-encodes");
        let (back, _) = decode_file(&again, None).expect("a re-encoded snapshot decodes");
        assert_eq!(back, manifest);
    }
}

/// A peer's message lane (`shoal_net::frame`), cut into chunks whose size
/// the first byte picks: every frame decoded re-encodes to bytes that
/// decode to the same frame, and the decoder never holds more than one
/// frame's bound plus one chunk.
pub fn lane_frames(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let chunk = 1 + first as usize;
    let mut decoder = Decoder::new(FRAME_BYTES_MAX);
    let mut frames = Vec::new();
    'feed: for piece in rest.chunks(chunk) {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
        assert!(
            decoder.buffered_bytes() <= 4 + FRAME_BYTES_MAX + chunk,
            "the decoder holds {} bytes",
            decoder.buffered_bytes()
        );
    }
    let mut buf = BytesMut::new();
    for f in &frames {
        match f {
            Frame::Hello { lane_id, first_seq } => frame::put_hello(&mut buf, *lane_id, *first_seq),
            Frame::Data {
                seq,
                from,
                to,
                tag,
                payload,
            } => frame::put_data(&mut buf, *seq, *from, *to, *tag, payload),
            Frame::Ack { seq } => frame::put_ack(&mut buf, *seq),
            Frame::Dead { seq, pid } => frame::put_dead(&mut buf, *seq, *pid),
        }
    }
    let mut again = Decoder::new(FRAME_BYTES_MAX);
    again.push(&buf);
    for f in &frames {
        assert_eq!(again.next_frame().as_ref(), Ok(&Some(f.clone())));
    }
    assert_eq!(again.next_frame(), Ok(None));
}

/// Decode `json` as a `T`; what decodes must reach a fixed point: its
/// encoding decodes, and encodes the same again.
fn json_fixpoint<T: Serialize + DeserializeOwned>(json: &[u8]) {
    if let Ok(value) = serde_json::from_slice::<T>(json) {
        let once = serde_json::to_vec(&value).expect("a decoded body encodes");
        let back: T = serde_json::from_slice(&once).expect("an encoded body decodes");
        let twice = serde_json::to_vec(&back).expect("encodes again");
        assert_eq!(once, twice, "encoding is not stable");
    }
}

/// The control API's JSON bodies, both ways: what a client sends a node
/// and what a node answers a CLI. The first byte picks the type.
pub fn api_bodies(data: &[u8]) {
    use shoal_api::cluster as c;
    use shoal_api::types as t;
    let Some((&which, json)) = data.split_first() else {
        return;
    };
    let decoders: &[fn(&[u8])] = &[
        json_fixpoint::<t::SpawnRequest>,
        json_fixpoint::<t::NameRequest>,
        json_fixpoint::<t::LogQuery>,
        json_fixpoint::<t::SnapshotRequest>,
        json_fixpoint::<t::RestoreRequest>,
        json_fixpoint::<c::TokenRequest>,
        json_fixpoint::<c::RevokeRequest>,
        json_fixpoint::<c::CaTakeover>,
        json_fixpoint::<c::RenewRequest>,
        json_fixpoint::<c::MemberRequest>,
        json_fixpoint::<c::MigrateRequest>,
        json_fixpoint::<c::DrainRequest>,
        json_fixpoint::<t::ExitReport>,
        json_fixpoint::<t::ErrorBody>,
        json_fixpoint::<t::ProcessSummary>,
        json_fixpoint::<Vec<c::NodeSummary>>,
        json_fixpoint::<c::MigrateReport>,
        json_fixpoint::<c::DrainStatus>,
    ];
    decoders[which as usize % decoders.len()](json);
}

/// How many types [`api_bodies`] picks from (for building seeds).
pub const API_BODY_TYPES: u8 = 18;

/// A log stream (`shoal logs -f` reads it from a node), chunked by the
/// first byte: every frame decoded re-encodes to the same frame.
pub fn log_stream(data: &[u8]) {
    use shoal_api::types::{LogFrame, LogFrameDecoder};
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let mut decoder = LogFrameDecoder::new();
    let mut frames: Vec<LogFrame> = Vec::new();
    'feed: for piece in rest.chunks(1 + first as usize) {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }
    let mut out = Vec::new();
    for f in &frames {
        f.encode(&mut out);
    }
    let mut again = LogFrameDecoder::new();
    again.push(&out);
    for f in &frames {
        let back = again.next_frame().expect("a re-encoded frame decodes");
        assert_eq!(back.as_ref(), Some(f));
    }
    assert!(!again.has_partial());
}

/// A migration's messages between nodes: page batches (binary, with a
/// JSON header), lane control messages and the JSON requests. The first
/// byte picks which; for page batches the second picks the page size.
pub fn migration_wire(data: &[u8]) {
    use shoal_api::migrate as m;
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 6 {
        0 => {
            let Some((&size, body)) = rest.split_first() else {
                return;
            };
            let page_bytes = [8u32, 4096, 65536][size as usize % 3];
            if let Ok((header, payload)) = m::decode_pages(body, page_bytes) {
                assert_eq!(
                    payload.len() as u64,
                    header.indices.len() as u64 * page_bytes as u64
                );
                let pages: Vec<&[u8]> = payload.chunks(page_bytes as usize).collect();
                let again = m::encode_pages(&header, &pages);
                let (back, payload_back) =
                    m::decode_pages(&again, page_bytes).expect("a re-encoded batch decodes");
                assert_eq!(back.indices, header.indices);
                assert_eq!(back.id, header.id);
                assert_eq!(back.memory_bytes, header.memory_bytes);
                assert_eq!(payload_back, payload);
            }
        }
        1 => {
            if let Some(c) = m::Control::decode(rest) {
                assert_eq!(m::Control::decode(&c.encode()), Some(c));
            }
        }
        2 => json_fixpoint::<m::Offer>(rest),
        3 => json_fixpoint::<m::OfferAnswer>(rest),
        4 => json_fixpoint::<m::Abort>(rest),
        _ => json_fixpoint::<m::Started>(rest),
    }
}
