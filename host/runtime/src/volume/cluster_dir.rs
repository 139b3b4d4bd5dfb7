//! The read-only `/cluster` namespace (`--volume cluster:/cluster`): the
//! cluster as files, Plan 9 style.
//!
//! ```text
//! /cluster/self/pid              this process's pid
//! /cluster/self/node             the node it runs on (changes when it moves)
//! /cluster/leader                the Raft leader's node name, if known
//! /cluster/nodes/<name>/{id,addr,status,health,load,labels}
//! /cluster/procs/<pid>/{node,owner}
//! /cluster/names/<name>          the pid a name of the process's owner names
//! ```
//!
//! Every open (and listing, and `stat`) renders the namespace afresh from
//! the node's applied Raft state ([`SharedFiles::cluster_view`]); an open
//! file keeps the content it was opened with. Anything that would write
//! fails with `EROFS`. A process only sees its own owner's names; nodes and
//! the process directory are the cluster's (as `shoal ps` and `shoal
//! nodes` show them).

use super::link::SharedFiles;
use shoal_abi::pid::Pid;
use std::any::Any;
use std::io::{IoSlice, IoSliceMut, SeekFrom};
use std::sync::{Arc, Mutex};
use wasi_common::dir::{OpenResult, ReaddirCursor, ReaddirEntity, WasiDir};
use wasi_common::file::{FdFlags, FileType, Filestat, OFlags, WasiFile};
use wasi_common::snapshots::preview_1::types::Errno;
use wasi_common::{Error, SystemTimeSpec};

/// The name that mounts the namespace instead of a shared volume.
pub const CLUSTER_VOLUME: &str = "cluster";

/// Most bytes one rendering may hold (it is built for every open).
pub const VIEW_BYTES_MAX: usize = 4 << 20;

/// What a path names in a rendering.
enum Found {
    Dir(Vec<(String, FileType)>),
    File(Vec<u8>),
}

fn inode(path: &str) -> u64 {
    let h = shoal_registry::Sha256::of(format!("cluster/{path}").as_bytes());
    u64::from_le_bytes(h.0[..8].try_into().unwrap_or([0; 8]))
}

