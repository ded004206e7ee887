//! The run's results where kernel and runtime CI read them: the KTAP,
//! TAP 13 and KCIDB of a real host run (NS-UTS-1 with kcell, which passes,
//! and with a mutant that drops the UTS namespace, which fails; CG-MEM-3,
//! which skips on a host without swap), each read back by a consumer that
//! is not ours where one exists: KCIDB by kcidb-io's own schema (PyPI), TAP
//! 13 by tap.py (PyPI). KTAP has no parser package (kunit.py lives in the
//! kernel tree), so the KTAP is read by a strict checker of the rules of
//! Documentation/dev-tools/ktap.rst written here: version and plan lines,
//! numbering, two-space nesting, a suite's result against its tests, SKIP
//! directives. Each checks that the failing trial is a failure there too.
//! scripts/install-deps installs the Python packages. Root only.

mod support;

use kcell_harness::case::Case;
use kcell_harness::driver::Runtime;
use kcell_harness::export;
use kcell_harness::gate::{self, Outcome};
use kcell_harness::verdict::{Status, Verdict};
use std::path::Path;
use std::process::Command;

/// The verdicts of a small real host run: a pass, a failure and a skip.
fn host_run(work: &Path) -> Vec<Verdict> {
    let agent = Path::new(env!("CARGO_BIN_EXE_kcell-agent"));
    let target =
        kcell_harness::host::prepare(work, agent, Some(&support::kcell())).expect("host target");
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cases");
    let uts = Case::load(&cases.join("NS-UTS-1.toml")).expect("NS-UTS-1");
    let kcell = Runtime::probe("kcell", &target.kcell.with_file_name("kcell-oci")).expect("kcell");
    let link = work.join(kcell_harness::mutant::link_name("drop-ns-uts", "kcell"));
    std::os::unix::fs::symlink(&target.agent, &link).expect("symlink");
    let mutant = Runtime::probe("kcell+drop-ns-uts", &link).expect("mutant");
    let mut verdicts = vec![
        kcell_harness::runner::run_case(&uts, &target, &kcell),
        kcell_harness::runner::run_case(&uts, &target, &mutant),
    ];
    // The mutant's failure, as an ordinary runtime's: a failing trial.
    verdicts[1].runtime = "broken".into();
    assert_eq!(verdicts[0].status, Status::Pass, "{}", verdicts[0].detail);
    assert_eq!(verdicts[1].status, Status::Fail, "{}", verdicts[1].detail);
    let swap = Case::load(&cases.join("CG-MEM-3.toml")).expect("CG-MEM-3");
    let mut skip = kcell_harness::runner::run_case(&swap, &target, &kcell);
    if skip.status != Status::Skip {
        // A host with swap runs it: the skip is then the one a host
        // without swap gets, stated.
        skip.status = Status::Skip;
        skip.detail = "needs active swap (/proc/swaps lists none)".into();
    }
    verdicts.push(skip);
    verdicts
}

fn judged(verdicts: &[Verdict]) -> Vec<(&Verdict, Outcome)> {
    verdicts
        .iter()
        .map(|v| (v, gate::judge(v, &[]).0))
        .collect()
}

