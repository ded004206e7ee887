//! Where a client's programs come from: the host's own packages (Debian
//! bookworm's, which `scripts/install-deps` installs) or a root of a newer
//! Debian suite that `scripts/client-root` made in kcell's cache.
//!
//! A suite's root is entered the way a chroot-based builder enters it: a
//! holder process makes a mount namespace of its own, binds the root onto
//! itself (so `/` is a mount point there, as a runtime's pivot_root needs),
//! binds /dev, /sys, the tests' temporary directory and kcell-oci's
//! directory at their host paths, mounts its own /proc and a fresh /run,
//! and sleeps chrooted; each client command is `nsenter` into that
//! namespace and root. The clients then run with their own suite's
//! libraries on the host's kernel, and paths the test passes (its
//! directory, the runtime) mean the same inside and outside. Nothing of it
//! outlives the holder: its mounts are private to its namespace.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::census::{names, Census};

/// A suite's root, entered by a holder process in a mount namespace of
/// its own; the namespace goes with the holder.
struct Entered {
    root: PathBuf,
    holder: Child,
}

impl Drop for Entered {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

pub struct Install {
    /// The Debian suite the clients come from.
    pub suite: &'static str,
    entered: Option<Entered>,
}

/// The packages whose versions a test reports.
const PACKAGES: [&str; 6] = [
    "podman",
    "conmon",
    "netavark",
    "containerd",
    "docker.io",
    "docker-cli",
];

impl Install {
    /// The host's own clients.
    pub fn host() -> Install {
        Install {
            suite: "bookworm",
            entered: None,
        }
    }

    /// The clients of `suite`'s root in kcell's cache, entered for this test.
    pub fn suite(suite: &'static str, runtime: &Path) -> Install {
        let root = cache().join("clients").join(suite).join("root");
        assert!(
            root.join("usr/bin").is_dir(),
            "no {suite} root at {}: scripts/client-root {suite} makes it (scripts/install-deps does)",
            root.display()
        );
        let tmp = std::env::temp_dir();
        let runtime_dir = runtime.parent().expect("kcell-oci has a directory");
        let q = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', "'\\''"));
        let r = q(&root);
        let bind_at_same_path = |p: &Path| {
            let inside = q(&root.join(p.strip_prefix("/").unwrap_or(p)));
            format!("mkdir -p {inside} && mount --rbind {} {inside}", q(p))
        };
        let script = [
            format!("mount --bind {r} {r}"),
            format!("mount --rbind /dev {r}/dev"),
            format!("mount --rbind /sys {r}/sys"),
            format!("mount -t proc proc {r}/proc"),
            format!("mount -t tmpfs tmpfs {r}/run"),
            bind_at_same_path(&tmp),
            bind_at_same_path(runtime_dir),
            "echo ready".into(),
            format!("exec chroot {r} sleep infinity"),
        ]
        .join(" && ");
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare (util-linux)");
        let mut line = String::new();
        if let Some(out) = holder.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let entered = Entered { root, holder };
        assert_eq!(
            line.trim(),
            "ready",
            "entering {}: the holder's mounts failed (its stderr is above)",
            entered.root.display()
        );
        Install {
            suite,
            entered: Some(entered),
        }
    }

    /// `program` (an absolute path in the install's root) as a command.
    pub fn command(&self, program: &str) -> Command {
        match &self.entered {
            None => Command::new(program),
            Some(e) => {
                let mut c = Command::new("nsenter");
                c.arg("--target")
                    .arg(e.holder.id().to_string())
                    .args(["--mount", "--root", "--wd", program]);
                c
            }
        }
    }

    /// Whether `program` is in the install's root.
    pub fn has(&self, program: &str) -> bool {
        let root = self.entered.as_ref().map_or(Path::new("/"), |e| &e.root);
        root.join(program.trim_start_matches('/')).is_file()
    }

    /// The clients' package versions, one `package version` per line.
    pub fn versions(&self) -> String {
        let out = self
            .command("/usr/bin/dpkg-query")
            .arg("-W")
            .arg("-f")
            .arg("${Package} ${Version}\n")
            .args(PACKAGES)
            .stderr(Stdio::null())
            .output()
            .expect("dpkg-query");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Says which versions a test ran: on stderr, and in
    /// target/kcell/oci-clients.txt, which .ci/run prints.
    pub fn report(&self, test: &str) {
        let line = format!(
            "{test}: {} ({})",
            self.versions().replace('\n', ", "),
            self.suite
        );
        eprintln!("{line}");
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/kcell/oci-clients.txt");
        if let Some(dir) = file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let mut old = std::fs::read_to_string(&file).unwrap_or_default();
        old = old
            .lines()
            .filter(|l| !l.starts_with(&format!("{test}:")))
            .map(|l| format!("{l}\n"))
            .collect();
        let _ = std::fs::write(&file, format!("{old}{line}\n"));
    }

    /// The host's census, and for a suite's root what its namespace holds:
    /// its mounts, its netns files and kcell-oci's state under its /run.
    pub fn census(&self) -> Census {
        let mut c = Census::of_host();
        if let Some(e) = &self.entered {
            let pid = e.holder.id();
            let ns = PathBuf::from(format!("/proc/{pid}/root"));
            let tag = |v: Vec<String>| v.into_iter().map(|x| format!("{}:{x}", self.suite));
            c.mounts
                .extend(tag(crate::census::mount_points(Path::new(&format!(
                    "/proc/{pid}/mountinfo"
                )))));
            c.netns.extend(tag(names(&ns.join("run/netns"))));
            c.kcell_state.extend(tag(names(&ns.join("run/kcell-oci"))));
            c.kcell_state
                .extend(tag(names(&ns.join("run/kcell/containers"))));
        }
        c
    }
}

/// kcell's cache: KCELL_CACHE, else $XDG_CACHE_HOME/kcell, else ~/.cache/kcell.
fn cache() -> PathBuf {
    if let Some(p) = std::env::var_os("KCELL_CACHE") {
        return p.into();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
        });
    base.join("kcell")
}
