//! `canopy`: the server (`canopy serve`) and its admin / user CLI.

fn main() -> std::process::ExitCode {
    canopy_server::cli::main()
}