/// One KTAP result line's parts: ok, number, name, directive.
fn result_line(line: &str) -> Option<(bool, usize, String, Option<String>)> {
    let (ok, rest) = if let Some(r) = line.strip_prefix("not ok ") {
        (false, r)
    } else {
        (true, line.strip_prefix("ok ")?)
    };
    let (number, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let number: usize = number.parse().ok()?;
    let (name, directive) = match rest.split_once(" # ") {
        Some((n, d)) => (n, Some(d.to_string())),
        None => (rest, None),
    };
    Some((ok, number, name.to_string(), directive))
}

/// What a checked KTAP block says.
struct Block {
    ok: bool,
    all_skipped: bool,
    lines_used: usize,
    /// Its "# Subtest: NAME" (KUnit's), which its result line must repeat.
    name: Option<String>,
}

/// Checks a KTAP block. `lines` start at the block's version line, each
/// already without the block's indentation.
fn check_block(lines: &[&str], depth: usize) -> Result<Block, String> {
    let at = |i: usize| {
        lines
            .get(i)
            .copied()
            .ok_or("the block ends early".to_string())
    };
    if at(0)? != "KTAP version 1" {
        return Err(format!(
            "depth {depth}: '{}' is not 'KTAP version 1'",
            at(0)?
        ));
    }
    let mut i = 1;
    let mut subtest_name = None;
    if let Some(name) = at(i)?.strip_prefix("# Subtest: ") {
        subtest_name = Some(name.to_string());
        i += 1;
    }
    let plan: usize = at(i)?
        .strip_prefix("1..")
        .and_then(|n| n.parse().ok())
        .ok_or(format!("depth {depth}: '{}' is not a plan 1..N", at(i)?))?;
    i += 1;
    let mut seen = 0;
    let (mut all_ok, mut all_skipped) = (true, true);
    while seen < plan {
        let line = at(i)?;
        if line.starts_with("  ") {
            // A nested block: its lines are indented two more spaces, up to
            // the result line that closes it at this depth.
            let inner: Vec<&str> = lines[i..]
                .iter()
                .take_while(|l| l.starts_with("  "))
                .map(|l| &l[2..])
                .collect();
            let block = check_block(&inner, depth + 1)?;
            let (inner_ok, inner_skipped) = (block.ok, block.all_skipped);
            if block.lines_used != inner.len() {
                return Err(format!("depth {}: lines after its last result", depth + 1));
            }
            i += block.lines_used;
            let (ok, number, name, directive) = result_line(at(i)?).ok_or(format!(
                "depth {depth}: a nested block without its result line"
            ))?;
            if block.name.as_ref().is_some_and(|n| *n != name) {
                return Err(format!(
                    "depth {depth}: test {number} '{name}' closes the subtest {:?}",
                    block.name
                ));
            }
            if ok != inner_ok {
                return Err(format!(
                    "depth {depth}: test {number} says {} but its subtests say {}",
                    if ok { "ok" } else { "not ok" },
                    if inner_ok { "ok" } else { "not ok" }
                ));
            }
            if inner_skipped && directive.as_deref().is_none_or(|d| !d.starts_with("SKIP")) {
                return Err(format!(
                    "depth {depth}: test {number}'s subtests all skipped, it does not say SKIP"
                ));
            }
        }
        let line = at(i)?;
        if line.starts_with('#') {
            i += 1;
            continue;
        }
        let (ok, number, name, directive) =
            result_line(line).ok_or(format!("depth {depth}: '{line}' is not a result line"))?;
        seen += 1;
        if number != seen {
            return Err(format!(
                "depth {depth}: expected test number {seen} but found {number}"
            ));
        }
        if name.is_empty() || name.contains('#') {
            return Err(format!(
                "depth {depth}: test {number} has no name or a '#' in it"
            ));
        }
        if let Some(d) = &directive {
            if d.to_ascii_uppercase().starts_with("SKIP") && !d.starts_with("SKIP") {
                return Err(format!(
                    "depth {depth}: '{d}': the directive is SKIP, in capitals"
                ));
            }
        }
        let skipped = directive.as_deref().is_some_and(|d| d.starts_with("SKIP"));
        all_ok &= ok;
        all_skipped &= skipped;
        i += 1;
    }
    Ok(Block {
        ok: all_ok,
        all_skipped: all_skipped && plan > 0,
        lines_used: i,
        name: subtest_name,
    })
}

/// Checks a whole KTAP document; returns the names of the not-ok tests at
/// the innermost level (`suite/case`).
fn check_ktap(text: &str) -> Result<Vec<String>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let used = check_block(&lines, 0)?.lines_used;
    if used != lines.len() {
        return Err(format!(
            "{} lines after the last result",
            lines.len() - used
        ));
    }
    let mut failing = Vec::new();
    let mut suite_cases = Vec::new();
    for line in &lines {
        if let Some(inner) = line.strip_prefix("  ") {
            if let Some((false, _, name, _)) = result_line(inner) {
                suite_cases.push(name);
            }
        } else if let Some((_, _, suite, _)) = result_line(line) {
            failing.extend(suite_cases.drain(..).map(|c| format!("{suite}/{c}")));
        }
    }
    Ok(failing)
}

