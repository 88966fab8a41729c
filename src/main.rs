//! `llm-sidecar`: the daemon (`serve`) and its command-line client (every other subcommand).

mod cli;

/// mimalloc: the ledger's committer allocates tree nodes that other threads free, which glibc's
/// per-thread arenas handle poorly (about a tenth of the daemon's CPU under load).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
