//! `cyclerd`: the acquisition daemon.

fn main() -> std::process::ExitCode {
    cyclerd_cli::cyclerd::main()
}
