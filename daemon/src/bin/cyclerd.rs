//! `cyclerd`: the acquisition daemon.

fn main() -> std::process::ExitCode {
    cyclerd::cli::main()
}
