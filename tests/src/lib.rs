//! Integration tests of Shoal: real guests on real nodes.
//!
//! The library part only tells the tests where the guest modules are. The
//! build script (`tests/build.rs`) compiles the guests workspace (`guests/`,
//! Rust, with the SDK from `sdk/`) for `wasm32-wasip1` and the C guests in
//! `guests/c/` with clang, runs `guests/langs/build.sh` for the Zig, C++,
//! AssemblyScript and Go guests (`guests/zig`, `guests/cpp`,
//! `guests/assemblyscript`, `guests/go`), then generates
//! `$OUT_DIR/guests.rs`, included below. It defines one constant per guest
//! holding the absolute path of its `.wasm` file, named after the guest in
//! upper case, and `ALL`:
//!
//! ```text
//! pub const HELLO: &str = "/…/target/guests/wasm32-wasip1/release/hello.wasm";
//! pub const PING_PONG: &str = "…";   // also COUNTER, CPU_BOUND, GREEDY,
//! pub const C_PONG: &str = "…";      // BAD_POINTER
//! pub const ZIG_PINGPONG: &str = "/…/target/guests/langs/zig_pingpong.wasm";
//!                                    // also ZIG_ALLIMPORTS, CPP_PINGPONG,
//!                                    // CPP_ALLIMPORTS, AS_PINGPONG, AS_ALLIMPORTS,
//!                                    // GO_PINGPONG, GO_ALLIMPORTS
//! pub const ALL: &[(&str, &str)] = &[("hello", HELLO), /* … */];
//! ```
//!
//! The guests' behaviour (what they print, their arguments, exit codes) is
//! documented at the top of each `guests/<name>/src/main.rs`,
//! `guests/c/<name>.c`, `guests/{zig,cpp,assemblyscript}/<name>.*` and
//! `guests/go/<name>/main.go`. The modules live in
//! `$CARGO_TARGET_DIR/guests` (or `target/guests`), outside the outer
//! build's own directories.
//!
//! ```no_run
//! let wasm = std::fs::read(shoal_tests::HELLO).unwrap();
//! assert!(wasm.starts_with(b"\0asm"));
//! ```

include!(concat!(env!("OUT_DIR"), "/guests.rs"));
