//! The VM targets: a kernel from the manifest under cgroup v1 or v2, booted
//! in a throwaway QEMU guest that runs the cases and reports verdicts. One
//! boot serves every case of its target.

pub mod apt;
pub mod busybox;
pub mod elf;
pub mod guest;
pub mod initramfs;
pub mod kconfig;
pub mod kernel;
pub mod program;
pub mod qemu;
pub mod runtimes;

use crate::verdict::{Status, Verdict};
use qemu::{Accel, BootConfig, Ending, Event, Limits};
use std::path::{Path, PathBuf};

/// A target of the matrix: a kernel and a cgroup version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmTarget {
    /// Manifest kernel ID ("custom" for KCELL_KERNEL).
    pub kernel: String,
    /// "v1" or "v2".
    pub cgroup: &'static str,
}

impl VmTarget {
    /// "deb-6.12-cloud/v2".
    pub fn name(&self) -> String {
        format!("{}/{}", self.kernel, self.cgroup)
    }
}

pub use crate::data::cache_dir;

/// The VM targets to run, from KCELL_TARGETS ("all", "host", or a comma list
/// of target names or kernel IDs; default: the manifest's default kernels,
/// each under v1 and v2) plus custom/v1 and custom/v2 when KCELL_KERNEL is set.
pub fn selected_targets(
    manifest: &kernel::Manifest,
    selection: Option<&str>,
    custom: bool,
) -> Vec<VmTarget> {
    let mut out = Vec::new();
    for k in &manifest.kernels {
        for cgroup in ["v1", "v2"] {
            let t = VmTarget {
                kernel: k.id.clone(),
                cgroup,
            };
            let wanted = match selection {
                None => k.default,
                Some("all") => true,
                Some(list) => list
                    .split(',')
                    .map(str::trim)
                    .any(|w| w == t.name() || w == k.id),
            };
            if wanted {
                out.push(t);
            }
        }
    }
    if custom {
        out.extend(["v1", "v2"].map(|cgroup| VmTarget {
            kernel: "custom".into(),
            cgroup,
        }));
    }
    out
}

/// What the harness needs to build and boot guests.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// vm/kernels.toml, parsed.
    pub manifest: kernel::Manifest,
    /// The agent binary.
    pub agent: PathBuf,
    /// kcell's binary, when the guest runs kcell (or a mutant of it).
    pub kcell: Option<PathBuf>,
    /// The cases directory.
    pub cases: PathBuf,
    /// The cache directory.
    pub cache: PathBuf,
    /// The runtimes under test besides kcell: (name, binary on the host),
    /// carried into the guest with their libraries.
    pub runtimes: Vec<(String, PathBuf)>,
}

/// What one boot is asked to do: the runtimes (name, path in the guest)
/// and the trials (`runtime::CASE`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    /// (name, path in the guest).
    pub runtimes: Vec<(String, PathBuf)>,
    /// `runtime::CASE`.
    pub trials: Vec<String>,
    /// Instead of trials: a program of one's own (`kcell vm`).
    #[serde(default)]
    pub program: Option<program::Program>,
}

impl Plan {
    /// Reads the plan a guest was booted with.
    pub fn read(path: &Path) -> Result<Plan, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// (path in the guest, file on the host) of what goes into an initramfs;
/// also (runtime, its binary's path in the guest).
type Files = Vec<(String, PathBuf)>;

/// The runtimes' binaries and libraries as they go into a guest, and
/// where each runtime's binary is there.
fn runtime_files(
    runtimes: &[(String, PathBuf)],
    agent: &Path,
    kcell: bool,
) -> Result<(Files, Files), String> {
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let mut at = Vec::new();
    if kcell {
        at.push((
            "kcell".to_string(),
            PathBuf::from(initramfs::guest_paths::OCI),
        ));
    }
    for (name, host) in runtimes {
        let file = host
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| name.clone());
        let guest = format!("{}/{name}/{file}", initramfs::guest_paths::RUNTIMES);
        // The agent under another name needs nothing more: it is /init.
        let needs = if initramfs::is_agent(host, agent) {
            Vec::new()
        } else {
            elf::closure(host).map_err(|e| format!("runtime {name}: {e}"))?
        };
        for (p, f) in needs {
            if !files.iter().any(|(q, _)| *q == p) {
                files.push((p, f));
            }
        }
        files.push((guest.clone(), host.clone()));
        at.push((name.clone(), PathBuf::from(guest)));
    }
    Ok((files, at))
}

/// (runtime, case) of a trial key `runtime::CASE`.
pub fn split_trial(key: &str) -> (&str, &str) {
    key.split_once("::").unwrap_or(("kcell", key))
}

