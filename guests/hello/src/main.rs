//! `hello`: the smallest guest. Pure WASI except for `shoal::self_pid`.
//!
//! Always prints, in this order:
//!
//! ```text
//! hello from shoal pid=<pid>
//! args=<argv[1..] joined by ' '>
//! GREETING=<value>            (only if the env var GREETING is set)
//! ```
//!
//! then acts on its arguments:
//!
//! - `exit <code>`: exits with `<code>` through `std::process::exit`.
//! - `ls <path>`: prints the names of the entries of directory `<path>`,
//!   sorted, one per line (for `--dir` grant tests).
//! - `cat <path>`: copies the file `<path>` to stdout as is.
//! - `write <path> <text...>`: writes the remaining arguments joined by ' ' to
//!   the file `<path>` (created or truncated), no trailing newline added.
//!
//! Exits 0 otherwise. A failed `ls`/`cat`/`write` prints
//! `hello: <command> <path>: <error>` to stderr and exits 1; a bad `exit`
//! code exits 2.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("hello from shoal pid={}", shoal::self_pid());
    println!("args={}", args.join(" "));
    if let Ok(greeting) = std::env::var("GREETING") {
        println!("GREETING={greeting}");
    }

    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["exit", code, ..] => match code.parse::<i32>() {
            Ok(code) => {
                let _ = std::io::stdout().flush();
                std::process::exit(code)
            }
            Err(_) => {
                eprintln!("hello: exit: not a number: {code}");
                return ExitCode::from(2);
            }
        },
        ["ls", path, ..] => ls(path).map_err(|e| ("ls", *path, e)),
        ["cat", path, ..] => cat(path).map_err(|e| ("cat", *path, e)),
        ["write", path, text @ ..] => {
            std::fs::write(path, text.join(" ")).map_err(|e| ("write", *path, e))
        }
        _ => Ok(()),
    };
    let _ = std::io::stdout().flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((command, path, error)) => {
            eprintln!("hello: {command} {path}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the entry names of directory `path`, sorted, one per line.
fn ls(path: &str) -> std::io::Result<()> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(path)? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    let mut out = std::io::stdout().lock();
    for name in names {
        writeln!(out, "{name}")?;
    }
    Ok(())
}

/// Copies the file at `path` to stdout unchanged.
fn cat(path: &str) -> std::io::Result<()> {
    let bytes = std::fs::read(path)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes)?;
    out.flush()
}
