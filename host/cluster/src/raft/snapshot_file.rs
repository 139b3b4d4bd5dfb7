//! The current Raft snapshot as a file beside the store, written and read
//! as a stream rather than built as one buffer.
//!
//! Layout: the [`codec::BINARY`] marker, then two CBOR items — the
//! snapshot's metadata, then the [`ClusterState`]. The metadata comes
//! first so that it can be read without the state, and it is inside the
//! file so that a snapshot and its metadata are replaced together, by one
//! rename (a crash never pairs a new state with an old `last_log_id`, which
//! would re-apply entries the state already holds).
//!
//! - [`write`]: encode straight into `snapshot.building`, fsync, rename to
//!   `snapshot.bin`, fsync the directory.
//! - [`incoming_path`]: where a snapshot sent by the leader is received in
//!   chunks ([`install`] checks and decodes it, then renames it into place).
//! - Both are bounded by [`SNAPSHOT_BYTES_MAX`] before anything is decoded.

use super::codec::{self, CodecError};
use super::store::StoreError;
use crate::state::{ClusterState, MemberInfo, NodeId};
use openraft::SnapshotMeta;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Largest snapshot file accepted (sent or received): 1 GiB.
pub const SNAPSHOT_BYTES_MAX: u64 = 1 << 30;

/// The snapshot's metadata, as openraft names it.
pub(crate) type Meta = SnapshotMeta<NodeId, MemberInfo>;

/// The current snapshot.
pub(crate) fn current_path(dir: &Path) -> PathBuf {
    dir.join("snapshot.bin")
}

/// Where a snapshot from the leader is received.
pub(crate) fn incoming_path(dir: &Path) -> PathBuf {
    dir.join("snapshot.incoming")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::SnapshotFile {
        path: path.to_path_buf(),
        source,
    }
}

fn bad(path: &Path) -> impl FnOnce(CodecError) -> StoreError + '_ {
    move |source| StoreError::Codec {
        key: path.display().to_string(),
        source,
    }
}

/// Create (truncate) a file only this node may read.
pub(crate) fn create_private(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .write(true)
        .read(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))
}

/// Make a rename in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Write `meta` and `state` as the current snapshot (see the module docs).
pub(crate) fn write(dir: &Path, meta: &Meta, state: &ClusterState) -> Result<(), StoreError> {
    let building = dir.join("snapshot.building");
    let file = create_private(&building)?;
    let mut out = BufWriter::new(file);
    out.write_all(&[codec::BINARY]).map_err(io(&building))?;
    codec::write_item(meta, &mut out).map_err(bad(&building))?;
    codec::write_item(state, &mut out).map_err(bad(&building))?;
    let file = out
        .into_inner()
        .map_err(|e| io(&building)(e.into_error()))?;
    file.sync_all().map_err(io(&building))?;
    let len = file.metadata().map_err(io(&building))?.len();
    if len > SNAPSHOT_BYTES_MAX {
        let _ = std::fs::remove_file(&building);
        return Err(io(&building)(std::io::Error::other(format!(
            "{len} bytes, over the {SNAPSHOT_BYTES_MAX}-byte limit"
        ))));
    }
    let current = current_path(dir);
    std::fs::rename(&building, &current).map_err(io(&current))?;
    sync_dir(dir)
}

/// Open `path` for reading, checking its marker and its size.
fn open_checked(path: &Path) -> Result<Option<BufReader<File>>, StoreError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    let len = file.metadata().map_err(io(path))?.len();
    if len > SNAPSHOT_BYTES_MAX {
        return Err(io(path)(std::io::Error::other(format!(
            "{len} bytes, over the {SNAPSHOT_BYTES_MAX}-byte limit"
        ))));
    }
    let mut input = BufReader::new(file);
    let mut marker = [0u8; 1];
    input.read_exact(&mut marker).map_err(io(path))?;
    if marker[0] != codec::BINARY {
        return Err(bad(path)(CodecError::Cbor(
            "not a snapshot file (bad marker)".into(),
        )));
    }
    Ok(Some(input))
}

/// The current snapshot in `dir`, opened: its metadata, read from the
/// same open file that is returned (rewound), so that a snapshot built
/// meanwhile (renamed over it) cannot pair its data with this metadata.
pub(crate) fn open_current(dir: &Path) -> Result<Option<(Meta, File)>, StoreError> {
    let path = current_path(dir);
    let Some(input) = open_checked(&path)? else {
        return Ok(None);
    };
    let mut file = input.into_inner();
    let mut reader = BufReader::new(file.try_clone().map_err(io(&path))?);
    std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(1)).map_err(io(&path))?;
    let meta: Meta = codec::read_item(&mut reader).map_err(bad(&path))?;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0)).map_err(io(&path))?;
    Ok(Some((meta, file)))
}

