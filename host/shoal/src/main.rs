//! The `shoal` command line.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod cli;

fn main() {
    std::process::exit(cli::main());
}
