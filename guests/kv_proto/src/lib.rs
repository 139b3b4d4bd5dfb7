//! The protocol of the `kv` service guest and its `kv_client`: the request
//! and reply types, encoded with postcard by `shoal::call` / `shoal::reply`.
#![no_std]
extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// A request to the key/value service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Req {
    /// Store `value` under `key`; the reply is the previous value.
    Put(String, Vec<u8>),
    /// The value under `key`, if any.
    Get(String),
    /// Answer with the same number and payload (for streams of calls:
    /// every reply must match its request).
    Echo(u64, Vec<u8>),
    /// Do not answer until a plain `release` message arrives (to have calls
    /// pending when the service ends or moves).
    Hold(u64),
}

/// A reply of the key/value service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resp {
    /// The value asked for (or replaced), if any.
    Value(Option<Vec<u8>>),
    /// The echo of [`Req::Echo`].
    Echo(u64, Vec<u8>),
    /// The answer to [`Req::Hold`] after the release.
    Released(u64),
}
