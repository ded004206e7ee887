//! `kcell vm`: a program of one's own in a throwaway guest, the suite's
//! own (the same init, cgroup setup, modules, zram swap and test disk).
//! The program and its shared-library closure, and any `--share`d
//! directories (copied in), are appended to the suite's initramfs with a
//! plan naming the program; the guest's agent runs it and sends its output
//! back, chunk by chunk as written, and its exit status, as frames on the
//! second serial port. kcell's exit status is the program's (128+N for a
//! signal); a guest that panics, hangs past the timeout or never reaches
//! the program is 125, with the console's tail on stderr.

use super::{initramfs, kernel, qemu, Plan};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The program a guest runs instead of cases.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Program {
    /// argv, argv[0] its path in the guest.
    pub argv: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Working directory in the guest.
    pub cwd: String,
    /// Seconds it may take.
    pub timeout: u64,
    /// Absolute paths of `--file`s: the initramfs carries each under
    /// [`FILES`] and the guest copies it to its path once its own mounts
    /// are made (a tmpfs on /tmp would hide it otherwise).
    #[serde(default)]
    pub files: Vec<String>,
}

/// Where `--file`s wait in the initramfs: `FILES` + their absolute path.
const FILES: &str = "/opt/kcell/files";

use crate::frames::out_frame;
pub use crate::frames::{parse_exit, parse_out, EXIT, OUT};

/// What `kcell vm` was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// A kernel ID of vm/kernels.toml, or a bzImage path.
    pub kernel: String,
    /// v1 or v2.
    pub cgroup: String,
    /// vCPUs.
    pub cpus: u32,
    /// MiB.
    pub memory_mib: u32,
    /// Host directories, read-only or not (copied in either way).
    pub shares: Vec<(PathBuf, bool)>,
    /// Host files copied to the same absolute path in the guest (what a
    /// test binary names by its build path, e.g. CARGO_BIN_EXE_*), with
    /// their libraries.
    pub files: Vec<PathBuf>,
    /// K=V for the program.
    pub env: Vec<(String, String)>,
    /// Seconds.
    pub timeout: u64,
    /// Where to keep the guest's console log.
    pub keep_console: Option<PathBuf>,
    /// The program and its arguments.
    pub program: Vec<String>,
}

/// The kernel matrix the binary was built with.
const MANIFEST: &str = include_str!("../../../vm/kernels.toml");

/// `kcell vm`'s usage (also `kcell-conformance vm`).
pub const USAGE: &str = "usage: kcell vm [--kernel ID|PATH] [--cgroup v1|v2] [--cpus N] [--memory SIZE]
                [--share DIR[:ro]] [--file /ABS/PATH] [--env K=V] [--timeout S] [--keep-console FILE]
                -- PROGRAM ARGS...
  boots a throwaway guest (the conformance suite's), runs PROGRAM in it with its libraries,
  streams its output and exits with its status; 125 when the guest fails (console tail on stderr).
  As a cargo runner: runner = [\"kcell\", \"vm\", \"--kernel\", \"deb-5.10-cloud\", \"--cgroup\", \"v1\", \"--\"]";

/// Parses `kcell vm`'s arguments.
pub fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        kernel: "deb-6.1-cloud".into(),
        cgroup: "v2".into(),
        cpus: 2,
        memory_mib: 1024,
        shares: Vec::new(),
        files: Vec::new(),
        env: Vec::new(),
        timeout: 600,
        keep_console: None,
        program: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match a.as_str() {
            "--" => {
                o.program = it.cloned().collect();
                break;
            }
            "--kernel" => o.kernel = value(a)?,
            "--cgroup" => {
                o.cgroup = value(a)?;
                if o.cgroup != "v1" && o.cgroup != "v2" {
                    return Err(format!("--cgroup '{}': allowed are v1 and v2", o.cgroup));
                }
            }
            "--cpus" => {
                let v = value(a)?;
                o.cpus = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=64).contains(n))
                    .ok_or_else(|| format!("--cpus '{v}': a number from 1 to 64"))?;
            }
            "--memory" => {
                let v = value(a)?;
                let bytes = crate::text::size(&v).map_err(|e| format!("--memory: {e}"))?;
                if bytes < 256 << 20 {
                    return Err(format!("--memory '{v}': at least 256m"));
                }
                o.memory_mib = (bytes >> 20) as u32;
            }
            "--share" => {
                let v = value(a)?;
                let (dir, ro) = match v.strip_suffix(":ro") {
                    Some(d) => (d.to_string(), true),
                    None => (v.clone(), false),
                };
                if !Path::new(&dir).is_dir() {
                    return Err(format!("--share '{dir}': not a directory"));
                }
                o.shares.push((PathBuf::from(dir), ro));
            }
            "--file" => {
                let v = value(a)?;
                let p = PathBuf::from(&v);
                if !p.is_absolute() || !p.is_file() {
                    return Err(format!("--file '{v}': an absolute path of a file"));
                }
                o.files.push(p);
            }
            "--env" => {
                let v = value(a)?;
                let (k, val) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--env '{v}': K=V"))?;
                o.env.push((k.to_string(), val.to_string()));
            }
            "--timeout" => {
                let v = value(a)?;
                o.timeout = v.parse().map_err(|_| format!("--timeout '{v}': seconds"))?;
            }
            "--keep-console" => o.keep_console = Some(PathBuf::from(value(a)?)),
            other => {
                // The first word that is no option starts the program (as a
                // cargo runner passes it, without "--").
                if other.starts_with('-') {
                    return Err(format!("unknown option '{other}': see kcell vm --help"));
                }
                o.program = std::iter::once(other.to_string())
                    .chain(it.cloned())
                    .collect();
                break;
            }
        }
    }
    if o.program.is_empty() {
        return Err("no program: kcell vm [OPTIONS] -- PROGRAM ARGS...".into());
    }
    Ok(o)
}

