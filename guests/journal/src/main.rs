//! `journal`: a guest that keeps its state in files, through nothing but
//! `std::fs` (plain WASI) and Shoal's `recv`/`send`: for private volume
//! tests.
//!
//! `journal <dir>` opens `<dir>/journal.log` for appending and keeps it
//! open across every `recv` (so a capture has a file open in the volume,
//! with a position). Then it answers each message (text) to its sender:
//!
//! - `append <text>`: appends `<text>\n` through the open handle and
//!   answers `ok <journal length>`;
//! - `write <name> <bytes> <seed>`: writes `<dir>/<name>` (created or
//!   truncated) with `<bytes>` pseudo-random bytes from `<seed>` (a MiB at
//!   a time); `ok`;
//! - `patch <name> <offset> <bytes> <seed>`: overwrites that range of an
//!   existing file with pseudo-random bytes; `ok`;
//! - `digest`: `digest <hex>`, a 64-bit FNV-1a over every file's path and
//!   content under `<dir>`, in sorted path order;
//! - `read <name>`: the file's content;
//! - `try <op> <path>`: attempts `open` (read), `create`, `mkdir` or
//!   `symlink` (to `<path>` from `<dir>/link`) and answers `ok` or
//!   `err <WASI errno>`;
//! - `fill <name> <bytes>`: appends 64 KiB blocks to `<dir>/<name>` until
//!   `<bytes>` are written or a write fails: `ok` or
//!   `err <WASI errno> after <bytes written>`;
//! - `bench <bytes> <files>`: times, with the WASI monotonic clock, a
//!   sequential write then read of a `<bytes>` file (1 MiB at a time), and
//!   the creation then `stat` of `<files>` small files, all in `<dir>`;
//!   answers `bench <write MB/s> <read MB/s> <creates/s> <stats/s>` and
//!   removes what it made;
//! - `stamp <name> <bytes> <seed>`: writes `<dir>/<name>` (created or
//!   truncated) as the line `stamp <seed> <bytes>` then `<bytes>`
//!   pseudo-random bytes from `<seed>`, and closes it; `ok`;
//! - `check <name>`: reads a stamped file and answers `whole <seed>` when
//!   every byte is the one its header promises, else `torn`;
//!   `err <WASI errno>` if it cannot be read;
//! - `rename <from> <to>`: `ok` or `err <WASI errno>`;
//! - `hold <name>`: opens `<dir>/<name>` for appending (created if
//!   missing) and keeps it open; `add <text>` appends `<text>\n` to it;
//!   `sync` fsyncs it; `release` closes it: each `ok` or `err <errno>`;
//! - `cat <absolute path>`: the file's content as text, or `err <errno>`;
//! - `ls <absolute path>`: the directory's entry names, sorted, one per
//!   line, or `err <errno>`;
//! - `stop`: exits 0.
//!
//! Any other message, or a failed operation, is answered `err <text>`.

use shoal::Pid;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Bytes `write` generates at a time.
const BLOCK_BYTES: u64 = 1 << 20;

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/data".to_string());
    let dir = PathBuf::from(dir);
    let mut journal = match OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("journal.log"))
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("journal: cannot open {}/journal.log: {e}", dir.display());
            std::process::exit(1);
        }
    };
    println!("journal ready in {}", dir.display());
    loop {
        let msg = match shoal::recv(None) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("journal: recv: {e}");
                std::process::exit(1);
            }
        };
        let text = String::from_utf8_lossy(&msg.data).into_owned();
        if text == "stop" {
            return;
        }
        let answer = handle(&dir, &mut journal, &text).unwrap_or_else(|e| format!("err {e}"));
        reply(msg.sender, answer.as_bytes());
    }
}

fn reply(to: Pid, data: &[u8]) {
    if let Err(e) = shoal::send_blocking(to, data) {
        eprintln!("journal: reply to {to}: {e}");
    }
}

