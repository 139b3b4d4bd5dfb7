//! Which pages of a linear memory were written since the last look.
//!
//! The mechanism: the kernel's *asynchronous* userfaultfd write protection
//! (`UFFD_FEATURE_WP_ASYNC`, Linux 6.7) read and re-armed by one
//! `PAGEMAP_SCAN` ioctl on `/proc/self/pagemap` (`PM_SCAN_WP_MATCHING`).
//! A range is registered once; every page starts write-protected. The first
//! write to a protected page takes one minor fault that the kernel resolves
//! by itself — it clears the page's protection bit and goes on, with no
//! handler thread and no signal — so the guest runs at full speed after it.
//! A look walks the page tables of the range, returns the pages whose bit
//! was cleared and protects them again, in the same walk.
//!
//! Why this and not the alternatives the issue names:
//! - a kept copy and a compare reads all of memory twice at every look
//!   (several ms at 64 MiB); a look here costs about 10 µs for a clean
//!   64 MiB range and grows with the pages written, not with memory;
//! - `mprotect` plus a SIGSEGV handler would have to live beside wasmtime's
//!   own handler, which owns faults in linear memory (bounds checks by
//!   guard pages);
//! - soft-dirty bits (`/proc/self/clear_refs`) can only be cleared for the
//!   whole process at once, so one process's look would erase another's.
//!
//! Registration is per tracker (one userfaultfd each): closing it (drop)
//! unregisters its ranges, so a tracker never outlives its meaning for a
//! memory slot that the engine's pool hands to another process. A range
//! registered by another tracker is refused by the kernel (`EBUSY`); the
//! caller then copies memory in full, as it does on kernels without the
//! feature ([`WriteTracker::supported`]). Setting `SHOAL_WRITE_TRACKING=off`
//! turns tracking off (benchmarks compare both).
//!
//! What the kernel cannot see: content that changes without a write through
//! the page tables — `madvise(MADV_DONTNEED)` on the range or a new mapping
//! over it. Wasmtime does both only to a memory slot whose instance is gone;
//! a live instance's memory only grows (new pages are reported by the
//! caller as written: see [`crate::memory_copy`]).

use std::fs::File;
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

/// Back `bytes` with pages before they are written, in one call instead of
/// a page fault per page (`MADV_POPULATE_WRITE`, Linux 5.14): about half
/// the cost here for memory the process has not touched. The content is
/// unchanged; on a kernel without it nothing happens, and the writes fault
/// as usual.
#[allow(unsafe_code)]
pub fn populate_for_write(bytes: &mut [u8]) {
    const MADV_POPULATE_WRITE: libc::c_int = 23;
    let start = bytes.as_mut_ptr() as usize;
    let aligned = start & !(HOST_PAGE_BYTES - 1);
    let len = bytes.len() + (start - aligned);
    if bytes.is_empty() {
        return;
    }
    // SAFETY: the range covers `bytes` (widened down to its first page,
    // which belongs to the same mapping), memory we hold exclusively;
    // MADV_POPULATE_WRITE only faults pages in as a write would, and
    // leaves every byte as it was.
    let _ = unsafe { libc::madvise(aligned as *mut libc::c_void, len, MADV_POPULATE_WRITE) };
}

/// Bytes of one host page, the tracker's unit.
pub const HOST_PAGE_BYTES: usize = 4096;

// From <linux/userfaultfd.h> and <linux/fs.h> (Linux 6.7+); Debian's libc
// headers here are older, so they are spelled out.
const UFFD_API: u64 = 0xAA;
const UFFD_USER_MODE_ONLY: libc::c_int = 1;
const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
/// `_IOWR(0xAA, 0x3F, struct uffdio_api)` (24 bytes).
const UFFDIO_API: libc::c_ulong = 0xC018_AA3F;
/// `_IOWR(0xAA, 0x00, struct uffdio_register)` (32 bytes).
const UFFDIO_REGISTER: libc::c_ulong = 0xC020_AA00;
/// `_IOWR('f', 16, struct pm_scan_arg)` (96 bytes).
const PAGEMAP_SCAN: libc::c_ulong = 0xC060_6610;
const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;
const PAGE_IS_WRITTEN: u64 = 1 << 1;
/// Regions one `PAGEMAP_SCAN` call may return; a longer answer is read in
/// several calls (the kernel says where it stopped).
const REGIONS_PER_SCAN: usize = 512;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

