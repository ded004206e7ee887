//! `kcell-conformance`, the suite's command: `run` and `list` (suite/),
//! `report`, `merge` and `vm`. Its arguments are typed here (clap), so
//! `--help` documents every option; the binary only dispatches.

pub mod merge;
pub mod report;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// What `run` and `list` are asked.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Only the trials whose name contains this (e.g. `host/`,
    /// `/runc@sid::CG-`, `deb-6.12-cloud/v2/`); with --exact, the one named.
    #[arg(value_name = "FILTER")]
    pub filter: Option<String>,
    /// The filter is a whole trial name.
    #[arg(long)]
    pub exact: bool,
    /// Leave out the trials whose name contains this (repeatable).
    #[arg(long, value_name = "PATTERN")]
    pub skip: Vec<String>,
    /// Targets: host, all, or a comma list of targets (deb-6.1-cloud/v1) or
    /// kernel IDs [env: KCELL_TARGETS; default: host and the manifest's
    /// default kernels under v1 and v2].
    #[arg(long, value_name = "LIST")]
    pub targets: Option<String>,
    /// Runtimes: a comma list of names on PATH (runc, crun, youki, runsc,
    /// kcell), lines of vm/runtimes.toml (runc@sid), or NAME=/path/to/binary
    /// [env: KCELL_RUNTIMES; default: kcell everywhere, runc@sid, crun@sid
    /// and youki on the host and the reference targets].
    #[arg(long, value_name = "LIST")]
    pub runtimes: Option<String>,
    /// Case IDs, a comma list (e.g. CG-CPU-1,NS-UTS-1) [env: KCELL_CASES;
    /// default: every case].
    #[arg(long, value_name = "IDS")]
    pub only: Option<String>,
    /// The cases directory [env: KCELL_CASES_DIR; default: the checkout's
    /// cases/, else the copy built into this binary].
    #[arg(long, value_name = "DIR")]
    pub cases: Option<PathBuf>,
    /// The directory of kernels.toml, kernel.config and runtimes.toml
    /// [env: KCELL_VM_DIR; default: the checkout's vm/, else the built-in copy].
    #[arg(long, value_name = "DIR")]
    pub vm_dir: Option<PathBuf>,
    /// kcell's CLI binary, to judge kcell [env: KCELL_BIN; default: `kcell`
    /// beside this command, else on PATH; without it kcell's trials are errors
    /// saying so].
    #[arg(long, value_name = "PATH")]
    pub kcell: Option<PathBuf>,
    /// Where the reports go (report.json, report.xml, matrix.md,
    /// report.html, KTAP, TAP, KCIDB, run.json).
    #[arg(long, value_name = "DIR", default_value = "kcell-results")]
    pub output: PathBuf,
    /// An earlier report.json: a trial that passed there and does not
    /// here fails the run.
    #[arg(long, value_name = "OLD.json")]
    pub baseline: Option<PathBuf>,
    /// A known difference that no longer shows does not fail the run.
    #[arg(long)]
    pub allow_stale_differences: bool,
    /// Flaky cells whose name contains one of these do not fail the run.
    #[arg(long, value_name = "PATTERN,...")]
    pub allow_flaky: Option<String>,
    /// Run only shard K of N of the plan (merge the shards' outputs with
    /// `merge`).
    #[arg(long, value_name = "K/N")]
    pub shard: Option<String>,
    /// An earlier report.json whose trial durations balance the shards.
    #[arg(long, value_name = "REPORT.json")]
    pub durations: Option<PathBuf>,
    /// Run each selected trial N times (in the same boot); a cell that
    /// both passed and failed is flaky.
    #[arg(long, value_name = "N")]
    pub repeat: Option<usize>,
    /// Rerun a failed trial up to M times; a pass on rerun is flaky.
    #[arg(long, value_name = "M")]
    pub rerun_failures: Option<usize>,
    /// The kill matrix: mutants of KCELL_MUTANT_BASE (default kcell), all
    /// or a comma list of mutations [env: KCELL_MUTANTS].
    #[arg(long, value_name = "LIST", num_args = 0..=1, default_missing_value = "all")]
    pub mutants: Option<String>,
    /// Guests booted at once [default: the cores].
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Also run the trials ignored before they run (an unmet requirement).
    #[arg(long)]
    pub include_ignored: bool,
}

