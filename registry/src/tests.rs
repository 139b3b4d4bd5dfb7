//! Behavioural tests of the whole registry (unit tests of the encodings
//! live next to them).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;

use crate::store::check_size;
use crate::*;

fn open() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path().join("reg")).unwrap();
    (dir, reg)
}

fn blob_file(reg: &Registry, hash: &Sha256) -> PathBuf {
    let hex = hash.to_hex();
    reg.root().join("blobs/sha256").join(&hex[..2]).join(hex)
}

fn dir_len(dir: &Path) -> usize {
    fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn handle_is_send_sync_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<Registry>();
}

#[test]
fn put_get_roundtrip_and_dedup() {
    let (_d, reg) = open();
    assert!(reg.list_blobs().unwrap().is_empty());
    let h = reg.put(b"hello").unwrap();
    assert_eq!(h, Sha256::of(b"hello"));
    assert_eq!(reg.get(&h).unwrap(), b"hello");
    assert!(reg.contains(&h));
    assert_eq!(reg.size_of(&h).unwrap(), 5);
    assert_eq!(reg.put(b"hello").unwrap(), h);
    let empty = reg.put(b"").unwrap();
    assert_eq!(reg.get(&empty).unwrap(), b"");
    let list = reg.list_blobs().unwrap();
    let mut expected = vec![
        BlobInfo {
            hash: h,
            size_bytes: 5,
        },
        BlobInfo {
            hash: empty,
            size_bytes: 0,
        },
    ];
    expected.sort_by_key(|b| b.hash);
    assert_eq!(list, expected);
    assert!(reg.remove(&h).unwrap());
    assert!(!reg.remove(&h).unwrap());
    assert!(!reg.contains(&h));
    assert!(matches!(reg.get(&h), Err(RegistryError::NotFound(x)) if x == h));
    assert!(matches!(reg.size_of(&h), Err(RegistryError::NotFound(_))));
    assert_eq!(dir_len(&reg.root().join("tmp")), 0);
    // A second handle on the same root sees the same data.
    let again = Registry::open(reg.root()).unwrap();
    assert_eq!(again.get(&empty).unwrap(), b"");
}

