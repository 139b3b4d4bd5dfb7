//! The current Raft snapshot as a file beside the store, written and read
//! as a stream rather than built as one buffer.
//!
//! Layout: the [`codec::BINARY`] marker, then CBOR items — the snapshot's
//! metadata; the [`ClusterState`] without its key-value entries (its book
//! says that they follow); then the key-value entries in chunks of at most
//! [`KV_CHUNK_ENTRIES_MAX`] entries or about [`KV_CHUNK_BYTES_MAX`] bytes,
//! read from disk as they are written and loaded into the node's
//! key-value store as they are read ([`crate::state::kv_disk`]), never held
//! whole; an empty chunk ends them. Files of earlier builds hold the
//! entries inside the state and no chunks. The metadata comes first so
//! that it can be read without the state, and it is inside the file so
//! that a snapshot and its metadata are replaced together, by one rename (a
//! crash never pairs a new state with an old `last_log_id`, which would
//! re-apply entries the state already holds).
//!
//! - [`write`]: encode straight into `snapshot.building`, fsync, rename to
//!   `snapshot.bin`, fsync the directory.
//! - [`incoming_path`]: where a snapshot sent by the leader is received in
//!   chunks ([`install`] checks and decodes it, then renames it into place).
//! - Both are bounded by [`SNAPSHOT_BYTES_MAX`] before anything is decoded.

use super::codec::{self, CodecError};
use super::store::StoreError;
use crate::state::kv::{KvEntry, KvKey};
use crate::state::{ClusterState, MemberInfo, NodeId};
use openraft::SnapshotMeta;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Largest snapshot file accepted (sent or received): 1 GiB.
pub const SNAPSHOT_BYTES_MAX: u64 = 1 << 30;
/// Most key-value entries in one chunk of the file.
pub const KV_CHUNK_ENTRIES_MAX: usize = 256;
/// Bytes (keys and values) after which a chunk of the file ends.
pub const KV_CHUNK_BYTES_MAX: usize = 4 << 20;

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
    let mut head = state.clone();
    head.kv = state.kv.detached();
    codec::write_item(&head, &mut out).map_err(bad(&building))?;
    let mut chunk: Vec<(KvKey, KvEntry)> = Vec::new();
    let mut chunk_bytes = 0usize;
    for (k, e) in state.kv.iter() {
        chunk_bytes += k.key.len() + e.value.len();
        chunk.push((k, e));
        if chunk.len() >= KV_CHUNK_ENTRIES_MAX || chunk_bytes >= KV_CHUNK_BYTES_MAX {
            codec::write_item(&chunk, &mut out).map_err(bad(&building))?;
            chunk.clear();
            chunk_bytes = 0;
        }
    }
    if !chunk.is_empty() {
        codec::write_item(&chunk, &mut out).map_err(bad(&building))?;
        chunk.clear();
    }
    codec::write_item(&chunk, &mut out).map_err(bad(&building))?;
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

/// The snapshot at `path` (metadata and state), if there is one; its
/// key-value entries replace those of `kv_db` (all or nothing), and the
/// state's book reads them from there.
pub(crate) fn read(
    path: &Path,
    kv_db: &std::sync::Arc<redb::Database>,
) -> Result<Option<(Meta, ClusterState)>, StoreError> {
    let Some(mut input) = open_checked(path)? else {
        return Ok(None);
    };
    let meta: Meta = codec::read_item(&mut input).map_err(bad(path))?;
    let mut state: ClusterState = codec::read_item(&mut input).map_err(bad(path))?;
    let follow = state.kv.entries_follow();
    let mut chunk = Vec::new().into_iter();
    let mut ended = !follow;
    let entries = std::iter::from_fn(|| loop {
        if let Some(entry) = chunk.next() {
            return Some(Ok(entry));
        }
        if ended {
            return None;
        }
        match codec::read_item::<Vec<(KvKey, KvEntry)>, _>(&mut input) {
            Ok(next) if next.is_empty() => ended = true,
            Ok(next) => chunk = next.into_iter(),
            Err(e) => {
                ended = true;
                return Some(Err(format!("key-value entries: {e}")));
            }
        }
    });
    state
        .kv
        .load::<String>(kv_db, entries)?
        .map_err(|why| bad(path)(CodecError::Cbor(why)))?;
    if follow {
        let mut rest = [0u8; 1];
        if input.read(&mut rest).map_err(io(path))? != 0 {
            return Err(bad(path)(CodecError::Cbor(
                "bytes after the key-value entries".into(),
            )));
        }
    }
    Ok(Some((meta, state)))
}

