//! `llm-sidecar`: the daemon (`serve`) and its command-line client (every other subcommand).

mod cli;

/// Every freed heap block is zeroed first (src/memory.rs): keys leave memory with their buffers.
#[global_allocator]
static ALLOCATOR: llm_sidecar::memory::ZeroizingAllocator = llm_sidecar::memory::ZeroizingAllocator;

fn main() -> std::process::ExitCode {
    llm_sidecar::memory::tune();
    cli::main()
}