#[repr(C)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// Why a range cannot be tracked (the caller copies in full instead).
#[derive(Debug, thiserror::Error)]
pub enum TrackError {
    /// This kernel or configuration lacks asynchronous write protection.
    #[error("write tracking is not available here: {0}")]
    Unsupported(&'static str),
    /// The range is not page-aligned.
    #[error("range {start:#x}+{len:#x} is not aligned to {HOST_PAGE_BYTES}-byte pages")]
    Unaligned {
        /// Its start address.
        start: usize,
        /// Its length.
        len: usize,
    },
    /// A system call failed.
    #[error("{op} failed: {source}")]
    Os {
        /// Which call.
        op: &'static str,
        /// The error the kernel gave.
        source: std::io::Error,
    },
}

fn os(op: &'static str) -> TrackError {
    TrackError::Os {
        op,
        source: std::io::Error::last_os_error(),
    }
}

/// `/proc/self/pagemap`, opened once per process (the ioctl is safe from
/// any thread on one descriptor).
fn pagemap() -> Option<&'static File> {
    static PAGEMAP: OnceLock<Option<File>> = OnceLock::new();
    PAGEMAP
        .get_or_init(|| File::open("/proc/self/pagemap").ok())
        .as_ref()
}

/// A userfaultfd with asynchronous write protection enabled.
#[allow(unsafe_code)]
fn open_uffd() -> Result<OwnedFd, TrackError> {
    let flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
    // SAFETY: userfaultfd(2) takes only flags and returns a new descriptor
    // or -1; no memory is passed.
    let mut fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
    if fd < 0 {
        // Without CAP_SYS_PTRACE (vm.unprivileged_userfaultfd = 0) only
        // user-mode faults may be handled; asynchronous protection is
        // resolved inside the kernel either way.
        // SAFETY: as above.
        fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags | UFFD_USER_MODE_ONLY) };
    }
    if fd < 0 {
        return Err(os("userfaultfd"));
    }
    let raw = libc::c_int::try_from(fd).map_err(|_| TrackError::Unsupported("bad descriptor"))?;
    // SAFETY: `raw` is a descriptor the kernel just gave us and nothing
    // else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut api = UffdioApi {
        api: UFFD_API,
        features: UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_API reads and writes one `struct uffdio_api`, which
    // `api` is (repr(C), same layout), alive for the call.
    let r = unsafe { libc::ioctl(owned.as_raw_fd(), UFFDIO_API, &mut api as *mut UffdioApi) };
    if r != 0 {
        return Err(TrackError::Unsupported(
            "the kernel lacks asynchronous userfaultfd write protection (Linux 6.7+)",
        ));
    }
    Ok(owned)
}

/// Tracks the writes to one page-aligned range of this process's memory.
#[derive(Debug)]
pub struct WriteTracker {
    uffd: OwnedFd,
    start: usize,
    len: usize,
}

impl WriteTracker {
    /// Whether trackers can be made here (probed once: the kernel feature,
    /// `/proc/self/pagemap`, and `SHOAL_WRITE_TRACKING` not `off`).
    pub fn supported() -> bool {
        static SUPPORTED: OnceLock<bool> = OnceLock::new();
        *SUPPORTED.get_or_init(|| {
            let off = std::env::var("SHOAL_WRITE_TRACKING").is_ok_and(|v| v == "off");
            !off && pagemap().is_some() && open_uffd().is_ok()
        })
    }

    /// Start tracking `[start, start + len)`, every page protected: the
    /// next [`WriteTracker::take_written`] reports what is written from now
    /// on. The range must be mapped (a live linear memory).
    pub fn new(start: *const u8, len: usize) -> Result<WriteTracker, TrackError> {
        if !WriteTracker::supported() {
            return Err(TrackError::Unsupported("probed unavailable or turned off"));
        }
        let start = start as usize;
        let mut tracker = WriteTracker {
            uffd: open_uffd()?,
            start,
            len: 0,
        };
        tracker.extend(len)?;
        Ok(tracker)
    }

    /// The start address of the tracked range.
    pub fn start(&self) -> usize {
        self.start
    }