#[test]
fn corrupt_blob_is_quarantined_never_served() {
    let (_d, reg) = open();
    for junk in [&b"hellp"[..], b"much longer junk"] {
        let h = reg.put(b"hello").unwrap();
        fs::write(blob_file(&reg, &h), junk).unwrap();
        match reg.get(&h) {
            Err(RegistryError::Corrupt { hash, actual, path }) => {
                assert_eq!(hash, h);
                assert_eq!(actual, Sha256::of(junk));
                assert!(path.starts_with(reg.root().join("quarantine")), "{path:?}");
                assert_eq!(fs::read(&path).unwrap(), junk);
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert!(matches!(reg.get(&h), Err(RegistryError::NotFound(_))));
        assert!(!reg.contains(&h));
        assert!(reg.list_blobs().unwrap().is_empty());
        // Re-fetching heals it.
        reg.put_expecting(&h, b"hello").unwrap();
        assert_eq!(reg.get(&h).unwrap(), b"hello");
        reg.remove(&h).unwrap();
    }
    assert_eq!(dir_len(&reg.root().join("quarantine")), 2);
    let msg = RegistryError::NotFound(Sha256::of(b"x")).to_string();
    assert!(
        msg.starts_with("blob sha256:") && msg.ends_with("is not in the registry"),
        "{msg}"
    );
}

#[test]
fn put_over_wrong_size_entry_replaces_it() {
    let (_d, reg) = open();
    let h = reg.put(b"hello").unwrap();
    fs::write(blob_file(&reg, &h), b"truncated-or-longer").unwrap();
    assert_eq!(reg.put(b"hello").unwrap(), h);
    assert_eq!(reg.get(&h).unwrap(), b"hello");
}

#[test]
fn put_expecting_rejects_mismatch_and_stores_nothing() {
    let (_d, reg) = open();
    let want = Sha256::of(b"good");
    match reg.put_expecting(&want, b"evil") {
        Err(RegistryError::Corrupt { hash, actual, .. }) => {
            assert_eq!(hash, want);
            assert_eq!(actual, Sha256::of(b"evil"));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(!reg.contains(&want));
    assert!(!reg.contains(&Sha256::of(b"evil")));
    assert!(reg.list_blobs().unwrap().is_empty());
    assert_eq!(dir_len(&reg.root().join("tmp")), 0);
    reg.put_expecting(&want, b"good").unwrap();
    assert_eq!(reg.get(&want).unwrap(), b"good");
}

#[test]
fn size_limits() {
    assert!(check_size(1024).is_ok());
    if let Ok(big) = usize::try_from(MAX_BLOB_BYTES + 1) {
        assert!(matches!(
            check_size(big),
            Err(RegistryError::TooLarge {
                max: MAX_BLOB_BYTES,
                ..
            })
        ));
    }
    // A (sparse) oversized file in the store is refused without reading it.
    let (_d, reg) = open();
    let h = reg.put(b"x").unwrap();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(blob_file(&reg, &h))
        .unwrap();
    if f.set_len(MAX_BLOB_BYTES + 1).is_ok() {
        assert!(matches!(reg.get(&h), Err(RegistryError::TooLarge { .. })));
    }
}

#[test]
fn names_set_resolve_list_remove() {
    let (_d, reg) = open();
    let a = reg.put(b"module a").unwrap();
    let b = reg.put(b"module b").unwrap();
    let missing = Sha256::of(b"never stored");
    assert!(matches!(
        reg.set_name("x", &missing),
        Err(RegistryError::NotFound(_))
    ));
    reg.set_name("org/counter:v1", &a).unwrap();
    reg.set_name("alpha@1.0_rc-2", &b).unwrap();
    reg.set_name("z".repeat(MAX_NAME_LEN).as_str(), &a).unwrap();
    assert_eq!(reg.resolve_name("org/counter:v1").unwrap(), a);
    reg.set_name("org/counter:v1", &b).unwrap(); // rebind
    assert_eq!(reg.resolve_name("org/counter:v1").unwrap(), b);
    assert_eq!(
        reg.names().unwrap(),
        vec![
            ("alpha@1.0_rc-2".to_string(), b),
            ("org/counter:v1".to_string(), b),
            ("z".repeat(MAX_NAME_LEN), a),
        ]
    );
    assert!(matches!(reg.resolve_name("nope"), Err(RegistryError::UnknownName(n)) if n == "nope"));
    assert!(reg.remove_name("org/counter:v1").unwrap());
    assert!(!reg.remove_name("org/counter:v1").unwrap());
    assert!(matches!(
        reg.resolve_name("org/counter:v1"),
        Err(RegistryError::UnknownName(_))
    ));
    assert_eq!(reg.names().unwrap().len(), 2);
    // Stray files in names/ are ignored.
    fs::write(reg.root().join("names/README"), b"hi").unwrap();
    assert_eq!(reg.names().unwrap().len(), 2);
}

#[test]
fn bad_names_rejected() {
    let (_d, reg) = open();
    let h = reg.put(b"m").unwrap();
    let long = "a".repeat(MAX_NAME_LEN + 1);
    let hex = h.to_hex();
    let prefixed = h.to_string();
    for name in [
        "",
        "../x",
        "a/../b",
        "..",
        "x..y",
        "/etc/passwd",
        ".hidden",
        "a b",
        "a\\b",
        "a\0b",
        "é",
        "tab\t",
        &long,
        &hex,
        &prefixed,
        "sha256:abc",
    ] {
        assert!(
            matches!(reg.set_name(name, &h), Err(RegistryError::BadName { .. })),
            "{name:?} accepted"
        );
        assert!(matches!(
            validate_name(name),
            Err(RegistryError::BadName { .. })
        ));
        assert!(matches!(
            reg.remove_name(name),
            Err(RegistryError::BadName { .. })
        ));
    }
    assert!(reg.names().unwrap().is_empty());
    // Nothing escaped the names directory.
    assert!(!reg.root().join("x").exists());
    assert!(!reg.root().parent().unwrap().join("x").exists());
}

#[test]
fn resolve_accepts_hash_forms_and_names() {
    let (_d, reg) = open();
    let h = reg.put(b"m").unwrap();
    reg.set_name("app", &h).unwrap();
    assert_eq!(reg.resolve(&h.to_string()).unwrap(), h);
    assert_eq!(reg.resolve(&h.to_hex()).unwrap(), h);
    assert_eq!(reg.resolve(&h.to_hex().to_uppercase()).unwrap(), h);
    assert_eq!(reg.resolve("app").unwrap(), h);
    // Hash references are parsed, not looked up.
    let other = Sha256::of(b"other");
    assert_eq!(reg.resolve(&other.to_string()).unwrap(), other);
    assert!(matches!(
        reg.resolve("sha256:zz"),
        Err(RegistryError::BadHash(_))
    ));
    assert!(matches!(
        reg.resolve("ghost"),
        Err(RegistryError::UnknownName(_))
    ));
    assert!(matches!(
        reg.resolve("../x"),
        Err(RegistryError::BadName { .. })
    ));
}

#[test]
fn artifacts_put_get_and_corruption_is_a_miss() {
    let (_d, reg) = open();
    let module = reg.put(b"\0asm").unwrap();
    let key = ArtifactKey::new(module, "wasmtime-46/x86_64/opt=speed\nmulti-line");
    let other = ArtifactKey::new(module, "wasmtime-46/aarch64");
    assert_eq!(reg.artifact_get(&key).unwrap(), None);
    assert!(!reg.artifact_contains(&key));
    reg.artifact_put(&key, b"compiled code").unwrap();
    assert!(reg.artifact_contains(&key));
    assert_eq!(
        reg.artifact_get(&key).unwrap().as_deref(),
        Some(&b"compiled code"[..])
    );
    assert_eq!(reg.artifact_get(&other).unwrap(), None);
    reg.artifact_put(&key, b"recompiled").unwrap();
    assert_eq!(
        reg.artifact_get(&key).unwrap().as_deref(),
        Some(&b"recompiled"[..])
    );
    // Artifacts are not blobs.
    assert_eq!(reg.list_blobs().unwrap().len(), 1);

    // Flip one payload byte: miss, quarantined, gone.
    let path = reg.root().join("artifacts").join(key.id().to_hex());
    let mut bytes = fs::read(&path).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    fs::write(&path, &bytes).unwrap();
    assert_eq!(reg.artifact_get(&key).unwrap(), None);
    assert!(!reg.artifact_contains(&key));
    assert_eq!(dir_len(&reg.root().join("quarantine")), 1);
    // Garbage header: also a miss.
    reg.artifact_put(&key, b"x").unwrap();
    fs::write(&path, b"not an artifact").unwrap();
    assert_eq!(reg.artifact_get(&key).unwrap(), None);
    // An entry stored under another key's file name is rejected.
    reg.artifact_put(&other, b"for aarch64").unwrap();
    fs::copy(
        reg.root().join("artifacts").join(other.id().to_hex()),
        &path,
    )
    .unwrap();
    assert_eq!(reg.artifact_get(&key).unwrap(), None);
    // Recompile and store again.
    reg.artifact_put(&key, b"fresh").unwrap();
    assert_eq!(
        reg.artifact_get(&key).unwrap().as_deref(),
        Some(&b"fresh"[..])
    );
    assert!(reg.artifact_remove(&key).unwrap());
    assert!(!reg.artifact_remove(&key).unwrap());
}

#[test]
fn concurrent_puts_from_8_threads() {
    let (_d, reg) = open();
    let shared: Arc<Vec<u8>> = Arc::new((0..100_000u32).map(|i| (i % 251) as u8).collect());
    let handles: Vec<_> = (0..8u8)
        .map(|t| {
            // Half the threads share a handle, half open their own.
            let reg = if t % 2 == 0 {
                reg.clone()
            } else {
                Registry::open(reg.root()).unwrap()
            };
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..20u32 {
                    assert_eq!(reg.put(&shared).unwrap(), Sha256::of(&shared));
                    let own = format!("thread {t} blob {}", i % 5).repeat(100 + i as usize % 5);
                    let h = reg.put(own.as_bytes()).unwrap();
                    assert_eq!(reg.get(&h).unwrap(), own.as_bytes());
                    mine.push(h);
                    reg.set_name(&format!("t{t}/latest"), &h).unwrap();
                    reg.set_name("shared", &Sha256::of(&shared)).unwrap();
                    let k = ArtifactKey::new(Sha256::of(&shared), "fp");
                    reg.artifact_put(&k, &shared).unwrap();
                    assert_eq!(reg.artifact_get(&k).unwrap().as_deref(), Some(&shared[..]));
                }
                mine
            })
        })
        .collect();
    let mut all = vec![Sha256::of(&shared)];
    for h in handles {
        all.extend(h.join().unwrap());
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 1 + 8 * 5);
    let listed: Vec<Sha256> = reg
        .list_blobs()
        .unwrap()
        .into_iter()
        .map(|b| b.hash)
        .collect();
    assert_eq!(listed, all);
    for h in &all {
        reg.get(h).unwrap(); // verifies
    }
    assert_eq!(reg.names().unwrap().len(), 9);
    assert_eq!(dir_len(&reg.root().join("tmp")), 0);
    assert_eq!(dir_len(&reg.root().join("quarantine")), 0);
}

/// Environment variable through which [`concurrent_processes`] hands the
/// root to its child processes.
const CHILD_ENV: &str = "SHOAL_REGISTRY_TEST_CHILD_ROOT";

/// Body of the child processes spawned by [`concurrent_processes`]; does
/// nothing when run directly.
#[test]
#[ignore = "helper: run by concurrent_processes in a child process"]
fn child_process_writer() {
    let Ok(root) = std::env::var(CHILD_ENV) else {
        return;
    };
    let reg = Registry::open(&root).unwrap();
    let id = std::process::id();
    for i in 0..20u32 {
        let h = reg.put(&vec![7u8; 50_000]).unwrap();
        assert_eq!(reg.get(&h).unwrap().len(), 50_000);
        let own = reg.put(format!("pid {id} #{}", i % 3).as_bytes()).unwrap();
        reg.set_name("latest", &own).unwrap();
        // Reopening cleans tmp/ while siblings are writing.
        Registry::open(&root).unwrap();
    }
}

#[test]
fn concurrent_processes() {
    let (_d, reg) = open();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| {
            std::process::Command::new(&exe)
                .args([
                    "--ignored",
                    "--exact",
                    "tests::child_process_writer",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, reg.root())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let blobs = reg.list_blobs().unwrap();
    assert_eq!(blobs.len(), 1 + 4 * 3);
    for b in &blobs {
        assert_eq!(reg.get(&b.hash).unwrap().len() as u64, b.size_bytes);
    }
    assert!(reg.contains(&reg.resolve("latest").unwrap()));
    assert_eq!(dir_len(&reg.root().join("tmp")), 0);
}

#[test]
fn leftover_temp_files_are_ignored_and_cleaned() {
    let (_d, reg) = open();
    let h = reg.put(b"real").unwrap();
    let tmp = reg.root().join("tmp");
    // A crashed writer's half-written files: junk, and one named like ours
    // from a pid that cannot exist.
    fs::write(tmp.join("junk"), b"half a blo").unwrap();
    fs::write(tmp.join("4294967295-3-12345.tmp"), b"half a blo").unwrap();
    // A live writer of this process must not lose its file.
    let live = tmp.join(format!("{}-999999-0.tmp", std::process::id()));
    fs::write(&live, b"in flight").unwrap();
    assert_eq!(
        reg.list_blobs().unwrap(),
        vec![BlobInfo {
            hash: h,
            size_bytes: 4
        }]
    );
    assert!(matches!(
        reg.get(&Sha256::of(b"half a blo")),
        Err(RegistryError::NotFound(_))
    ));
    assert!(matches!(
        reg.get(&Sha256::of(b"half a blob")),
        Err(RegistryError::NotFound(_))
    ));
    let reopened = Registry::open(reg.root()).unwrap();
    let left: Vec<PathBuf> = fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(left, vec![live.clone()]);
    // ... unless it has been abandoned for long.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 60 * 60);
    fs::File::options()
        .write(true)
        .open(&live)
        .unwrap()
        .set_modified(old)
        .unwrap();
    Registry::open(reg.root()).unwrap();
    assert_eq!(dir_len(&tmp), 0);
    assert_eq!(reopened.get(&h).unwrap(), b"real");
}

#[test]
fn serde_shapes() {
    let key = ArtifactKey::new(Sha256::of(b"m"), "fp");
    let json = serde_json::to_value(&key).unwrap();
    assert_eq!(json["module"], Sha256::of(b"m").to_string());
    assert_eq!(serde_json::from_value::<ArtifactKey>(json).unwrap(), key);
    let info = BlobInfo {
        hash: Sha256::of(b"m"),
        size_bytes: 1,
    };
    let back: BlobInfo = serde_json::from_str(&serde_json::to_string(&info).unwrap()).unwrap();
    assert_eq!(back, info);
}

#[test]
fn a_forged_artifact_with_a_matching_hash_is_a_miss() {
    let (_d, reg) = open();
    let module = reg.put(b"\0asm").unwrap();
    let key = ArtifactKey::new(module, "engine");
    reg.artifact_put(&key, b"honest code").unwrap();
    let path = reg.root().join("artifacts").join(key.id().to_hex());
    // Someone who can write the data dir (but not read the node's key)
    // writes native code with a header whose hash matches it.
    let file = fs::read(&path).unwrap();
    let text = String::from_utf8_lossy(&file).into_owned();
    let header_line = text.lines().nth(1).unwrap().to_string();
    let mut header: serde_json::Value = serde_json::from_str(&header_line).unwrap();
    let evil = b"evil native code";
    header["payload"] = serde_json::Value::from(Sha256::of(evil).to_string());
    header["size"] = serde_json::Value::from(evil.len());
    let mut forged = b"shoal-artifact-v1\n".to_vec();
    forged.extend_from_slice(serde_json::to_string(&header).unwrap().as_bytes());
    forged.push(b'\n');
    forged.extend_from_slice(evil);
    fs::write(&path, &forged).unwrap();
    assert_eq!(
        reg.artifact_get(&key).unwrap(),
        None,
        "forged code is never loaded"
    );
    // A file from another node (another key) is a miss too.
    let (_d2, other) = open();
    other.put(b"\0asm").unwrap();
    other.artifact_put(&key, b"their code").unwrap();
    fs::copy(
        other.root().join("artifacts").join(key.id().to_hex()),
        &path,
    )
    .unwrap();
    assert_eq!(reg.artifact_get(&key).unwrap(), None);
}

#[test]
fn registry_files_and_dirs_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let (_d, reg) = open();
    let h = reg.put(b"guest memory page").unwrap();
    reg.put_many_unsynced(&[(Sha256::of(b"page two"), &b"page two"[..])])
        .unwrap();
    let key = ArtifactKey::new(h, "engine");
    reg.artifact_put(&key, b"code").unwrap();
    let mut stack = vec![reg.root().to_path_buf()];
    let mut files = 0;
    while let Some(p) = stack.pop() {
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        if p.is_dir() {
            assert_eq!(mode, 0o700, "{}", p.display());
            stack.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_eq!(mode, 0o600, "{}", p.display());
            files += 1;
        }
    }
    assert!(files >= 4, "{files} files checked");
}

/// The page cache holds only bytes checked against their hash: a page
/// corrupted on disk is served right while cached (its checked bytes),
/// reported corrupt by a handle that never cached it, and a mismatching
/// write leaves nothing cached.
#[test]
fn page_cache_serves_only_checked_bytes() {
    let (dir, reg) = open();
    let page = vec![7u8; 4096];
    let hash = Sha256::of(&page);
    reg.put_expecting(&hash, &page).unwrap();
    let mut bad = page.clone();
    bad[100] ^= 1;
    fs::write(blob_file(&reg, &hash), &bad).unwrap();
    assert_eq!(&reg.get_page(&hash).unwrap()[..], &page[..]);
    let fresh = Registry::open(dir.path().join("reg")).unwrap();
    assert!(matches!(
        fresh.get_page(&hash),
        Err(RegistryError::Corrupt { .. })
    ));
    // A write whose bytes do not match its hash caches nothing.
    let other = vec![9u8; 4096];
    let claimed = Sha256::of(b"something else");
    assert!(reg.put_many_unsynced(&[(claimed, &other[..])]).is_err());
    assert!(reg.put_expecting(&claimed, &other).is_err());
    assert!(reg.get_page(&claimed).is_err());
    // A removed blob is gone from the cache too.
    reg.remove(&hash).unwrap();
    assert!(matches!(
        reg.get_page(&hash),
        Err(RegistryError::NotFound(_))
    ));
}
