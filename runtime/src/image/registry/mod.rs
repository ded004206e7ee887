//! `kcell pull` and `kcell push`: images from and to a registry that speaks
//! the OCI distribution specification (Docker Hub, GHCR, Quay, Harbor,
//! `docker-registry`).
//!
//! A pull resolves the reference to a manifest (through an image index or
//! Docker manifest list, the platform's entry), fetches the config and the
//! layers the store does not have into `<store>/downloads/` (in parallel,
//! each checked against its size and digest before it takes its name, a
//! partial file resumed with `Range` when a pull was interrupted), and hands
//! them to the store as an import does. Nothing reaches `layers/` or
//! `images/` unchecked. A push tars each layer of a stored image again,
//! uploads the blobs the registry lacks, then the manifest.

pub mod client;
mod pull;
mod push;
pub mod reference;

pub use pull::{pull, Pulled};
pub use push::{push, Pushed};
use std::path::{Path, PathBuf};

/// Errors of a registry exchange.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A reference that is not `[REGISTRY/]REPOSITORY[:TAG][@DIGEST]`.
    #[error("reference '{reference}': '{part}' is wrong: {why}")]
    BadReference {
        /// The whole reference.
        reference: String,
        /// The part that is wrong.
        part: String,
        /// What is allowed.
        why: String,
    },
    /// The connection or the transfer failed.
    #[error("{url}: {error}")]
    Transport {
        /// The request's URL.
        url: String,
        /// What failed.
        error: String,
    },
    /// The registry answered with an error status.
    #[error("{url}: the registry answered {status}: {body}")]
    Status {
        /// The request's URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the body (the registry's error JSON).
        body: String,
    },
    /// Authentication was needed and failed.
    #[error("registry {registry}: authentication failed: {why}")]
    Auth {
        /// The registry.
        registry: String,
        /// Why.
        why: String,
    },
    /// A manifest or index kcell does not read.
    #[error("{what}: {why}")]
    Manifest {
        /// Which document.
        what: String,
        /// What is wrong with it.
        why: String,
    },
    /// A blob whose bytes are not what the manifest says.
    #[error("blob {digest}: {why}; the blob was not stored")]
    BadBlob {
        /// The digest the manifest gives.
        digest: String,
        /// Size or digest, with the values.
        why: String,
    },
    /// An option's value.
    #[error("{what}: {why}")]
    Config {
        /// The option.
        what: String,
        /// What is allowed.
        why: String,
    },
    /// A local file.
    #[error("{what}: {error}")]
    Io {
        /// The operation and path.
        what: String,
        /// The error.
        error: String,
    },
}

/// Media types.
pub mod media {
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// Docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// Docker schema 2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker schema 1 (refused).
    pub const DOCKER_SCHEMA1: &[&str] = &[
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/vnd.docker.distribution.manifest.v1+json",
    ];
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// Layers kcell unpacks (tar, gzip'd tar).
    pub const LAYERS: &[&str] = &[
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    ];
    /// An uncompressed OCI layer (what a push uploads).
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
}

/// `os/architecture[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, ...
    pub architecture: String,
    /// `v8`, ... if given.
    pub variant: Option<String>,
}

impl Platform {
    /// This machine's.
    pub fn host() -> Self {
        Platform {
            os: "linux".into(),
            architecture: super::oci_arch().into(),
            variant: None,
        }
    }

    /// Parses `--platform os/arch[/variant]`.
    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        let parts: Vec<&str> = text.split('/').collect();
        let ok =
            |s: &&str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(RegistryError::Config {
                what: format!("--platform '{text}'"),
                why: "OS/ARCH or OS/ARCH/VARIANT, e.g. linux/amd64 or linux/arm64/v8".into(),
            }),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// How to reach a registry.
#[derive(Debug, Clone)]
pub struct Options {
    /// The platform an index's entry is chosen for.
    pub platform: Platform,
    /// Verify HTTPS certificates (false: also plain HTTP).
    pub tls_verify: bool,
    /// Hosts (`host:port`) spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// A directory of CA certificates (`*.crt`) besides the system's.
    pub cert_dir: Option<PathBuf>,
    /// User name and password.
    pub credentials: Option<(String, String)>,
    /// A Docker `config.json` with `auths`.
    pub auth_file: Option<PathBuf>,
    /// Layers fetched at once.
    pub jobs: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            platform: Platform::host(),
            tls_verify: true,
            insecure_registries: Vec::new(),
            cert_dir: None,
            credentials: None,
            auth_file: None,
            jobs: 3,
        }
    }
}

/// Checks that the file at `path` has `size` bytes and `digest`.
pub fn verify_file(path: &Path, digest: &str, size: u64) -> Result<(), RegistryError> {
    let io = |e: std::io::Error| RegistryError::Io {
        what: format!("read {}", path.display()),
        error: e.to_string(),
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len != size {
        return Err(RegistryError::BadBlob {
            digest: digest.to_string(),
            why: format!("the manifest gives {size} bytes, the registry sent {len}"),
        });
    }
    let actual = super::layer::sha256_of(std::fs::File::open(path).map_err(io)?).map_err(io)?;
    if actual != digest {
        return Err(RegistryError::BadBlob {
            digest: digest.to_string(),
            why: format!("the registry sent bytes whose digest is {actual}"),
        });
    }
    Ok(())
}

pub(crate) fn check_digest(what: &str, bytes: &[u8], digest: &str) -> Result<(), RegistryError> {
    let actual = super::sha256_digest(bytes);
    if actual == digest {
        Ok(())
    } else {
        Err(RegistryError::BadBlob {
            digest: digest.to_string(),
            why: format!("{what} has digest {actual}"),
        })
    }
}

/// Decimal megabytes or kilobytes, for progress lines.
pub(crate) fn human(bytes: u64) -> String {
    if bytes >= 1_000_000 {
        format!("{:.1} MB", bytes as f64 / 1e6)
    } else {
        format!("{:.1} kB", bytes as f64 / 1e3)
    }
}

/// A digest cut to 19 characters (`sha256:` and 12 hex digits).
pub(crate) fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_or_say_what_is_allowed() {
        assert_eq!(
            Platform::parse("linux/arm64/v8")
                .expect("valid")
                .to_string(),
            "linux/arm64/v8"
        );
        let e = Platform::parse("linux").expect_err("no arch").to_string();
        assert!(e.contains("'linux'") && e.contains("OS/ARCH"), "{e}");
    }

    #[test]
    fn a_blob_of_the_wrong_size_or_digest_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("b");
        std::fs::write(&p, b"hello").expect("write");
        let right = crate::image::sha256_digest(b"hello");
        assert!(verify_file(&p, &right, 5).is_ok());
        let e = verify_file(&p, &right, 6).expect_err("size").to_string();
        assert!(e.contains(&right) && e.contains("6 bytes"), "{e}");
        let wrong = crate::image::sha256_digest(b"other");
        let e = verify_file(&p, &wrong, 5).expect_err("digest").to_string();
        assert!(e.contains(&wrong) && e.contains(&right), "{e}");
    }
}
