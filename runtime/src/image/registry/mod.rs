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
pub mod reference;

use super::store::Store;
use super::{digest_hex, ImageError, ImageRecord};
use client::{Client, Fetch};
use reference::Reference;
use serde::Deserialize;
use serde_json::json;
use std::io::IsTerminal;
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

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    platform: Option<DescPlatform>,
}

#[derive(Deserialize)]
struct DescPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(rename = "schemaVersion", default)]
    schema_version: u32,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct ConfigRootfs {
    rootfs: RootfsIds,
}

#[derive(Deserialize)]
struct RootfsIds {
    diff_ids: Vec<String>,
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

fn check_digest(what: &str, bytes: &[u8], digest: &str) -> Result<(), RegistryError> {
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

/// What a pull did.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The stored image.
    pub image: ImageRecord,
    /// The digest the reference resolved to (an index's, if it was one).
    pub digest: String,
    /// Layers fetched whole.
    pub fetched: usize,
    /// Layers whose partial download was resumed.
    pub resumed: usize,
    /// Layers downloaded by an earlier pull that did not finish.
    pub reused: usize,
    /// Layers the store had.
    pub present: usize,
}

fn parse_json<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T, RegistryError> {
    serde_json::from_slice(bytes).map_err(|e| RegistryError::Manifest {
        what: what.to_string(),
        why: format!("not the JSON of its media type: {e}"),
    })
}

/// The image manifest `reference` names for `platform`: through an index
/// or list to the platform's entry. Returns the manifest's bytes and the
/// digest the reference itself resolved to.
fn resolve_manifest(
    client: &Client,
    reference: &Reference,
    platform: &Platform,
) -> Result<(Vec<u8>, String), RegistryError> {
    let (bytes, media_type) = client.manifest(reference.target())?;
    let top_digest = super::sha256_digest(&bytes);
    if let Some(d) = &reference.digest {
        check_digest(&format!("the manifest of {reference}"), &bytes, d)?;
    }
    let what = |d: &str| format!("{reference} ({d})");
    let media_type = if media_type.is_empty() || media_type == "application/json" {
        // A registry that does not say: the document's own mediaType.
        serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("mediaType")?.as_str().map(str::to_string))
            .unwrap_or(media_type)
    } else {
        media_type
    };
    let (bytes, media_type) = match media_type.as_str() {
        media::OCI_INDEX | media::DOCKER_LIST => {
            let index: Index = parse_json(&what(&media_type), &bytes)?;
            let wanted = |p: &DescPlatform| {
                p.os == platform.os
                    && p.architecture == platform.architecture
                    && (platform.variant.is_none() || p.variant == platform.variant)
            };
            let entry = index
                .manifests
                .iter()
                .find(|d| d.platform.as_ref().is_some_and(wanted))
                .ok_or_else(|| {
                    let offered: Vec<String> = index
                        .manifests
                        .iter()
                        .filter_map(|d| d.platform.as_ref())
                        .map(|p| format!("{}/{}", p.os, p.architecture))
                        .collect();
                    RegistryError::Manifest {
                        what: what(&media_type),
                        why: format!(
                            "no manifest for {platform} (it has {}): --platform picks another",
                            offered.join(", ")
                        ),
                    }
                })?;
            let (inner, inner_type) = client.manifest(&entry.digest)?;
            check_digest(
                &format!("the {platform} manifest of {reference}"),
                &inner,
                &entry.digest,
            )?;
            let inner_type = if inner_type.is_empty() {
                entry.media_type.clone()
            } else {
                inner_type
            };
            (inner, inner_type)
        }
        _ => (bytes, media_type),
    };
    match media_type.as_str() {
        media::OCI_MANIFEST | media::DOCKER_MANIFEST => Ok((bytes, top_digest)),
        t if media::DOCKER_SCHEMA1.contains(&t) => Err(RegistryError::Manifest {
            what: what(t),
            why: "Docker image manifest schema 1 is deprecated and not read: push the image again with a current client (schema 2 or OCI)".into(),
        }),
        t => Err(RegistryError::Manifest {
            what: what(t),
            why: format!(
                "media type '{t}' is not one kcell reads ({}, {}, {}, {})",
                media::OCI_INDEX,
                media::DOCKER_LIST,
                media::OCI_MANIFEST,
                media::DOCKER_MANIFEST
            ),
        }),
    }
}