    /// Give the tracked range's pages back to the kernel, then stop
    /// tracking. For a memory that is being torn down: closing a tracker
    /// clears the protection bit of every present page (5 ms for 64 MiB of
    /// 4 KiB pages here), while dropping the pages first leaves it nothing
    /// to walk, and the engine's own reset of the slot then finds it empty.
    ///
    /// # Safety
    /// The range's content must never be read again: the instance that
    /// owns it is dead and its slot is about to be reset.
    #[allow(unsafe_code)]
    pub unsafe fn discard(self) {
        if self.len > 0 {
            // SAFETY: the caller promises the range is dead memory; it is
            // a mapping of ours (tracked since `new`), and MADV_DONTNEED
            // only drops its pages (they read as zero or as the mapped
            // file afterwards), never unmaps it.
            unsafe {
                libc::madvise(
                    self.start as *mut libc::c_void,
                    self.len,
                    libc::MADV_DONTNEED,
                )
            };
        }
        drop(self);
    }

    /// The tracked length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is tracked yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Track up to `len` bytes from the start (the memory grew): the new
    /// part is registered and protected. A shorter `len` is ignored.
    #[allow(unsafe_code)]
    pub fn extend(&mut self, len: usize) -> Result<(), TrackError> {
        if len <= self.len {
            return Ok(());
        }
        let from = self.start + self.len;
        let add = len - self.len;
        if !from.is_multiple_of(HOST_PAGE_BYTES) || !add.is_multiple_of(HOST_PAGE_BYTES) {
            return Err(TrackError::Unaligned {
                start: from,
                len: add,
            });
        }
        let mut reg = UffdioRegister {
            start: from as u64,
            len: add as u64,
            mode: UFFDIO_REGISTER_MODE_WP,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER reads and writes one `struct
        // uffdio_register`, which `reg` is (repr(C)), alive for the call.
        // Registering write protection changes no content of the range.
        let r = unsafe {
            libc::ioctl(
                self.uffd.as_raw_fd(),
                UFFDIO_REGISTER,
                &mut reg as *mut UffdioRegister,
            )
        };
        if r != 0 {
            return Err(os("UFFDIO_REGISTER"));
        }
        // Protect the new part (what it holds now is the caller's to copy).
        self.scan(from, from + add, &mut |_| {})?;
        self.len = len;
        Ok(())
    }

    /// The byte ranges (offsets from the start, sorted, merged) written
    /// since the last call or since the range was added, protected again
    /// in the same walk.
    pub fn take_written(&mut self) -> Result<Vec<Range<usize>>, TrackError> {
        let mut out: Vec<Range<usize>> = Vec::new();
        let base = self.start;
        self.scan(base, base + self.len, &mut |r: Range<usize>| {
            let r = (r.start - base)..(r.end - base);
            match out.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => out.push(r),
            }
        })?;
        Ok(out)
    }

    /// Walk `[from, to)`: hand every written region to `each` and protect
    /// it again.
    #[allow(unsafe_code)]
    fn scan(
        &self,
        from: usize,
        to: usize,
        each: &mut dyn FnMut(Range<usize>),
    ) -> Result<(), TrackError> {
        let pagemap = pagemap().ok_or(TrackError::Unsupported("no /proc/self/pagemap"))?;
        let mut regions = [PageRegion::default(); REGIONS_PER_SCAN];
        let mut at = from;
        while at < to {
            let mut arg = PmScanArg {
                size: std::mem::size_of::<PmScanArg>() as u64,
                flags: PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
                start: at as u64,
                end: to as u64,
                walk_end: 0,
                vec: regions.as_mut_ptr() as u64,
                vec_len: REGIONS_PER_SCAN as u64,
                max_pages: 0,
                category_inverted: 0,
                category_mask: PAGE_IS_WRITTEN,
                category_anyof_mask: 0,
                return_mask: PAGE_IS_WRITTEN,
            };
            // SAFETY: PAGEMAP_SCAN reads one `struct pm_scan_arg` (`arg`,
            // repr(C), its `size` set) and writes at most `vec_len` `struct
            // page_region`s to `vec`, which points at `regions`, that many
            // long and alive for the call. It changes no memory content:
            // it only sets write-protection bits of `[at, to)`, which
            // `PM_SCAN_CHECK_WPASYNC` makes it refuse unless our
            // registration made them asynchronous.
            let n = unsafe {
                libc::ioctl(
                    pagemap.as_raw_fd(),
                    PAGEMAP_SCAN,
                    &mut arg as *mut PmScanArg,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(TrackError::Os {
                    op: "PAGEMAP_SCAN",
                    source: e,
                });
            }
            let n = usize::try_from(n).unwrap_or(0).min(REGIONS_PER_SCAN);
            for r in &regions[..n] {
                let (s, e) = (r.start as usize, r.end as usize);
                debug_assert!(from <= s && s < e && e <= to, "region outside the walk");
                each(s.max(from)..e.min(to));
            }
            let walk_end = arg.walk_end as usize;
            if walk_end <= at {
                // No progress would loop forever: the kernel always moves on.
                return Err(TrackError::Unsupported("PAGEMAP_SCAN made no progress"));
            }
            at = walk_end;
        }
        Ok(())
    }
}

/// An anonymous mapping for tests, standing in for a linear memory.
#[cfg(test)]
pub(crate) struct Mapping {
    pub(crate) ptr: *mut u8,
    pub(crate) len: usize,
}

#[cfg(test)]
impl Mapping {
    #[allow(unsafe_code)]
    pub(crate) fn new(len: usize) -> Mapping {
        // SAFETY: a fresh private anonymous mapping; no address given.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED);
        Mapping {
            ptr: ptr.cast(),
            len,
        }
    }

