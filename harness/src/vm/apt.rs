//! The harness's own apt configuration, one per Debian suite, in its
//! cache: its own sources list naming the suite, its own lists, archives
//! and (empty) dpkg status, verified with the system's Debian archive
//! keyring as apt does. The machine's own apt setup is never touched: every
//! call passes `-o Dir::...` to apt-get and apt-cache.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

/// The keyring apt verifies Debian's Release files with.
pub const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The mirror, as this machine's own sources name it (else deb.debian.org).
fn mirror() -> String {
    let mut texts = Vec::new();
    for f in [
        "/etc/apt/sources.list",
        "/etc/apt/sources.list.d/debian.sources",
    ] {
        if let Ok(t) = std::fs::read_to_string(f) {
            texts.push(t);
        }
    }
    for t in texts {
        for l in t.lines() {
            let l = l.trim();
            let url = l.strip_prefix("URIs:").map(str::trim).or_else(|| {
                l.strip_prefix("deb ")
                    .and_then(|r| r.split_whitespace().find(|w| w.starts_with("http")))
            });
            if let Some(u) = url.filter(|u| u.ends_with("/debian") || u.ends_with("/debian/")) {
                return u.trim_end_matches('/').to_string();
            }
        }
    }
    "http://deb.debian.org/debian".into()
}

/// One suite's apt configuration.
#[derive(Debug, Clone)]
pub struct Apt {
    dir: PathBuf,
    suite: String,
}

impl Apt {
    /// The configuration of `suite` under `cache` (made when missing).
    pub fn new(cache: &Path, suite: &str) -> Result<Apt, String> {
        let dir = cache.join("apt").join(suite);
        // cache/ holds apt's binary package cache (see options()).
        for d in [
            "cache",
            "lists/partial",
            "archives/partial",
            "etc/preferences.d",
            "etc/apt.conf.d",
        ] {
            std::fs::create_dir_all(dir.join(d))
                .map_err(|e| format!("mkdir {}: {e}", dir.join(d).display()))?;
        }
        let status = dir.join("status");
        if !status.exists() {
            std::fs::write(&status, "").map_err(|e| format!("write {}: {e}", status.display()))?;
        }
        let m = mirror();
        let mut sources = format!("deb [signed-by={KEYRING}] {m} {suite} main\n");
        // Kernel fixes land in the security suite of a released distribution.
        if !matches!(suite, "sid" | "unstable") && !suite.contains("backports") {
            let security = m.replace("/debian", "/debian-security");
            sources.push_str(&format!(
                "deb [signed-by={KEYRING}] {security} {suite}-security main\n"
            ));
        }
        // Rewritten only when it changes: apt rebuilds its binary cache
        // when the sources list is newer than it.
        let list = dir.join("sources.list");
        if std::fs::read_to_string(&list).ok().as_deref() != Some(sources.as_str()) {
            std::fs::write(&list, sources).map_err(|e| format!("write {}: {e}", list.display()))?;
        }
        Ok(Apt {
            dir,
            suite: suite.to_string(),
        })
    }

    /// The options that point apt at this configuration only.
    fn options(&self) -> Vec<String> {
        let d = |p: &str| self.dir.join(p).display().to_string();
        vec![
            format!("-oDir::Etc::SourceList={}", d("sources.list")),
            "-oDir::Etc::SourceParts=/dev/null".into(),
            format!("-oDir::Etc::Preferences={}", d("etc/preferences")),
            format!("-oDir::Etc::PreferencesParts={}", d("etc/preferences.d")),
            format!("-oDir::State::Lists={}", d("lists")),
            format!("-oDir::State::Status={}", d("status")),
            format!("-oDir::Cache={}", d("cache")),
            // Named, not inherited: Debian's container images switch the
            // binary cache off (apt.conf.d/docker-clean), and then every
            // apt-cache call rebuilt it from the lists (0.6 s each for
            // bullseye, 4.5 s of each `kcell vm` resolving its kernel).
            "-oDir::Cache::pkgcache=pkgcache.bin".into(),
            "-oDir::Cache::srcpkgcache=srcpkgcache.bin".into(),
            format!("-oDir::Cache::Archives={}", d("archives")),
            "-oAPT::Get::List-Cleanup=0".into(),
            "-oAcquire::Retries=3".into(),
            // The lists are root's own files in the cache: no _apt sandbox.
            "-oAPT::Sandbox::User=root".into(),
        ]
    }