fn human(bytes: u64) -> String {
    if bytes >= 1_000_000 {
        format!("{:.1} MB", bytes as f64 / 1e6)
    } else {
        format!("{:.1} kB", bytes as f64 / 1e3)
    }
}

/// Pulls `text` into `store`.
pub fn pull(store: &Store, text: &str, options: &Options) -> Result<Pulled, ImageError> {
    let reference = Reference::parse(text)?;
    let client = Client::connect(
        &reference.registry,
        reference.api_host(),
        &reference.repository,
        "pull",
        options,
    )?;
    let (manifest_bytes, digest) = resolve_manifest(&client, &reference, &options.platform)?;
    let manifest: Manifest = parse_json(&format!("the manifest of {reference}"), &manifest_bytes)?;
    if manifest.schema_version != 2 {
        return Err(RegistryError::Manifest {
            what: format!("the manifest of {reference}"),
            why: format!("schemaVersion {} (2 is read)", manifest.schema_version),
        }
        .into());
    }
    for l in &manifest.layers {
        if !media::LAYERS.contains(&l.media_type.as_str()) {
            return Err(RegistryError::Manifest {
                what: format!("layer {} of {reference}", l.digest),
                why: format!(
                    "media type '{}' is not one kcell unpacks ({})",
                    l.media_type,
                    media::LAYERS.join(", ")
                ),
            }
            .into());
        }
    }
    let downloads = store.root().join("downloads");
    std::fs::create_dir_all(&downloads).map_err(|e| RegistryError::Io {
        what: format!("mkdir {}", downloads.display()),
        error: e.to_string(),
    })?;
    let (config_path, _) = client.blob_to_file(
        &manifest.config.digest,
        manifest.config.size,
        &downloads,
        &|_, _| {},
    )?;
    let config_bytes = std::fs::read(&config_path).map_err(|e| RegistryError::Io {
        what: format!("read {}", config_path.display()),
        error: e.to_string(),
    })?;
    let diff_ids =
        parse_json::<ConfigRootfs>(&format!("the config of {reference}"), &config_bytes)?
            .rootfs
            .diff_ids;
    if diff_ids.len() != manifest.layers.len() {
        return Err(RegistryError::Manifest {
            what: format!("the config of {reference}"),
            why: format!(
                "{} diff_ids for {} layers",
                diff_ids.len(),
                manifest.layers.len()
            ),
        }
        .into());
    }
    let missing: Vec<usize> = (0..manifest.layers.len())
        .filter(|&i| !store.layer_dir(&diff_ids[i]).is_some_and(|d| d.is_dir()))
        .collect();
    let terminal = std::io::stderr().is_terminal();
    let n = manifest.layers.len();
    eprintln!(
        "pulling {reference} ({digest}): {n} layers, {} to fetch",
        missing.len()
    );
    for (i, l) in manifest.layers.iter().enumerate() {
        if !missing.contains(&i) {
            eprintln!(
                "  layer {}/{n} {}: already in the store",
                i + 1,
                short(&l.digest)
            );
        }
    }
    let queue = std::sync::Mutex::new(missing.clone());
    let completed = std::sync::atomic::AtomicUsize::new(0);
    let how = std::sync::Mutex::new(Vec::new());
    let results: Vec<Result<(), RegistryError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..options.jobs.max(1).min(missing.len().max(1)))
            .map(|_| {
                scope.spawn(|| -> Result<(), RegistryError> {
                    loop {
                        let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
                        let Some(i) = next else { return Ok(()) };
                        let l = &manifest.layers[i];
                        let progress = |written: u64, size: u64| {
                            // A crash-safety test kills the pull here: a
                            // layer half written after another finished.
                            if written * 2 >= size
                                && completed.load(std::sync::atomic::Ordering::SeqCst) > 0
                            {
                                crate::fault::point("pull-mid-layer");
                            }
                            if terminal {
                                eprint!(
                                    "\r  layer {}/{n} {}: {} of {}\x1b[K",
                                    i + 1,
                                    short(&l.digest),
                                    human(written),
                                    human(size)
                                );
                            }
                        };
                        let (_, fetch) =
                            client.blob_to_file(&l.digest, l.size, &downloads, &progress)?;
                        completed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        how.lock().unwrap_or_else(|e| e.into_inner()).push(fetch);
                        eprintln!(
                            "{}  layer {}/{n} {}: {} {}",
                            if terminal { "\r" } else { "" },
                            i + 1,
                            short(&l.digest),
                            human(l.size),
                            match fetch {
                                Fetch::Whole => "fetched",
                                Fetch::Resumed => "fetched (resumed)",
                                Fetch::Before => "downloaded before",
                            }
                        );
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join().unwrap_or_else(|_| {
                    Err(RegistryError::Io {
                        what: "a layer download".into(),
                        error: "its thread panicked".into(),
                    })
                })
            })
            .collect()
    });
    for r in results {
        r?;
    }
    let blob = |d: &str| downloads.join(digest_hex(d).unwrap_or("invalid"));
    let source = super::source::ImageSource {
        config: config_path.clone(),
        config_digest: Some(manifest.config.digest.clone()),
        layers: manifest
            .layers
            .iter()
            .map(|l| super::source::LayerSource {
                path: blob(&l.digest),
                blob_digest: Some(l.digest.clone()),
            })
            .collect(),
        tags: reference
            .store_tag()
            .map(|t| super::normalize_name(&t))
            .transpose()?
            .into_iter()
            .collect(),
    };
    let repo = super::normalize_name(&reference.name())?;
    let repo = repo
        .rsplit_once(':')
        .map_or(repo.as_str(), |(r, _)| r)
        .to_string();
    let image = store.import_source(&source, Some(&format!("{repo}@{digest}")))?;
    // The blobs are unpacked in the store now; the downloads were only the way there.
    for path in std::iter::once(config_path).chain(source.layers.iter().map(|l| l.path.clone())) {
        let _ = std::fs::remove_file(path);
    }
    let how = how.into_inner().unwrap_or_else(|e| e.into_inner());
    let count = |f: Fetch| how.iter().filter(|h| **h == f).count();
    Ok(Pulled {
        image,
        digest,
        fetched: count(Fetch::Whole),
        resumed: count(Fetch::Resumed),
        reused: count(Fetch::Before),
        present: n - missing.len(),
    })
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The manifest's digest.
    pub digest: String,
    /// Blobs uploaded, and those the registry had.
    pub uploaded: usize,
    /// Blobs the registry already had.
    pub skipped: usize,
}

