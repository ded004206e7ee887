//! Booting a guest: the QEMU command line as a pure function of the boot
//! configuration, and one monitored boot (progress and verdicts read from
//! the second serial port as they come, a watchdog, a console-size cap).

use crate::verdict::Verdict;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How QEMU executes the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// Software emulation (multi-threaded TCG).
    Tcg,
}

/// Everything one boot needs.
#[derive(Debug, Clone)]
pub struct BootConfig {
    /// bzImage.
    pub kernel: PathBuf,
    /// initramfs.
    pub initrd: PathBuf,
    /// Kernel command line.
    pub cmdline: String,
    /// A raw disk for the I/O cases.
    pub disk: Option<PathBuf>,
    /// ttyS0: the kernel's and the agent's console.
    pub console_log: PathBuf,
    /// ttyS1: framed progress and verdict lines only.
    pub verdict_log: PathBuf,
    /// KVM or TCG.
    pub accel: Accel,
    /// vCPUs.
    pub cpus: u32,
    /// MiB of RAM.
    pub memory_mib: u32,
    /// A firmware other than SeaBIOS (qboot starts about 0.8 s faster under TCG).
    pub firmware: Option<PathBuf>,
}

/// Where Debian's qemu-system-data puts qboot.
pub const QBOOT: &[&str] = &["/usr/share/qemu/qboot.rom", "/usr/share/seabios/qboot.rom"];

/// The I/O port of QEMU's isa-debug-exit device: the agent writes 0 there
/// when it is done, and QEMU exits with (0 << 1) | 1 = 1.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;
/// QEMU's exit status when the agent finished.
pub const AGENT_DONE_STATUS: i32 = 1;

/// The QEMU argument vector for `c`.
pub fn qemu_args(c: &BootConfig) -> Vec<String> {
    [machine(c), boot_files(c), serial_ports(c), devices(c)].concat()
}

/// The machine: no defaults, no display, no reboot, the accelerator and
/// its CPU model, the vCPUs and memory, the firmware.
fn machine(c: &BootConfig) -> Vec<String> {
    let mut a: Vec<String> = [
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-machine",
        "pc",
    ]
    .map(String::from)
    .to_vec();
    match c.accel {
        Accel::Kvm => a.extend(["-accel", "kvm", "-cpu", "host"].map(String::from)),
        // Single-threaded TCG: multi-threaded TCG oopsed about once in 100
        // boots on this kind of machine (none in 60 single-threaded), and two
        // guests in parallel on two cores gain nothing from more threads.
        // qemu64, the baseline x86-64 model, boots 0.5 s faster than "max"
        // under TCG (less for the kernel to probe and patch at boot).
        Accel::Tcg => a.extend(["-accel", "tcg,thread=single", "-cpu", "qemu64"].map(String::from)),
    }
    a.extend([
        "-smp".into(),
        c.cpus.to_string(),
        "-m".into(),
        c.memory_mib.to_string(),
    ]);
    if let Some(fw) = &c.firmware {
        a.extend(["-bios".into(), fw.display().to_string()]);
    }
    a
}

/// The kernel, the initramfs and the command line (direct boot).
fn boot_files(c: &BootConfig) -> Vec<String> {
    vec![
        "-kernel".into(),
        c.kernel.display().to_string(),
        "-initrd".into(),
        c.initrd.display().to_string(),
        "-append".into(),
        c.cmdline.clone(),
    ]
}

/// ttyS0, the console, and ttyS1, the frames (verdicts, progress), each
/// to a file the host reads.
fn serial_ports(c: &BootConfig) -> Vec<String> {
    vec![
        "-serial".into(),
        format!("file:{}", c.console_log.display()),
        "-serial".into(),
        format!("file:{}", c.verdict_log.display()),
    ]
}

/// The exit device the agent ends the guest with, and the scratch disk.
fn devices(c: &BootConfig) -> Vec<String> {
    let mut a = vec![
        "-device".into(),
        format!("isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=0x04"),
    ];
    if let Some(disk) = &c.disk {
        a.extend([
            "-drive".into(),
            format!(
                "if=none,id=kcelldisk,file={},format=raw,cache=unsafe",
                disk.display()
            ),
            "-device".into(),
            "virtio-blk-pci,drive=kcelldisk".into(),
        ]);
    }
    a
}

