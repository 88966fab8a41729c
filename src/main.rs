//! `llm-sidecar`: the daemon (`serve`) and its command-line client (every other subcommand).

mod cli;

fn main() -> std::process::ExitCode {
    llm_sidecar::memory::tune();
    cli::main()
}
