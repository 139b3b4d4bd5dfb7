//! Tests of the snapshot format: round trips, incremental splits, every
//! refusal of a bad file, registry storage with dedup, and (ignored) a
//! benchmark of capture-side costs.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use shoal_registry::{Registry, Sha256};

use super::pages::{is_zero, split_pages_sized};
use super::*;

/// Deterministic pseudo-random bytes (xorshift64*), never all zero.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A memory of `len` bytes where pages `nonzero` (of `page` bytes) hold
/// noise and the rest is zero.
fn memory_with(len: usize, page: usize, nonzero: &[usize]) -> Vec<u8> {
    let mut mem = vec![0u8; len];
    for &i in nonzero {
        let start = i * page;
        let end = (start + page).min(len);
        let n = noise(i as u64 + 7, end - start);
        mem[start..end].copy_from_slice(&n);
    }
    mem
}

fn module() -> Sha256 {
    Sha256::of(b"the module")
}

/// A manifest for `memory` split at `page` bytes, diffed against `parent`.
fn manifest_for(
    memory: &[u8],
    page: usize,
    parent: Option<(&Manifest, &[u8])>,
) -> (Manifest, Vec<(Sha256, std::ops::Range<usize>)>) {
    let SplitPages {
        page_bytes,
        pages,
        new_pages,
    } = split_pages_sized(memory, parent, page);
    assert_eq!(page_bytes as usize, page);
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        module: module(),
        pid: 42,
        parent: parent.map(|(m, _)| m.id()),
        created_unix_ms: 1_700_000_000_000,
        memory_bytes: memory.len() as u64,
        page_bytes: page as u32,
        pages,
        globals: vec![
            GlobalValue {
                export: "__stack_pointer".into(),
                value: GlobalVal::I32(65_000),
            },
            GlobalValue {
                export: "g64".into(),
                value: GlobalVal::I64(-5),
            },
            GlobalValue {
                export: "gf32".into(),
                value: GlobalVal::F32(0x7fc0_0001), // NaN with payload
            },
            GlobalValue {
                export: "gf64".into(),
                value: GlobalVal::F64((-0.0f64).to_bits()),
            },
        ],
        state: serde_json::json!({"mailbox": [[1, 2, 3]], "timer_ms": 250}),
        blobs: Vec::new(),
    };
    (manifest, new_pages)
}

fn registry() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    (dir, reg)
}

/// Rewrite the trailing checksum after a deliberate edit.
fn fix_checksum(file: &mut [u8]) {
    let n = file.len() - 32;
    let sum = Sha256::of(&file[..n]);
    file[n..].copy_from_slice(&sum.0);
}

/// Rewrite both copies of the total length and the checksum.
fn fix_length_and_checksum(file: &mut [u8]) {
    let total = file.len() as u64;
    file[16..24].copy_from_slice(&total.to_le_bytes());
    file[24..32].copy_from_slice(&(!total).to_le_bytes());
    fix_checksum(file);
}

/// Replace the header of a valid file by `header` (any bytes).
fn with_header(file: &[u8], header: &[u8]) -> Vec<u8> {
    let old_len = u32::from_le_bytes(file[32..36].try_into().unwrap()) as usize;
    let mut out = file[..32].to_vec();
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(&file[36 + old_len..]);
    fix_length_and_checksum(&mut out);
    out
}

fn map_fetch<'a>(
    pages: &'a HashMap<Sha256, Vec<u8>>,
) -> impl FnMut(&Sha256) -> Result<&'a [u8], SnapshotFormatError> + 'a {
    move |h| {
        pages
            .get(h)
            .map(Vec::as_slice)
            .ok_or(SnapshotFormatError::PageMissing { hash: *h })
    }
}

/// Sizes with a zero first page, non-zero pages, a gap and odd tails.
fn shapes(page: usize) -> Vec<(usize, Vec<usize>)> {
    vec![
        (0, vec![]),
        (1, vec![0]),
        (page, vec![]),
        (page, vec![0]),
        (5 * page, vec![1, 3]),
        (5 * page + 1234, vec![0, 2, 5]),
        (3 * page + 1, vec![3]),
        (7 * page - 1, vec![6]),
    ]
}