fn handle(dir: &Path, journal: &mut File, text: &str) -> Result<String, String> {
    let words: Vec<&str> = text.split(' ').collect();
    let num = |s: &str| s.parse::<u64>().map_err(|_| format!("not a number: {s}"));
    match words.as_slice() {
        ["append", rest @ ..] => {
            let line = format!("{}\n", rest.join(" "));
            journal
                .write_all(line.as_bytes())
                .map_err(|e| e.to_string())?;
            let len = journal.metadata().map_err(|e| e.to_string())?.len();
            Ok(format!("ok {len}"))
        }
        ["write", name, bytes, seed] => {
            // A MiB at a time: files may be larger than the guest's memory.
            let (bytes, seed) = (num(bytes)?, num(seed)?);
            let mut f = File::create(dir.join(name)).map_err(|e| e.to_string())?;
            let mut done = 0u64;
            while done < bytes {
                let n = (bytes - done).min(BLOCK_BYTES);
                f.write_all(&pseudo_random(n, seed ^ done))
                    .map_err(|e| e.to_string())?;
                done += n;
            }
            Ok("ok".into())
        }
        ["patch", name, offset, bytes, seed] => {
            let mut f = OpenOptions::new()
                .write(true)
                .open(dir.join(name))
                .map_err(|e| e.to_string())?;
            f.seek(SeekFrom::Start(num(offset)?))
                .map_err(|e| e.to_string())?;
            f.write_all(&pseudo_random(num(bytes)?, num(seed)?))
                .map_err(|e| e.to_string())?;
            Ok("ok".into())
        }
        ["digest"] => {
            let mut files = Vec::new();
            walk(dir, dir, &mut files).map_err(|e| e.to_string())?;
            files.sort();
            let mut h = Fnv::new();
            for rel in files {
                h.feed(rel.as_bytes());
                let mut content = Vec::new();
                File::open(dir.join(&rel))
                    .and_then(|mut f| f.read_to_end(&mut content))
                    .map_err(|e| e.to_string())?;
                h.feed(&content);
            }
            Ok(format!("digest {:016x}", h.0))
        }
        ["read", name] => std::fs::read_to_string(dir.join(name)).map_err(|e| e.to_string()),
        ["try", op, path] => {
            let r = match *op {
                "open" => File::open(path).map(drop),
                "create" => File::create(path).map(drop),
                "mkdir" => std::fs::create_dir(path),
                "symlink" => symlink_in_first_preopen(path),
                _ => return Err(format!("unknown op {op}")),
            };
            Ok(match r {
                Ok(()) => "ok".into(),
                Err(e) => format!("err {}", e.raw_os_error().unwrap_or(-1)),
            })
        }
        ["fill", name, bytes] => {
            let total = num(bytes)?;
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(name))
                .map_err(|e| e.to_string())?;
            let block = vec![7u8; 64 * 1024];
            let mut written = 0u64;
            while written < total {
                let n = block.len().min((total - written) as usize);
                if let Err(e) = f.write_all(&block[..n]) {
                    return Ok(format!(
                        "err {} after {written}",
                        e.raw_os_error().unwrap_or(-1)
                    ));
                }
                written += n as u64;
            }
            Ok("ok".into())
        }
        ["stamp", name, bytes, seed] => {
            let (bytes, seed) = (num(bytes)?, num(seed)?);
            let r = (|| -> std::io::Result<()> {
                let mut f = File::create(dir.join(name))?;
                f.write_all(format!("stamp {seed} {bytes}\n").as_bytes())?;
                let mut done = 0u64;
                while done < bytes {
                    let n = (bytes - done).min(BLOCK_BYTES);
                    f.write_all(&pseudo_random(n, seed ^ done))?;
                    done += n;
                }
                Ok(())
            })();
            Ok(errno_or_ok(r))
        }
        ["check", name] => {
            let content = match std::fs::read(dir.join(name)) {
                Ok(c) => c,
                Err(e) => return Ok(errno_or_ok(Err(e))),
            };
            Ok(check_stamp(&content))
        }
        ["cat", path] => Ok(match std::fs::read(path) {
            Ok(c) => String::from_utf8_lossy(&c).into_owned(),
            Err(e) => errno_or_ok(Err(e)),
        }),
        ["ls", path] => Ok(match std::fs::read_dir(path) {
            Ok(entries) => {
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                names.join("\n")
            }
            Err(e) => errno_or_ok(Err(e)),
        }),
        ["rename", from, to] => Ok(errno_or_ok(std::fs::rename(dir.join(from), dir.join(to)))),
        ["hold", name] => {
            let r = OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(name));
            Ok(match r {
                Ok(f) => {
                    *held() = Some(f);
                    "ok".into()
                }
                Err(e) => errno_or_ok(Err(e)),
            })
        }
        ["add", rest @ ..] => {
            let mut h = held();
            let f = h.as_mut().ok_or("nothing held")?;
            Ok(errno_or_ok(f.write_all(format!("{}\n", rest.join(" ")).as_bytes())))
        }
        ["sync"] => {
            let mut h = held();
            let f = h.as_mut().ok_or("nothing held")?;
            Ok(errno_or_ok(f.sync_all()))
        }
        ["release"] => {
            held().take().ok_or("nothing held")?;
            Ok("ok".into())
        }
        ["bench", bytes, files] => bench(dir, num(bytes)?, num(files)?).map_err(|e| e.to_string()),
        _ => Err(format!("unknown request {text:?}")),
    }
}