/// Check and decode the snapshot received at [`incoming_path`] for `meta`,
/// then make it the current one. Its state.
///
/// The announced metadata is compared before anything is loaded; the
/// key-value entries are then loaded into `kv_db` as the file is read, all
/// or nothing. Once they are (the file has been read whole), a failure to
/// rename it leaves the store holding them: the caller must not go on with
/// the book it had (openraft stops on a failed install).
pub(crate) fn install(
    dir: &Path,
    meta: &Meta,
    kv_db: &std::sync::Arc<redb::Database>,
) -> Result<ClusterState, StoreError> {
    let incoming = incoming_path(dir);
    let not_received = || {
        io(&incoming)(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no snapshot was received",
        ))
    };
    let mut head = open_checked(&incoming)?.ok_or_else(not_received)?;
    let inside: Meta = codec::read_item(&mut head).map_err(bad(&incoming))?;
    drop(head);
    if inside.snapshot_id != meta.snapshot_id || inside.last_log_id != meta.last_log_id {
        return Err(bad(&incoming)(CodecError::Cbor(format!(
            "the file holds snapshot {} but {} was announced",
            inside.snapshot_id, meta.snapshot_id
        ))));
    }
    let (_, state) = read(&incoming, kv_db)?.ok_or_else(not_received)?;
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
        let db = crate::state::kv_disk::open(&dir.path().join("kv.redb")).unwrap();
        let mut state = ClusterState::default();
        state.apply(&Command::AllocPidBlock { node: 3 });
        // Entries enough for several chunks, some of them on disk.
        let alice = shoal_pki::Owner {
            role: shoal_pki::Role::Client,
            id: "alice".into(),
        };
        for i in 0..(KV_CHUNK_ENTRIES_MAX * 2 + 17) as u32 {
            let value = vec![7u8; i as usize % 300];
            state.kv.set(&alice, "b", &i.to_be_bytes(), &value).unwrap();
            if i == 100 {
                state
                    .kv
                    .load::<String>(&db, std::iter::empty())
                    .unwrap()
                    .unwrap();
            }
        }
        let entries = state.kv.iter().count();
        assert!(read(&current_path(dir.path()), &db).unwrap().is_none());
        write(dir.path(), &meta("a"), &state).unwrap();
        let (m, s) = read(&current_path(dir.path()), &db).unwrap().unwrap();
        assert_eq!(m.snapshot_id, "a");
        assert_eq!(s.pid_blocks, state.pid_blocks);
        assert!(s.kv == state.kv && s.kv.iter().count() == entries);
        assert_eq!(
            s.kv.get(&alice, "b", &300u32.to_be_bytes())
                .unwrap()
                .value
                .len(),
            0
        );
        let (m, mut file) = open_current(dir.path()).unwrap().unwrap();
        assert_eq!(m.snapshot_id, "a");
        let mut whole = Vec::new();
        file.read_to_end(&mut whole).unwrap();
        assert_eq!(whole, std::fs::read(current_path(dir.path())).unwrap());
        // Received from a leader: installed only as announced.
        std::fs::copy(current_path(dir.path()), incoming_path(dir.path())).unwrap();
        assert!(install(dir.path(), &meta("b"), &db).is_err());
        let got = install(dir.path(), &meta("a"), &db).unwrap();
        assert_eq!(got.pid_blocks, state.pid_blocks);
        assert!(got.kv == state.kv);
        assert!(!incoming_path(dir.path()).exists());
        // Garbage, a truncated file, and a sparse giant: errors, no panic,
        // no allocation by the declared size.
        let incoming = incoming_path(dir.path());
        std::fs::write(&incoming, b"{\"json\": true}").unwrap();
        assert!(install(dir.path(), &meta("a"), &db).is_err());
        let whole = std::fs::read(current_path(dir.path())).unwrap();
        for cut in [1, 2, whole.len() / 2, whole.len() - 1] {
            std::fs::write(&incoming, &whole[..cut]).unwrap();
            assert!(
                install(dir.path(), &meta("a"), &db).is_err(),
                "cut at {cut}"
            );
        }
        let f = create_private(&incoming).unwrap();
        f.set_len(SNAPSHOT_BYTES_MAX + 1).unwrap();
        assert!(install(dir.path(), &meta("a"), &db).is_err());
        // A byte string declaring 2^62 bytes.
        let mut huge = vec![codec::BINARY];
        huge.extend_from_slice(&[0x5b, 0x40, 0, 0, 0, 0, 0, 0, 0]);
        std::fs::write(&incoming, &huge).unwrap();
        assert!(install(dir.path(), &meta("a"), &db).is_err());
        // The current snapshot is untouched by the refused ones.
        // ...and so is the key-value store: the last good load's entries.
        assert!(got.kv == state.kv);
        assert_eq!(
            read(&current_path(dir.path()), &db)
                .unwrap()
                .unwrap()
                .0
                .snapshot_id,
            "a"
        );
    }
}
