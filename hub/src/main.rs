//! `cyclerhub`: serve the lab hub, list its tests, export a test.

fn main() -> std::process::ExitCode {
    cyclerhub::cli::main()
}