/// Where `--share` number `i` appears in the guest.
pub fn share_path(i: usize) -> String {
    if i == 0 {
        "/mnt/share".into()
    } else {
        format!("/mnt/share{i}")
    }
}

/// Boots a guest that runs `o.program`; returns kcell's exit status.
pub fn run(o: &Options, agent: &Path) -> i32 {
    match prepare_and_boot(o, agent) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kcell vm: {e}");
            125
        }
    }
}

fn prepare_and_boot(o: &Options, agent: &Path) -> Result<i32, String> {
    let cache = super::cache_dir();
    let manifest: kernel::Manifest =
        toml::from_str(MANIFEST).map_err(|e| format!("the built-in kernel list: {e}"))?;
    let kernel = the_kernel(o, &manifest, &cache)?;
    let program = which(&o.program[0])?;
    let busybox = super::busybox::locate(&cache)?;
    let empty = tempfile::Builder::new()
        .prefix("kcell-vm-nocases-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let base = initramfs::build(
        &initramfs::Inputs {
            kernel: &kernel,
            agent,
            kcell: None,
            busybox: &busybox,
            cases: empty.path(),
            early: &manifest.modules.early,
            late: &manifest.modules.load,
            extra: &[],
        },
        &cache.join("initramfs"),
    )?;
    let work = tempfile::Builder::new()
        .prefix("kcell-vm-run-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let name = program
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "program".into());
    let in_guest = format!("/opt/kcell/program/{name}");
    let initrd = work.path().join("initramfs.cpio");
    let plan = the_plan(o, &in_guest);
    append(
        &base, &initrd, &plan, &program, &in_guest, &o.shares, &o.files,
    )?;
    let disk = work.path().join("disk.img");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(64 << 20))
        .map_err(|e| format!("{}: {e}", disk.display()))?;
    let console = o
        .keep_console
        .clone()
        .unwrap_or_else(|| work.path().join("console.log"));
    let config = qemu::BootConfig {
        kernel: kernel.image.clone(),
        initrd,
        cmdline: qemu::cmdline("vm", &o.cgroup),
        disk: Some(disk),
        console_log: console,
        verdict_log: work.path().join("frames.log"),
        accel: super::first_accel(&cache, &kernel.id),
        firmware: qemu::QBOOT.iter().map(PathBuf::from).find(|p| p.exists()),
        cpus: o.cpus,
        memory_mib: o.memory_mib,
    };
    boot_streaming(config, &cache, &kernel.id)
}

