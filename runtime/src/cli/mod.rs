//! kcell's own command line: `kcell run`, `ps`, `exec`, `stop`, `rm`,
//! `gc`, `freeze|thaw|stats`, `net`, `rootfs busybox`, the image commands
//! of [`image`], and `kcell vm`. Each is a thin front end on the lifecycle
//! library ([`crate::lifecycle`]), as `kcell-oci` ([`crate::oci`]) is.
//! Exit status: the container command's, 125 for the runtime's own errors,
//! 126/127 when the command cannot be executed / found.

use crate::image::store::Store;
use crate::state::StateDir;
use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

mod image;
mod manage;
mod run;

/// The runtime's own failure.
pub const EXIT_RUNTIME_ERROR: i32 = 125;

#[derive(Parser, Debug)]
#[command(name = "kcell", version, about = "A small container runtime")]
struct Cli {
    /// The image store (layers, images, containers' upper directories).
    /// Default: $KCELL_ROOT, else /var/lib/kcell (root) or ~/.local/share/kcell.
    #[arg(long, global = true, value_name = "DIR")]
    root: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run CMD as PID 1 of a new container from IMAGE (or rooted at the
    /// directory ROOTFS) and exit with its status.
    Run(Box<run::RunArgs>),
    /// List images: repository:tag, ID, size, created.
    Images,
    /// Remove images (a tag of an image with several tags: only the tag),
    /// and the layers no other image or container uses.
    Rmi {
        /// Also while containers use it (its layers stay until they end).
        #[arg(short, long)]
        force: bool,
        /// NAME[:TAG] or (short) ID.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Fetch an image from a registry into the store (Docker Hub unless
    /// the reference names a registry).
    Pull(image::PullArgs),
    /// Send an image of the store to a registry.
    Push(image::PushArgs),
    /// Import, pack and inspect images.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Freeze every process of a running container (v1 freezer.state, v2 cgroup.freeze).
    Freeze {
        /// The container's name (its `--name`).
        name: String,
    },
    /// Thaw a frozen container.
    Thaw {
        /// The container's name.
        name: String,
    },
    /// List containers: ID, root, command, created, status, PID (running ones unless -a).
    Ps {
        /// Also those whose process is gone.
        #[arg(short, long)]
        all: bool,
    },
    /// Run a command in a running container: its namespaces, cgroup, root and environment.
    Exec {
        /// Environment KEY=VALUE added (repeatable).
        #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// The container.
        id: String,
        /// The command and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Stop a container: SIGTERM, then SIGKILL after the grace time.
    Stop {
        /// Seconds to wait after SIGTERM.
        #[arg(short, long, default_value_t = 10)]
        time: u64,
        /// The container.
        id: String,
    },
    /// Remove what is left of a container that is not running (-f: stop it first).
    Rm {
        /// Kill it first if it runs.
        #[arg(short, long)]
        force: bool,
        /// The container.
        id: String,
    },
    /// Remove what dead containers left behind (records, cgroups, overlay
    /// directories, unused layers) after a runtime was killed.
    Gc,
    /// Print a running container's cgroup counters as JSON.
    Stats {
        /// The container's name.
        name: String,
    },
    /// Build root filesystems.
    #[command(subcommand)]
    Rootfs(RootfsCommand),
    /// Container networks.
    #[command(subcommand)]
    Net(NetCommand),
}

#[derive(Subcommand, Debug)]
enum NetCommand {
    /// Add a further interface to a running container: a veth pair with
    /// NAME (default eth1) and ADDR/PREFIX inside, the host end up and attached to nothing.
    Attach {
        /// The container.
        id: String,
        /// The address inside, with its prefix (e.g. 10.90.0.5/24).
        #[arg(long, value_name = "ADDR/PREFIX", value_parser = run::parse_ip_net)]
        ip: crate::net::Ipv4Net,
        /// The interface's name inside.
        #[arg(long, default_value = "eth1")]
        name: String,
    },
    /// List bridge address leases: bridge, address, container.
    Leases,
}

#[derive(Subcommand, Debug)]
enum RootfsCommand {
    /// Build a busybox root at DIR from Debian's busybox-static.
    Busybox {
        /// Where the root is made (replaced if it exists).
        dir: PathBuf,
    },
}

/// Errors of the CLI that are not a container's.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    #[error(transparent)]
    IdMap(#[from] crate::idmap::IdMapError),
    #[error(transparent)]
    Lifecycle(#[from] crate::lifecycle::LifecycleError),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
    #[error(transparent)]
    Busybox(#[from] crate::rootfs::busybox::BusyboxError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("container '{0}' is running: stop it first, or use rm -f")]
    Running(String),
    #[error("{0}")]
    Detach(String),
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error("container '{0}' is not running: --net container:{0} needs its network namespace")]
    NotRunning(String),
    #[error("'{0}' is neither a directory nor an image in {1} (kcell images lists them; kcell image import adds one)")]
    NoRoot(String, PathBuf),
    #[error("--subnet, --ip and --no-nat are for --net bridge")]
    BridgeOnly,
    #[error("--deny-userns is a seccomp rule: it cannot go with --seccomp unconfined")]
    DenyUsernsUnconfined,
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
    #[error(transparent)]
    Sys(#[from] crate::sys::SysError),
}

fn execute(cli: Cli) -> Result<i32, CliError> {
    let store = cli.root.map_or_else(Store::default_location, Store::at);
    let state = StateDir::default_location();
    match cli.command {
        Command::Run(args) => run::execute(*args, &state, &store),
        Command::Ps { all } => manage::ps(&state, all),
        Command::Exec { env, id, command } => manage::exec(&state, &id, command, &env),
        Command::Stop { time, id } => {
            manage::stop(&state, &id, std::time::Duration::from_secs(time))?;
            Ok(0)
        }
        Command::Rm { force, id } => manage::rm(&state, &store, &id, force),
        Command::Images => image::list(&store),
        Command::Rmi { force, images } => image::remove(&store, &images, force),
        Command::Image(cmd) => image::execute(&store, cmd),
        Command::Pull(args) => image::pull(&store, args),
        Command::Push(args) => image::push(&store, args),
        Command::Gc => {
            for id in manage::gc(&state, &store) {
                println!("{id}");
            }
            Ok(0)
        }
        Command::Freeze { name } => {
            crate::lifecycle::pause(&state, &name)?;
            Ok(0)
        }
        Command::Thaw { name } => {
            crate::lifecycle::resume(&state, &name)?;
            Ok(0)
        }
        Command::Stats { name } => manage::stats(&state, &name),
        Command::Net(NetCommand::Attach { id, ip, name }) => {
            manage::net_attach(&state, &id, ip, &name)?;
            Ok(0)
        }
        Command::Net(NetCommand::Leases) => {
            println!("{:<16} {:<16} CONTAINER", "BRIDGE", "ADDRESS");
            for (bridge, ip, id) in state.networks().leases() {
                println!("{bridge:<16} {:<16} {id}", ip.to_string());
            }
            Ok(0)
        }
        Command::Rootfs(RootfsCommand::Busybox { dir }) => {
            let cache = std::env::temp_dir().join("kcell-busybox-cache");
            let busybox = crate::rootfs::busybox::locate(&cache)?;
            crate::rootfs::busybox::build(&dir, &busybox, &[])?;
            println!("{}", dir.display());
            Ok(0)
        }
    }
}

/// Runs the CLI on `args` (argv including the program name); returns the exit status.
pub fn main<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return 0;
            }
            eprintln!("kcell: {}", one_line(&e.to_string()));
            return EXIT_RUNTIME_ERROR;
        }
    };
    match execute(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kcell: {e}");
            match e {
                CliError::Lifecycle(r) => r.exit_code(),
                _ => EXIT_RUNTIME_ERROR,
            }
        }
    }
}

pub(crate) use crate::sys::one_line;
