//! The real `cyclerd` command line, built inside this package so its tests can run and kill it.

fn main() -> std::process::ExitCode {
    cyclerd_cli::cyclerd::main()
}