/// The kernel `--kernel` names: a file, or an ID of the built-in list (fetched).
fn the_kernel(
    o: &Options,
    manifest: &kernel::Manifest,
    cache: &Path,
) -> Result<kernel::Kernel, String> {
    if Path::new(&o.kernel).is_file() {
        return kernel::local(Path::new(&o.kernel), None);
    }
    let spec = manifest
        .kernels
        .iter()
        .find(|k| k.id == o.kernel)
        .ok_or_else(|| {
            let ids: Vec<&str> = manifest.kernels.iter().map(|k| k.id.as_str()).collect();
            format!(
                "--kernel '{}': neither a file nor one of {}",
                o.kernel,
                ids.join(", ")
            )
        })?;
    eprintln!("kcell vm: kernel {} ...", spec.id);
    kernel::fetch(spec, cache)
}

/// The boot's plan: the program, its environment, directory and files.
fn the_plan(o: &Options, in_guest: &str) -> Plan {
    let mut argv = vec![in_guest.to_string()];
    argv.extend(o.program[1..].iter().cloned());
    Plan {
        program: Some(Program {
            argv,
            // Tests that drive host tools (clients, servers) tell they are in a guest by it.
            env: std::iter::once(("KCELL_VM".to_string(), format!("{}/{}", o.kernel, o.cgroup)))
                .chain(o.env.iter().cloned())
                .collect(),
            cwd: if o.shares.is_empty() {
                "/".into()
            } else {
                share_path(0)
            },
            timeout: o.timeout,
            files: o.files.iter().map(|f| f.display().to_string()).collect(),
        }),
        ..Plan::default()
    }
}

/// Boots, streaming the program's output; its exit status. Under TCG
/// once more when KVM could not boot the kernel.
fn boot_streaming(mut config: qemu::BootConfig, cache: &Path, kernel: &str) -> Result<i32, String> {
    let limits = qemu::Limits {
        case_slack: std::time::Duration::from_secs(10),
        ..qemu::Limits::default()
    };
    loop {
        let mut exit = None;
        let boot = qemu::boot(&config, limits, &mut |e| match e {
            qemu::Event::Output { stream, text } => {
                if *stream == 2 {
                    let _ = std::io::stderr().write_all(text.as_bytes());
                } else {
                    let mut out = std::io::stdout();
                    let _ = out.write_all(text.as_bytes());
                    let _ = out.flush();
                }
            }
            qemu::Event::Exit(code) => exit = Some(*code),
            _ => {}
        });
        if let Some(code) = exit {
            return Ok(code);
        }
        if boot.boot_seconds.is_none() && super::fall_back_to_tcg(cache, kernel, &mut config) {
            let why = match &boot.ending {
                qemu::Ending::Died(w) | qemu::Ending::Killed(w) => w.as_str(),
                qemu::Ending::Finished => "",
            };
            eprintln!(
                "kcell vm: KVM did not boot {kernel} ({why}); using TCG, and noted so in the cache"
            );
            continue;
        }
        return Err(format!(
            "the guest ended before the program did ({:?}); console tail:\n{}",
            boot.ending, boot.console_tail
        ));
    }
}

/// The program's path on the host: as given, or found on PATH.
fn which(program: &str) -> Result<PathBuf, String> {
    let p = Path::new(program);
    if p.components().count() > 1 {
        return p
            .canonicalize()
            .map_err(|e| format!("program {program}: {e}"));
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|d| d.join(program))
        .find(|f| f.is_file())
        .ok_or_else(|| format!("program {program}: not found on PATH"))
}

/// The base initramfs with the plan, the program and its libraries, and
/// the shared directories appended.
fn append(
    base: &Path,
    out: &Path,
    plan: &Plan,
    program: &Path,
    in_guest: &str,
    shares: &[(PathBuf, bool)],
    files: &[PathBuf],
) -> Result<(), String> {
    let mut bytes = std::fs::read(base).map_err(|e| format!("{}: {e}", base.display()))?;
    let mut cpio = initramfs::Cpio::new(Vec::new());
    let io = |e: std::io::Error| e.to_string();
    let plan_json = serde_json::to_vec(plan).map_err(|e| e.to_string())?;
    cpio.file(initramfs::guest_paths::PLAN, &plan_json, 0o644)
        .map_err(io)?;
    let data = std::fs::read(program).map_err(|e| format!("{}: {e}", program.display()))?;
    cpio.file(in_guest, &data, 0o755).map_err(io)?;
    for (at, file) in super::elf::closure(program)? {
        let data = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        cpio.file(&at, &data, 0o755).map_err(io)?;
    }
    for file in files {
        let data = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
        cpio.file(&format!("{FILES}{}", file.display()), &data, 0o755)
            .map_err(io)?;
        for (at, lib) in super::elf::closure(file).unwrap_or_default() {
            let data = std::fs::read(&lib).map_err(|e| format!("{}: {e}", lib.display()))?;
            cpio.file(&at, &data, 0o755).map_err(io)?;
        }
    }
    for (i, (dir, _ro)) in shares.iter().enumerate() {
        cpio.tree(dir, &share_path(i), &[]).map_err(io)?;
    }
    bytes.extend(cpio.finish().map_err(io)?);
    std::fs::write(out, bytes).map_err(|e| format!("write {}: {e}", out.display()))
}

