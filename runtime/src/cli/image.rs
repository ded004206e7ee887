//! `kcell images`, `kcell rmi`, `kcell image import|pack|layers`.

use super::CliError;
use crate::image::store::Store;
use crate::image::{ImageError, RunConfig};
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub(super) enum ImageCommand {
    /// Import a `docker save` tarball, or an OCI image layout (directory or tar).
    Import {
        /// The archives or layout directories.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Write directories (bottom layer first) as an OCI image layout tarball.
    Pack {
        /// The image's NAME[:TAG].
        #[arg(short, long)]
        tag: String,
        /// The tarball to write.
        #[arg(short, long)]
        output: PathBuf,
        /// Env of the image config (KEY=VALUE, repeatable).
        #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// The default command (repeat for each argument: --cmd sh --cmd -c ...).
        #[arg(long, allow_hyphen_values = true)]
        cmd: Vec<String>,
        /// WorkingDir of the image config.
        #[arg(short = 'w', long)]
        workdir: Option<String>,
        /// User of the image config.
        #[arg(short = 'u', long)]
        user: Option<String>,
        /// The layer directories, bottom first.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
    /// List the stored layers with their size and the images and containers that use them.
    Layers,
    /// The same as `kcell images`.
    Ls,
}

/// How `pull` and `push` reach a registry.
#[derive(clap::Args, Debug)]
pub(super) struct RegistryArgs {
    /// Verify the registry's TLS certificate (false: unverified, and plain HTTP allowed).
    #[arg(long, value_name = "true|false", default_value_t = true, action = clap::ArgAction::Set)]
    tls_verify: bool,
    /// A registry (host:port) spoken to over plain HTTP (repeatable).
    #[arg(long, value_name = "HOST[:PORT]")]
    insecure_registry: Vec<String>,
    /// A directory of CA certificates (*.crt) trusted besides the system's.
    #[arg(long, value_name = "DIR")]
    cert_dir: Option<PathBuf>,
    /// The user name to log in with (the password from --password-stdin).
    #[arg(long, requires = "password_stdin")]
    username: Option<String>,
    /// Read the password from standard input.
    #[arg(long, requires = "username")]
    password_stdin: bool,
    /// A Docker config.json whose `auths` give credentials
    /// (default: $REGISTRY_AUTH_FILE, $DOCKER_CONFIG/config.json, ~/.docker/config.json).
    #[arg(long, value_name = "FILE")]
    authfile: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub(super) struct PullArgs {
    /// The platform an image index's entry is chosen for (OS/ARCH[/VARIANT]).
    #[arg(long, value_name = "OS/ARCH")]
    platform: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
    /// [REGISTRY/]REPOSITORY[:TAG][@sha256:DIGEST].
    reference: String,
}

#[derive(clap::Args, Debug)]
pub(super) struct PushArgs {
    #[command(flatten)]
    registry: RegistryArgs,
    /// Where to: [REGISTRY/]REPOSITORY[:TAG].
    reference: String,
    /// The stored image to send (NAME[:TAG] or ID; default: REFERENCE itself).
    source: Option<String>,
}

fn registry_options(
    args: &RegistryArgs,
    platform: Option<&str>,
) -> Result<crate::image::registry::Options, CliError> {
    use crate::image::registry::{Options, Platform, RegistryError};
    let credentials = match (&args.username, args.password_stdin) {
        (Some(user), true) => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .map_err(|e| RegistryError::Config {
                    what: "--password-stdin".into(),
                    why: e.to_string(),
                })
                .map_err(ImageError::from)?;
            Some((
                user.clone(),
                password.trim_end_matches(['\r', '\n']).to_string(),
            ))
        }
        _ => None,
    };
    Ok(Options {
        platform: match platform {
            Some(p) => Platform::parse(p).map_err(ImageError::from)?,
            None => Platform::host(),
        },
        tls_verify: args.tls_verify,
        insecure_registries: args.insecure_registry.clone(),
        cert_dir: args.cert_dir.clone(),
        credentials,
        auth_file: args.authfile.clone(),
        ..Options::default()
    })
}

pub(super) fn pull(store: &Store, args: PullArgs) -> Result<i32, CliError> {
    let options = registry_options(&args.registry, args.platform.as_deref())?;
    let pulled = crate::image::registry::pull(store, &args.reference, &options)?;
    println!(
        "Pulled {} {} (layers: {} fetched, {} resumed, {} downloaded before, {} already stored)",
        pulled.image.short_id(),
        pulled.digest,
        pulled.fetched,
        pulled.resumed,
        pulled.reused,
        pulled.present
    );
    Ok(0)
}

pub(super) fn push(store: &Store, args: PushArgs) -> Result<i32, CliError> {
    let options = registry_options(&args.registry, None)?;
    let pushed =
        crate::image::registry::push(store, &args.reference, args.source.as_deref(), &options)?;
    println!(
        "Pushed {} {} ({} blobs sent, {} the registry had)",
        args.reference, pushed.digest, pushed.uploaded, pushed.skipped
    );
    Ok(0)
}

/// Bytes as Docker shows them (decimal units).
fn human(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.1}{}", units[i])
    }
}