#[test]
fn registry_and_file_round_trips() {
    let (_dir, reg) = registry();
    for page in [PAGE_BYTES, 65536] {
        for (len, nonzero) in shapes(page) {
            let memory = memory_with(len, page, &nonzero);
            let (m, new_pages) = manifest_for(&memory, page, None);
            let listed: Vec<usize> = m.pages.iter().map(|p| p.index as usize).collect();
            assert_eq!(listed, nonzero, "len {len}");
            assert_eq!(new_pages.len(), nonzero.len());

            // Registry.
            let id = store_snapshot(&reg, &m, &memory, &new_pages).unwrap();
            assert_eq!(id, m.id());
            let loaded = load_manifest(&reg, &id).unwrap();
            assert_eq!(*loaded, m);
            let restored = assemble_memory(&loaded, fetch_from_registry(&reg)).unwrap();
            assert!(restored == memory, "registry round trip, len {len}");

            // Fetched, then written into a buffer of their own, and into
            // a destination dirty below `zero_from` and zero from there
            // on (a fresh instance's memory, grown), at every cut.
            let fetched = fetch_pages_from_registry(&loaded, &reg).unwrap();
            assert_eq!(fetched.memory_bytes(), len);
            assert!(fetched.to_vec() == memory, "to_vec, len {len}");
            for zero_from in (0..=len).step_by(page / 2).chain([len]) {
                let mut dest = vec![0xAAu8; len];
                dest[zero_from..].fill(0);
                fetched
                    .write_into(&mut dest, std::slice::from_ref(&(0..zero_from)))
                    .unwrap();
                assert!(
                    dest == memory,
                    "write_into, len {len}, zero from {zero_from}"
                );
            }
            // Dirty only in scattered ranges (a fresh instance's data
            // segments: unaligned, some inside one page, some across
            // pages, listed or not), zero elsewhere.
            for shift in [0, 1, page / 2, page - 1] {
                let dirty: Vec<std::ops::Range<usize>> = (0..len)
                    .step_by(page * 3 / 2 + 7)
                    .map(|s| (s + shift).min(len)..(s + shift + page / 3 + 1).min(len))
                    .filter(|r| !r.is_empty())
                    .collect();
                let mut dest = vec![0u8; len];
                for r in &dirty {
                    dest[r.clone()].fill(0x5C);
                }
                fetched.write_into(&mut dest, &dirty).unwrap();
                assert!(dest == memory, "write_into, len {len}, dirty {dirty:?}");
            }
            let mut short = vec![0u8; len + 1];
            assert!(matches!(
                fetched.write_into(&mut short, &[]),
                Err(SnapshotFormatError::MemorySizeMismatch { .. })
            ));

            // File, from the registry and straight from memory.
            let file = export_file(&reg, &id).unwrap();
            assert_eq!(file, encode_file_from_memory(&m, &memory).unwrap());
            let (decoded, pages) = decode_file(&file, Some(&module())).unwrap();
            assert_eq!(decoded, m);
            let restored = assemble_memory(&decoded, map_fetch(&pages)).unwrap();
            assert!(restored == memory, "file round trip, len {len}");

            // Into a dirty destination: unlisted pages must be zeroed.
            let mut dest = vec![0xAAu8; len];
            assemble_into(&decoded, &mut dest, map_fetch(&pages)).unwrap();
            assert!(dest == memory, "assemble_into, len {len}");

            // Import into another registry gives the same id.
            let (_dir2, reg2) = registry();
            assert_eq!(import_file(&reg2, &file).unwrap(), id);
            assert_eq!(export_file(&reg2, &id).unwrap(), file);
        }
    }
}

#[test]
fn globals_and_state_survive_exactly() {
    let memory = memory_with(2 * PAGE_BYTES, PAGE_BYTES, &[1]);
    let (m, _) = manifest_for(&memory, PAGE_BYTES, None);
    let back = Manifest::decode(&m.encode()).unwrap();
    assert_eq!(back, m);
    assert_eq!(back.id(), m.id());
    assert_eq!(back.globals[2].value, GlobalVal::F32(0x7fc0_0001));
    assert_eq!(back.globals[3].value, GlobalVal::F64(0x8000_0000_0000_0000));
}

#[test]
fn incremental_split_stores_only_changed_pages() {
    let page = PAGE_BYTES;
    let parent_mem = memory_with(8 * page + 100, page, &[0, 1, 2, 5, 8]);
    let (parent, parent_new) = manifest_for(&parent_mem, page, None);
    assert_eq!(parent_new.len(), 5);

    // One byte changed in page 2.
    let mut child_mem = parent_mem.clone();
    child_mem[2 * page + 17] ^= 0xff;
    let (child, new_pages) = manifest_for(&child_mem, page, Some((&parent, &parent_mem)));
    assert_eq!(new_pages.len(), 1);
    assert_eq!(new_pages[0].1, 2 * page..3 * page);
    assert_eq!(new_pages[0].0, Sha256::of(&child_mem[2 * page..3 * page]));
    assert_eq!(child.parent, Some(parent.id()));
    for (a, b) in parent.pages.iter().zip(&child.pages) {
        assert_eq!(a.index, b.index);
        assert_eq!(a.hash == b.hash, a.index != 2);
    }
    // Same result without the memcmp fast path (parent manifest only).
    let no_fast = split_pages_sized(&child_mem, Some((&parent, &[])), page);
    assert_eq!(no_fast.pages, child.pages);
    assert_eq!(no_fast.new_pages, new_pages);
    let no_parent = split_pages_sized(&child_mem, None, page);
    assert_eq!(no_parent.pages, child.pages);
    assert_eq!(no_parent.new_pages.len(), 5);

    // A page zeroed, a new page written, memory grown, a page moved.
    let mut grown = child_mem.clone();
    grown.resize(12 * page, 0);
    grown[page..2 * page].fill(0);
    grown[10 * page] = 1;
    let moved = parent_mem[5 * page..6 * page].to_vec();
    grown[11 * page..12 * page].copy_from_slice(&moved);
    let (m, new_pages) = manifest_for(&grown, page, Some((&parent, &parent_mem)));
    let indices: Vec<u32> = m.pages.iter().map(|p| p.index).collect();
    assert_eq!(indices, [0, 2, 5, 8, 10, 11]);
    // Page 2 (changed), 8 (now full length), 10 (new); 11 is parent's page 5.
    let new_idx: Vec<usize> = new_pages.iter().map(|(_, r)| r.start / page).collect();
    assert_eq!(new_idx, [2, 8, 10]);

    // Stored over the parent: exactly the new pages and one manifest appear.
    let (_dir, reg) = registry();
    store_snapshot(&reg, &parent, &parent_mem, &parent_new).unwrap();
    let before = reg.list_blobs().unwrap().len();
    let id = store_snapshot(&reg, &m, &grown, &new_pages).unwrap();
    assert_eq!(
        reg.list_blobs().unwrap().len(),
        before + new_pages.len() + 1
    );
    let restored = assemble_memory(
        &load_manifest(&reg, &id).unwrap(),
        fetch_from_registry(&reg),
    );
    assert!(restored.unwrap() == grown);
}

