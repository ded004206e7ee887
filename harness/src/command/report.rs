//! `kcell-conformance report`: a report.json re-rendered (the HTML page,
//! against an older run when given; KTAP, TAP 13, KCIDB) or two compared
//! cell by cell, without rerunning anything.

use std::path::{Path, PathBuf};

/// The formats `report` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// The HTML page (the default).
    Html,
    /// KTAP, as the kernel's selftests print.
    Ktap,
    /// TAP 13, one runtime's trials.
    Tap13,
    /// KCIDB's JSON, for the kernel's CI database.
    Kcidb,
}

impl ReportFormat {
    fn exported(self) -> Option<crate::export::Format> {
        match self {
            ReportFormat::Html => None,
            ReportFormat::Ktap => Some(crate::export::Format::Ktap),
            ReportFormat::Tap13 => Some(crate::export::Format::Tap13),
            ReportFormat::Kcidb => Some(crate::export::Format::Kcidb),
        }
    }
}

/// What `report` is asked.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// NEW.json, or OLD.json NEW.json (the page then shows what changed).
    #[arg(required = true, num_args = 1..=2, value_name = "REPORT.json")]
    pub files: Vec<PathBuf>,
    /// Where to write it; - for standard output (default: report.html for
    /// HTML, standard output for the others).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// The cases directory: titles for the page, differences.toml for the
    /// outcomes of the exported formats.
    #[arg(long, value_name = "DIR")]
    pub cases: Option<PathBuf>,
    /// The format.
    #[arg(long, value_enum, default_value = "html")]
    pub format: ReportFormat,
    /// Only this target's trials, e.g. host.
    #[arg(long)]
    pub target: Option<String>,
    /// Only this runtime's trials, e.g. runc@sid (tap13 needs one).
    #[arg(long)]
    pub runtime: Option<String>,
    /// KCIDB's origin: the submitting CI system's name.
    #[arg(long, default_value = "kcell")]
    pub origin: String,
    /// Print every cell whose verdict differs between OLD and NEW (or that
    /// one lacks); exit 1 if any.
    #[arg(long)]
    pub compare: bool,
}

impl ReportArgs {
    fn out(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| match self.format {
            ReportFormat::Html => "report.html".into(),
            _ => "-".into(),
        })
    }
}

/// Re-renders or compares, as `opts` asks; the exit status.
pub fn run(opts: &ReportArgs) -> i32 {
    let out = opts.out();
    let read = |p: &Path| -> Result<Vec<crate::verdict::Verdict>, String> {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: not a report.json: {e}", p.display()))
    };
    let (old, new) = match opts.files.as_slice() {
        [new] => (None, read(new)),
        [old, new] => (Some(read(old)), read(new)),
        _ => return usage("give NEW.json, or OLD.json NEW.json"),
    };
    let (old, mut new) = match (old.transpose(), new) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("kcell-conformance report: {e}");
            return 1;
        }
    };
    if opts.compare {
        let Some(old) = old else {
            return usage("--compare needs OLD.json and NEW.json");
        };
        return compare_cells(&old, &new);
    }
    if let Some(t) = &opts.target {
        new.retain(|v| &v.target == t);
    }
    if let Some(r) = &opts.runtime {
        new.retain(|v| &v.runtime == r);
    }
    let text = match opts.format.exported() {
        None => {
            let titles: std::collections::BTreeMap<String, String> = opts
                .cases
                .as_deref()
                .map(|d| {
                    crate::case::load_dir(d)
                        .into_iter()
                        .flatten()
                        .map(|c| (c.id, c.title))
                        .collect()
                })
                .unwrap_or_default();
            crate::html::render(&new, old.as_deref(), &titles)
        }
        Some(format) => match exported(&new, format, opts) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("kcell-conformance report: {e}");
                return 1;
            }
        },
    };
    if out.as_os_str() == "-" {
        print!("{text}");
        return 0;
    }
    match std::fs::write(&out, text) {
        Ok(()) => {
            println!("{}", out.display());
            0
        }
        Err(e) => {
            eprintln!("kcell-conformance report: write {}: {e}", out.display());
            1
        }
    }
}

/// `kcell-conformance report --compare OLD NEW`: every cell (trial) whose verdict
/// differs, or that one of them lacks; 0 when they have the same cells with
/// the same verdicts (a sharded run merged against an unsharded one).
fn compare_cells(old: &[crate::verdict::Verdict], new: &[crate::verdict::Verdict]) -> i32 {
    use std::collections::BTreeMap;
    let cells = |vs: &[crate::verdict::Verdict]| -> BTreeMap<String, &'static str> {
        vs.iter().map(|v| (v.trial(), v.status.as_str())).collect()
    };
    let (a, b) = (cells(old), cells(new));
    let mut differing = 0;
    for (trial, was) in &a {
        match b.get(trial) {
            Some(now) if now == was => {}
            Some(now) => {
                differing += 1;
                println!("{trial}: {was} -> {now}");
            }
            None => {
                differing += 1;
                println!("{trial}: {was} -> (missing)");
            }
        }
    }
    for (trial, now) in b.iter().filter(|(t, _)| !a.contains_key(*t)) {
        differing += 1;
        println!("{trial}: (missing) -> {now}");
    }
    println!(
        "{} cells before, {} after, {differing} differing",
        a.len(),
        b.len()
    );
    i32::from(differing > 0)
}

/// `verdicts` in `format`, judged with the cases' differences.toml when
/// --cases names the directory (else a failure is a failure).
fn exported(
    verdicts: &[crate::verdict::Verdict],
    format: crate::export::Format,
    opts: &ReportArgs,
) -> Result<String, String> {
    use crate::export::{self, Format};
    let known = match &opts.cases {
        Some(d) => crate::differences::load(&d.join("differences.toml"))?,
        None => Vec::new(),
    };
    let judged: Vec<_> = verdicts
        .iter()
        .map(|v| (v, crate::gate::judge(v, &known).0))
        .collect();
    Ok(match format {
        Format::Ktap => export::ktap(&judged),
        Format::Kcidb => serde_json::to_string_pretty(&export::kcidb(
            &judged,
            &opts.origin,
            &export::run_name(&judged),
        ))
        .map_err(|e| e.to_string())?,
        Format::Tap13 => {
            let runtime = opts
                .runtime
                .as_deref()
                .ok_or("--format tap13 is one runtime's: name it with --runtime")?;
            export::tap13(&judged, runtime)
        }
    })
}

fn usage(why: &str) -> i32 {
    eprintln!("kcell-conformance report: {why} (see --help)");
    2
}
