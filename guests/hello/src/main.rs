//! `hello`: the smallest guest. Pure WASI except for `shoal::self_pid` (and
//! `shoal::recv` in `files`).
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
//! - `files <dir>`: holds `<dir>/in.txt` and `<dir>/out.txt` open across a
//!   blocking `recv` (see `files` below), for snapshot tests.
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
        ["files", dir, ..] => files(dir).map_err(|e| ("files", *dir, e)),
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

/// Holds files open across a blocking call (for snapshot tests): reads the
/// first 5 bytes of `<dir>/in.txt` and prints them, creates `<dir>/out.txt`
/// and writes `first;`, waits for any message, then prints the rest of
/// `in.txt` and appends `second;` through the same descriptors.
fn files(dir: &str) -> std::io::Result<()> {
    use std::io::Read;
    let mut input = std::fs::File::open(format!("{dir}/in.txt"))?;
    let mut output = std::fs::File::create(format!("{dir}/out.txt"))?;
    let mut head = [0u8; 5];
    input.read_exact(&mut head)?;
    println!("head={}", String::from_utf8_lossy(&head));
    output.write_all(b"first;")?;
    println!("files waiting");
    let _ = shoal::recv(None);
    let mut rest = String::new();
    input.read_to_string(&mut rest)?;
    println!("rest={rest}");
    output.write_all(b"second;")?;
    Ok(())
}
