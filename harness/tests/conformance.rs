//! `cargo test -p kcell-harness --test conformance`: the conformance run
//! (suite/mod.rs) as a cargo test, the same code as `kcell-conformance
//! run`, with the same trial names, filters and variables. Here kcell is
//! built from this workspace and judged with the other runtimes; relative
//! paths in the arguments are taken from the workspace root, where the
//! README's commands are typed; the reports go to target/kcell.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let agent = PathBuf::from(env!("CARGO_BIN_EXE_kcell-agent"));
    let argv: Vec<String> = std::env::args().collect();
    // Listing builds nothing.
    let listing = argv.iter().any(|a| a == "--list");
    let kcell = match std::env::var_os("KCELL_BIN") {
        Some(k) => Some(PathBuf::from(k)),
        None if listing => None,
        None => match kcell_harness::data::build_kcell(Path::new(env!("CARGO")), &agent) {
            Ok(k) => Some(k),
            Err(e) => {
                eprintln!("kcell is judged with the other runtimes, and could not be built: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let config = kcell_harness::suite::Config {
        agent,
        kcell,
        output: root.join("target/kcell"),
        base: root,
    };
    kcell_harness::suite::main(&config, argv)
}