/// A split from written ranges lists exactly what a full split of the
/// same memory lists, over many seeded rounds of writes, zeroings and
/// growth, and a snapshot stored over the parent restores to the memory.
#[test]
fn split_from_written_ranges_equals_a_full_split() {
    let page = PAGE_BYTES;
    let seed = 0x05b1_17ed;
    let mut x = seed;
    let mut next = |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    let (_dir, reg) = registry();
    let mut mem = memory_with(32 * page, page, &[0, 3, 4, 9, 31]);
    let (mut parent, new) = manifest_for(&mem, page, None);
    store_snapshot(&reg, &parent, &mem, &new).unwrap();
    for round in 0..30 {
        let mut written = Vec::new();
        for _ in 0..next(6) {
            let p = next(mem.len() / page);
            match next(3) {
                0 => mem[p * page..(p + 1) * page].fill(0),
                _ => mem[p * page + next(page)] = next(255) as u8 + 1,
            }
            written.push(p * page..(p + 1) * page);
        }
        if next(5) == 0 {
            mem.resize(mem.len() + 4 * page, 0);
            let at = mem.len() - 1;
            mem[at] = 3;
        }
        written.sort_by_key(|r| r.start);
        let from_written = split_pages_written(
            &mem,
            &parent.pages,
            parent.page_bytes,
            parent.memory_bytes,
            &written,
        )
        .unwrap();
        let full = split_pages_sized(&mem, None, page);
        assert_eq!(
            from_written.pages, full.pages,
            "seed {seed:#x} round {round}"
        );
        let mut child = parent.clone();
        child.parent = Some(parent.id());
        child.memory_bytes = mem.len() as u64;
        child.pages = from_written.pages.clone();
        let id = store_snapshot_over(&reg, &child, &mem, &from_written.new_pages, &parent.pages)
            .unwrap();
        let back = assemble_memory(
            &load_manifest(&reg, &id).unwrap(),
            fetch_from_registry(&reg),
        );
        assert!(back.unwrap() == mem, "seed {seed:#x} round {round}");
        parent = child;
    }
    // Another page size: the caller must split in full.
    assert!(split_pages_written(&mem, &parent.pages, 8192, parent.memory_bytes, &[]).is_none());
}

#[test]
fn parent_with_other_page_size_is_ignored() {
    let mem = memory_with(4 * PAGE_BYTES, PAGE_BYTES, &[0, 3]);
    let (parent, _) = manifest_for(&mem, 16384, None);
    let split = split_pages(&mem, Some((&parent, &mem)));
    assert_eq!(split.page_bytes as usize, PAGE_BYTES);
    assert_eq!(split.pages.len(), 2);
    assert_eq!(split.new_pages.len(), 2);
    let same = split_pages(&mem, Some((&manifest_for(&mem, PAGE_BYTES, None).0, &mem)));
    assert!(same.new_pages.is_empty());
}

#[test]
fn a_parallel_split_equals_a_serial_one() {
    let page = PAGE_BYTES;
    // Zero pages, distinct pages, and one page repeated across the parts
    // (stored once, at its first place).
    let mut mem = memory_with(64 * page, page, &[0, 1, 5, 31, 32, 33, 63]);
    let copy = mem[page..2 * page].to_vec();
    mem[40 * page..41 * page].copy_from_slice(&copy);
    mem[62 * page..63 * page].copy_from_slice(&copy);
    let serial = split_pages(&mem, None);
    for threads in [0, 1, 2, 3, 7, 64, 1000] {
        assert_eq!(
            split_pages_parallel(&mem, threads),
            serial,
            "{threads} threads"
        );
    }
    assert_eq!(split_pages_parallel(&[], 2), split_pages(&[], None));
}

#[test]
fn repeated_pages_are_stored_once() {
    let page = 4096;
    let mut mem = memory_with(6 * page, page, &[1]);
    let copy = mem[page..2 * page].to_vec();
    mem[3 * page..4 * page].copy_from_slice(&copy);
    mem[5 * page..6 * page].copy_from_slice(&copy);
    let (m, new_pages) = manifest_for(&mem, page, None);
    assert_eq!(m.pages.len(), 3);
    assert_eq!(new_pages.len(), 1);
    let file = encode_file_from_memory(&m, &mem).unwrap();
    let header_len = m.encode().len();
    assert_eq!(file.len(), 36 + header_len + 8 + page + 32);
    let (decoded, pages) = decode_file(&file, None).unwrap();
    assert_eq!(pages.len(), 1);
    let mut dest = vec![7u8; mem.len()];
    let mut calls = 0;
    assemble_into(&decoded, &mut dest, |h| {
        calls += 1;
        map_fetch(&pages)(h)
    })
    .unwrap();
    assert_eq!(calls, 1, "a repeated page is fetched once");
    assert!(dest == mem);
}