/// The outcome of a target.
#[derive(Debug, Clone)]
pub struct TargetRun {
    /// One per case asked for (error verdicts for cases the guest never reached).
    pub verdicts: Vec<Verdict>,
    /// Boot to first case, seconds.
    pub boot_seconds: Option<f64>,
    /// Whole target, seconds.
    pub seconds: f64,
    /// Boots made (2 when the first died before its first verdict).
    pub boots: u32,
    /// What went wrong with the target itself, if anything.
    pub error: Option<String>,
}

fn accel_note(cache: &Path, kernel: &str) -> PathBuf {
    cache.join(format!("accel-{kernel}"))
}

/// After a boot that ended before its first case (or program) started:
/// if it ran under KVM, KVM cannot boot this kernel here (the boot ends
/// within a second or two: QEMU exits, "failed to set MSR 0x10a" under
/// nested KVM, or says "KVM internal error" and is killed for it,
/// `qemu::kvm_failure`). Unless KVM is forced, remembers that
/// for `first_accel`, switches `config` to TCG and says so; false when
/// there is nothing to fall back from.
fn fall_back_to_tcg(cache: &Path, kernel: &str, config: &mut BootConfig) -> bool {
    if config.accel != Accel::Kvm || forced_accel() == Some(Accel::Kvm) {
        return false;
    }
    let _ = std::fs::write(accel_note(cache, kernel), "tcg\n");
    config.accel = Accel::Tcg;
    true
}

/// `KCELL_ACCEL=kvm|tcg`: the accelerator the user forces (KVM forced
/// never falls back: its failure is the guest's error).
fn forced_accel() -> Option<Accel> {
    match std::env::var("KCELL_ACCEL").as_deref() {
        Ok("kvm") => Some(Accel::Kvm),
        Ok("tcg") => Some(Accel::Tcg),
        _ => None,
    }
}

/// The KVM device whose presence says KVM may be tried: /dev/kvm, or
/// `KCELL_KVM_DEVICE` (the fallback's tests name a stand-in's).
fn kvm_device() -> PathBuf {
    std::env::var_os("KCELL_KVM_DEVICE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/kvm"))
}

/// The accelerator of a kernel's first boot: the forced one; else KVM when
/// the KVM device exists and KVM has not failed this kernel before (the
/// note in the cache), else TCG.
fn first_accel(cache: &Path, kernel: &str) -> Accel {
    if let Some(forced) = forced_accel() {
        return forced;
    }
    let kvm_failed =
        std::fs::read_to_string(accel_note(cache, kernel)).is_ok_and(|t| t.trim() == "tcg");
    if kvm_device().exists() && !kvm_failed {
        Accel::Kvm
    } else {
        Accel::Tcg
    }
}

fn error_verdict(trial: &str, target: &str, kernel: &str, cgroup: &str, detail: String) -> Verdict {
    let (runtime, case) = split_trial(trial);
    let mut v = Verdict::bare(case, target, kernel, cgroup, Status::Error, detail);
    v.runtime = runtime.to_string();
    v
}

/// Prepares and boots `t`, running the trials `ids` (`runtime::CASE`). Never panics: a missing
/// kernel, a guest that dies or hangs, all become error verdicts of this
/// target, with the reason and the console's tail.
pub fn run_target(
    t: &VmTarget,
    inputs: &Inputs,
    ids: &[String],
    progress: &mut dyn FnMut(&str),
) -> TargetRun {
    let name = t.name();
    let started = std::time::Instant::now();
    let mut run = TargetRun {
        verdicts: Vec::new(),
        boot_seconds: None,
        seconds: 0.0,
        boots: 0,
        error: None,
    };
    match prepare(t, inputs) {
        Ok(mut guest) => {
            boot_until_done(&mut guest, t, inputs, ids, &mut run, progress);
            run.seconds = started.elapsed().as_secs_f64();
            progress(&format!(
                "[{name}] done in {:.0} s (boot to first case {})",
                run.seconds,
                run.boot_seconds.map_or("-".into(), |b| format!("{b:.2} s"))
            ));
            if std::env::var_os("KCELL_KEEP").is_some() {
                progress(&format!(
                    "[{name}] KCELL_KEEP: console and verdict logs kept in {}",
                    guest.work.display()
                ));
            } else {
                let _ = std::fs::remove_dir_all(&guest.work);
            }
        }
        Err((why, kernel)) => {
            run.verdicts = ids
                .iter()
                .map(|id| error_verdict(id, &name, &kernel, t.cgroup, why.clone()))
                .collect();
            run.error = Some(why);
            run.seconds = started.elapsed().as_secs_f64();
        }
    }
    run
}

/// A guest ready to boot: its kernel's label, the initramfs without a
/// plan, the runtimes' paths inside, its scratch directory and QEMU's
/// configuration.
struct Prepared {
    kernel_label: String,
    base_initrd: PathBuf,
    runtime_paths: Vec<(String, PathBuf)>,
    work: PathBuf,
    config: BootConfig,
}

