//! Shared volumes on the control API (`shoal volume`; `shoal-daemon`'s
//! `volumes_api` serves the routes):
//!
//! | method | path | body | answer |
//! | --- | --- | --- | --- |
//! | GET | `/v1/volumes` | — | [`VolumeSummary`] list: the caller's volumes (an admin's `owner=all`: everyone's) |
//! | POST | `/v1/volumes` | [`VolumeCreate`] | [`VolumeSummary`] |
//! | DELETE | `/v1/volumes/{name}` | — | [`VolumeSummary`] of what was removed |
//! | GET | `/v1/volumes/{name}/tree/{path}` | — | [`VolumeEntryView`] list: a directory's entries |
//! | GET | `/v1/volumes/{name}/files/{path}` | — | the file's bytes (the version current when the read began) |
//! | PUT | `/v1/volumes/{name}/files/{path}` | the bytes | [`VolumeWritten`]: a new version, whole (missing parent directories are created) |
//!
//! `owner=ROLE:ID` names another owner's volume (admins only). Volumes
//! belong to the identity that created them, like key-value buckets.

use serde::{Deserialize, Serialize};

/// Largest file `shoal volume cp` moves in one request (4 GiB: the most
/// chunks a version may list).
pub const VOLUME_FILE_BYTES_MAX: u64 = 4 << 30;
/// Default byte quota of a shared volume (10 GiB).
pub const SHARED_BYTES_MAX_DEFAULT: u64 = 10 << 30;
/// Default file quota of a shared volume.
pub const SHARED_FILES_MAX_DEFAULT: u64 = 1_000_000;

/// `POST /v1/volumes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeCreate {
    /// Its name (`[a-z0-9][a-z0-9._-]*`, at most 64 bytes).
    pub name: String,
    /// Copies of each chunk on distinct nodes (1 to 5).
    pub replicas: u8,
    /// Byte quota (default [`SHARED_BYTES_MAX_DEFAULT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_max: Option<u64>,
    /// File quota (default [`SHARED_FILES_MAX_DEFAULT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_max: Option<u64>,
}

/// A shared volume as `shoal volume ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSummary {
    /// Its owner, `ROLE:ID`.
    pub owner: String,
    /// Its name.
    pub name: String,
    /// Copies of each chunk.
    pub replicas: u8,
    /// Bytes its files hold.
    pub bytes: u64,
    /// Files and directories.
    pub files: u64,
    /// Byte quota.
    pub bytes_max: u64,
    /// File quota.
    pub files_max: u64,
    /// Unix ms of its creation.
    pub created_unix_ms: u64,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeEntryView {
    /// Its name in the directory.
    pub name: String,
    /// `dir` or `file`.
    pub kind: String,
    /// Length (files).
    pub size: u64,
    /// The write that made this version.
    pub version: u64,
    /// Unix ms of that write.
    pub mtime_unix_ms: u64,
    /// Nodes holding its chunks (files).
    pub holders: Vec<u64>,
}

/// What a `PUT` of a file did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeWritten {
    /// The volume.
    pub volume: String,
    /// The file's path.
    pub path: String,
    /// Its length.
    pub size: u64,
    /// The new version.
    pub version: u64,
    /// Nodes holding its chunks.
    pub holders: Vec<u64>,
}
