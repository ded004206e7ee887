//! The `kcell` command; invoked as `kcell-oci` (a link or copy of this
//! binary) it is the OCI runtime command line. `kcell vm`, `kcell report`
//! and `kcell merge` belong to the conformance suite: they are handed to
//! the `kcell-conformance` built beside this binary.

use std::os::unix::process::CommandExt;

/// The suite's subcommands, carried by kcell-conformance.
const SUITE_COMMANDS: &[&str] = &["vm", "report", "merge"];

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let named_oci = args
        .first()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n == "kcell-oci"))
        .unwrap_or(false);
    if !named_oci {
        if let Some(sub) = args.get(1).and_then(|a| a.to_str()) {
            if SUITE_COMMANDS.contains(&sub) {
                std::process::exit(hand_to_agent(sub, &args[1..]));
            }
        }
    }
    let code = if named_oci {
        kcell::oci::main(args)
    } else {
        kcell::cli::main(args)
    };
    std::process::exit(code);
}

/// Runs kcell-conformance (beside this binary) with `args`; returns only
/// when it cannot.
fn hand_to_agent(sub: &str, args: &[std::ffi::OsString]) -> i32 {
    let agent = std::env::current_exe()
        .ok()
        .and_then(|me| me.parent().map(|d| d.join("kcell-conformance")))
        .filter(|a| a.is_file());
    match agent {
        Some(a) => {
            let e = std::process::Command::new(&a).args(args).exec();
            eprintln!("kcell {sub}: exec {}: {e}", a.display());
            125
        }
        None => {
            eprintln!(
                "kcell {sub}: the conformance suite's kcell-conformance is not beside this kcell (build it: cargo build -p kcell-harness)"
            );
            125
        }
    }
}
