//! `canopy`: the server (`canopy serve`) and its admin / user CLI.

/// mimalloc, not glibc's malloc: glibc keeps what big transient work (a discovery pass of
/// thousands of guests) freed in one arena per thread, so a server holding ~150 MB of live
/// data at 30,000 guests stayed at ~300 MB resident; mimalloc returns freed pages to the
/// system (docs/benchmarks.md, the tree bench).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    canopy_server::cli::main()
}
