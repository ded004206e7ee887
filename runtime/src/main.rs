//! The `kcell` command.

fn main() {
    std::process::exit(kcell::cli::main(std::env::args_os()));
}