impl RunArgs {
    /// The arguments the suite reads (libtest's, with the suite's flags).
    fn argv(&self, list: bool) -> Vec<String> {
        let mut a = vec!["kcell-conformance".to_string()];
        let mut value = |flag: &str, v: Option<String>| {
            if let Some(v) = v {
                a.push(flag.to_string());
                a.push(v);
            }
        };
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        value("--output", Some(self.output.display().to_string()));
        value("--baseline", path(&self.baseline));
        value("--allow-flaky", self.allow_flaky.clone());
        value("--shard", self.shard.clone());
        value("--durations", path(&self.durations));
        value("--repeat", self.repeat.map(|n| n.to_string()));
        value(
            "--rerun-failures",
            self.rerun_failures.map(|n| n.to_string()),
        );
        value("--test-threads", self.jobs.map(|n| n.to_string()));
        for s in &self.skip {
            value("--skip", Some(s.clone()));
        }
        if self.allow_stale_differences {
            a.push("--allow-stale-differences".into());
        }
        if self.exact {
            a.push("--exact".into());
        }
        if self.include_ignored {
            a.push("--include-ignored".into());
        }
        if list {
            a.push("--list".into());
        }
        a.extend(self.filter.clone());
        a
    }

    /// The variables the suite reads, from the flags that name them.
    fn export(&self) {
        let set = |var: &str, v: Option<String>| {
            if let Some(v) = v {
                std::env::set_var(var, v);
            }
        };
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| absolute(p).display().to_string());
        set("KCELL_TARGETS", self.targets.clone());
        set("KCELL_RUNTIMES", self.runtimes.clone());
        set("KCELL_CASES", self.only.clone());
        set("KCELL_MUTANTS", self.mutants.clone());
        set(crate::data::CASES_ENV, path(&self.cases));
        set(crate::data::VM_ENV, path(&self.vm_dir));
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::env::current_dir()
        .map(|d| d.join(p))
        .unwrap_or_else(|_| p.to_path_buf())
}

/// A binary beside this command (cargo install puts them together), else on PATH.
fn beside_or_on_path(name: &str) -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|me| me.parent().map(|d| d.join(name)))
        .filter(|p| p.is_file());
    beside.or_else(|| {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    })
}

/// The agent, which the command needs for every case.
pub fn agent() -> Result<PathBuf, String> {
    beside_or_on_path("kcell-agent").ok_or_else(|| {
        "kcell-agent is neither beside kcell-conformance nor on PATH (cargo install --path harness installs both)".into()
    })
}

/// `run` or `list`.
pub fn run(args: &RunArgs, list: bool) -> ExitCode {
    let agent = match agent() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("kcell-conformance: {e}");
            return ExitCode::from(2);
        }
    };
    args.export();
    let kcell = args
        .kcell
        .as_deref()
        .map(absolute)
        .or_else(|| std::env::var_os("KCELL_BIN").map(PathBuf::from))
        .or_else(|| beside_or_on_path("kcell"));
    let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let config = crate::suite::Config {
        agent,
        kcell,
        output: base.join(&args.output),
        base,
    };
    crate::suite::main(&config, args.argv(list))
}

/// `vm ...`: a program in a throwaway guest (vm::program); its arguments
/// are vm::program's own (`kcell-conformance vm --help`).
pub fn vm(args: &[String]) -> i32 {
    if args.first().is_some_and(|a| a == "--help" || a == "-h") {
        println!("{}", crate::vm::program::USAGE);
        return 0;
    }
    let options = match crate::vm::program::parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("kcell vm: {e}\n{}", crate::vm::program::USAGE);
            return 125;
        }
    };
    match agent() {
        Ok(agent) => crate::vm::program::run(&options, &agent),
        Err(e) => {
            eprintln!("kcell vm: {e}");
            125
        }
    }
}