/// Look `path` up in `view`: a file, a directory (a prefix of files: its
/// entries), or nothing.
fn find(view: &[(String, Vec<u8>)], path: &str) -> Option<Found> {
    if let Some((_, c)) = view.iter().find(|(p, _)| p == path) {
        return Some(Found::File(c.clone()));
    }
    let prefix = if path.is_empty() {
        String::new()
    } else {
        format!("{path}/")
    };
    let mut entries: Vec<(String, FileType)> = Vec::new();
    for (p, _) in view {
        let Some(rest) = p.strip_prefix(&prefix) else {
            continue;
        };
        let (name, kind) = match rest.split_once('/') {
            Some((d, _)) => (d, FileType::Directory),
            None => (rest, FileType::RegularFile),
        };
        if !entries.iter().any(|(n, _)| n == name) {
            entries.push((name.to_string(), kind));
        }
    }
    if entries.is_empty() && !path.is_empty() {
        return None;
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Some(Found::Dir(entries))
}

/// A directory of the namespace.
pub struct ClusterDir {
    link: Arc<dyn SharedFiles>,
    pid: Pid,
    prefix: String,
}

impl ClusterDir {
    /// The namespace's root for `pid`.
    pub fn new(link: Arc<dyn SharedFiles>, pid: Pid) -> ClusterDir {
        ClusterDir {
            link,
            pid,
            prefix: String::new(),
        }
    }

    fn resolve(&self, path: &str) -> Result<String, Error> {
        super::shared::resolve_in(&self.prefix, path)
    }

    async fn lookup(&self, path: &str) -> Result<Found, Error> {
        let view = self
            .link
            .cluster_view(self.pid)
            .await
            .map_err(|_| Errno::Io)?;
        find(&view, path).ok_or_else(|| Errno::Noent.into())
    }

    fn stat_of(path: &str, found: &Found) -> Filestat {
        let (filetype, size) = match found {
            Found::Dir(_) => (FileType::Directory, 0),
            Found::File(c) => (FileType::RegularFile, c.len() as u64),
        };
        Filestat {
            device_id: inode(""),
            inode: inode(path),
            filetype,
            nlink: 1,
            size,
            atim: None,
            mtim: None,
            ctim: None,
        }
    }
}

fn rofs() -> Error {
    Errno::Rofs.into()
}

#[async_trait::async_trait]
impl WasiDir for ClusterDir {
    fn as_any(&self) -> &dyn Any {
        self
    }

    async fn open_file(
        &self,
        _symlink_follow: bool,
        path: &str,
        oflags: OFlags,
        _read: bool,
        write: bool,
        _fdflags: FdFlags,
    ) -> Result<OpenResult, Error> {
        let p = self.resolve(path)?;
        let found = self.lookup(&p).await;
        if write || oflags.contains(OFlags::TRUNCATE) {
            return Err(rofs());
        }
        match found {
            Ok(Found::Dir(_)) => Ok(OpenResult::Dir(Box::new(ClusterDir {
                link: self.link.clone(),
                pid: self.pid,
                prefix: p,
            }))),
            Ok(Found::File(_)) if oflags.contains(OFlags::DIRECTORY) => Err(Errno::Notdir.into()),
            Ok(Found::File(_)) if oflags.contains(OFlags::EXCLUSIVE) => Err(Errno::Exist.into()),
            Ok(Found::File(content)) => Ok(OpenResult::File(Box::new(MemFile {
                ino: inode(&p),
                content,
                at: Mutex::new(0),
            }))),
            Err(_) if oflags.contains(OFlags::CREATE) => Err(rofs()),
            Err(e) => Err(e),
        }
    }

    async fn create_dir(&self, _path: &str) -> Result<(), Error> {
        Err(rofs())
    }

    async fn readdir(
        &self,
        cursor: ReaddirCursor,
    ) -> Result<Box<dyn Iterator<Item = Result<ReaddirEntity, Error>> + Send>, Error> {
        let Found::Dir(list) = self.lookup(&self.prefix).await? else {
            return Err(Errno::Notdir.into());
        };
        let mut out = Vec::with_capacity(list.len() + 2);
        let me = inode(&self.prefix);
        for (name, filetype) in [
            (".".to_string(), FileType::Directory),
            ("..".to_string(), FileType::Directory),
        ]
        .into_iter()
        .chain(list)
        {
            let path = if self.prefix.is_empty() {
                name.clone()
            } else {
                format!("{}/{name}", self.prefix)
            };
            let next = ReaddirCursor::from(out.len() as u64 + 1);
            out.push(ReaddirEntity {
                next,
                inode: if name == "." { me } else { inode(&path) },
                name,
                filetype,
            });
        }
        let skip = u64::from(cursor) as usize;
        Ok(Box::new(out.into_iter().skip(skip).map(Ok)))
    }

    async fn symlink(&self, _old_path: &str, _new_path: &str) -> Result<(), Error> {
        Err(rofs())
    }

    async fn remove_dir(&self, _path: &str) -> Result<(), Error> {
        Err(rofs())
    }

    async fn unlink_file(&self, _path: &str) -> Result<(), Error> {
        Err(rofs())
    }

    async fn read_link(&self, _path: &str) -> Result<std::path::PathBuf, Error> {
        Err(Errno::Inval.into())
    }

    async fn get_filestat(&self) -> Result<Filestat, Error> {
        let found = self.lookup(&self.prefix).await?;
        Ok(Self::stat_of(&self.prefix, &found))
    }

    async fn get_path_filestat(
        &self,
        path: &str,
        _follow_symlinks: bool,
    ) -> Result<Filestat, Error> {
        let p = self.resolve(path)?;
        let found = self.lookup(&p).await?;
        Ok(Self::stat_of(&p, &found))
    }

    async fn rename(
        &self,
        _path: &str,
        _dest_dir: &dyn WasiDir,
        _dest_path: &str,
    ) -> Result<(), Error> {
        Err(rofs())
    }

    async fn hard_link(
        &self,
        _path: &str,
        _target_dir: &dyn WasiDir,
        _target_path: &str,
    ) -> Result<(), Error> {
        Err(rofs())
    }

    async fn set_times(
        &self,
        _path: &str,
        _atime: Option<SystemTimeSpec>,
        _mtime: Option<SystemTimeSpec>,
        _follow_symlinks: bool,
    ) -> Result<(), Error> {
        Err(rofs())
    }
}

/// A file of the namespace: the content rendered when it was opened.
struct MemFile {
    ino: u64,
    content: Vec<u8>,
    at: Mutex<u64>,
}

impl MemFile {
    fn read_from(&self, bufs: &mut [IoSliceMut<'_>], mut at: u64) -> u64 {
        let mut n = 0u64;
        for b in bufs.iter_mut() {
            let start = (at as usize).min(self.content.len());
            let take = (self.content.len() - start).min(b.len());
            b[..take].copy_from_slice(&self.content[start..start + take]);
            at += take as u64;
            n += take as u64;
            if take < b.len() {
                break;
            }
        }
        n
    }
}

#[async_trait::async_trait]
impl WasiFile for MemFile {
    fn as_any(&self) -> &dyn Any {
        self
    }

    async fn get_filetype(&self) -> Result<FileType, Error> {
        Ok(FileType::RegularFile)
    }

    async fn get_filestat(&self) -> Result<Filestat, Error> {
        Ok(Filestat {
            device_id: inode(""),
            inode: self.ino,
            filetype: FileType::RegularFile,
            nlink: 1,
            size: self.content.len() as u64,
            atim: None,
            mtim: None,
            ctim: None,
        })
    }

    async fn set_filestat_size(&self, _size: u64) -> Result<(), Error> {
        Err(rofs())
    }

    async fn read_vectored<'a>(&self, bufs: &mut [IoSliceMut<'a>]) -> Result<u64, Error> {
        let mut at = self.at.lock().unwrap_or_else(|p| p.into_inner());
        let n = self.read_from(bufs, *at);
        *at += n;
        Ok(n)
    }

    async fn read_vectored_at<'a>(
        &self,
        bufs: &mut [IoSliceMut<'a>],
        offset: u64,
    ) -> Result<u64, Error> {
        Ok(self.read_from(bufs, offset))
    }

    async fn write_vectored<'a>(&self, _bufs: &[IoSlice<'a>]) -> Result<u64, Error> {
        Err(rofs())
    }

    async fn write_vectored_at<'a>(
        &self,
        _bufs: &[IoSlice<'a>],
        _offset: u64,
    ) -> Result<u64, Error> {
        Err(rofs())
    }

    async fn seek(&self, pos: SeekFrom) -> Result<u64, Error> {
        let mut at = self.at.lock().unwrap_or_else(|p| p.into_inner());
        let len = self.content.len() as i128;
        let next = match pos {
            SeekFrom::Start(n) => i128::from(n),
            SeekFrom::Current(d) => i128::from(*at) + i128::from(d),
            SeekFrom::End(d) => len + i128::from(d),
        };
        if next < 0 {
            return Err(Errno::Inval.into());
        }
        *at = u64::try_from(next).map_err(|_| Error::from(Errno::Inval))?;
        Ok(*at)
    }

    fn num_ready_bytes(&self) -> Result<u64, Error> {
        let at = *self.at.lock().unwrap_or_else(|p| p.into_inner());
        Ok((self.content.len() as u64).saturating_sub(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_answers_files_directories_and_nothing() {
        let view = vec![
            ("self/pid".to_string(), b"7\n".to_vec()),
            ("nodes/n1/load".to_string(), b"1\n".to_vec()),
            ("nodes/n2/load".to_string(), b"2\n".to_vec()),
        ];
        assert!(matches!(find(&view, "self/pid"), Some(Found::File(c)) if c == b"7\n"));
        let Some(Found::Dir(root)) = find(&view, "") else {
            panic!("root")
        };
        assert_eq!(
            root.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["nodes", "self"]
        );
        assert!(matches!(find(&view, "nodes"), Some(Found::Dir(d)) if d.len() == 2));
        assert!(find(&view, "nodes/n3").is_none());
        assert!(find(&view, "self/pi").is_none());
    }

    #[test]
    fn a_file_reads_and_seeks_within_its_content() {
        let f = MemFile {
            ino: 1,
            content: b"hello".to_vec(),
            at: Mutex::new(0),
        };
        let mut a = [0u8; 3];
        let mut b = [0u8; 3];
        let n = f.read_from(&mut [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)], 0);
        assert_eq!(n, 5);
        assert_eq!(&a, b"hel");
        assert_eq!(&b[..2], b"lo");
        assert_eq!(f.read_from(&mut [IoSliceMut::new(&mut a)], 9), 0);
    }
}
