//! Kernels of the matrix: the manifest (vm/kernels.toml), resolving a line
//! to its newest package in its Debian suite (through the harness's own apt
//! configuration, [`super::apt`]), fetching, verifying against the
//! archive's SHA256, unpacking into the cache.

use serde::Deserialize;
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The manifest file.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    /// The kernels.
    #[serde(rename = "kernel")]
    pub kernels: Vec<KernelSpec>,
    /// Modules the guests load.
    pub modules: ModuleList,
}

/// One kernel of the manifest.
#[derive(Debug, Clone, Deserialize)]
pub struct KernelSpec {
    /// Its ID in target names, e.g. "deb-6.12-cloud".
    pub id: String,
    /// A regular expression matching the package names of its line.
    pub package: String,
    /// The Debian suite it comes from (bullseye, bookworm, trixie, sid, ...).
    #[serde(default = "bookworm")]
    pub suite: String,
    /// Further packages of a kernel split in parts (sid's modules and base
    /// files), `{release}` replaced by the matched package's release.
    #[serde(default)]
    pub parts: Vec<String>,
    /// Part of the default matrix.
    #[serde(default)]
    pub default: bool,
    /// The cgroup versions ("v1", "v2") on which the reference runtimes run
    /// on this kernel by default (kcell runs on every target).
    #[serde(default)]
    pub reference: Vec<String>,
}

/// The modules guests load.
#[derive(Debug, Clone, Deserialize)]
pub struct ModuleList {
    /// Loaded before the first case (with their dependencies first).
    pub early: Vec<String>,
    /// Loaded in the background once the guest runs.
    pub load: Vec<String>,
}

impl Manifest {
    /// Whether the reference runtimes run on `t` by default.
    pub fn is_reference(&self, t: &super::VmTarget) -> bool {
        self.kernels
            .iter()
            .any(|k| k.id == t.kernel && k.reference.iter().any(|c| c == t.cgroup))
    }

