//! The `shoal` command line.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod cli;

/// The hidden first argument that makes this binary a preparation worker
/// (see `shoal_prepare::worker`): a node daemon runs its own binary so.
pub const PREPARE_WORKER_ARG: &str = "__prepare-worker";

fn main() {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == PREPARE_WORKER_ARG)
    {
        // A preparation ahead of need runs lowered; the threads it starts
        // later inherit it. One someone waits for does not.
        if std::env::args_os()
            .nth(2)
            .is_some_and(|a| a == shoal_runtime::low_priority::WORKER_LOWER_ARG)
        {
            shoal_runtime::low_priority::lower_this_thread();
        }
        let served = shoal_prepare::worker::serve(
            &mut std::io::stdin().lock(),
            &mut std::io::stdout().lock(),
        );
        std::process::exit(i32::from(served.is_err()));
    }
    std::process::exit(cli::main());
}
