//! report.html from a fixture report (passes, failures, skips, an error, an
//! inconclusive, measured cases, a baseline with one regression): its
//! structure is snapshot-tested, it references nothing outside itself, and
//! headless Chromium (Debian's `chromium`) loads it without a console
//! error, finds the grid and leaves a 1400x900 screenshot in target/kcell/.

use kcell_harness::verdict::Verdict;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn load(name: &str) -> Vec<Verdict> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("report JSON")
}

fn page() -> String {
    let titles: BTreeMap<String, String> = [
        (
            "CG-CPU-1",
            "A cfs quota of 20000/100000 holds a busy loop to 20%",
        ),
        ("CG-MEM-1", "A 64k memory limit gets a process OOM-killed"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    let old = load("report-old.json");
    kcell_harness::html::render(&load("report-new.json"), Some(&old), &titles)
}

#[test]
fn the_page_holds_the_grid_details_plots_and_regressions() {
    let html = page();
    // Regressions come first, with old and new values.
    let reg = html.find("1 regressions").expect("the regression heading");
    assert!(reg < html.find("class=\"grid\"").expect("the grid"));
    assert!(
        html.contains("<td>pass 20.1%</td><td>fail 25.1%</td>"),
        "old and new values"
    );
    // Every verdict has its detail, and the plots their bands.
    assert_eq!(html.matches("class=\"detail\"").count(), 10);
    assert!(html.contains("<svg"));
    assert!(html.contains("observed 0.251 (expected 0.2 ± 0.02)"));
    // Escaped: the console tail's "<&>" is text.
    assert!(html.contains("Kernel panic - not syncing &lt;&amp;&gt;"));
    insta::assert_snapshot!(structure(&html));
}

/// The page's element structure (tags and classes, no text): what the
/// snapshot pins without breaking on every measured value.
fn structure(html: &str) -> String {
    // Scripts and styles are text, not structure.
    let inline = regex::Regex::new(r"(?s)<(script|style)>.*?</(script|style)>").expect("regex");
    let html = inline.replace_all(html, "<$1></$1>");
    let html = html.as_ref();
    let re =
        regex::Regex::new(r#"<(/?)([a-z0-9]+)(?:[^>]*?class="([^"]*)")?[^>]*>"#).expect("regex");
    let mut out = String::new();
    let mut depth: usize = 0;
    for m in re.captures_iter(html) {
        let closing = !m[1].is_empty();
        let tag = &m[2];
        if [
            "td", "th", "option", "circle", "text", "rect", "line", "span", "a", "br",
        ]
        .contains(&tag)
        {
            continue;
        }
        if closing {
            depth = depth.saturating_sub(1);
            continue;
        }
        let class = m
            .get(3)
            .map(|c| format!(".{}", c.as_str()))
            .unwrap_or_default();
        out.push_str(&format!("{}{tag}{class}\n", "  ".repeat(depth.min(12))));
        if !matches!(tag, "meta" | "br" | "img" | "input") {
            depth += 1;
        }
    }
    out
}

#[test]
fn the_page_references_nothing_outside_itself() {
    let html = page();
    for bad in [
        "src=",
        "href=\"http",
        "href=\"//",
        "url(",
        "@import",
        "<link",
        "http://",
        "https://",
    ] {
        assert!(
            !html.contains(bad),
            "the page holds an external reference: {bad}"
        );
    }
}

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

#[test]
fn headless_chromium_loads_it_without_a_console_error() {
    let Some(browser) = chromium() else {
        panic!("chromium is not installed: scripts/install-deps installs Debian's chromium");
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/kcell");
    std::fs::create_dir_all(&dir).expect("target/kcell");
    let page_path = dir.join("report-fixture.html");
    std::fs::write(&page_path, page()).expect("write the page");
    let profile = tempfile::Builder::new()
        .prefix("kcell-chromium-")
        .tempdir()
        .expect("profile dir");
    let run = |extra: &[&str]| {
        std::process::Command::new(&browser)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(["--enable-logging=stderr", "--v=0", "--window-size=1400,900"])
            .args(extra)
            .arg(format!("file://{}", page_path.display()))
            .output()
            .expect("run chromium")
    };
    let shot = dir.join("report-fixture.png");
    let _ = std::fs::remove_file(&shot);
    let out = run(&[&format!("--screenshot={}", shot.display())]);
    let log = String::from_utf8_lossy(&out.stderr);
    let console_errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") && (l.contains("Uncaught") || l.contains("Error")))
        .collect();
    assert!(
        console_errors.is_empty(),
        "console errors: {console_errors:#?}"
    );
    let png = std::fs::read(&shot).unwrap_or_default();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "no screenshot at {} ({log})",
        shot.display()
    );
    // The DOM after the page's script ran: the grid is there, with its cells.
    let dom = run(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("class=\"grid\""), "no grid in the loaded page");
    assert!(
        dom.matches("<td class=\"fail\"").count() >= 2,
        "the failing cells"
    );
}