/// The kernel, the runtimes' files, the initramfs and the scratch disk;
/// an error says which, with the kernel's label when it is known.
fn prepare(t: &VmTarget, inputs: &Inputs) -> Result<Prepared, (String, String)> {
    let kernel = if t.kernel == "custom" {
        let image = std::env::var_os("KCELL_KERNEL")
            .map(PathBuf::from)
            .unwrap_or_default();
        let modules = std::env::var_os("KCELL_MODULES").map(PathBuf::from);
        kernel::local(&image, modules.as_deref())
    } else {
        match inputs.manifest.kernels.iter().find(|k| k.id == t.kernel) {
            Some(spec) => kernel::fetch(spec, &inputs.cache),
            None => Err(format!("kernel {} is not in vm/kernels.toml", t.kernel)),
        }
    };
    let kernel = kernel.map_err(|e| (format!("kernel: {e}"), String::new()))?;
    let label = format!("{} ({})", kernel.release, kernel.version);
    let fail = |what: &str, e: String| (format!("{what}: {e}"), label.clone());
    let (extra, runtime_paths) =
        runtime_files(&inputs.runtimes, &inputs.agent, inputs.kcell.is_some())
            .map_err(|e| fail("runtimes", e))?;
    let base_initrd = busybox::locate(&inputs.cache)
        .and_then(|busybox| {
            initramfs::build(
                &initramfs::Inputs {
                    kernel: &kernel,
                    agent: &inputs.agent,
                    kcell: inputs.kcell.as_deref(),
                    busybox: &busybox,
                    cases: &inputs.cases,
                    early: &inputs.manifest.modules.early,
                    late: &inputs.manifest.modules.load,
                    extra: &extra,
                },
                &inputs.cache.join("initramfs"),
            )
        })
        .map_err(|e| fail("initramfs", e))?;
    let name = t.name();
    let work = std::env::temp_dir().join(format!(
        "kcell-vm-{}-{}",
        name.replace('/', "-"),
        crate::text::unique_id()
    ));
    std::fs::create_dir_all(&work)
        .and_then(|()| std::fs::File::create(work.join("disk.img"))?.set_len(64 << 20))
        .map_err(|e| fail(&format!("scratch {}", work.display()), e.to_string()))?;
    let config = BootConfig {
        kernel: kernel.image.clone(),
        initrd: work.join("initramfs.cpio"),
        cmdline: qemu::cmdline(&name, t.cgroup),
        disk: Some(work.join("disk.img")),
        console_log: work.join("console.log"),
        verdict_log: work.join("verdicts.log"),
        accel: first_accel(&inputs.cache, &t.kernel),
        firmware: qemu::QBOOT.iter().map(PathBuf::from).find(|p| p.exists()),
        cpus: 2,
        memory_mib: 1024,
    };
    Ok(Prepared {
        kernel_label: label,
        base_initrd,
        runtime_paths,
        work,
        config,
    })
}

/// Why the boots go on, and how often they have.
#[derive(Default)]
struct Retries {
    for_kvm: bool,
    early: u32,
    resumes: u32,
    problems: Vec<String>,
    console_tail: String,
}

