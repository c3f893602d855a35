//! `canopy`: the server (`canopy serve`) and its admin / user CLI.

/// jemalloc, not glibc's malloc: glibc keeps what big transient work (a discovery pass of
/// thousands of guests) freed in one arena per thread, so a server holding ~150 MB of live
/// data at 30,000 guests stayed at ~300 MB resident; jemalloc's background thread returns
/// freed pages to the system within a second (`.cargo/config.toml`: the decay it is built
/// with; docs/benchmarks.md, the tree bench).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    canopy_server::cli::main()
}