/// Pushes the stored image `source` (a reference of the store; `to` if
/// none) to `to`: its layers tarred again (uncompressed OCI layers), the
/// config with their diff_ids, then the manifest under the tag.
pub fn push(
    store: &Store,
    to: &str,
    source: Option<&str>,
    options: &Options,
) -> Result<Pushed, ImageError> {
    let reference = Reference::parse(to)?;
    if reference.digest.is_some() {
        return Err(RegistryError::BadReference {
            reference: to.to_string(),
            part: reference.digest.clone().unwrap_or_default(),
            why: "a push names a tag; the digest is the registry's answer".into(),
        }
        .into());
    }
    let image = store.resolve(source.unwrap_or(to))?;
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for diff_id in &image.layers {
        let dir = store
            .layer_dir(diff_id)
            .ok_or_else(|| ImageError::NotFound(diff_id.clone()))?;
        let tar = super::pack::layer_tar(&dir)?;
        let d = super::sha256_digest(&tar);
        layers.push(json!({"mediaType": media::OCI_LAYER, "digest": d, "size": tar.len()}));
        diff_ids.push(d.clone());
        blobs.push((d, tar));
    }
    let config = serde_json::to_vec(&json!({
        "architecture": super::oci_arch(),
        "os": "linux",
        "created": if image.created.is_empty() { "1970-01-01T00:00:00Z" } else { &image.created },
        "config": image.config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .map_err(|e| ImageError::NotAnImage(image.id.clone(), e.to_string()))?;
    let config_digest = super::sha256_digest(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": media::OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": layers,
    }))
    .map_err(|e| ImageError::NotAnImage(image.id.clone(), e.to_string()))?;
    blobs.push((config_digest, config));
    let client = Client::connect(
        &reference.registry,
        reference.api_host(),
        &reference.repository,
        "pull,push",
        options,
    )?;
    let (mut uploaded, mut skipped) = (0, 0);
    for (d, data) in &blobs {
        if client.has_blob(d)? {
            skipped += 1;
            eprintln!("  blob {}: the registry has it", short(d));
        } else {
            client.upload_blob(d, data)?;
            uploaded += 1;
            eprintln!("  blob {}: {} pushed", short(d), human(data.len() as u64));
        }
    }
    client.put_manifest(reference.target(), media::OCI_MANIFEST, &manifest)?;
    Ok(Pushed {
        digest: super::sha256_digest(&manifest),
        uploaded,
        skipped,
    })
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
