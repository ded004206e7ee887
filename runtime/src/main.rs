//! The `kcell` command; invoked as `kcell-oci` (a link or copy of this
//! binary) it is the OCI runtime command line.

fn main() {
    let named_oci = std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n == "kcell-oci"))
        .unwrap_or(false);
    let code = if named_oci {
        kcell::oci::main(std::env::args_os())
    } else {
        kcell::cli::main(std::env::args_os())
    };
    std::process::exit(code);
}
