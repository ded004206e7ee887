//! `kcell-oci`: the OCI runtime command line, in runc's grammar, so
//! podman (conmon), containerd's shim and Docker can drive kcell. A thin
//! front end on the lifecycle library, as kcell's own CLI is. The same
//! binary answers to this name (`kcell-oci`, a link or copy of `kcell`).
//!
//! Exit status: 0 on success, 1 on an error (the message on stderr and in
//! the log, as runc writes it); `run` and a waited-for `exec` return the
//! process's status (runc's 255 for an exec that failed to start).

mod commands;
pub mod config;
mod features;
mod log;

use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

/// Where the OCI state lives unless `--root` says otherwise.
pub const DEFAULT_ROOT: &str = "/run/kcell-oci";

#[derive(Parser, Debug)]
#[command(
    name = "kcell-oci",
    about = "kcell's OCI runtime command line (runc's grammar)",
    disable_version_flag = true
)]
struct OciCli {
    /// Root directory for the containers' state (default /run/kcell-oci;
    /// $XDG_RUNTIME_DIR/kcell-oci for a caller that is not root).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// The log file (default: stderr).
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// text or json.
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    log_format: String,
    /// Debug lines in the log too.
    #[arg(long)]
    debug: bool,
    /// systemd's cgroup driver: refused, kcell writes cgroupfs itself.
    #[arg(long)]
    systemd_cgroup: bool,
    /// Accepted for runc compatibility (checkpoints are not supported).
    #[arg(long, value_name = "PATH")]
    criu: Option<String>,
    /// Accepted for runc compatibility (true, false or auto).
    #[arg(long, value_name = "VALUE")]
    rootless: Option<String>,
    /// Print the version.
    #[arg(short = 'v', long)]
    version: bool,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a container from a bundle; its process waits for `start`.
    Create(CreateArgs),
    /// Let a created container's process run.
    Start {
        /// The container.
        id: String,
    },
    /// Print a container's state (JSON).
    State {
        /// The container.
        id: String,
    },
    /// Send a signal (default SIGTERM) to a container's process.
    Kill {
        /// To every process of the container.
        #[arg(short, long)]
        all: bool,
        /// The container.
        id: String,
        /// A name (KILL, SIGKILL) or number.
        signal: Option<String>,
    },
    /// Delete a container (a running one only with --force).
    Delete {
        /// Kill it first if it runs.
        #[arg(short, long)]
        force: bool,
        /// The container.
        id: String,
    },
    /// Create and start a container and wait for it (unless --detach).
    Run(RunArgs),
    /// Run a process in a running container.
    Exec(ExecArgs),
    /// Freeze a container's processes.
    Pause {
        /// The container.
        id: String,
    },
    /// Thaw them.
    Resume {
        /// The container.
        id: String,
    },
    /// A container's processes: table (ps's columns) or json (host PIDs).
    Ps {
        /// table or json.
        #[arg(short, long, default_value = "table")]
        format: String,
        /// The container.
        id: String,
        /// Options for ps (table; default -ef).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// List containers.
    List {
        /// table or json.
        #[arg(short, long, default_value = "table")]
        format: String,
        /// IDs only.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Change a running container's limits.
    Update(commands::UpdateArgs),
    /// A container's statistics.
    Events {
        /// One stats object, then exit.
        #[arg(long)]
        stats: bool,
        /// Seconds between stats (default 5s).
        #[arg(long, default_value = "5s")]
        interval: String,
        /// The container.
        id: String,
    },
    /// What this runtime supports (runtime-spec features.md).
    Features,
    /// Write a default config.json.
    Spec {
        /// The bundle directory (default .).
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        /// A config for a caller without root (user namespace, no network namespace).
        #[arg(long)]
        rootless: bool,
    },
    /// Not supported.
    Checkpoint {
        /// Ignored.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
    /// Not supported.
    Restore {
        /// Ignored.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
}

#[derive(clap::Args, Debug)]
struct CreateArgs {
    /// The bundle (default: the current directory).
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    /// AF_UNIX socket for the terminal's master.
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// Where to write the process's PID.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Move the root and chroot instead of pivot_root (a root on a ramdisk).
    #[arg(long)]
    no_pivot: bool,
    /// Keep the caller's session keyring.
    #[arg(long)]
    no_new_keyring: bool,
    /// Descriptors passed on besides stdio and LISTEN_FDS.
    #[arg(long, default_value_t = 0)]
    preserve_fds: u32,
    /// The container's ID.
    id: String,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    create: CreateArgs,
    /// Return once it runs.
    #[arg(short, long)]
    detach: bool,
    /// Do not delete it after it exits.
    #[arg(long)]
    keep: bool,
    /// Accepted for runc compatibility.
    #[arg(long)]
    no_subreaper: bool,
}

#[derive(clap::Args, Debug)]
struct ExecArgs {
    /// AF_UNIX socket for the terminal's master.
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// Working directory.
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// KEY=VALUE (repeatable).
    #[arg(short, long)]
    env: Vec<String>,
    /// A terminal.
    #[arg(short, long)]
    tty: bool,
    /// UID[:GID].
    #[arg(short, long)]
    user: Option<String>,
    /// Supplementary group (repeatable).
    #[arg(short = 'g', long)]
    additional_gids: Vec<u32>,
    /// A runtime-spec Process JSON file (the other process flags are ignored).
    #[arg(short, long)]
    process: Option<PathBuf>,
    /// Return once the process runs.
    #[arg(short, long)]
    detach: bool,
    /// Where to write its PID.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Not supported.
    #[arg(long)]
    process_label: Option<String>,
    /// Not supported.
    #[arg(long)]
    apparmor: Option<String>,
    /// Set no_new_privs.
    #[arg(long)]
    no_new_privs: bool,
    /// Add a capability (repeatable).
    #[arg(short, long)]
    cap: Vec<String>,
    /// Descriptors passed on besides stdio.
    #[arg(long, default_value_t = 0)]
    preserve_fds: u32,
    /// Not supported (a sub-cgroup).
    #[arg(long)]
    cgroup: Option<String>,
    /// Exec into a paused container.
    #[arg(long)]
    ignore_paused: bool,
    /// The container.
    id: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// runc's flags may be written with one dash (Go's flag package: go-runc
/// sends `-no-subreaper`); clap wants two. Only known long names are
/// rewritten, and nothing after `--`.
fn normalize(args: Vec<OsString>) -> Vec<OsString> {
    const LONG: &[&str] = &[
        "root",
        "log",
        "log-format",
        "debug",
        "systemd-cgroup",
        "criu",
        "rootless",
        "version",
        "bundle",
        "console-socket",
        "pid-file",
        "no-pivot",
        "no-new-keyring",
        "preserve-fds",
        "detach",
        "keep",
        "no-subreaper",
        "all",
        "force",
        "format",
        "quiet",
        "stats",
        "interval",
        "cwd",
        "env",
        "tty",
        "user",
        "additional-gids",
        "process",
        "process-label",
        "apparmor",
        "no-new-privs",
        "cap",
        "cgroup",
        "ignore-paused",
        "resources",
    ];
    let mut out = Vec::with_capacity(args.len());
    let mut done = false;
    for a in args {
        let s = a.to_string_lossy().to_string();
        if s == "--" {
            done = true;
        }
        let name = s
            .strip_prefix('-')
            .filter(|r| !r.starts_with('-'))
            .unwrap_or("");
        let key = name.split('=').next().unwrap_or("");
        if !done && key.len() > 1 && LONG.contains(&key) {
            out.push(OsString::from(format!("-{s}")));
        } else {
            out.push(a);
        }
    }
    out
}

/// Runs `kcell-oci` on `args`; returns the exit status.
pub fn main<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args = normalize(args.into_iter().map(Into::into).collect());
    let cli = match OciCli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return 0;
            }
            eprintln!("{}", crate::sys::one_line(&e.to_string()));
            return 1;
        }
    };
    let log = log::Log::open(cli.log.as_deref(), &cli.log_format, cli.debug);
    if cli.version {
        println!("kcell-oci version {}", env!("CARGO_PKG_VERSION"));
        println!("spec: {}", crate::lifecycle::OCI_VERSION);
        return 0;
    }
    let Some(command) = cli.command else {
        log.error(
            "no command given: kcell-oci [global options] COMMAND (kcell-oci --help lists them)",
        );
        return 1;
    };
    if cli.systemd_cgroup {
        log.error("--systemd-cgroup is not supported: kcell has no systemd cgroup driver and writes cgroupfs itself (run without --systemd-cgroup, e.g. podman --cgroup-manager cgroupfs)");
        return 1;
    }
    let root = cli.root.unwrap_or_else(default_root);
    let state = crate::state::StateDir::at(&root);
    match commands::execute(command, &state, &log) {
        Ok(code) => code,
        Err((code, message)) => {
            log.error(&message);
            code
        }
    }
}

fn default_root() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from(DEFAULT_ROOT);
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) => PathBuf::from(d).join("kcell-oci"),
        None => std::env::temp_dir().join(format!("kcell-oci-{}", nix::unistd::geteuid())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn single_dash_long_flags_become_double() {
        let got = normalize(os(&[
            "kcell-oci",
            "-root",
            "/r",
            "--log-format=json",
            "exec",
            "-detach",
            "x",
            "sh",
            "-c",
            "--",
            "-root",
        ]));
        assert_eq!(
            got,
            os(&[
                "kcell-oci",
                "--root",
                "/r",
                "--log-format=json",
                "exec",
                "--detach",
                "x",
                "sh",
                "-c",
                "--",
                "-root"
            ])
        );
    }

    #[test]
    fn the_grammar_parses_as_runc_writes_it() {
        let cli = OciCli::try_parse_from(normalize(os(&[
            "kcell-oci",
            "--root",
            "/r",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/p",
            "c1",
        ])))
        .expect("parses");
        assert!(
            matches!(cli.command, Some(Cmd::Create(ref a)) if a.id == "c1" && a.bundle == Path::new("/b"))
        );
        let cli = OciCli::try_parse_from(os(&["kcell-oci", "kill", "--all", "c1", "KILL"]))
            .expect("parses");
        assert!(
            matches!(cli.command, Some(Cmd::Kill { all: true, ref signal, .. }) if signal.as_deref() == Some("KILL"))
        );
        let cli = OciCli::try_parse_from(os(&[
            "kcell-oci",
            "exec",
            "-d",
            "--pid-file",
            "/p",
            "c1",
            "sh",
            "-c",
            "echo hi",
        ]))
        .expect("parses");
        assert!(
            matches!(cli.command, Some(Cmd::Exec(ref e)) if e.detach && e.command == ["sh", "-c", "echo hi"])
        );
    }
}
