//! `atelier-agent`: see the crate documentation in `lib.rs`.

use std::process::ExitCode;

fn main() -> ExitCode {
    atelier_agent::main()
}