/// Boots until every case has a verdict: one retry for a guest that dies
/// before its first verdict (early-boot deaths under TCG), one more boot
/// for the cases a guest did not reach when it died mid-run, and one under
/// TCG when KVM could not boot the kernel.
fn boot_until_done(
    g: &mut Prepared,
    t: &VmTarget,
    inputs: &Inputs,
    ids: &[String],
    run: &mut TargetRun,
    progress: &mut dyn FnMut(&str),
) {
    let name = t.name();
    let mut pending: Vec<String> = ids.to_vec();
    let mut r = Retries::default();
    while !pending.is_empty() {
        run.boots += 1;
        let plan = Plan {
            runtimes: g.runtime_paths.clone(),
            trials: pending.clone(),
            program: None,
        };
        let plan_json = serde_json::to_vec(&plan).unwrap_or_default();
        if let Err(e) = initramfs::with_files(
            &g.base_initrd,
            &[(initramfs::guest_paths::PLAN, &plan_json)],
            &g.config.initrd,
        ) {
            r.problems.push(format!("initramfs plan: {e}"));
            break;
        }
        progress(&format!(
            "[{name}] booting {} ({:?}, boot {}, {} cases)",
            g.kernel_label,
            g.config.accel,
            run.boots,
            pending.len()
        ));
        let mut on_event = |e: &Event| match e {
            Event::Case { n, total, id } => {
                progress(&format!("[{name}] trial {n} of {total}: {id}"))
            }
            Event::Verdict(v) => progress(&format!("[{name}] {} {}", v.key(), v.status.as_str())),
            // A program's frames (kcell vm); a case guest sends none.
            Event::Output { .. } | Event::Exit(_) => {}
        };
        let boot = qemu::boot(&g.config, Limits::default(), &mut on_event);
        run.boot_seconds = run.boot_seconds.or(boot.boot_seconds);
        r.console_tail = boot.console_tail.clone();
        let note = if run.boots > 1 {
            format!(" (boot {})", run.boots)
        } else {
            String::new()
        };
        take_verdicts(&boot.verdicts, &mut pending, &g.kernel_label, &note, run);
        let why = match &boot.ending {
            Ending::Finished => break,
            Ending::Died(w) | Ending::Killed(w) => w.clone(),
        };
        r.problems.push(format!("boot {}: {why}", run.boots));
        if boot.boot_seconds.is_none()
            && !r.for_kvm
            && fall_back_to_tcg(&inputs.cache, &t.kernel, &mut g.config)
        {
            progress(&format!(
                "[{name}] KVM did not boot {} ({why}); using TCG, and noted so in the cache",
                t.kernel
            ));
            r.for_kvm = true;
            run.boots -= 1;
            r.problems.pop();
            continue;
        }
        if boot.verdicts.is_empty() && boot.in_progress.is_none() && r.early == 0 {
            r.early += 1;
            progress(&format!("[{name}] the guest died before its first case ({why}); retrying once. Console tail:\n{}", boot.console_tail));
            continue;
        }
        // The case that was running when the guest died may have caused it:
        // it gets the error, with the console; the rest get another boot.
        if let Some(at) = boot
            .in_progress
            .as_ref()
            .and_then(|id| pending.iter().position(|p| p == id))
        {
            let id = pending.remove(at);
            let detail = format!(
                "the guest died while this case ran: {why}{note}\nconsole tail:\n{}",
                boot.console_tail
            );
            run.verdicts
                .push(error_verdict(&id, &name, &g.kernel_label, t.cgroup, detail));
        }
        if r.resumes == 0 && !pending.is_empty() {
            r.resumes += 1;
            progress(&format!("[{name}] the guest died mid-run ({why}); booting again for the {} cases not reached", pending.len()));
            continue;
        }
        break;
    }
    for id in &pending {
        let detail = format!(
            "no verdict after {} boots: {}\nconsole tail:\n{}",
            run.boots,
            r.problems.join("; "),
            r.console_tail
        );
        run.verdicts
            .push(error_verdict(id, &name, &g.kernel_label, t.cgroup, detail));
    }
    run.verdicts
        .sort_by_key(|v| ids.iter().position(|i| *i == v.key()).unwrap_or(usize::MAX));
    run.error = (!r.problems.is_empty()).then(|| r.problems.join("; "));
}

/// The verdicts of one boot for the trials still pending (each taken once:
/// a repeated trial is listed once per run), labelled with the kernel and
/// the boot when it was not the first; a malformed case's error too.
fn take_verdicts(
    verdicts: &[Verdict],
    pending: &mut Vec<String>,
    kernel_label: &str,
    note: &str,
    run: &mut TargetRun,
) {
    for v in verdicts {
        if let Some(at) = pending.iter().position(|p| *p == v.key()) {
            let mut v = v.clone();
            v.kernel = kernel_label.to_string();
            if !note.is_empty() {
                v.detail = format!("{}{note}", v.detail).trim().to_string();
            }
            pending.remove(at);
            run.verdicts.push(v);
        } else if v.status == Status::Error {
            // A malformed case file: reported under its file name.
            run.verdicts.push(v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> kernel::Manifest {
        kernel::Manifest::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../vm/kernels.toml"))
            .expect("manifest")
    }

    #[test]
    fn default_matrix_is_four_cloud_kernels_under_both_versions() {
        let names: Vec<String> = selected_targets(&manifest(), None, false)
            .iter()
            .map(VmTarget::name)
            .collect();
        assert_eq!(
            names,
            [
                "deb-5.10-cloud/v1",
                "deb-5.10-cloud/v2",
                "deb-6.1-cloud/v1",
                "deb-6.1-cloud/v2",
                "deb-6.12-cloud/v1",
                "deb-6.12-cloud/v2",
                "deb-7.2-cloud/v1",
                "deb-7.2-cloud/v2"
            ]
        );
    }

    #[test]
    fn selection_by_name_kernel_all_and_host() {
        let m = manifest();
        let names = |sel: &str| {
            selected_targets(&m, Some(sel), false)
                .iter()
                .map(VmTarget::name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names("deb-6.1/v2"), ["deb-6.1/v2"]);
        assert_eq!(names("deb-6.12"), ["deb-6.12/v1", "deb-6.12/v2"]);
        assert_eq!(names("all").len(), 14);
        assert!(names("host").is_empty());
        assert_eq!(selected_targets(&m, Some("host"), true).len(), 2);
    }
}
