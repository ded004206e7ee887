//! Known workloads: CPU spinners, memory allocation, forking until the
//! pids limit, a measured unit of work, and the clocks a time namespace
//! offsets.

#[allow(unused_imports)]
use super::*;

pub(super) fn clock_secs(id: nix::time::ClockId) -> f64 {
    nix::time::clock_gettime(id).map_or(0.0, |t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
}

/// The clocks a time namespace offsets, and their difference: read in one
/// process a moment apart, `boot_minus_mono` does not depend on when the
/// process ran, so two runs can be compared however slow a runtime is.
pub(super) fn clocks() -> Res {
    let monotonic = clock_secs(nix::time::ClockId::CLOCK_MONOTONIC);
    let boottime = clock_secs(nix::time::ClockId::CLOCK_BOOTTIME);
    out("monotonic", monotonic);
    out("boottime", boottime);
    out("boot_minus_mono", boottime - monotonic);
    let uptime = fs::read_to_string("/proc/uptime").unwrap_or_default();
    out("uptime", uptime.split_whitespace().next().unwrap_or("0"));
    Ok(())
}

/// Exits the whole process when stdin closes: how held commands end.
pub(super) fn exit_on_stdin_eof() {
    std::thread::spawn(|| {
        wait_for_stdin_eof();
        std::process::exit(0);
    });
}

/// Busy loops (threads or forked processes) until stdin closes.
pub(super) fn spin(args: &[&str]) -> Res {
    let mut threads = 1;
    let mut procs = 1;
    let mut seconds: Option<f64> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--threads" => {
                threads = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("--threads N")?
            }
            "--procs" => procs = it.next().and_then(|n| n.parse().ok()).ok_or("--procs N")?,
            // CPU affinity (sched_setaffinity), not the cpuset controller:
            // a case asks only for what it uses.
            "--cpu" => {
                let cpu: usize = it.next().and_then(|n| n.parse().ok()).ok_or("--cpu N")?;
                let mut set = nix::sched::CpuSet::new();
                set.set(cpu).map_err(|e| format!("cpu {cpu}: {e}"))?;
                nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
                    .map_err(|e| format!("sched_setaffinity to CPU {cpu}: {e}"))?;
            }
            "--seconds" => {
                seconds = Some(
                    it.next()
                        .and_then(|n| n.parse().ok())
                        .ok_or("--seconds S")?,
                )
            }
            other => return Err(format!("spin: unknown option {other}")),
        }
    }
    for _ in 1..procs {
        // SAFETY: no threads exist yet.
        if let Ok(nix::unistd::ForkResult::Child) = unsafe { nix::unistd::fork() } {
            // Dies with the parent.
            let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
            break;
        }
    }
    if let Some(s) = seconds {
        // A fixed amount of work, for accounting: spin S seconds of CPU time, then exit.
        let start = cpu_time();
        while cpu_time() - start < s {
            for _ in 0..100_000 {
                std::hint::black_box(0u64);
            }
        }
        out("spun_s", format!("{:.3}", cpu_time() - start));
        return Ok(());
    }
    exit_on_stdin_eof();
    // Every spinner runs before the host is told to measure.
    for _ in 1..threads {
        std::thread::spawn(busy);
    }
    out("tid", nix::unistd::gettid());
    println!("{READY}");
    let _ = std::io::stdout().flush();
    busy()
}

pub(super) fn cpu_time() -> f64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID)
        .map_or(0.0, |t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
}

pub(super) fn busy() -> ! {
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

/// Allocates and touches SIZE bytes, 64 KiB at a time; with `--hold`, keeps
/// them until stdin closes. "started" is printed first, so a run that dies
/// shows whether it got as far as running this code at all.
pub(super) fn alloc(size: &str, hold: bool) -> Res {
    let bytes = crate::text::size(size)?;
    out("started", true);
    let _ = std::io::stdout().flush();
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut done = 0u64;
    while done < bytes {
        let n = (bytes - done).min(64 << 10) as usize;
        chunks.push(vec![0xa5; n]);
        done += n as u64;
    }
    out("allocated", done);
    std::hint::black_box(&chunks);
    if hold {
        println!("{READY}");
        let _ = std::io::stdout().flush();
        wait_for_stdin_eof();
        std::hint::black_box(&chunks);
    }
    Ok(())
}

/// Forks sleeping children until fork fails (or `limit` is reached).
pub(super) fn fork_until_fail(limit: &str) -> Res {
    let limit: usize = limit
        .parse()
        .map_err(|_| format!("fork-until-fail: bad limit {limit}"))?;
    let mut children = Vec::new();
    let mut failure = "none".to_string();
    while children.len() < limit {
        // SAFETY: single-threaded.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                std::thread::sleep(Duration::from_secs(30));
                std::process::exit(0);
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => children.push(child),
            Err(e) => {
                failure = errno_name(e);
                break;
            }
        }
    }
    out("forked", children.len());
    out("fork_error", failure);
    for c in &children {
        let _ = nix::sys::signal::kill(*c, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(*c, None);
    }
    Ok(())
}

/// A known workload in one process: touch SIZE bytes, spin SECONDS of CPU,
/// then report the process's own CPU clock: `cpu_ns` counts from its fork,
/// so it includes the runtime's set-up in this process before exec;
/// `work_cpu_ns` counts from the mark (printed once the memory is
/// touched, see MARK), the spinning alone. With `hold`, MARK_END then
/// READY, and the process waits for stdin to close before it exits.
pub(super) fn work(size: &str, seconds: &str, hold: bool) -> Res {
    let bytes = crate::text::size(size)?;
    let secs: f64 = seconds
        .parse()
        .map_err(|_| format!("work: bad seconds {seconds}"))?;
    let memory = vec![0x5au8; bytes as usize];
    std::hint::black_box(&memory);
    // The memory is in use: the harness reads the counters now.
    println!("{MARK}");
    let _ = std::io::stdout().flush();
    std::thread::sleep(std::time::Duration::from_millis(100));
    let entry = cpu_time();
    let start = cpu_time();
    while cpu_time() - start < secs {
        for _ in 0..100_000 {
            std::hint::black_box(0u64);
        }
    }
    out("touched", bytes);
    let now = cpu_time();
    out("cpu_ns", (now * 1e9) as u64);
    out("work_cpu_ns", ((now - entry) * 1e9) as u64);
    if hold {
        println!("{MARK_END}");
        println!("{READY}");
        let _ = std::io::stdout().flush();
        wait_for_stdin_eof();
        std::hint::black_box(&memory);
    }
    Ok(())
}