/// The kernel command line for a target (what a boot runs is its plan,
/// in the initramfs: a command line holds at most 2 KiB).
pub fn cmdline(target: &str, cgroup: &str) -> String {
    // Boot-time savings under TCG: no PS/2 probing, a trusted TSC, no
    // crypto self-tests; none of them changes what a container sees.
    let s = format!(
        "console=ttyS0 panic=-1 quiet loglevel=3 i8042.noaux i8042.nokbd i8042.nopnp tsc=reliable no_timer_check cryptomgr.notests kcell.target={target} kcell.cgroup={cgroup}"
    );
    s
}

/// Something the guest reported.
#[derive(Debug, Clone)]
pub enum Event {
    /// The guest started case `n` of `total`.
    Case {
        /// 1-based.
        n: usize,
        /// Cases in this boot.
        total: usize,
        /// SPEC ID.
        id: String,
    },
    /// A verdict arrived.
    Verdict(Box<Verdict>),
    /// A `kcell vm` program wrote to its stdout (1) or stderr (2).
    Output {
        /// 1 or 2.
        stream: u8,
        /// What it wrote.
        text: String,
    },
    /// A `kcell vm` program ended with this status.
    Exit(i32),
}

/// How a boot ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The agent ran every case and powered off through isa-debug-exit.
    Finished,
    /// QEMU ended otherwise (panic with -no-reboot, a crash): why.
    Died(String),
    /// The watchdog killed it: why.
    Killed(String),
}

/// The result of one boot.
#[derive(Debug, Clone)]
pub struct Boot {
    /// Verdicts in arrival order.
    pub verdicts: Vec<Verdict>,
    /// How it ended.
    pub ending: Ending,
    /// The last 3000 characters of the console.
    pub console_tail: String,
    /// Seconds from QEMU's start to the first case starting.
    pub boot_seconds: Option<f64>,
    /// The trial that had started but not reported when the guest ended.
    pub in_progress: Option<String>,
    /// Seconds the whole boot took.
    pub seconds: f64,
}

/// Watchdog limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From start to the first case.
    pub boot: Duration,
    /// Added to a case's own timeout.
    pub case_slack: Duration,
    /// Console bytes before the guest counts as flooding.
    pub console_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            boot: Duration::from_secs(90),
            case_slack: Duration::from_secs(60),
            console_bytes: 32 << 20,
        }
    }
}

fn tail_of(path: &Path, chars: usize) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(chars as u64 * 2)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).replace('\r', "");
    let start = text.char_indices().rev().nth(chars).map_or(0, |(i, _)| i);
    text[start..].to_string()
}

/// QEMU's stderr, read as it comes by a thread of its own: a KVM failure
/// is said there while QEMU keeps running ([`kvm_failure`]).
struct QemuStderr {
    text: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl QemuStderr {
    fn read(pipe: Option<std::process::ChildStderr>) -> QemuStderr {
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = std::sync::Arc::clone(&text);
        let reader = pipe.map(|mut pipe| {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut t) = sink.lock() {
                        // Bounded: a chatty QEMU cannot grow it without end.
                        if t.len() < 64 << 10 {
                            t.push_str(&String::from_utf8_lossy(&buf[..n]));
                        }
                    }
                }
            })
        });
        QemuStderr { text, reader }
    }

    fn text(&self) -> String {
        self.text.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// All of it, once QEMU has exited (the pipe's end reached).
    fn text_at_exit(mut self) -> String {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.text()
    }
}

/// What QEMU prints when KVM cannot run the guest and it stops the vCPU
/// without exiting (seen on kvm-pvm hosts: "KVM internal error. Suberror:
/// 1"), or exits (nested KVM: "failed to set MSR").
const KVM_FAILURE_MARKS: &[&str] = &[
    "KVM internal error",
    "kvm run failed",
    "failed to set MSR",
    "KVM: entry failed",
];

/// Under KVM, a console still empty this long after QEMU started means
/// KVM did not run the guest (a KVM guest's init speaks within a second).
const KVM_SILENT_CONSOLE: Duration = Duration::from_secs(10);