    /// Reads the manifest.
    pub fn load(path: &Path) -> Result<Manifest, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

fn bookworm() -> String {
    "bookworm".into()
}

/// A kernel ready to boot.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Manifest ID.
    pub id: String,
    /// The bzImage.
    pub image: PathBuf,
    /// Its lib/modules/RELEASE directory, if it has modules.
    pub modules: Option<PathBuf>,
    /// Its config file (boot/config-RELEASE), if known.
    pub config: Option<PathBuf>,
    /// The release (uname -r).
    pub release: String,
    /// The exact package version, e.g. "6.1.192-2", or "local".
    pub version: String,
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Debian's version ordering, through dpkg itself.
fn version_gt(a: &str, b: &str) -> bool {
    Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .is_ok_and(|s| s.success())
}

/// The packages of a line, newest first: every name matching `pattern`
/// that the suite's lists know, with its candidate version.
pub fn resolve(spec: &KernelSpec, apt: &super::apt::Apt) -> Result<Vec<(String, String)>, String> {
    let re = regex::Regex::new(&spec.package)
        .map_err(|e| format!("kernel {}: package pattern: {e}", spec.id))?;
    let mut all: Vec<(String, String)> = Vec::new();
    for name in apt
        .search("^linux-")?
        .into_iter()
        .filter(|n| re.is_match(n))
    {
        if let Some(candidate) = apt.candidate(&name)? {
            all.push((name, candidate));
        }
    }
    // Insertion by dpkg's ordering (a handful of names).
    let mut sorted: Vec<(String, String)> = Vec::new();
    for c in all {
        let at = sorted
            .iter()
            .position(|(_, v)| version_gt(&c.1, v))
            .unwrap_or(sorted.len());
        sorted.insert(at, c);
    }
    if sorted.is_empty() {
        return Err(format!(
            "kernel {}: no package of {} matches {}",
            spec.id, spec.suite, spec.package
        ));
    }
    Ok(sorted)
}

fn sha256_of(path: &Path) -> Result<String, String> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// The kernel release a package name carries (linux-image-R-unsigned,
/// linux-binary-unsigned-R).
fn release_of(package: &str) -> String {
    let p = package
        .strip_prefix("linux-image-")
        .or_else(|| package.strip_prefix("linux-binary-unsigned-"))
        .unwrap_or(package);
    p.strip_suffix("-unsigned").unwrap_or(p).to_string()
}

/// The first existing path of `candidates` under `root`.
fn first(root: &Path, candidates: &[String]) -> Option<PathBuf> {
    candidates
        .iter()
        .map(|c| root.join(c))
        .find(|p| p.metadata().is_ok_and(|m| m.len() > 0 || m.is_dir()))
}

/// Fetches (once), verifies and unpacks `spec` under `cache`, through the
/// harness's own apt configuration of its suite.
pub fn fetch(spec: &KernelSpec, cache: &Path) -> Result<Kernel, String> {
    let apt = super::apt::Apt::new(cache, &spec.suite)?;
    // Two targets of one kernel (v1 and v2) fetch it once: the second waits.
    std::fs::create_dir_all(cache.join("kernels"))
        .map_err(|e| format!("mkdir {}: {e}", cache.display()))?;
    let lock_path = cache.join("kernels").join(format!("{}.lock", spec.id));
    let lock_file = std::fs::File::create(&lock_path)
        .map_err(|e| format!("create {}: {e}", lock_path.display()))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("flock {}: {e}", lock_path.display()))?;
    apt.update()?;
    // The newest that can be had: a mirror may list a version (a security
    // update) whose file it does not serve; that one is marked and the next
    // newest taken, and tried again a day later.
    let mut tried = Vec::new();
    for (package, version) in resolve(spec, &apt)? {
        let dir = cache.join("kernels").join(format!("{package}_{version}"));
        let unavailable = dir.join(".kcell-unavailable");
        let fresh = |p: &Path| {
            p.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|e| e.as_secs() < 86_400))
        };
        if fresh(&unavailable) {
            tried.push(format!(
                "{package} {version}: {}",
                std::fs::read_to_string(&unavailable)
                    .unwrap_or_default()
                    .trim()
            ));
            continue;
        }
        match unpack(spec, &apt, &package, &version, &dir) {
            Ok(k) => return Ok(k),
            Err(Fetch::Unavailable(e)) => {
                let _ = std::fs::create_dir_all(&dir);
                let _ = std::fs::write(&unavailable, &e);
                eprintln!(
                    "kcell: {package} {version} cannot be fetched ({e}); trying the next newest"
                );
                tried.push(format!("{package} {version}: {e}"));
            }
            Err(Fetch::Failed(e)) => return Err(e),
        }
    }
    Err(format!(
        "kernel {}: no package of its line could be fetched from {}: {}",
        spec.id,
        spec.suite,
        tried.join("; ")
    ))
}

/// Why a kernel package could not be had.
enum Fetch {
    /// The mirror does not serve it: try an older one.
    Unavailable(String),
    /// Anything else (checksum, unpacking): stop.
    Failed(String),
}

