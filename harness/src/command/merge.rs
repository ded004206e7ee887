//! `kcell-conformance merge`: the reports of `--shard K/N` runs put back
//! together as one run's (shard.rs), written and gated as a single run's
//! (publish.rs).

use std::path::{Path, PathBuf};

/// What `merge` is asked.
#[derive(Debug, Clone, clap::Args)]
pub struct MergeArgs {
    /// Each shard's output directory (its report.json and run.json).
    #[arg(required = true, value_name = "SHARD_DIR")]
    pub dirs: Vec<PathBuf>,
    /// Where the whole run's reports go.
    #[arg(
        short = 'o',
        long = "output",
        value_name = "DIR",
        default_value = "kcell-results/merged"
    )]
    pub out: PathBuf,
    /// The cases directory (differences.toml, expected-skips.toml, titles);
    /// default: as `run` finds it.
    #[arg(long, value_name = "DIR")]
    pub cases: Option<PathBuf>,
    /// An earlier report.json: a regression against it fails the merge.
    #[arg(long, value_name = "OLD.json")]
    pub baseline: Option<PathBuf>,
    /// A known difference that no longer shows does not fail the merge.
    #[arg(long)]
    pub allow_stale_differences: bool,
    /// Flaky cells whose name contains one of these do not fail the merge.
    #[arg(long, value_delimiter = ',', value_name = "PATTERN")]
    pub allow_flaky: Vec<String>,
}

/// Merges the shards; 0 when the merged run passes its gate, 1 when it
/// fails, 2 when the shards cannot be merged (another plan, a unit run
/// twice, an unreadable report). A unit no shard ran becomes an error
/// verdict per trial naming it.
pub fn run(args: &MergeArgs) -> i32 {
    let cases = args.cases.clone().unwrap_or_else(crate::data::cases_dir);
    match merged(&args.dirs, &args.out, &cases, args) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("kcell-conformance merge: {e}");
            2
        }
    }
}

/// Reads, merges, writes and gates; Ok(false) when the merged run fails.
fn merged(dirs: &[PathBuf], out: &Path, cases: &Path, g: &MergeArgs) -> Result<bool, String> {
    use crate::{differences, gate, publish, shard};
    let read =
        |p: PathBuf| std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()));
    let mut shards = Vec::new();
    for dir in dirs {
        let record: shard::RunRecord = serde_json::from_str(&read(dir.join("run.json"))?)
            .map_err(|e| format!("{}: not a run.json: {e}", dir.join("run.json").display()))?;
        let verdicts: Vec<crate::verdict::Verdict> =
            serde_json::from_str(&read(dir.join("report.json"))?).map_err(|e| {
                format!(
                    "{}: not a report.json: {e}",
                    dir.join("report.json").display()
                )
            })?;
        shards.push((dir.display().to_string(), record, verdicts));
    }
    let (plan, verdicts) = shard::merge(&shards)?;
    let known = differences::load(&cases.join("differences.toml"))?;
    let titles = crate::case::load_dir(cases)
        .into_iter()
        .flatten()
        .map(|c| (c.id, c.title))
        .collect();
    let reports_ok = publish::write_reports(
        out,
        &verdicts,
        &known,
        &Default::default(),
        g.baseline.as_deref(),
        &titles,
    );
    let timeline = shards
        .iter()
        .flat_map(|(_, r, _)| r.timeline.iter().cloned())
        .collect();
    let record = shard::RunRecord {
        ran: plan.units.iter().map(|u| u.name.clone()).collect(),
        plan,
        shard: None,
        timeline,
    };
    std::fs::write(
        out.join("run.json"),
        serde_json::to_string_pretty(&record).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("write {}: {e}", out.join("run.json").display()))?;
    let gate_ok = publish::gate_checks(cases, &verdicts, &known, g.allow_stale_differences)?;
    let mut tally = gate::Tally::default();
    let mut failed = Vec::new();
    for v in &verdicts {
        let outcome = gate::judge(v, &known).0;
        tally.add(v, outcome);
        if outcome.fails()
            && !(outcome == gate::Outcome::Flaky && gate::allowed_flaky(&v.trial(), &g.allow_flaky))
        {
            failed.push(format!("{} {}", v.trial(), outcome.as_str()));
        }
    }
    for f in &failed {
        eprintln!("FAILED: {f}");
    }
    println!(
        "merged {} shard reports of plan {}: {} trials",
        dirs.len(),
        record.plan.fingerprint,
        verdicts.len()
    );
    for line in tally.lines() {
        println!("  {line}");
    }
    Ok(failed.is_empty() && reports_ok && gate_ok)
}