    fn run(&self, tool: &str, args: &[&str], cwd: Option<&Path>) -> Result<String, String> {
        let mut cmd = Command::new(tool);
        cmd.args(self.options()).args(args);
        if let Some(c) = cwd {
            cmd.current_dir(c);
        }
        let out = cmd
            .output()
            .map_err(|e| format!("{tool}: {e} (install apt)"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).to_string())
        } else {
            Err(format!(
                "{tool} {} ({} suite, config {}): {}",
                args.join(" "),
                self.suite,
                self.dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// `apt-get update` when the lists are missing or older than a day.
    pub fn update(&self) -> Result<(), String> {
        let stamp = self.dir.join("updated");
        let fresh = std::fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < Duration::from_secs(86_400));
        if fresh {
            return Ok(());
        }
        eprintln!(
            "kcell: updating the apt lists of {} (own configuration, {})",
            self.suite,
            self.dir.display()
        );
        self.run("apt-get", &["-q", "update"], None)?;
        std::fs::write(&stamp, "").map_err(|e| format!("write {}: {e}", stamp.display()))
    }

    /// Package names matching `pattern` (apt-cache search --names-only).
    pub fn search(&self, pattern: &str) -> Result<Vec<String>, String> {
        Ok(self
            .run("apt-cache", &["search", "--names-only", pattern], None)?
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect())
    }

    /// The candidate version of `package`.
    pub fn candidate(&self, package: &str) -> Result<Option<String>, String> {
        Ok(self
            .run("apt-cache", &["policy", package], None)?
            .lines()
            .find_map(|l| l.trim().strip_prefix("Candidate: ").map(str::to_string))
            .filter(|c| c != "(none)"))
    }

    /// `apt-cache depends --recurse` of `package`, Depends and
    /// Pre-Depends only: one package per unindented line.
    pub fn depends_recursive(&self, package: &str) -> Result<String, String> {
        self.run(
            "apt-cache",
            &[
                "depends",
                "--recurse",
                "--no-recommends",
                "--no-suggests",
                "--no-conflicts",
                "--no-breaks",
                "--no-replaces",
                "--no-enhances",
                package,
            ],
            None,
        )
    }

    /// The archive's SHA256 of `package=version`.
    pub fn sha256(&self, package: &str, version: &str) -> Result<String, String> {
        self.run(
            "apt-cache",
            &["show", &format!("{package}={version}")],
            None,
        )?
        .lines()
        .find_map(|l| l.strip_prefix("SHA256: ").map(str::to_string))
        .ok_or_else(|| format!("apt-cache show {package}={version}: no SHA256"))
    }

    /// Downloads `package=version` into `dir`; returns the .deb.
    pub fn download(&self, package: &str, version: &str, dir: &Path) -> Result<PathBuf, String> {
        self.run(
            "apt-get",
            &["download", "-q", &format!("{package}={version}")],
            Some(dir),
        )?;
        std::fs::read_dir(dir)
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.extension().is_some_and(|x| x == "deb")
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(package))
            })
            .ok_or_else(|| format!("apt-get download {package}: no .deb in {}", dir.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_is_the_harness_own() {
        let t = tempfile::tempdir().expect("tempdir");
        let apt = Apt::new(t.path(), "bullseye").expect("apt");
        let sources =
            std::fs::read_to_string(t.path().join("apt/bullseye/sources.list")).expect("read");
        assert!(
            sources.contains(" bullseye main") && sources.contains("bullseye-security"),
            "{sources}"
        );
        assert!(sources.contains(KEYRING));
        let opts = apt.options().join(" ");
        assert!(
            opts.contains("Dir::Etc::SourceParts=/dev/null"),
            "the system's lists are never read"
        );
        assert!(!opts.contains("/etc/apt/"), "{opts}");
        assert!(
            opts.contains("Dir::Cache::pkgcache=pkgcache.bin")
                && t.path().join("apt/bullseye/cache").is_dir(),
            "apt keeps its binary cache whatever the system's apt.conf.d says: {opts}"
        );
        let sid = Apt::new(t.path(), "sid").expect("apt");
        let s = std::fs::read_to_string(t.path().join("apt/sid/sources.list")).expect("read");
        assert!(!s.contains("security"), "{s}");
        drop(sid);
    }
}