/// Fetches, verifies and unpacks one kernel package (and its parts) into
/// `dir`, once: a finished one is stamped.
fn unpack(
    spec: &KernelSpec,
    apt: &super::apt::Apt,
    package: &str,
    version: &str,
    dir: &Path,
) -> Result<Kernel, Fetch> {
    let failed = Fetch::Failed;
    let package = package.to_string();
    let version = version.to_string();
    let release = release_of(&package);
    let stamp = dir.join(".kcell-ok");
    let root = dir.join("root");
    if !stamp.exists() {
        std::fs::create_dir_all(dir)
            .map_err(|e| failed(format!("mkdir {}: {e}", dir.display())))?;
        let dl = dir.join("download");
        let _ = std::fs::remove_dir_all(&dl);
        std::fs::create_dir_all(&dl).map_err(|e| failed(format!("mkdir {}: {e}", dl.display())))?;
        let mut packages = vec![package.clone()];
        packages.extend(spec.parts.iter().map(|p| p.replace("{release}", &release)));
        let mut sums = String::new();
        for p in &packages {
            let v = if *p == package {
                version.clone()
            } else {
                apt.candidate(p)
                    .map_err(failed)?
                    .ok_or_else(|| Fetch::Unavailable(format!("no {p} in {}", spec.suite)))?
            };
            let expected = apt.sha256(p, &v).map_err(failed)?;
            eprintln!("kcell: fetching {p} {v} ({})", spec.suite);
            let deb = apt.download(p, &v, &dl).map_err(Fetch::Unavailable)?;
            let got = sha256_of(&deb).map_err(failed)?;
            if got != expected {
                let _ = std::fs::remove_dir_all(dir);
                return Err(failed(format!("{}: SHA256 {got} does not match the archive's {expected}: corrupt download, removed", deb.display())));
            }
            run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root)).map_err(failed)?;
            sums.push_str(&format!("{p} {v} {got}\n"));
        }
        // A merged-/usr package ships usr/lib/modules: depmod -b reads lib/modules.
        if !root.join("lib").exists() && root.join("usr/lib").is_dir() {
            std::os::unix::fs::symlink("usr/lib", root.join("lib"))
                .map_err(|e| failed(format!("symlink {}/lib: {e}", root.display())))?;
        }
        // The packages ship no modules.dep: installing them would run depmod.
        if root.join("lib/modules").join(&release).is_dir() {
            run(Command::new(depmod()).arg("-b").arg(&root).arg(&release))
                .map_err(|e| failed(format!("{e} (install kmod for depmod)")))?;
        }
        let _ = std::fs::remove_dir_all(&dl);
        std::fs::write(&stamp, sums).map_err(|e| failed(e.to_string()))?;
    }
    let image = first(
        &root,
        &[
            format!("boot/vmlinuz-{release}"),
            format!("usr/lib/modules/{release}/vmlinuz.unsigned"),
            format!("usr/lib/modules/{release}/vmlinuz"),
        ],
    )
    .ok_or_else(|| {
        failed(format!(
            "{}: no kernel image for {release} (corrupt cache? remove {})",
            root.display(),
            dir.display()
        ))
    })?;
    let modules = root.join("lib/modules").join(&release);
    let config = first(
        &root,
        &[
            format!("boot/config-{release}"),
            format!("usr/lib/modules/{release}/config"),
        ],
    );
    Ok(Kernel {
        id: spec.id.clone(),
        image,
        modules: modules.is_dir().then_some(modules),
        config,
        release,
        version,
    })
}

/// depmod, which lives in /sbin, off an ordinary user's PATH.
fn depmod() -> PathBuf {
    ["/sbin/depmod", "/usr/sbin/depmod"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("depmod"))
}

/// A kernel the user points at: KCELL_KERNEL=bzImage (KCELL_MODULES=dir).
pub fn local(image: &Path, modules: Option<&Path>) -> Result<Kernel, String> {
    if !image.is_file() {
        return Err(format!("kernel image {} does not exist", image.display()));
    }
    let release = modules
        .and_then(|m| m.file_name())
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "custom".into());
    Ok(Kernel {
        id: "custom".into(),
        image: image.to_path_buf(),
        modules: modules.map(Path::to_path_buf),
        // KCELL_KERNEL_CONFIG, else boot/config-RELEASE beside its modules.
        config: std::env::var_os("KCELL_KERNEL_CONFIG")
            .map(PathBuf::from)
            .filter(|c| c.is_file())
            .or_else(|| {
                modules.and_then(|m| {
                    let c = m.join("../../../boot").join(format!("config-{release}"));
                    c.is_file().then_some(c)
                })
            }),
        release,
        version: "local".into(),
    })
}