fn python(script: &str, arg: &Path) -> std::process::Output {
    Command::new("python3")
        .args(["-c", script])
        .arg(arg)
        .output()
        .expect("python3")
}

#[test]
#[cfg_attr(
    kcell_unprivileged,
    ignore = "needs root: containers, cgroups and mounts (run the tests as root)"
)]
fn a_host_run_reads_back_in_ktap_tap13_and_kcidb() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "running containers needs root"
    );
    let work = tempfile::Builder::new()
        .prefix("kcell-case-formats-")
        .tempdir()
        .expect("tempdir");
    let verdicts = host_run(work.path());
    let judged = judged(&verdicts);
    let out = work.path().join("reports");
    std::fs::create_dir(&out).expect("mkdir");
    export::write_all(&out, &judged).expect("write the formats");

    // KTAP: the kernel's rules; the failing trial is not ok, its suite too.
    let ktap = std::fs::read_to_string(out.join("report.ktap")).expect("report.ktap");
    let failing = check_ktap(&ktap).unwrap_or_else(|e| panic!("KTAP: {e}\n{ktap}"));
    assert_eq!(failing, ["host/broken/NS-UTS-1"], "{ktap}");
    assert!(ktap.contains("ok 1 CG-MEM-3 # SKIP "), "{ktap}");
    // The checker does catch what breaks the rules.
    for broken in [
        ktap.replacen("1..2", "1..3", 1),
        ktap.replacen("ok 2 NS-UTS-1", "ok 3 NS-UTS-1", 1),
        ktap.replacen("not ok 1 host/broken", "ok 1 host/broken", 1),
        ktap.replacen("# SKIP", "# skip", 1),
    ] {
        assert!(
            check_ktap(&broken).is_err(),
            "the checker let this through:\n{broken}"
        );
    }

    // TAP 13, through tap.py: the broken runtime's trial is not ok.
    let consumer = r#"
import sys
from tap.parser import Parser
results = [l for l in Parser().parse_file(sys.argv[1]) if l.category == "test"]
plan = [l for l in Parser().parse_file(sys.argv[1]) if l.category == "plan"]
assert plan and plan[0].expected_tests == len(results), "plan and results disagree"
for r in results:
    print("ok" if r.ok else "not ok", "skip" if r.skip else "-", r.description, (r.yaml_block or {}).get("status", ""))
"#;
    let read = python(consumer, &out.join("tap/broken.tap"));
    assert!(
        read.status.success(),
        "tap.py: {}",
        String::from_utf8_lossy(&read.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&read.stdout).trim(),
        "not ok - - host NS-UTS-1 fail"
    );
    let read = python(consumer, &out.join("tap/kcell.tap"));
    assert!(
        read.status.success(),
        "tap.py: {}",
        String::from_utf8_lossy(&read.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&read.stdout).trim(),
        "ok skip - host CG-MEM-3 \nok - - host NS-UTS-1"
    );

    // KCIDB, through kcidb-io's schema (v5.3): valid, and the failure FAIL.
    let validate = r#"
import json, sys
from kcidb_io import schema
doc = json.load(open(sys.argv[1]))
schema.V5_3.validate_exactly(doc)
for t in doc["tests"]:
    print(t["path"], t["status"])
"#;
    let read = python(validate, &out.join("kcidb.json"));
    assert!(
        read.status.success(),
        "kcidb-io: {}",
        String::from_utf8_lossy(&read.stderr)
    );
    let said = String::from_utf8_lossy(&read.stdout);
    assert!(
        said.contains("container.hybrid.broken.NS-UTS-1 FAIL")
            || said.contains(".broken.NS-UTS-1 FAIL"),
        "{said}"
    );
    assert!(
        said.contains(".kcell.NS-UTS-1 PASS") && said.contains(".kcell.CG-MEM-3 SKIP"),
        "{said}"
    );
    // The same run gives the same ids.
    let again = export::kcidb(&judged, "kcell", &export::run_name(&judged));
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("kcidb.json")).expect("read"))
            .expect("json");
    assert_eq!(again["tests"], written["tests"]);
}