#[test]
fn page_size_grows_with_memory_to_bound_the_page_count() {
    const MIB: u64 = 1 << 20;
    assert_eq!(page_bytes_for(0) as usize, PAGE_BYTES);
    assert_eq!(page_bytes_for(256 * MIB) as usize, PAGE_BYTES.max(4096));
    let mut previous = 0;
    for mem in [
        0,
        1,
        256 * MIB,
        256 * MIB + 1,
        300 * MIB,
        1 << 30,
        3 << 30,
        MAX_MEMORY_BYTES,
    ] {
        let page = page_bytes_for(mem);
        assert!(page.is_power_of_two() && page >= previous, "{mem}");
        assert!(
            (PAGE_BYTES..=MAX_PAGE_BYTES).contains(&(page as usize)),
            "{mem}"
        );
        assert!(mem.div_ceil(u64::from(page)) <= MAX_PAGES, "{mem}");
        previous = page;
    }
    if PAGE_BYTES == 4096 {
        assert_eq!(page_bytes_for(256 * MIB + 1), 8192);
        assert_eq!(page_bytes_for(1 << 30), 16384);
        assert_eq!(page_bytes_for(MAX_MEMORY_BYTES), 65536);
    }
    // A manifest may not use pages so small that there are too many.
    let mem = memory_with(4096, 4096, &[0]);
    let (mut m, _) = manifest_for(&mem, 4096, None);
    m.memory_bytes = 4 << 30;
    let err = m.validate().unwrap_err();
    assert!(
        err.to_string().contains("exceed the limit of 65536 pages"),
        "{err}"
    );
    m.page_bytes = 65536;
    m.validate().unwrap();
}

#[test]
fn store_refuses_ranges_of_another_page_size() {
    let (_dir, reg) = registry();
    let mem = memory_with(8 * 4096, 4096, &[0, 5]);
    let (mut m, new_pages) = manifest_for(&mem, 4096, None);
    m.page_bytes = 8192;
    let err = store_snapshot(&reg, &m, &mem, &new_pages).unwrap_err();
    assert!(matches!(err, SnapshotFormatError::BadHeader(_)), "{err:?}");
    assert!(reg.list_blobs().unwrap().is_empty());
    let bad = vec![(new_pages[0].0, 0..mem.len() + 1)];
    m.page_bytes = 4096;
    assert!(store_snapshot(&reg, &m, &mem, &bad).is_err());
    assert!(matches!(
        store_snapshot(&reg, &m, &mem[1..], &new_pages),
        Err(SnapshotFormatError::MemorySizeMismatch { .. })
    ));
}

/// A small valid file (4 KiB pages) for the refusal tests.
fn small_file() -> (Manifest, Vec<u8>) {
    let mem = memory_with(5 * 4096 + 300, 4096, &[0, 2, 5]);
    let (m, _) = manifest_for(&mem, 4096, None);
    let file = encode_file_from_memory(&m, &mem).unwrap();
    (m, file)
}