/// The module files to load, in order: each wanted module after its
/// dependencies (modules.dep) and its pre-softdeps (modules.softdep,
/// resolved through modules.alias). Built-in modules are left out.
pub fn module_closure(modules_dir: &Path, wanted: &[String]) -> Result<Vec<PathBuf>, String> {
    let read = |f: &str| {
        std::fs::read_to_string(modules_dir.join(f))
            .map_err(|e| format!("{}/{f}: {e}", modules_dir.display()))
    };
    let dep = read("modules.dep")?;
    let softdep = read("modules.softdep").unwrap_or_default();
    let alias = read("modules.alias").unwrap_or_default();
    let builtin = read("modules.builtin").unwrap_or_default();
    let norm = |s: &str| s.replace('-', "_");
    let name_of = |path: &str| {
        let file = path.rsplit('/').next().unwrap_or(path);
        norm(file.split(".ko").next().unwrap_or(file))
    };
    let mut deps: std::collections::BTreeMap<String, (String, Vec<String>)> = Default::default();
    for line in dep.lines() {
        let Some((m, rest)) = line.split_once(':') else {
            continue;
        };
        deps.insert(
            name_of(m),
            (
                m.to_string(),
                rest.split_whitespace().map(name_of).collect(),
            ),
        );
    }
    let resolve = |name: &str| -> Vec<String> {
        let n = norm(name);
        if deps.contains_key(&n) {
            return vec![n];
        }
        alias
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some("alias") && f.next().map(norm).as_deref() == Some(n.as_str()))
                    .then(|| f.next().map(norm))?
            })
            .filter(|m| deps.contains_key(m))
            .collect()
    };
    let pre = |name: &str| -> Vec<String> {
        softdep
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("softdep ")?;
                let (m, spec) = rest.split_once(' ')?;
                (norm(m) == name).then(|| spec.to_string())
            })
            .flat_map(|spec| {
                let after_pre = spec
                    .split("pre:")
                    .nth(1)
                    .unwrap_or("")
                    .split("post:")
                    .next()
                    .unwrap_or("")
                    .to_string();
                after_pre
                    .split_whitespace()
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .flat_map(|a| resolve(&a))
            .collect()
    };
    let mut order: Vec<String> = Vec::new();
    fn visit(
        n: &str,
        deps: &std::collections::BTreeMap<String, (String, Vec<String>)>,
        pre: &dyn Fn(&str) -> Vec<String>,
        order: &mut Vec<String>,
        depth: usize,
    ) {
        if order.iter().any(|o| o == n) || depth > 64 {
            return;
        }
        for p in pre(n) {
            visit(&p, deps, pre, order, depth + 1);
        }
        if let Some((_, ds)) = deps.get(n) {
            // modules.dep lists dependencies; load the deepest first.
            for d in ds.iter().rev() {
                visit(d, deps, pre, order, depth + 1);
            }
        }
        if !order.iter().any(|o| o == n) {
            order.push(n.to_string());
        }
    }
    for w in wanted {
        let found = resolve(w);
        if found.is_empty() {
            let is_builtin = builtin.lines().any(|l| name_of(l) == norm(w));
            if !is_builtin {
                eprintln!("kcell: module {w} is neither built in nor in {}/modules.dep; cases needing it will say so", modules_dir.display());
            }
            continue;
        }
        for m in found {
            visit(&m, &deps, &pre, &mut order, 0);
        }
    }
    Ok(order
        .iter()
        .filter_map(|n| deps.get(n).map(|(p, _)| modules_dir.join(p)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closure_orders_dependencies_and_softdeps_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(d.join("modules.dep"), "kernel/a.ko.xz: kernel/b.ko.xz kernel/c.ko.xz\nkernel/b.ko.xz: kernel/c.ko.xz\nkernel/c.ko.xz:\nkernel/crc32c_generic.ko.xz:\nkernel/lib/libcrc32c.ko.xz:\nkernel/nf_conntrack.ko.xz: kernel/lib/libcrc32c.ko.xz\n").expect("write");
        std::fs::write(d.join("modules.softdep"), "softdep libcrc32c pre: crc32c\n")
            .expect("write");
        std::fs::write(d.join("modules.alias"), "alias crc32c crc32c_generic\n").expect("write");
        std::fs::write(d.join("modules.builtin"), "kernel/virtio_pci.ko\n").expect("write");
        let order: Vec<String> =
            module_closure(d, &["a".into(), "nf_conntrack".into(), "virtio_pci".into()])
                .expect("closure")
                .iter()
                .map(|p| {
                    p.file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_default()
                })
                .collect();
        assert_eq!(
            order,
            [
                "c.ko.xz",
                "b.ko.xz",
                "a.ko.xz",
                "crc32c_generic.ko.xz",
                "libcrc32c.ko.xz",
                "nf_conntrack.ko.xz"
            ]
        );
    }

    #[test]
    fn manifest_parses_with_the_required_kernels() {
        let m = Manifest::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../vm/kernels.toml"))
            .expect("manifest");
        let ids: Vec<&str> = m.kernels.iter().map(|k| k.id.as_str()).collect();
        for want in [
            "deb-5.10-cloud",
            "deb-6.1-cloud",
            "deb-6.12-cloud",
            "deb-7.2-cloud",
            "deb-6.1",
            "deb-6.12",
        ] {
            assert!(ids.contains(&want), "{want} missing from {ids:?}");
        }
        for k in &m.kernels {
            regex::Regex::new(&k.package).expect("valid pattern");
        }
    }
}