/// Why this KVM boot has failed already, if it has: QEMU said so on its
/// stderr, or the console stayed empty; None under TCG and once a case
/// or program started. The caller kills QEMU, and the boot falls back to
/// TCG at once instead of waiting out the boot watchdog.
fn kvm_failure(
    c: &BootConfig,
    stderr: &str,
    console_bytes: u64,
    boot: &Boot,
    start: Instant,
) -> Option<String> {
    if c.accel != Accel::Kvm || boot.boot_seconds.is_some() {
        return None;
    }
    if let Some(mark) = KVM_FAILURE_MARKS.iter().find(|m| stderr.contains(*m)) {
        let line = stderr
            .lines()
            .find(|l| l.contains(mark))
            .unwrap_or(mark)
            .trim();
        return Some(format!("KVM cannot run this guest: qemu said \"{line}\""));
    }
    if console_bytes == 0 && start.elapsed() > KVM_SILENT_CONSOLE {
        return Some(format!(
            "KVM cannot run this guest: nothing on the console {} s after start",
            KVM_SILENT_CONSOLE.as_secs()
        ));
    }
    None
}

/// Boots `c`, reporting events as they happen; always returns (never panics).
pub fn boot(c: &BootConfig, limits: Limits, on_event: &mut dyn FnMut(&Event)) -> Boot {
    let start = Instant::now();
    let _ = std::fs::write(&c.verdict_log, b"");
    let _ = std::fs::write(&c.console_log, b"");
    let mut result = Boot {
        verdicts: Vec::new(),
        ending: Ending::Died(String::new()),
        console_tail: String::new(),
        boot_seconds: None,
        in_progress: None,
        seconds: 0.0,
    };
    let qemu = std::env::var_os("KCELL_QEMU").unwrap_or_else(|| "qemu-system-x86_64".into());
    match spawn(&qemu, c) {
        Ok(child) => watch(child, c, limits, start, &mut result, on_event),
        Err(e) => {
            result.ending = Ending::Died(format!(
                "spawning {}: {e} (install qemu-system-x86)",
                Path::new(&qemu).display()
            ));
            return result;
        }
    }
    result.console_tail = tail_of(&c.console_log, 3000);
    result.seconds = start.elapsed().as_secs_f64();
    result
}

/// QEMU, dying with the thread that boots it, however the harness ends (a
/// SIGKILL of the test process included): no orphaned QEMU.
fn spawn(qemu: &std::ffi::OsStr, c: &BootConfig) -> std::io::Result<std::process::Child> {
    let mut cmd = Command::new(qemu);
    // SAFETY: prctl is async-signal-safe; nothing else runs before exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            );
            Ok(())
        });
    }
    cmd.args(qemu_args(c))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
}

