//! The real `cyclerhub` command line, built inside this package so its tests can run and kill it.

fn main() -> std::process::ExitCode {
    cyclerhub::cli::main()
}
