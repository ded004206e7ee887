//! `kcell-probe`: the helper that runs *inside* containers (the harness's
//! agent binary under another name, copied into the image). Each
//! subcommand makes the system calls a behaviour is about and prints
//! `key=value` lines, so cases observe the kernel directly rather than
//! parsing tool output. A crate of its own, on std, libc and nix only:
//! what runs in the container under judgement is small and shares nothing
//! with any runtime.

use nix::errno::Errno;
use std::fs;
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

mod confine;
mod files;
mod load;
mod net;
pub mod netdev;
mod procs;
pub mod text;

use files::*;
use load::*;
use net::*;
use procs::*;

/// Printed by held commands once they are ready to be observed.
pub const READY: &str = "KCELL_READY";

/// What a workload prints when the harness should read its cgroup's CPU
/// counter (driver::Mark); the workload then sleeps a moment, so the
/// reading lands before it uses CPU again.
pub const MARK: &str = "KCELL_MARK";

/// What a held workload prints after its last clock reading, before
/// READY: the harness reads the counters again, so the window ends before
/// the process's exit (whose CPU the workload's own clock never sees).
pub const MARK_END: &str = "KCELL_MARK_END";

fn out(key: &str, value: impl std::fmt::Display) {
    println!("{}", observation_line(key, value));
}

/// One `key=value` line. Control characters in the value become spaces: a
/// value read from the system (a command line of a `bash -c` script, a file
/// name) may hold a newline, which would otherwise end the line and drop the
/// rest of the value.
fn observation_line(key: &str, value: impl std::fmt::Display) -> String {
    let value = value.to_string().replace(|c: char| c.is_control(), " ");
    format!("{key}={value}")
}

fn errno_name(e: Errno) -> String {
    format!("{e:?}")
}

/// An io::Error as its errno's name (ENOENT), or its text when it has none.
fn io_errno(e: &std::io::Error) -> String {
    e.raw_os_error()
        .map_or(e.to_string(), |n| errno_name(Errno::from_raw(n)))
}

/// Blocks until stdin closes: how the host releases a held command.
fn wait_for_stdin_eof() {
    let mut sink = String::new();
    while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {
        sink.clear();
    }
}

/// Runs the helper with `args` (without the program name); returns the exit status.
pub fn main(args: &[String]) -> i32 {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match a.as_slice() {
        ["ids"] => ids(),
        ["nsinfo"] => nsinfo(),
        ["sysv-queues"] => sysv_queues(),
        ["mq-open", name] => mq_open(name),
        ["ps"] => ps(),
        ["orphan"] => orphan(),
        ["hold", ..] => hold(),
        ["spawn-hold", marker] => spawn_hold(marker),
        ["pid1-exit", marker] => pid1_exit(marker),
        ["links"] => links(),
        ["fresh-netns"] => fresh_netns(),
        ["tcp-loopback"] => tcp_loopback().map(|r| out("loopback_tcp", r)),
        ["clocks"] => clocks(),
        ["escape", path] => escape(None, path),
        ["escape", "--chroot", dir, path] => escape(Some(dir), path),
        ["mounts"] => mounts(),
        ["rootmount"] => root_mount(),
        ["cgroup"] => cgroup(),
        ["spin", rest @ ..] => spin(rest),
        ["work", size, seconds] => work(size, seconds, false),
        ["work", size, seconds, "--hold"] => work(size, seconds, true),
        ["alloc", size] => alloc(size, false),
        ["alloc", size, "--hold"] => alloc(size, true),
        ["fork-until-fail", limit] => fork_until_fail(limit),
        ["direct-io", op, dev, size] => direct_io(op, dev, size),
        ["counter", file] => counter(file),
        ["open", path] => open_device(path),
        ["overlay", dir] => overlay(dir),
        ["write", path] => write_file(path),
        ["fsinfo", path] => fsinfo(path),
        ["netns-persist", dir] => netns_persist(dir),
        ["addrs"] => net::addrs(),
        ["ping", target] => net::ping(target),
        ["tcp-connect", host, port] => net::tcp_connect(host, port, None),
        ["tcp-connect", host, port, seconds] => net::tcp_connect(host, port, Some(seconds)),
        ["tcp-serve", port] => net::tcp_serve(port),
        ["caps"] => confine::caps(),
        ["syscalls"] => confine::syscalls(),
        ["try-write", key, path] => confine::try_write(key, path),
        ["try-read", key, path] => confine::try_read(key, path),
        ["try-mount", dir] => confine::try_mount(dir),
        ["try-kill", pid] => confine::try_kill(pid),
        ["try-unshare-user"] => confine::try_unshare_user(),
        ["cgroup-raise"] => confine::cgroup_raise(false),
        ["cgroup-raise", "--remount"] => confine::cgroup_raise(true),
        ["abstract-connect", name] => confine::abstract_connect(name),
        _ => Err(format!("kcell-probe: unknown subcommand {args:?}")),
    };
    let _ = std::io::stdout().flush();
    match result {
        Ok(()) => 0,
        Err(msg) => {
            eprintln!("{msg}");
            1
        }
    }
}

type Res = Result<(), String>;

#[cfg(test)]
mod tests {
    use super::observation_line;

    #[test]
    fn a_value_with_newlines_stays_on_one_line() {
        let line = observation_line("cmdlines", "bash -c a=0\nrun\r\tx|kcell-hostproc-1");
        assert_eq!(line, "cmdlines=bash -c a=0 run  x|kcell-hostproc-1");
        assert_eq!(line.lines().count(), 1);
    }
}
