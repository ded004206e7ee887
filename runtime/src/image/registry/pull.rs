//! A pull: the reference resolved to the platform's manifest, the blobs
//! the store lacks fetched and checked into `<store>/downloads/`, then
//! stored as an import stores them.

use super::client::{Client, Fetch};
use super::reference::Reference;
use super::{check_digest, human, media, short, Options, Platform, RegistryError};
use crate::image::store::Store;
use crate::image::{digest_hex, ImageError, ImageRecord};
use serde::Deserialize;
use std::io::IsTerminal;

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
    let top_digest = crate::image::sha256_digest(&bytes);
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
    // Workers pop from the end of the queue.
    let mut queue = missing.clone();
    let mut jobs = options.jobs;
    if crate::fault::armed("pull-mid-layer") {
        jobs = 1;
        queue.sort_by_key(|&i| std::cmp::Reverse(manifest.layers[i].size));
    }
    let queue = std::sync::Mutex::new(queue);
    let completed = std::sync::atomic::AtomicUsize::new(0);
    let how = std::sync::Mutex::new(Vec::new());
    let results: Vec<Result<(), RegistryError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..jobs.max(1).min(missing.len().max(1)))
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
    let source = crate::image::source::ImageSource {
        config: config_path.clone(),
        config_digest: Some(manifest.config.digest.clone()),
        layers: manifest
            .layers
            .iter()
            .map(|l| crate::image::source::LayerSource {
                path: blob(&l.digest),
                blob_digest: Some(l.digest.clone()),
            })
            .collect(),
        tags: reference
            .store_tag()
            .map(|t| crate::image::normalize_name(&t))
            .transpose()?
            .into_iter()
            .collect(),
    };
    let repo = crate::image::normalize_name(&reference.name())?;
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
