//! Reading what an image archive holds: the two layouts kcell imports.
//!
//! - `docker save`: `manifest.json` lists, per image, its config file, its
//!   RepoTags and its layer tars.
//! - OCI image layout: `oci-layout`, `index.json` with manifest descriptors
//!   (possibly a nested index per platform), blobs under `blobs/sha256/`,
//!   each named by its digest and verified against it.
//!
//! Every path an archive names is resolved inside the unpacked directory
//! without following a symlink, as layer entries are.

use super::{digest_hex, layer, normalize_name, ImageError};
use crate::sys::SysContext;
use serde::Deserialize;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

/// One layer of an image to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSource {
    /// The layer tar (plain or gzip).
    pub path: PathBuf,
    /// The digest its file must have (OCI blobs), if the layout gives one.
    pub blob_digest: Option<String>,
}

/// One image of an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSource {
    /// The config JSON.
    pub config: PathBuf,
    /// The digest the config must have (OCI), if the layout gives one.
    pub config_digest: Option<String>,
    /// Bottom layer first.
    pub layers: Vec<LayerSource>,
    /// NAME:TAG references, normalised.
    pub tags: Vec<String>,
}

#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

#[derive(Deserialize, Clone)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    annotations: HashMap<String, String>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize, Clone)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

/// The file `rel` names inside `dir`: no `..`, no absolute path, no symlink
/// on the way, and a regular file at the end.
fn inside(dir: &Path, rel: &str) -> Result<PathBuf, ImageError> {
    let refused = |why: &str| {
        ImageError::Layer(layer::LayerError::Refused {
            entry: rel.to_string(),
            why: why.to_string(),
        })
    };
    let rel_path = layer::relative_path(rel.as_bytes()).map_err(refused)?;
    let name = rel_path
        .file_name()
        .ok_or_else(|| refused("names no file"))?;
    let path = layer::real_parent(dir, &rel_path, false)?.join(name);
    match fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() => Ok(path),
        Ok(_) => Err(refused("is not a regular file (a symlink or directory)")),
        Err(e) => Err(crate::sys::SysError::from_io("open", path.display(), e).into()),
    }
}

fn blob(dir: &Path, digest: &str) -> Result<PathBuf, ImageError> {
    let hex = digest_hex(digest).ok_or_else(|| {
        ImageError::NotAnImage(
            dir.display().to_string(),
            format!("digest '{digest}' is not sha256:<64 hex digits>"),
        )
    })?;
    inside(dir, &format!("blobs/sha256/{hex}"))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ImageError> {
    let text = fs::read(path).sys("read", path.display())?;
    serde_json::from_slice(&text)
        .map_err(|e| ImageError::NotAnImage(path.display().to_string(), e.to_string()))
}

/// Checks that the file at `path` has `digest`.
pub fn verify(path: &Path, digest: &str, what: &str) -> Result<(), ImageError> {
    let file = fs::File::open(path).sys("open", path.display())?;
    let actual = layer::sha256_of(file).sys("read", path.display())?;
    if actual == digest {
        Ok(())
    } else {
        Err(ImageError::DigestMismatch {
            what: what.to_string(),
            expected: digest.to_string(),
            actual,
        })
    }
}

/// The images of the unpacked archive or layout at `dir`. `default_repo`
/// names OCI images whose ref.name annotation is a bare tag.
pub fn read_layout(dir: &Path, default_repo: &str) -> Result<Vec<ImageSource>, ImageError> {
    if dir.join("manifest.json").is_file() {
        read_docker(dir)
    } else if dir.join("index.json").is_file() {
        read_oci(dir, default_repo)
    } else {
        Err(ImageError::NotAnImage(
            dir.display().to_string(),
            "it has neither manifest.json (docker save) nor index.json (OCI image layout)".into(),
        ))
    }
}

fn read_docker(dir: &Path) -> Result<Vec<ImageSource>, ImageError> {
    let entries: Vec<DockerEntry> = read_json(&inside(dir, "manifest.json")?)?;
    entries
        .into_iter()
        .map(|e| {
            let layers = e
                .layers
                .iter()
                .map(|l| {
                    Ok(LayerSource {
                        path: inside(dir, l)?,
                        blob_digest: None,
                    })
                })
                .collect::<Result<_, ImageError>>()?;
            let tags = e
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|t| normalize_name(t))
                .collect::<Result<_, _>>()?;
            Ok(ImageSource {
                config: inside(dir, &e.config)?,
                config_digest: None,
                layers,
                tags,
            })
        })
        .collect()
}

fn is_index(d: &Descriptor) -> bool {
    d.media_type.contains("image.index") || d.media_type.contains("manifest.list")
}

fn this_platform(p: &Option<Platform>) -> bool {
    let arch = super::oci_arch();
    p.as_ref().is_none_or(|p| {
        (p.os.is_empty() || p.os == "linux")
            && (p.architecture.is_empty() || p.architecture == arch)
    })
}

fn read_oci(dir: &Path, default_repo: &str) -> Result<Vec<ImageSource>, ImageError> {
    let index: Index = read_json(&inside(dir, "index.json")?)?;
    let mut out = Vec::new();
    for top in index.manifests {
        let mut tags = Vec::new();
        if let Some(full) = top.annotations.get("io.containerd.image.name") {
            tags.push(normalize_name(full)?);
        } else if let Some(r) = top.annotations.get("org.opencontainers.image.ref.name") {
            tags.push(if r.contains(':') || r.contains('/') {
                normalize_name(r)?
            } else {
                normalize_name(&format!("{default_repo}:{r}"))?
            });
        }
        // A nested index (one manifest per platform): take this machine's.
        let mut desc = top;
        for _ in 0..4 {
            if !is_index(&desc) {
                break;
            }
            let path = blob(dir, &desc.digest)?;
            verify(&path, &desc.digest, "image index")?;
            let nested: Index = read_json(&path)?;
            desc = nested
                .manifests
                .into_iter()
                .find(|d| this_platform(&d.platform))
                .ok_or_else(|| {
                    ImageError::NotAnImage(
                        dir.display().to_string(),
                        format!(
                            "index {} has no manifest for linux/{}",
                            desc.digest,
                            std::env::consts::ARCH
                        ),
                    )
                })?;
        }
        let path = blob(dir, &desc.digest)?;
        verify(&path, &desc.digest, "image manifest")?;
        let manifest: Manifest = read_json(&path)?;
        out.push(ImageSource {
            config: blob(dir, &manifest.config.digest)?,
            config_digest: Some(manifest.config.digest.clone()),
            layers: manifest
                .layers
                .iter()
                .map(|l| {
                    Ok(LayerSource {
                        path: blob(dir, &l.digest)?,
                        blob_digest: Some(l.digest.clone()),
                    })
                })
                .collect::<Result<_, ImageError>>()?,
            tags,
        });
    }
    Ok(out)
}
