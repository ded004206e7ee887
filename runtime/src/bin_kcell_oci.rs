//! `kcell-oci`: the OCI runtime command line (runc's grammar), the same
//! code as `kcell` invoked under this name.

fn main() {
    std::process::exit(kcell::oci::main(std::env::args_os()));
}
