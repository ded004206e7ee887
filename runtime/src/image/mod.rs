//! Images: layers stored once by digest, the image's run configuration, and
//! the overlay root a container gets from them.
//!
//! The store (under `/var/lib/kcell` unless `--root`/`KCELL_ROOT` says
//! otherwise) holds:
//!
//! ```text
//! layers/<hex>/        one unpacked layer, named by its diff_id (sha256 of the tar)
//! layers/<hex>.json    its size
//! images/<hex>.json    an image: tags, layer diff_ids (bottom first), config; named by
//!                      the sha256 of its config blob (Docker's image ID)
//! containers/<id>/     upper/, work/, merged/ of a container's overlay root, and
//!                      use.json (the image and layers it holds, its runtime's PID)
//! lock                 flock for import, rmi, gc and container preparation
//! ```
//!
//! Importing reads a `docker save` tarball or an OCI image layout (see
//! [`source`]), unpacking each layer with the checks of [`layer`]; `pack`
//! writes a directory as a one-layer OCI layout, which is how the project
//! makes its busybox image without a registry.

pub mod layer;
pub mod pack;
pub mod registry;
pub mod source;
pub mod store;

use crate::sys::SysError;

/// Errors of the image store.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A layer or outer archive could not be unpacked.
    #[error(transparent)]
    Layer(#[from] layer::LayerError),
    /// A file operation failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// A registry request or what it returned.
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    /// The input is neither a docker save tarball nor an OCI layout.
    #[error("{0} is not an image archive: {1}")]
    NotAnImage(String, String),
    /// A blob's content does not match the digest it is named by.
    #[error("{what} has digest {actual}, but the image names it {expected}: the archive is corrupt or was altered")]
    DigestMismatch {
        /// Which blob.
        what: String,
        /// The digest the manifest or config gives.
        expected: String,
        /// The digest of the bytes.
        actual: String,
    },
    /// No image by that name or ID.
    #[error("no image '{0}' (kcell images lists them)")]
    NotFound(String),
    /// A short ID that matches several images.
    #[error("image ID '{0}' is ambiguous: it starts {1} image IDs; give more digits")]
    Ambiguous(String, usize),
    /// rmi of an image a container uses.
    #[error("image '{0}' is used by container(s) {1}: stop them first, or rmi --force")]
    InUse(String, String),
    /// A tag that is not NAME[:TAG].
    #[error("image name '{0}' is not allowed: NAME[:TAG] of lower-case letters, digits, '.', '_', '-', '/' (tag: letters, digits, '.', '_', '-')")]
    BadName(String),
    /// A user in the image config that the image's /etc/passwd does not have.
    #[error("image user '{0}' is not a number and not in the image's /etc/passwd")]
    UnknownUser(String),
}

/// How a container from the image runs, from the image config's `config`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RunConfig {
    /// KEY=VALUE entries.
    #[serde(deserialize_with = "null_is_default")]
    pub env: Vec<String>,
    /// The default command.
    #[serde(deserialize_with = "null_is_default")]
    pub cmd: Vec<String>,
    /// Put before the command.
    #[serde(deserialize_with = "null_is_default")]
    pub entrypoint: Vec<String>,
    /// The working directory ("" = /).
    #[serde(deserialize_with = "null_is_default")]
    pub working_dir: String,
    /// USER[:GROUP], by name or number ("" = root).
    #[serde(deserialize_with = "null_is_default")]
    pub user: String,
}

/// Image configs write `null` for an absent list.
fn null_is_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + serde::Deserialize<'de>,
{
    use serde::Deserialize;
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl RunConfig {
    /// argv of a container: the entrypoint, then `command` if given, else the image's Cmd.
    pub fn argv(&self, command: &[String]) -> Vec<String> {
        let tail = if command.is_empty() {
            &self.cmd
        } else {
            command
        };
        self.entrypoint.iter().chain(tail).cloned().collect()
    }
}

/// An image in the store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageRecord {
    /// `sha256:<hex>` of the config blob.
    pub id: String,
    /// NAME:TAG references.
    pub tags: Vec<String>,
    /// diff_ids, bottom layer first.
    pub layers: Vec<String>,
    /// How containers from it run.
    pub config: RunConfig,
    /// The config's `created` (RFC 3339), as the image says.
    pub created: String,
    /// Bytes of its layers (uncompressed tar).
    pub size: u64,
    /// `NAME@sha256:...`: the digests registries gave it (kcell pull).
    #[serde(default)]
    pub digests: Vec<String>,
}

impl ImageRecord {
    /// The 12-hex short ID.
    pub fn short_id(&self) -> &str {
        let hex = self.id.trim_start_matches("sha256:");
        &hex[..hex.len().min(12)]
    }
}

/// `sha256:<hex>` of `bytes`, the form every digest of an image takes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{:x}", sha2::Sha256::digest(bytes))
}

/// This machine's architecture as OCI names it (`amd64`, `arm64`, ...).
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The hex part of `sha256:<hex>`, checked to be 64 hex digits (it names files).
pub fn digest_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    .then_some(hex)
}

/// Normalises a reference: `busybox` is `busybox:latest`; Docker's
/// `docker.io/library/` prefix is dropped. Checks the characters.
pub fn normalize_name(name: &str) -> Result<String, ImageError> {
    let bad = || ImageError::BadName(name.to_string());
    let short = name
        .strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name);
    // A ':' after the last '/' separates the tag (a registry may have a port).
    let (repo, tag) = match short.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, t),
        _ => (short, "latest"),
    };
    // Only a registry host (the first of several components) has a port.
    let path_part = match repo.split_once('/') {
        Some((host, rest)) if host.contains(':') => rest,
        _ => repo,
    };
    let repo_ok = !repo.is_empty()
        && repo.len() <= 255
        && path_part
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b))
        && !repo.starts_with(['.', '-', '/']);
    let tag_ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if repo_ok && tag_ok {
        Ok(format!("{repo}:{tag}"))
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("busybox", "busybox:latest")]
    #[case("busybox:1.36", "busybox:1.36")]
    #[case("docker.io/library/alpine:3", "alpine:3")]
    #[case("localhost:5000/x/y", "localhost:5000/x/y:latest")]
    fn names_normalize(#[case] name: &str, #[case] want: &str) {
        assert_eq!(normalize_name(name).expect("valid"), want);
    }

    #[rstest]
    #[case("")]
    #[case("Busybox")]
    #[case("a b")]
    #[case("x:")]
    #[case("../x")]
    fn bad_names_are_named(#[case] name: &str) {
        assert!(matches!(normalize_name(name), Err(ImageError::BadName(n)) if n == name));
    }

    #[test]
    fn config_nulls_read_as_empty_and_argv_joins_entrypoint_and_cmd() {
        let c: RunConfig = serde_json::from_str(
            r#"{"Env":["A=1"],"Cmd":["sh"],"Entrypoint":null,"WorkingDir":"/w","User":""}"#,
        )
        .expect("parse");
        assert_eq!(c.argv(&[]), ["sh"]);
        let c = RunConfig {
            entrypoint: vec!["/init".into()],
            ..c
        };
        assert_eq!(c.argv(&["ls".into()]), ["/init", "ls"]);
    }

    #[test]
    fn digests_name_files_only_when_well_formed() {
        let ok = format!("sha256:{}", "a".repeat(64));
        assert_eq!(digest_hex(&ok), Some("a".repeat(64).as_str()));
        assert_eq!(digest_hex("sha256:../../etc"), None);
        assert_eq!(digest_hex(&format!("sha512:{}", "a".repeat(64))), None);
    }
}