/// The snapshot at `path` (metadata and state), if there is one.
pub(crate) fn read(path: &Path) -> Result<Option<(Meta, ClusterState)>, StoreError> {
    let Some(mut input) = open_checked(path)? else {
        return Ok(None);
    };
    let meta: Meta = codec::read_item(&mut input).map_err(bad(path))?;
    let state: ClusterState = codec::read_item(&mut input).map_err(bad(path))?;
    Ok(Some((meta, state)))
}

/// Check and decode the snapshot received at [`incoming_path`] for `meta`,
/// then make it the current one. Its state.
pub(crate) fn install(dir: &Path, meta: &Meta) -> Result<ClusterState, StoreError> {
    let incoming = incoming_path(dir);
    let (inside, state) = read(&incoming)?.ok_or_else(|| {
        io(&incoming)(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no snapshot was received",
        ))
    })?;
    if inside.snapshot_id != meta.snapshot_id || inside.last_log_id != meta.last_log_id {
        return Err(bad(&incoming)(CodecError::Cbor(format!(
            "the file holds snapshot {} but {} was announced",
            inside.snapshot_id, meta.snapshot_id
        ))));
    }
    File::open(&incoming)
        .and_then(|f| f.sync_all())
        .map_err(io(&incoming))?;
    let current = current_path(dir);
    std::fs::rename(&incoming, &current).map_err(io(&current))?;
    sync_dir(dir)?;
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Command;
    use openraft::StoredMembership;

    fn meta(id: &str) -> Meta {
        Meta {
            last_log_id: None,
            last_membership: StoredMembership::default(),
            snapshot_id: id.to_string(),
        }
    }

    #[test]
    fn written_read_back_installed_and_hostile_files_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = ClusterState::default();
        state.apply(&Command::AllocPidBlock { node: 3 });
        assert!(read(&current_path(dir.path())).unwrap().is_none());
        write(dir.path(), &meta("a"), &state).unwrap();
        let (m, s) = read(&current_path(dir.path())).unwrap().unwrap();
        assert_eq!(m.snapshot_id, "a");
        assert_eq!(s.pid_blocks, state.pid_blocks);
        let (m, mut file) = open_current(dir.path()).unwrap().unwrap();
        assert_eq!(m.snapshot_id, "a");
        let mut whole = Vec::new();
        file.read_to_end(&mut whole).unwrap();
        assert_eq!(whole, std::fs::read(current_path(dir.path())).unwrap());
        // Received from a leader: installed only as announced.
        std::fs::copy(current_path(dir.path()), incoming_path(dir.path())).unwrap();
        assert!(install(dir.path(), &meta("b")).is_err());
        let got = install(dir.path(), &meta("a")).unwrap();
        assert_eq!(got.pid_blocks, state.pid_blocks);
        assert!(!incoming_path(dir.path()).exists());
        // Garbage, a truncated file, and a sparse giant: errors, no panic,
        // no allocation by the declared size.
        let incoming = incoming_path(dir.path());
        std::fs::write(&incoming, b"{\"json\": true}").unwrap();
        assert!(install(dir.path(), &meta("a")).is_err());
        let whole = std::fs::read(current_path(dir.path())).unwrap();
        for cut in [1, 2, whole.len() / 2, whole.len() - 1] {
            std::fs::write(&incoming, &whole[..cut]).unwrap();
            assert!(install(dir.path(), &meta("a")).is_err(), "cut at {cut}");
        }
        let f = create_private(&incoming).unwrap();
        f.set_len(SNAPSHOT_BYTES_MAX + 1).unwrap();
        assert!(install(dir.path(), &meta("a")).is_err());
        // A byte string declaring 2^62 bytes.
        let mut huge = vec![codec::BINARY];
        huge.extend_from_slice(&[0x5b, 0x40, 0, 0, 0, 0, 0, 0, 0]);
        std::fs::write(&incoming, &huge).unwrap();
        assert!(install(dir.path(), &meta("a")).is_err());
        // The current snapshot is untouched by the refused ones.
        assert_eq!(
            read(&current_path(dir.path()))
                .unwrap()
                .unwrap()
                .0
                .snapshot_id,
            "a"
        );
    }
}
