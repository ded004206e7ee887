//! `kcell-conformance`: the conformance suite's command. Runs the cases
//! against any OCI runtime by path, on this machine's kernel and in
//! throwaway QEMU guests, and writes the reports; re-renders, compares and
//! merges reports. Installed with `cargo install --path harness` (with
//! `kcell-agent`, which it runs), it works from any directory, as root.

use clap::{Parser, Subcommand};
use kcell_harness::command::{self, merge::MergeArgs, report::ReportArgs, RunArgs};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "kcell-conformance",
    version,
    about = "Judges OCI runtimes on real kernels: declarative cases, the harness's own readings of what the kernel did",
    after_help = "Environment: KCELL_CACHE (kernels, runtime lines, images; default ~/.cache/kcell), \
KCELL_KERNEL and KCELL_MODULES (a kernel of your own, as target custom/v1 and custom/v2), \
KCELL_KEEP (keep each guest's console log), KCELL_ACCEL (kvm or tcg)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the selected trials and write the reports (exit 0 only when the
    /// gate passes: no failure, error, unexpected skip, stale difference or
    /// regression).
    Run(RunArgs),
    /// List the trials the selection names, building and booting nothing.
    List(RunArgs),
    /// Re-render a report.json (HTML, KTAP, TAP 13, KCIDB) or compare two.
    Report(ReportArgs),
    /// Merge the outputs of `run --shard K/N` into the whole run's reports.
    Merge(MergeArgs),
    /// Boot a throwaway guest and run a program in it (see `vm --help`).
    Vm {
        /// kcell vm's own arguments: [--kernel ID] [--cgroup v1|v2] ... -- PROGRAM ARGS...
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    // vm's arguments are its own, `--` and the program's included: they
    // go to vm::program's parser untouched.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).is_some_and(|a| a == "vm") {
        return status(command::vm(&argv[2..]));
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Run(a) => command::run(&a, false),
        Command::List(a) => command::run(&a, true),
        Command::Report(a) => status(command::report::run(&a)),
        Command::Merge(a) => status(command::merge::run(&a)),
        Command::Vm { args } => status(command::vm(&args)),
    }
}

fn status(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