/// `ok`, or `err <WASI errno>`.
fn errno_or_ok(r: std::io::Result<()>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => format!("err {}", e.raw_os_error().unwrap_or(-1)),
    }
}

/// The file `hold` keeps open.
fn held() -> std::sync::MutexGuard<'static, Option<File>> {
    static HELD: std::sync::Mutex<Option<File>> = std::sync::Mutex::new(None);
    HELD.lock().unwrap_or_else(|p| p.into_inner())
}

/// `whole <seed>` if `content` is a stamped file exactly as its header
/// says, else `torn`.
fn check_stamp(content: &[u8]) -> String {
    let Some(nl) = content.iter().position(|&b| b == b'\n') else {
        return "torn".into();
    };
    let header = String::from_utf8_lossy(&content[..nl]).into_owned();
    let words: Vec<&str> = header.split(' ').collect();
    let (seed, bytes) = match words.as_slice() {
        ["stamp", seed, bytes] => match (seed.parse::<u64>(), bytes.parse::<u64>()) {
            (Ok(s), Ok(b)) => (s, b),
            _ => return "torn".into(),
        },
        _ => return "torn".into(),
    };
    let body = &content[nl + 1..];
    if body.len() as u64 != bytes {
        return "torn".into();
    }
    let mut done = 0u64;
    while done < bytes {
        let n = (bytes - done).min(BLOCK_BYTES);
        if body[done as usize..(done + n) as usize] != pseudo_random(n, seed ^ done)[..] {
            return "torn".into();
        }
        done += n;
    }
    format!("whole {seed}")
}

#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    /// WASI `path_symlink(old_path, fd, new_path)`.
    fn path_symlink(
        old_ptr: *const u8,
        old_len: usize,
        fd: u32,
        new_ptr: *const u8,
        new_len: usize,
    ) -> u16;
}

/// Create `link` -> `target` in the first preopened directory (fd 3: the
/// volume), through the raw WASI call (std's is unstable).
fn symlink_in_first_preopen(target: &str) -> std::io::Result<()> {
    let link = b"link";
    // SAFETY: both pointers are valid for their lengths; the host copies
    // the bytes and keeps no reference.
    let errno =
        unsafe { path_symlink(target.as_ptr(), target.len(), 3, link.as_ptr(), link.len()) };
    if errno == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(i32::from(errno)))
    }
}

/// See `bench` in the module docs.
fn bench(dir: &Path, bytes: u64, files: u64) -> std::io::Result<String> {
    use std::time::Instant;
    let path = dir.join("bench.bin");
    let block = pseudo_random(BLOCK_BYTES, 1);
    let t = Instant::now();
    let mut f = File::create(&path)?;
    let mut done = 0u64;
    while done < bytes {
        let n = (bytes - done).min(BLOCK_BYTES) as usize;
        f.write_all(&block[..n])?;
        done += n as u64;
    }
    drop(f);
    let write_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut f = File::open(&path)?;
    let mut buf = vec![0u8; BLOCK_BYTES as usize];
    let mut read = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        read += n as u64;
    }
    let read_s = t.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    let small = dir.join("bench-small");
    std::fs::create_dir(&small)?;
    let t = Instant::now();
    for i in 0..files {
        std::fs::write(small.join(i.to_string()), b"a small file of a few bytes")?;
    }
    let create_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut total = 0u64;
    for i in 0..files {
        total += std::fs::metadata(small.join(i.to_string()))?.len();
    }
    let stat_s = t.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&small)?;
    assert_eq!(read, bytes);
    assert!(total > 0 || files == 0);
    let mb = bytes as f64 / 1e6;
    Ok(format!(
        "bench {:.1} {:.1} {:.0} {:.0}",
        mb / write_s,
        mb / read_s,
        files as f64 / create_s,
        files as f64 / stat_s
    ))
}

/// Relative paths of every regular file under `at`.
fn walk(root: &Path, at: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(at)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(root, &path, out)?;
        } else {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// `n` bytes of xorshift64 output from `seed`.
fn pseudo_random(n: u64, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// 64-bit FNV-1a.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn feed(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}