/// In the guest: runs the plan's program, sending its output and status
/// as frames through `emit`.
pub fn run_in_guest(p: &Program, emit: &mut dyn FnMut(&str)) {
    use std::io::Read;
    use std::process::{Command, Stdio};
    emit(&crate::frames::progress(1, 1, "vm::PROGRAM", p.timeout));
    for file in &p.files {
        let staged = format!("{FILES}{file}");
        let placed = Path::new(file)
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::copy(&staged, file));
        if let Err(e) = placed {
            emit(&out_frame(2, &format!("kcell vm: --file {file}: {e}\n")));
            emit(&format!("{EXIT}125"));
            return;
        }
    }
    let mut cmd = Command::new(&p.argv[0]);
    cmd.args(&p.argv[1..])
        .current_dir(&p.cwd)
        .envs(p.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            emit(&out_frame(
                2,
                &format!("kcell vm: cannot run {}: {e}\n", p.argv[0]),
            ));
            emit(&format!("{EXIT}127"));
            return;
        }
    };
    let (tx, rx) = std::sync::mpsc::channel::<(u8, String)>();
    let mut readers = Vec::new();
    for (stream, pipe) in [
        (
            1u8,
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
        (
            2u8,
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
    ] {
        let Some(mut pipe) = pipe else { continue };
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let _ = tx.send((stream, String::from_utf8_lossy(&buf[..n]).to_string()));
            }
        }));
    }
    drop(tx);
    for (stream, text) in rx {
        emit(&out_frame(stream, &text));
    }
    for r in readers {
        let _ = r.join();
    }
    let code = match child.wait() {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
        }
        Err(_) => 125,
    };
    emit(&format!("{EXIT}{code}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn options_parse_as_documented() {
        let o = parse(&args(&[
            "--kernel",
            "deb-5.10-cloud",
            "--cgroup",
            "v1",
            "--cpus",
            "1",
            "--memory",
            "512m",
            "--env",
            "A=b",
            "--timeout",
            "30",
            "--",
            "/bin/prog",
            "--flag",
        ]))
        .expect("parses");
        assert_eq!(
            (o.kernel.as_str(), o.cgroup.as_str(), o.cpus, o.memory_mib),
            ("deb-5.10-cloud", "v1", 1, 512)
        );
        assert_eq!(o.env, vec![("A".to_string(), "b".to_string())]);
        assert_eq!(o.program, args(&["/bin/prog", "--flag"]));
        // As a cargo runner: the binary follows the options, its own flags after it.
        let o = parse(&args(&[
            "--cgroup",
            "v2",
            "target/debug/deps/t-1",
            "--test-threads",
            "1",
        ]))
        .expect("runner form");
        assert_eq!(
            o.program,
            args(&["target/debug/deps/t-1", "--test-threads", "1"])
        );
    }

    #[rstest::rstest]
    #[case(&["--cgroup", "v3", "--", "x"], "--cgroup 'v3': allowed are v1 and v2")]
    #[case(&["--cpus", "0", "--", "x"], "--cpus '0': a number from 1 to 64")]
    #[case(&["--memory", "1m", "--", "x"], "--memory '1m': at least 256m")]
    #[case(&["--bogus"], "unknown option '--bogus'")]
    #[case(&[], "no program")]
    fn bad_options_are_named(#[case] a: &[&str], #[case] says: &str) {
        let e = parse(&args(a)).expect_err("refused");
        assert!(e.contains(says), "{e}");
    }

    #[test]
    fn frames_round_trip() {
        let f = out_frame(2, "a\nb \"c\"");
        assert_eq!(parse_out(&f), Some((2, "a\nb \"c\"".to_string())));
        assert_eq!(parse_exit(&format!("{EXIT}137")), Some(137));
    }
}
