//! How the Raft store encodes what it keeps: log entries, the vote and the
//! other single values, and snapshots.
//!
//! Binary: a marker byte ([`BINARY`]) then CBOR. CBOR is self-describing,
//! so everything the state derives for serde (internally tagged enums,
//! optional fields left out) decodes as it did from JSON, at a fraction of
//! the size and time. Values written by earlier builds are JSON (never
//! starting with the marker, which is not valid UTF-8) and still decode.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::{Read, Write};

/// The first byte of every binary value.
pub(crate) const BINARY: u8 = 0xB1;

/// An encoding or decoding failure.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// A value of an earlier build (JSON) did not decode.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A binary value did not encode or decode.
    #[error("CBOR: {0}")]
    Cbor(String),
    /// Reading or writing the bytes failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

fn cbor<E: std::fmt::Debug>(e: E) -> CodecError {
    CodecError::Cbor(format!("{e:?}"))
}

/// Encode `value` (marker + CBOR).
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![BINARY];
    ciborium::into_writer(value, &mut out).map_err(cbor)?;
    Ok(out)
}

/// Decode what [`encode`] (or an earlier build's JSON) wrote.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.split_first() {
        Some((&BINARY, rest)) => ciborium::from_reader(rest).map_err(cbor),
        _ => Ok(serde_json::from_slice(bytes)?),
    }
}

/// How many bytes [`encode`] would make of `value`, without keeping them
/// (sizes a write for the leader's batches). A value that does not encode
/// counts as what was written before the failure; the encode that stores
/// it reports the error.
pub(crate) fn encoded_len<T: Serialize>(value: &T) -> usize {
    struct Count(usize);
    impl Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(1);
    let _ = ciborium::into_writer(value, &mut count);
    count.0
}

/// Write `value` to `out` as one CBOR item (no marker: a stream's marker is
/// written once, by its owner).
pub(crate) fn write_item<T: Serialize, W: Write>(value: &T, out: W) -> Result<(), CodecError> {
    ciborium::into_writer(value, out).map_err(cbor)
}

/// Read one CBOR item from `input`, leaving it just after the item.
pub(crate) fn read_item<T: DeserializeOwned, R: Read>(input: R) -> Result<T, CodecError> {
    ciborium::from_reader(input).map_err(cbor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ClusterState, Command};

    #[test]
    fn binary_round_trips_and_earlier_json_still_decodes() {
        let mut state = ClusterState::default();
        state.apply(&Command::Bootstrap {
            ca_node: 1,
            ca_cert_pem: "-----BEGIN CERTIFICATE-----".into(),
            name: "n1".into(),
            addr: "127.0.0.1:7000".into(),
            labels: [("zone".to_string(), "a".to_string())].into(),
            now_ms: 1,
        });
        state.apply(&Command::AddNode {
            name: "n2".into(),
            addr: "127.0.0.1:7001".into(),
            labels: Default::default(),
            now_ms: 2,
        });
        state.apply(&Command::Register {
            node: 1,
            pids: (65536..65600).collect(),
        });
        assert!(state.directory.len() > 10 || state.nodes.len() == 2);
        let bin = encode(&state).unwrap();
        assert_eq!(bin[0], BINARY);
        let json = serde_json::to_vec(&state).unwrap();
        assert!(bin.len() < json.len(), "{} vs {}", bin.len(), json.len());
        let a: ClusterState = decode(&bin).unwrap();
        let b: ClusterState = decode(&json).unwrap();
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            serde_json::to_value(&b).unwrap()
        );
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            serde_json::to_value(&state).unwrap()
        );
        // Hostile or damaged bytes are an error, never a panic.
        for cut in 0..bin.len().min(64) {
            let _ = decode::<ClusterState>(&bin[..cut]);
        }
        assert!(decode::<ClusterState>(&[BINARY, 0xff, 0xff]).is_err());
        assert!(decode::<ClusterState>(b"{").is_err());
        assert_eq!(encoded_len(&state), bin.len());
    }
}