pub(super) fn list(store: &Store) -> Result<i32, CliError> {
    println!(
        "{:<40} {:<14} {:<10} {:<21} CREATED",
        "REPOSITORY:TAG", "IMAGE ID", "SIZE", "DIGEST"
    );
    for img in store.images() {
        let tags = if img.tags.is_empty() {
            vec!["<none>:<none>".to_string()]
        } else {
            img.tags.clone()
        };
        for tag in tags {
            // The registry digest of the tag's repository, as `docker images --digests`.
            let repo = tag.rsplit_once(':').map_or(tag.as_str(), |(r, _)| r);
            let digest = img
                .digests
                .iter()
                .find_map(|d| d.strip_prefix(&format!("{repo}@")))
                .map_or("-".to_string(), |d| d[..d.len().min(19)].to_string());
            println!(
                "{:<40} {:<14} {:<10} {:<21} {}",
                tag,
                img.short_id(),
                human(img.size),
                digest,
                if img.created.is_empty() {
                    "-"
                } else {
                    &img.created
                }
            );
        }
    }
    Ok(0)
}

pub(super) fn remove(store: &Store, images: &[String], force: bool) -> Result<i32, CliError> {
    // Containers a killed runtime left must not count as users.
    super::manage::gc(&crate::state::StateDir::default_location(), store);
    for reference in images {
        let removed = store.remove(reference, force)?;
        for tag in &removed.untagged {
            println!("Untagged: {tag}");
        }
        if let Some(id) = &removed.deleted {
            println!("Deleted: {id}");
        }
        for layer in &removed.layers {
            println!("Deleted layer: {layer}");
        }
    }
    Ok(0)
}

pub(super) fn execute(store: &Store, cmd: ImageCommand) -> Result<i32, CliError> {
    match cmd {
        ImageCommand::Import { files } => {
            for file in files {
                for img in store.import(&file)? {
                    let name = img.tags.join(", ");
                    println!("Loaded image: {} {}", img.short_id(), name);
                }
            }
            Ok(0)
        }
        ImageCommand::Pack {
            tag,
            output,
            env,
            cmd,
            workdir,
            user,
            dirs,
        } => {
            if let Some(bad) = env.iter().find(|e| !e.contains('=')) {
                return Err(crate::spec::SpecError::MalformedEnv(bad.clone()).into());
            }
            let config = RunConfig {
                env,
                cmd,
                entrypoint: Vec::new(),
                working_dir: workdir.unwrap_or_default(),
                user: user.unwrap_or_default(),
            };
            let packed = crate::image::pack::pack(&dirs, &tag, &config, &output)?;
            println!("{} {}", packed.image_id, output.display());
            Ok(0)
        }
        ImageCommand::Layers => {
            println!("{:<73} {:<10} {:<30} CONTAINERS", "LAYER", "SIZE", "IMAGES");
            for l in store.layers() {
                println!(
                    "{:<73} {:<10} {:<30} {}",
                    l.digest,
                    human(l.size),
                    if l.images.is_empty() {
                        "-".into()
                    } else {
                        l.images.join(",")
                    },
                    if l.containers.is_empty() {
                        "-".into()
                    } else {
                        l.containers.join(",")
                    }
                );
            }
            Ok(0)
        }
        ImageCommand::Ls => list(store),
    }
}

/// The line of `file` (passwd or group format) whose first field is `name`,
/// or whose third is `id`, searched in the layers top first (the first
/// layer that has the file wins, as in the merged root).
fn lookup(layers: &[PathBuf], file: &str, key: &str) -> Option<Vec<String>> {
    let text = layers
        .iter()
        .map(|l| l.join(file))
        .find(|p| p.symlink_metadata().is_ok_and(|m| m.is_file()))
        .and_then(|p| std::fs::read_to_string(p).ok())?;
    text.lines()
        .map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && (f[0] == key || f[2] == key))
}

/// `USER[:GROUP]`, each a number or a name in the root's /etc/passwd and
/// /etc/group, as uid and gid. A user without a group takes its passwd gid.
pub(super) fn resolve_user(spec: &str, layers: &[PathBuf]) -> Result<(u32, u32), CliError> {
    let unknown = || CliError::Image(ImageError::UnknownUser(spec.to_string()));
    let (user, group) = spec
        .split_once(':')
        .map_or((spec, None), |(u, g)| (u, Some(g)));
    let passwd = lookup(layers, "etc/passwd", user);
    let uid = match user.parse::<u32>() {
        Ok(n) => n,
        Err(_) => passwd
            .as_ref()
            .and_then(|f| f[2].parse().ok())
            .ok_or_else(unknown)?,
    };
    let gid = match group {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup(layers, "etc/group", g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(unknown)?,
        },
        None => passwd.and_then(|f| f[3].parse().ok()).unwrap_or(0),
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_resolve_by_number_and_name_from_the_top_layer() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (top, bottom) = (tmp.path().join("top"), tmp.path().join("bottom"));
        for (dir, passwd) in [
            (&top, "app:x:1000:1001::/:/bin/sh\n"),
            (&bottom, "app:x:5:5::/:/bin/sh\n"),
        ] {
            std::fs::create_dir_all(dir.join("etc")).expect("mkdir");
            std::fs::write(dir.join("etc/passwd"), passwd).expect("write");
            std::fs::write(dir.join("etc/group"), "staff:x:50:\n").expect("write");
        }
        let layers = [top, bottom];
        assert_eq!(resolve_user("app", &layers).expect("name"), (1000, 1001));
        assert_eq!(
            resolve_user("app:staff", &layers).expect("group"),
            (1000, 50)
        );
        assert_eq!(resolve_user("7:8", &layers).expect("numbers"), (7, 8));
        assert!(resolve_user("nobody-here", &layers).is_err());
    }

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(human(999), "999B");
        assert_eq!(human(4_400_000), "4.4MB");
    }
}
