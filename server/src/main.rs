//! The `atelier` binary. All logic lives in the library so tests drive the same code.

fn main() -> std::process::ExitCode {
    atelier_server::cli::main()
}