/// Reads the frames as they come, until QEMU exits or is killed (a KVM
/// failure, the watchdog, a flooding console); sets the ending.
fn watch(
    mut child: std::process::Child,
    c: &BootConfig,
    limits: Limits,
    start: Instant,
    result: &mut Boot,
    on_event: &mut dyn FnMut(&Event),
) {
    let stderr = QemuStderr::read(child.stderr.take());
    let mut frames = Frames::default();
    let mut deadline = start + limits.boot;
    let status = loop {
        for line in frames.new_lines(&c.verdict_log) {
            if let Some(timeout) = take_frame(&line, result, start, on_event) {
                deadline = Instant::now() + Duration::from_secs(timeout) + limits.case_slack;
            }
        }
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(e) => {
                result.ending = Ending::Died(format!("waiting for qemu: {e}"));
                break None;
            }
        }
        let console = std::fs::metadata(&c.console_log)
            .map(|m| m.len())
            .unwrap_or(0);
        let kill_why = kvm_failure(c, &stderr.text(), console, result, start).or_else(|| {
            if Instant::now() > deadline {
                Some(match result.boot_seconds {
                    None => format!("no case started within {} s of boot", limits.boot.as_secs()),
                    Some(_) => "a case ran past its timeout plus the watchdog's slack".to_string(),
                })
            } else if console > limits.console_bytes {
                Some(format!(
                    "the console passed {} MiB (a flooding guest)",
                    limits.console_bytes >> 20
                ))
            } else {
                None
            }
        });
        if let Some(why) = kill_why {
            let _ = child.kill();
            let _ = child.wait();
            result.ending = Ending::Killed(why);
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if let Some(status) = status {
        result.ending = exit_ending(status, &stderr.text_at_exit());
    }
}

/// The lines of the frames file not read yet.
#[derive(Default)]
struct Frames {
    offset: u64,
    partial: String,
}

impl Frames {
    fn new_lines(&mut self, path: &Path) -> Vec<String> {
        if let Ok(mut f) = std::fs::File::open(path) {
            if f.seek(SeekFrom::Start(self.offset)).is_ok() {
                let mut buf = Vec::new();
                if let Ok(n) = f.read_to_end(&mut buf) {
                    self.offset += n as u64;
                    self.partial
                        .push_str(&String::from_utf8_lossy(&buf).replace('\r', ""));
                }
            }
        }
        let mut lines = Vec::new();
        while let Some(pos) = self.partial.find('\n') {
            lines.push(self.partial.drain(..=pos).collect());
        }
        lines
    }
}

/// One frame: progress (returns the case's timeout, for the watchdog),
/// a program's output or exit, or a verdict.
fn take_frame(
    line: &str,
    result: &mut Boot,
    start: Instant,
    on_event: &mut dyn FnMut(&Event),
) -> Option<u64> {
    if let Some((n, total, id, t)) = crate::frames::parse_progress(line) {
        result
            .boot_seconds
            .get_or_insert(start.elapsed().as_secs_f64());
        result.in_progress = Some(id.clone());
        on_event(&Event::Case { n, total, id });
        return Some(t);
    }
    if let Some((stream, text)) = crate::frames::parse_out(line) {
        on_event(&Event::Output { stream, text });
    } else if let Some(code) = crate::frames::parse_exit(line) {
        result.in_progress = None;
        on_event(&Event::Exit(code));
    } else if let Some(v) = Verdict::from_line(line) {
        if result.in_progress.as_deref() == Some(v.key().as_str()) {
            result.in_progress = None;
        }
        on_event(&Event::Verdict(Box::new(v.clone())));
        result.verdicts.push(v);
    }
    None
}

/// How a QEMU that exited by itself ended: the agent's done status, or a
/// death with what QEMU said.
fn exit_ending(status: std::process::ExitStatus, said: &str) -> Ending {
    if status.code() == Some(AGENT_DONE_STATUS) {
        return Ending::Finished;
    }
    let what = match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
        (Some(0), _) => "the guest rebooted before the agent finished (a kernel panic, with panic=-1 and -no-reboot)".to_string(),
        (_, Some(sig)) => format!("qemu was killed by signal {sig} before the agent finished"),
        _ => format!("qemu exited with {status} before the agent finished"),
    };
    let said = if said.trim().is_empty() {
        String::new()
    } else {
        format!("; qemu said: {}", said.trim())
    };
    Ending::Died(format!("{what}{said}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn config(accel: Accel, disk: bool) -> BootConfig {
        BootConfig {
            kernel: "/k/vmlinuz".into(),
            initrd: "/c/i.cpio".into(),
            cmdline: cmdline("deb-6.1-cloud/v1", "v1"),
            disk: disk.then(|| PathBuf::from("/t/disk.img")),
            console_log: "/t/console.log".into(),
            verdict_log: "/t/verdicts.log".into(),
            accel,
            cpus: 2,
            memory_mib: 1024,
            firmware: None,
        }
    }

    fn pair(args: &[String], flag: &str) -> Vec<String> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].clone())
            .collect()
    }

    #[rstest]
    #[case(Accel::Tcg, "tcg,thread=single", "qemu64")]
    #[case(Accel::Kvm, "kvm", "host")]
    fn accelerator_and_cpu(#[case] accel: Accel, #[case] name: &str, #[case] cpu: &str) {
        let a = qemu_args(&config(accel, false));
        assert_eq!(pair(&a, "-accel"), vec![name]);
        assert_eq!(pair(&a, "-cpu"), vec![cpu]);
    }

    #[test]
    fn two_serial_ports_console_first() {
        let a = qemu_args(&config(Accel::Tcg, false));
        assert_eq!(
            pair(&a, "-serial"),
            vec!["file:/t/console.log", "file:/t/verdicts.log"]
        );
        assert!(a.contains(&"-no-reboot".to_string()));
        assert!(a.contains(&"-nodefaults".to_string()));
        assert!(pair(&a, "-device").contains(&"isa-debug-exit,iobase=0xf4,iosize=0x04".to_string()));
    }

    #[rstest]
    #[case(true, 1)]
    #[case(false, 0)]
    fn disk_only_when_asked(#[case] disk: bool, #[case] drives: usize) {
        assert_eq!(
            pair(&qemu_args(&config(Accel::Tcg, disk)), "-drive").len(),
            drives
        );
    }

    #[test]
    fn cmdline_names_target_and_cgroup() {
        let c = cmdline("deb-6.12-cloud/v2", "v2");
        assert!(c.contains("panic=-1"));
        assert!(c.contains("kcell.target=deb-6.12-cloud/v2"));
        assert!(c.ends_with("kcell.cgroup=v2"));
    }
}