#[test]
fn truncation_at_every_cut_point_is_reported_as_truncation() {
    let (_, file) = small_file();
    for cut in 0..file.len() {
        match decode_file(&file[..cut], None) {
            Err(SnapshotFormatError::Truncated { needed, got, what }) => {
                assert_eq!(got, cut);
                assert!(needed > got, "cut {cut}");
                let want = match cut {
                    0..=7 => "magic",
                    8..=31 => "file prefix",
                    _ => "snapshot file",
                };
                assert_eq!(what, want, "cut {cut}");
                if cut >= 32 {
                    assert_eq!(needed, file.len());
                }
                let msg = SnapshotFormatError::Truncated { needed, got, what }.to_string();
                assert!(msg.contains("truncated") && msg.contains(what), "{msg}");
            }
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

#[test]
fn any_flipped_byte_is_refused() {
    let (_, file) = small_file();
    let good_sum = Sha256(file[file.len() - 32..].try_into().unwrap());
    for pos in 0..file.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = file.clone();
            bad[pos] ^= bit;
            match decode_file(&bad, None) {
                Err(SnapshotFormatError::NotASnapshot) => assert!(pos < 8, "pos {pos}"),
                Err(SnapshotFormatError::ChecksumMismatch { expected, actual }) => {
                    assert!(pos >= 8, "pos {pos}");
                    assert_ne!(expected, actual);
                    if pos < file.len() - 32 {
                        assert_eq!(expected, good_sum);
                    }
                }
                other => panic!("flip at {pos}: {other:?}"),
            }
        }
    }
    // Appended bytes break the checksum too.
    let mut longer = file.clone();
    longer.push(0);
    assert!(matches!(
        decode_file(&longer, None),
        Err(SnapshotFormatError::ChecksumMismatch { .. })
    ));
}

#[test]
fn wrong_magic_version_module_and_flags_are_named() {
    let (m, file) = small_file();
    assert!(matches!(
        decode_file(b"\x7fELF\x02\x01\x01\0 rest of some other file", None),
        Err(SnapshotFormatError::NotASnapshot)
    ));
    assert!(matches!(
        decode_file(b"SHOALSNQ", None),
        Err(SnapshotFormatError::NotASnapshot)
    ));

    let mut newer = file.clone();
    newer[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    fix_checksum(&mut newer);
    let err = decode_file(&newer, None).unwrap_err();
    assert!(
        matches!(
            err,
            SnapshotFormatError::UnsupportedVersion {
                found,
                supported: FORMAT_VERSION
            } if found == FORMAT_VERSION + 1
        ),
        "{err:?}"
    );
    assert!(err
        .to_string()
        .contains(&format!("version {}", FORMAT_VERSION + 1)));
    assert!(
        err.to_string()
            .contains(&format!("versions 1 to {FORMAT_VERSION}")),
        "{err}"
    );
    let mut v0 = file.clone();
    v0[8..12].copy_from_slice(&0u32.to_le_bytes());
    fix_checksum(&mut v0);
    assert!(matches!(
        decode_file(&v0, None),
        Err(SnapshotFormatError::UnsupportedVersion { found: 0, .. })
    ));

    // A newer manifest inside an older envelope: still the version is named.
    let mut value: serde_json::Value = serde_json::from_slice(&m.encode()).unwrap();
    value["format_version"] = (FORMAT_VERSION + 1).into();
    value["new_field"] = true.into();
    let newer = with_header(&file, &serde_json::to_vec(&value).unwrap());
    assert!(matches!(
        decode_file(&newer, None),
        Err(SnapshotFormatError::UnsupportedVersion { found, .. }) if found == FORMAT_VERSION + 1
    ));

    let other = Sha256::of(b"another module");
    match decode_file(&file, Some(&other)) {
        Err(SnapshotFormatError::WrongModule { snapshot, expected }) => {
            assert_eq!(snapshot, module());
            assert_eq!(expected, other);
        }
        r => panic!("{r:?}"),
    }

    let mut flags = file.clone();
    flags[12] = 1;
    fix_checksum(&mut flags);
    assert!(matches!(
        decode_file(&flags, None),
        Err(SnapshotFormatError::BadHeader(msg)) if msg.contains("flags")
    ));
}

#[test]
fn page_not_matching_its_hash_is_refused_despite_a_valid_checksum() {
    let (m, file) = small_file();
    // The last page record's data ends right before the checksum.
    let mut bad = file.clone();
    let at = bad.len() - 32 - 10;
    bad[at] ^= 0x55;
    fix_checksum(&mut bad);
    match decode_file(&bad, None) {
        Err(SnapshotFormatError::PageCorrupt {
            index,
            expected,
            actual,
        }) => {
            assert_eq!(index, 5);
            assert_eq!(expected, m.pages[2].hash);
            assert_ne!(actual, expected);
        }
        r => panic!("{r:?}"),
    }
    // A record length that disagrees with the page's position.
    let header_len = m.encode().len();
    let mut bad = file.clone();
    let len_at = 36 + header_len + 4;
    bad[len_at..len_at + 4].copy_from_slice(&4000u32.to_le_bytes());
    fix_checksum(&mut bad);
    assert!(matches!(
        decode_file(&bad, None),
        Err(SnapshotFormatError::PageWrongLength {
            index: 0,
            expected: 4096,
            got: 4000
        })
    ));
    // A record for the wrong index.
    let mut bad = file.clone();
    bad[36 + header_len] = 1;
    fix_checksum(&mut bad);
    assert!(matches!(
        decode_file(&bad, None),
        Err(SnapshotFormatError::BadHeader(_))
    ));
    // Extra bytes between the last page and the checksum.
    let mut bad = file[..file.len() - 32].to_vec();
    bad.extend_from_slice(&[0; 5 + 32]);
    fix_length_and_checksum(&mut bad);
    assert!(matches!(
        decode_file(&bad, None),
        Err(SnapshotFormatError::BadHeader(msg)) if msg.contains("5 unexpected bytes")
    ));
    // The last page record cut short (its page is 300 bytes).
    let mut bad = file[..file.len() - 32 - 290].to_vec();
    bad.extend_from_slice(&[0; 32]);
    fix_length_and_checksum(&mut bad);
    assert!(matches!(
        decode_file(&bad, None),
        Err(SnapshotFormatError::Truncated {
            what: "page data",
            ..
        })
    ));
    // The last page record missing entirely.
    let mut bad = file[..file.len() - 32 - 308].to_vec();
    bad.extend_from_slice(&[0; 32]);
    fix_length_and_checksum(&mut bad);
    assert!(matches!(
        decode_file(&bad, None),
        Err(SnapshotFormatError::Truncated {
            what: "page record",
            ..
        })
    ));
}

#[test]
fn hostile_headers_are_bounded() {
    let (m, file) = small_file();
    let check = |edit: &dyn Fn(&mut Manifest), want: &str| {
        let mut bad = m.clone();
        edit(&mut bad);
        let err = bad.validate().unwrap_err();
        assert!(err.to_string().contains(want), "{err} lacks {want:?}");
        let header = serde_json::to_vec(&bad).unwrap();
        let err = decode_file(&with_header(&file, &header), None).unwrap_err();
        assert!(err.to_string().contains(want), "{err} lacks {want:?}");
    };
    check(&|m| m.pages.swap(0, 1), "sorted");
    check(&|m| m.pages[1].index = m.pages[0].index, "sorted");
    check(&|m| m.pages[2].index = 6, "outside the memory");
    check(&|m| m.pages[2].index = u32::MAX, "outside the memory");
    check(&|m| m.memory_bytes = (4 << 30) + 1, "exceeds the limit");
    check(&|m| m.page_bytes = 1000, "power of two");
    check(&|m| m.page_bytes = 128 * 1024, "power of two");
    check(&|m| m.page_bytes = 0, "power of two");
    check(
        &|m| {
            m.memory_bytes = 4096;
            m.pages.truncate(2);
        },
        "has only 1",
    );
    check(
        &|m| m.globals[1].export = m.globals[0].export.clone(),
        "twice",
    );

    // Not JSON, unknown fields, absurd header length.
    let err = decode_file(&with_header(&file, b"{\"nope\":1}"), None).unwrap_err();
    assert!(matches!(err, SnapshotFormatError::BadHeader(_)), "{err:?}");
    let err = decode_file(&with_header(&file, b"\x00\x01"), None).unwrap_err();
    assert!(matches!(err, SnapshotFormatError::NotASnapshot), "{err:?}");
    let mut huge = file.clone();
    huge[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
    fix_checksum(&mut huge);
    assert!(matches!(
        decode_file(&huge, None),
        Err(SnapshotFormatError::TooLarge { what: "header", .. })
    ));
    let mut long = file.clone();
    long[32..36].copy_from_slice(&(16u32 << 20).to_le_bytes());
    fix_checksum(&mut long);
    assert!(matches!(
        decode_file(&long, None),
        Err(SnapshotFormatError::Truncated { what: "header", .. })
    ));
}

#[test]
fn assemble_refuses_bad_pages() {
    let page = 4096;
    let mem = memory_with(3 * page + 10, page, &[0, 3]);
    let (m, _) = manifest_for(&mem, page, None);
    let good: HashMap<Sha256, Vec<u8>> = m
        .pages
        .iter()
        .map(|p| {
            (
                p.hash,
                mem[p.index as usize * page..][..page.min(mem.len() - p.index as usize * page)]
                    .to_vec(),
            )
        })
        .collect();

    let mut missing = good.clone();
    missing.remove(&m.pages[1].hash);
    assert!(matches!(
        assemble_memory(&m, map_fetch(&missing)),
        Err(SnapshotFormatError::PageMissing { hash }) if hash == m.pages[1].hash
    ));

    let mut corrupt = good.clone();
    corrupt.get_mut(&m.pages[0].hash).unwrap()[9] ^= 1;
    assert!(matches!(
        assemble_memory(&m, map_fetch(&corrupt)),
        Err(SnapshotFormatError::PageCorrupt { index: 0, .. })
    ));

    // A crafted manifest naming a full page's hash for the short last page.
    let mut lying = m.clone();
    lying.pages[1].hash = lying.pages[0].hash;
    assert!(matches!(
        assemble_memory(&lying, map_fetch(&good)),
        Err(SnapshotFormatError::PageWrongLength {
            index: 3,
            expected: 10,
            got: 4096
        })
    ));

    // The same, read from a registry.
    let (_dir, reg) = registry();
    for (hash, bytes) in &good {
        reg.put_expecting(hash, bytes).unwrap();
    }
    assert!(matches!(
        fetch_pages_from_registry(&lying, &reg),
        Err(SnapshotFormatError::PageWrongLength {
            index: 3,
            expected: 10,
            got: 4096
        })
    ));
    reg.remove(&m.pages[1].hash).unwrap();
    assert!(matches!(
        fetch_pages_from_registry(&m, &reg),
        Err(SnapshotFormatError::PageMissing { hash }) if hash == m.pages[1].hash
    ));

    let mut small = vec![0u8; 5];
    assert!(matches!(
        assemble_into(&m, &mut small, map_fetch(&good)),
        Err(SnapshotFormatError::MemorySizeMismatch { .. })
    ));
}

#[test]
fn registry_dedup_and_refusals() {
    let (_dir, reg) = registry();
    let page = PAGE_BYTES;
    // Two processes of one module sharing pages 0 and 1.
    let a = memory_with(4 * page, page, &[0, 1, 2]);
    let mut b = a.clone();
    b[2 * page..3 * page].fill(0);
    b[3 * page] = 9;
    let (ma, new_a) = manifest_for(&a, page, None);
    let (mut mb, new_b) = manifest_for(&b, page, None);
    mb.pid = 43;
    store_snapshot(&reg, &ma, &a, &new_a).unwrap();
    let after_a = reg.list_blobs().unwrap().len();
    assert_eq!(after_a, 3 + 1);
    store_snapshot(&reg, &mb, &b, &new_b).unwrap();
    // Only page 3 and the second manifest are new.
    assert_eq!(reg.list_blobs().unwrap().len(), after_a + 2);
    // Storing the same snapshot again adds nothing.
    store_snapshot(&reg, &mb, &b, &new_b).unwrap();
    assert_eq!(reg.list_blobs().unwrap().len(), after_a + 2);

    // An incremental snapshot whose parent's pages are gone is refused.
    let (_dir2, empty) = registry();
    let mut c = a.clone();
    c[5] ^= 1;
    let (mc, new_c) = manifest_for(&c, page, Some((&ma, &a)));
    assert_eq!(new_c.len(), 1);
    assert!(matches!(
        store_snapshot(&empty, &mc, &c, &new_c),
        Err(SnapshotFormatError::PageMissing { .. })
    ));
    assert!(empty.list_blobs().unwrap().is_empty(), "nothing written");

    // A page whose bytes do not match its hash is not stored.
    let (_dir3, other) = registry();
    store_snapshot(&other, &ma, &a, &new_a).unwrap();
    let lying = vec![(new_c[0].0, page..2 * page)];
    assert!(matches!(
        store_snapshot(&other, &mc, &c, &lying),
        Err(SnapshotFormatError::PageCorrupt { index: 1, .. })
    ));

    // A missing page found at restore time.
    let id = ma.id();
    reg.remove(&ma.pages[2].hash).unwrap();
    assert!(matches!(
        assemble_memory(&load_manifest(&reg, &id).unwrap(), fetch_from_registry(&reg)),
        Err(SnapshotFormatError::PageMissing { hash }) if hash == ma.pages[2].hash
    ));
    assert!(matches!(
        export_file(&reg, &id),
        Err(SnapshotFormatError::PageMissing { .. })
    ));

    // load_manifest: not a manifest, not canonical, unknown id.
    let module_blob = reg.put(b"\0asm\x01\0\0\0").unwrap();
    assert!(matches!(
        load_manifest(&reg, &module_blob),
        Err(SnapshotFormatError::NotASnapshot)
    ));
    let pretty = reg.put(&serde_json::to_vec_pretty(&ma).unwrap()).unwrap();
    assert!(matches!(
        load_manifest(&reg, &pretty),
        Err(SnapshotFormatError::BadHeader(msg)) if msg.contains("canonical")
    ));
    assert!(matches!(
        load_manifest(&reg, &Sha256::of(b"nothing")),
        Err(SnapshotFormatError::Registry(
            shoal_registry::RegistryError::NotFound(_)
        ))
    ));
    // Too large to be a manifest: refused before it is read.
    let huge = reg.put(&vec![b'{'; MAX_HEADER_BYTES as usize + 1]).unwrap();
    assert!(matches!(
        load_manifest(&reg, &huge),
        Err(SnapshotFormatError::TooLarge {
            what: "manifest",
            ..
        })
    ));
    // A manifest loaded (so remembered decoded) and then removed is gone,
    // not served from memory.
    let id = ma.id();
    assert_eq!(*load_manifest(&reg, &id).unwrap(), ma);
    assert!(reg.remove(&id).unwrap());
    assert!(matches!(
        load_manifest(&reg, &id),
        Err(SnapshotFormatError::Registry(
            shoal_registry::RegistryError::NotFound(_)
        ))
    ));
}

/// Best of `runs` timings of `f`.
fn best(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn gbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

/// Capture-side costs. Run with
/// `cargo test --release -- --ignored --nocapture bench_split_pages`.
#[test]
#[ignore]
fn bench_split_pages() {
    const MIB: usize = 1 << 20;
    let big = noise(1, 16 * MIB);
    // Written zeros (not calloc'd pages, which all map one shared page).
    let mut zeros = vec![1u8; 16 * MIB];
    zeros.fill(0);

    let d = best(10, || {
        std::hint::black_box(Sha256::of(&big));
    });
    println!(
        "sha256 one shot 16 MiB: {d:?} = {:.2} GB/s",
        gbps(big.len(), d)
    );
    for page in [4096, 16384, 65536] {
        let d = best(10, || {
            for c in big.chunks(page) {
                std::hint::black_box(Sha256::of(c));
            }
        });
        println!(
            "sha256 per {page}-byte page: {:.2} GB/s",
            gbps(big.len(), d)
        );
    }
    let hot = noise(2, 65536);
    let d = best(10, || {
        for _ in 0..64 {
            std::hint::black_box(Sha256::of(std::hint::black_box(&hot)));
        }
    });
    println!(
        "sha256 64 KiB in cache: {:.2} GB/s",
        gbps(64 * hot.len(), d)
    );
    let d = best(10, || {
        std::hint::black_box(std::hint::black_box(&zeros).chunks(4096).all(is_zero));
    });
    println!("zero check: {:.2} GB/s", gbps(zeros.len(), d));
    let mut dst = vec![1u8; 16 * MIB];
    let d = best(10, || {
        dst.copy_from_slice(std::hint::black_box(&big));
        std::hint::black_box(&mut dst);
    });
    println!("memcpy: {:.2} GB/s", gbps(big.len(), d));
    let other = big.clone();
    let d = best(10, || {
        std::hint::black_box(other == big);
    });
    println!("memcmp: {:.2} GB/s", gbps(big.len(), d));

    for size in [MIB, 16 * MIB] {
        let mem = &big[..size];
        for page in [4096, 16384, 65536] {
            let full = best(10, || {
                std::hint::black_box(split_pages_sized(mem, None, page));
            });
            let pages = split_pages_sized(mem, None, page).pages;
            let parent = Manifest {
                format_version: FORMAT_VERSION,
                module: module(),
                pid: 1,
                parent: None,
                created_unix_ms: 0,
                memory_bytes: size as u64,
                page_bytes: page as u32,
                pages,
                globals: vec![],
                state: serde_json::Value::Null,
                blobs: Vec::new(),
            };
            let same = best(10, || {
                std::hint::black_box(split_pages_sized(mem, Some((&parent, mem)), page));
            });
            // 1 % of the memory's bytes changed, scattered one per 100 pages of 4 KiB.
            let mut changed = mem.to_vec();
            for at in (0..size).step_by(100 * 4096) {
                changed[at] ^= 1;
            }
            let mut dirty = 0;
            let incr = best(10, || {
                dirty = split_pages_sized(&changed, Some((&parent, mem)), page)
                    .new_pages
                    .len();
            });
            let zero_mem: &[u8] = &zeros[..size];
            let empty = best(10, || {
                std::hint::black_box(split_pages_sized(zero_mem, None, page));
            });
            let t = Instant::now();
            let encoded = parent.encode();
            let enc = t.elapsed();
            println!(
                "{:>2} MiB page {page:>5}: all new {full:>10.3?} | unchanged vs parent {same:>10.3?} | \
                 scattered writes {incr:>10.3?} ({dirty} pages = {} KiB to store) | all zero {empty:>9.3?} | \
                 manifest {} B ({} B/page), encode {enc:?}",
                size / MIB,
                dirty * page / 1024,
                encoded.len(),
                encoded.len() / parent.pages.len().max(1),
            );
        }
    }

    // Registry store cost of 16 MiB of new pages at each size.
    for page in [4096, 65536] {
        let (_dir, reg) = registry();
        let (m, new_pages) = manifest_for(&big, page, None);
        let t = Instant::now();
        store_snapshot(&reg, &m, &big, &new_pages).unwrap();
        println!(
            "registry store 16 MiB in {page}-byte pages: {:?} ({} blobs)",
            t.elapsed(),
            new_pages.len()
        );
    }
}

#[test]
fn a_version_1_snapshot_is_still_read_and_keeps_its_version() {
    let memory = memory_with(64 * 1024, PAGE_BYTES, &[0, 3]);
    let (mut m, _) = manifest_for(&memory, PAGE_BYTES, None);
    m.format_version = 1;
    let file = encode_file_from_memory(&m, &memory).unwrap();
    assert_eq!(&file[8..12], &1u32.to_le_bytes(), "exported as version 1");
    let (back, got) = decode_file(&file, Some(&module())).unwrap();
    assert_eq!(back, m);
    assert_eq!(got.len(), 2);
    // The envelope and the manifest must agree.
    let mut mixed = file.clone();
    mixed[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    fix_checksum(&mut mixed);
    match decode_file(&mixed, None) {
        Err(SnapshotFormatError::BadHeader(why)) => {
            assert!(
                why.contains(&format!(
                    "version {FORMAT_VERSION} file holds a version 1 manifest"
                )),
                "{why}"
            )
        }
        other => panic!("{other:?}"),
    }
}

/// A snapshot listing blobs (volume chunks) carries them in its file form:
/// both decoders return each one checked, an import stores them, and a
/// file whose blob differs from its listing is refused.
#[test]
fn blobs_travel_in_the_file_and_are_checked() {
    let mem = memory_with(65536, 4096, &[0, 3]);
    let (mut m, new_pages) = manifest_for(&mem, 4096, None);
    let blob_a = noise(11, 1000);
    let blob_b = noise(12, 70_000);
    m.blobs = vec![
        BlobRef {
            hash: Sha256::of(&blob_a),
            bytes: 1000,
        },
        BlobRef {
            hash: Sha256::of(&blob_b),
            bytes: 70_000,
        },
    ];
    let (_d, reg) = registry();
    // Not stored yet: the snapshot is refused.
    assert!(matches!(
        store_snapshot(&reg, &m, &mem, &new_pages),
        Err(SnapshotFormatError::PageMissing { .. })
    ));
    reg.put(&blob_a).unwrap();
    reg.put(&blob_b).unwrap();
    let id = store_snapshot(&reg, &m, &mem, &new_pages).unwrap();
    let file = export_file(&reg, &id).unwrap();
    let (decoded, blobs) = decode_file(&file, None).unwrap();
    assert_eq!(decoded, m);
    assert_eq!(blobs[&Sha256::of(&blob_a)], blob_a);
    assert_eq!(blobs[&Sha256::of(&blob_b)], blob_b);
    let mut streamed = Vec::new();
    decode_stream(
        &mut &file[..],
        u64::MAX,
        |_, _| Ok(()),
        |b, data| {
            streamed.push((b.hash, data.to_vec()));
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(streamed.len(), 2);
    assert_eq!(streamed[1].1, blob_b);
    // Imported elsewhere: the blobs are there afterwards.
    let (_d2, other) = registry();
    assert_eq!(import_file(&other, &file).unwrap(), id);
    assert_eq!(other.get(&Sha256::of(&blob_b)).unwrap(), blob_b);
    let (_d3, third) = registry();
    assert_eq!(import_stream(&third, &mut &file[..], u64::MAX).unwrap(), id);
    assert_eq!(third.get(&Sha256::of(&blob_a)).unwrap(), blob_a);
    // A flipped byte in a blob (checksum fixed up) is caught by both.
    let mut bad = file.clone();
    let at = bad.len() - 32 - 10;
    bad[at] ^= 1;
    fix_checksum(&mut bad);
    assert!(decode_file(&bad, None).is_err());
    assert!(decode_stream(&mut &bad[..], u64::MAX, |_, _| Ok(()), |_, _| Ok(())).is_err());
    // A listing twice the same blob, or an oversized one, is refused.
    let mut twice = m.clone();
    twice.blobs.push(twice.blobs[0]);
    assert!(twice.validate().is_err());
    let mut huge = m.clone();
    huge.blobs[0].bytes = MAX_BLOB_RECORD_BYTES + 1;
    assert!(huge.validate().is_err());
}