    #[allow(unsafe_code)]
    pub(crate) fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is `len` bytes, readable and writable, and
        // lives as long as `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

#[cfg(test)]
impl Drop for Mapping {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn reports_exactly_the_pages_written_since_the_last_look() {
        if !WriteTracker::supported() {
            eprintln!("skipped: no asynchronous write protection on this kernel");
            return;
        }
        let pages = 1024;
        let mut m = Mapping::new(pages * HOST_PAGE_BYTES);
        // Some pages populated before tracking starts, others never.
        for p in (0..pages).step_by(3) {
            m.bytes()[p * HOST_PAGE_BYTES] = 1;
        }
        let mut t = WriteTracker::new(m.ptr, m.len).unwrap();
        assert!(
            t.take_written().unwrap().is_empty(),
            "clean right after start"
        );
        // Reproducible by seed: rounds of random writes.
        let seed = 0x5eed_d1f7;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for round in 0..20 {
            let mut expect = vec![false; pages];
            for _ in 0..rng.gen_range(0..64) {
                let p = rng.gen_range(0..pages);
                let at = p * HOST_PAGE_BYTES + rng.gen_range(0..HOST_PAGE_BYTES);
                m.bytes()[at] = m.bytes()[at].wrapping_add(1);
                expect[p] = true;
            }
            let mut got = vec![false; pages];
            for r in t.take_written().unwrap() {
                assert!(r.start.is_multiple_of(HOST_PAGE_BYTES) && r.end <= m.len);
                let pages = r.start / HOST_PAGE_BYTES..r.end / HOST_PAGE_BYTES;
                got[pages].fill(true);
            }
            assert_eq!(got, expect, "seed {seed:#x}, round {round}");
        }
    }

    #[test]
    fn a_range_added_later_starts_protected() {
        if !WriteTracker::supported() {
            return;
        }
        let mut m = Mapping::new(64 * HOST_PAGE_BYTES);
        let mut t = WriteTracker::new(m.ptr, 16 * HOST_PAGE_BYTES).unwrap();
        m.bytes()[40 * HOST_PAGE_BYTES] = 7; // not tracked yet
        t.extend(64 * HOST_PAGE_BYTES).unwrap();
        assert!(t.take_written().unwrap().is_empty());
        m.bytes()[40 * HOST_PAGE_BYTES + 1] = 7;
        m.bytes()[3] = 1;
        assert_eq!(
            t.take_written().unwrap(),
            vec![
                0..HOST_PAGE_BYTES,
                40 * HOST_PAGE_BYTES..41 * HOST_PAGE_BYTES
            ]
        );
    }

    #[test]
    fn a_range_another_tracker_holds_is_refused() {
        if !WriteTracker::supported() {
            return;
        }
        let m = Mapping::new(8 * HOST_PAGE_BYTES);
        let _first = WriteTracker::new(m.ptr, m.len).unwrap();
        assert!(WriteTracker::new(m.ptr, m.len).is_err());
        drop(_first);
        // Closing the first releases the range.
        WriteTracker::new(m.ptr, m.len).unwrap();
    }
}
