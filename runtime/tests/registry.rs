//! `kcell pull` and `kcell push` against a real registry on loopback:
//! Debian's `docker-registry` (the reference distribution server), started
//! here with a temporary storage directory plain, with htpasswd basic auth,
//! and behind TLS with a CA this test makes. `skopeo` (not kcell) pushes
//! the content: a two-layer image and a two-platform index, written here as
//! an OCI layout. What is checked: pull by tag and by digest, the index's
//! platform chosen, auth refused and accepted, TLS verified against the CA
//! and refused without it, a corrupted blob refused by digest with nothing
//! stored, a pull killed mid-layer resumed without fetching the finished
//! layer again, a push read back by skopeo and pulled back identical, and
//! bad references as one-line errors.

use flate2::write::GzEncoder;
use serde_json::json;
use sha2::Digest;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::KCELL;

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", sha2::Sha256::digest(bytes))
}

fn need(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is not installed: scripts/install-deps installs it (Debian's {tool})"
    );
}

/// One image written as blobs: its manifest, config and layers.
struct Built {
    manifest: Vec<u8>,
    config_digest: String,
    blobs: Vec<(String, Vec<u8>)>,
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// A tar of the files (path, contents, mode) and of the directory `root`.
fn tar_of(root: Option<&Path>, files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    if let Some(root) = root {
        b.append_dir_all(".", root).expect("tar the root");
    }
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data.as_slice())
            .expect("tar a file");
    }
    b.into_inner().expect("tar")
}

fn image(arch: &str, layers: Vec<Vec<u8>>, cmd: &[&str]) -> Built {
    let mut blobs = Vec::new();
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for tar in layers {
        diff_ids.push(digest(&tar));
        let z = gz(&tar);
        descs.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(&z), "size": z.len()}));
        blobs.push((digest(&z), z));
    }
    let config = serde_json::to_vec(&json!({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("json");
    let config_digest = digest(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": descs,
    }))
    .expect("json");
    blobs.push((config_digest.clone(), config));
    blobs.push((digest(&manifest), manifest.clone()));
    Built {
        manifest,
        config_digest,
        blobs,
    }
}

/// The test's content, as an OCI layout skopeo copies from: `two` (a
/// busybox layer with 4 MiB of noise, and a small one), and `multi` (an
/// index with an amd64 and an arm64 image).
struct Content {
    layout: PathBuf,
    two: Built,
    amd64: Built,
    arm64: Built,
    /// The two-layer image's layers (compressed), bottom first.
    two_layers: Vec<String>,
}

fn content(dir: &Path) -> Content {
    let root = common::busybox_root(dir, "bb");
    let mut noise = vec![0u8; 4 << 20];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let two = image(
        "amd64",
        vec![
            tar_of(Some(&root), &[("noise", noise)]),
            tar_of(None, &[("etc/kcell-layer", b"second layer\n".to_vec())]),
        ],
        &["/bin/cat", "/etc/kcell-layer"],
    );
    let two_layers = two.blobs[..2].iter().map(|(d, _)| d.clone()).collect();
    let amd64 = image(
        "amd64",
        vec![tar_of(None, &[("etc/which", b"amd64\n".to_vec())])],
        &["true"],
    );
    let arm64 = image(
        "arm64",
        vec![tar_of(None, &[("etc/which", b"arm64\n".to_vec())])],
        &["true"],
    );
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(&amd64.manifest), "size": amd64.manifest.len(), "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(&arm64.manifest), "size": arm64.manifest.len(), "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        ],
    }))
    .expect("json");
    let layout = dir.join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).expect("mkdir");
    for (d, data) in two
        .blobs
        .iter()
        .chain(&amd64.blobs)
        .chain(&arm64.blobs)
        .chain(std::iter::once(&(digest(&index), index.clone())))
    {
        std::fs::write(
            layout
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
            data,
        )
        .expect("write blob");
    }
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("write");
    let top = json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(&two.manifest), "size": two.manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "two"}},
        {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest(&index), "size": index.len(), "annotations": {"org.opencontainers.image.ref.name": "multi"}},
    ]});
    std::fs::write(layout.join("index.json"), top.to_string()).expect("write");
    Content {
        layout,
        two,
        amd64,
        arm64,
        two_layers,
    }
}

enum Auth {
    Plain,
    Htpasswd,
    Tls,
}

/// A docker-registry on 127.0.0.1, killed on drop.
struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    host: String,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const USER: &str = "kcell";
const PASSWORD: &str = "s3cret-pw";

/// A port free now and not handed to another test of this binary: the
/// kernel may give a port just released to the next bind(0), and two
/// registries on one port made one test talk to the other's, which was
/// gone when that test ended (seen: "connection refused" mid-test).
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

impl Registry {
    fn start(auth: Auth) -> Registry {
        need("docker-registry");
        let dir = tempfile::Builder::new()
            .prefix("kcell-registry-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}/storage\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().display()
        );
        match auth {
            Auth::Plain => {}
            Auth::Htpasswd => {
                // bcrypt, the one hash docker-registry's htpasswd reads.
                let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt");
                std::fs::write(dir.path().join("htpasswd"), format!("{USER}:{hash}\n"))
                    .expect("write htpasswd");
                config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: kcell-test\n    path: {}/htpasswd\n",
                    dir.path().display()
                ));
            }
            Auth::Tls => {
                let d = dir.path();
                openssl(
                    d,
                    &[
                        "req",
                        "-x509",
                        "-newkey",
                        "rsa:2048",
                        "-nodes",
                        "-days",
                        "2",
                        "-subj",
                        "/CN=kcell test CA",
                        "-keyout",
                        "ca.key",
                        "-out",
                        "ca.crt",
                    ],
                );
                openssl(
                    d,
                    &[
                        "req",
                        "-newkey",
                        "rsa:2048",
                        "-nodes",
                        "-subj",
                        "/CN=127.0.0.1",
                        "-keyout",
                        "server.key",
                        "-out",
                        "server.csr",
                    ],
                );
                std::fs::write(d.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("write");
                openssl(
                    d,
                    &[
                        "x509",
                        "-req",
                        "-in",
                        "server.csr",
                        "-CA",
                        "ca.crt",
                        "-CAkey",
                        "ca.key",
                        "-CAcreateserial",
                        "-days",
                        "2",
                        "-extfile",
                        "san.ext",
                        "-out",
                        "server.crt",
                    ],
                );
                std::fs::create_dir(d.join("certs")).expect("mkdir");
                std::fs::copy(d.join("ca.crt"), d.join("certs/ca.crt")).expect("copy");
                config.push_str(&format!(
                    "  tls:\n    certificate: {0}/server.crt\n    key: {0}/server.key\n",
                    d.display()
                ));
            }
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("docker-registry");
        let host = format!("127.0.0.1:{port}");
        let t0 = Instant::now();
        while std::net::TcpStream::connect(&host).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "docker-registry did not listen on {host}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // What answered is this registry, not another process on the port.
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            matches!(child.try_wait(), Ok(None)),
            "docker-registry on {host} exited: {}",
            std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default()
        );
        Registry { child, dir, host }
    }

    fn cert_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// skopeo's flags for this registry (destination or source side).
    fn skopeo_flags(&self, side: &str) -> Vec<String> {
        let mut f = Vec::new();
        if self.cert_dir().is_dir() {
            f.push(format!("--{side}cert-dir={}", self.cert_dir().display()));
        } else {
            f.push(format!("--{side}tls-verify=false"));
        }
        if self.dir.path().join("htpasswd").is_file() {
            f.push(format!("--{side}creds={USER}:{PASSWORD}"));
        }
        f
    }

    /// skopeo copies `oci:LAYOUT:NAME` (with --all for an index) to REPO.
    fn put(&self, layout: &Path, name: &str, repo: &str) {
        need("skopeo");
        let out = Command::new("skopeo")
            .arg("copy")
            .arg("--all")
            .args(self.skopeo_flags("dest-"))
            .arg(format!("oci:{}:{name}", layout.display()))
            .arg(format!("docker://{}/{repo}", self.host))
            .output()
            .expect("skopeo copy");
        assert!(
            out.status.success(),
            "skopeo copy {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The digest skopeo reads for REPO (a tag).
    fn inspect_digest(&self, repo: &str) -> String {
        let out = Command::new("skopeo")
            .args(["inspect", "--raw"])
            .args(self.skopeo_flags(""))
            .arg(format!("docker://{}/{repo}", self.host))
            .output()
            .expect("skopeo inspect");
        assert!(
            out.status.success(),
            "skopeo inspect: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        digest(&out.stdout)
    }

    /// The registry's access log: requests for `path` with status `status`.
    fn requests(&self, needle: &str) -> usize {
        std::fs::read_to_string(self.dir.path().join("registry.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"GET ") && l.contains(needle))
            .count()
    }

    fn blob_file(&self, d: &str) -> PathBuf {
        let hex = d.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

/// `kcell --root STORE ARGS` with `stdin`; (status, stdout, stderr).
fn kcell(store: &Path, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(KCELL)
        .arg("--root")
        .arg(store)
        .args(args)
        .envs(env.iter().copied())
        .env("HOME", store) // no auth file of the machine's
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcell");
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(stdin.as_bytes());
    }
    child.wait_with_output().expect("kcell")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn images(store: &Path) -> String {
    String::from_utf8_lossy(&kcell(store, &["images"], "", &[]).stdout).to_string()
}

fn stored_layers(store: &Path) -> usize {
    std::fs::read_dir(store.join("layers"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .count()
        })
        .unwrap_or(0)
}

fn short(d: &str) -> &str {
    &d.trim_start_matches("sha256:")[..12]
}

#[test]
fn pulls_by_tag_digest_and_platform_resume_and_refuse_a_corrupt_blob() {
    common::on_the_host_only("docker-registry, skopeo and openssl");
    let work = tempfile::Builder::new()
        .prefix("kcell-pull-")
        .tempdir()
        .expect("tempdir");
    let c = content(work.path());
    let reg = Registry::start(Auth::Plain);
    reg.put(&c.layout, "two", "kcell/two:v1");
    reg.put(&c.layout, "multi", "kcell/multi:1");
    let insecure = ["--insecure-registry", reg.host.as_str()];
    let two = format!("{}/kcell/two:v1", reg.host);

    // By tag: the image, its tag and its digest listed.
    let store = work.path().join("store");
    let out = kcell(&store, &["pull", insecure[0], insecure[1], &two], "", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let manifest_digest = digest(&c.two.manifest);
    let listed = images(&store);
    assert!(
        listed.contains(&two)
            && listed.contains(short(&c.two.config_digest))
            && listed.contains(&manifest_digest[..19]),
        "images: {listed}"
    );
    // `run REF` works (root only: a container).
    if nix::unistd::geteuid().is_root() {
        let run = kcell(&store, &["run", &two], "", &[]);
        assert_eq!(
            String::from_utf8_lossy(&run.stdout),
            "second layer\n",
            "{}",
            text(&run)
        );
    }

    // By digest: the same image, no layer fetched again.
    let by_digest = format!("{}/kcell/two@{manifest_digest}", reg.host);
    let out = kcell(
        &store,
        &["pull", insecure[0], insecure[1], &by_digest],
        "",
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("layers: 0 fetched, 0 resumed, 0 downloaded before, 2 already stored"),
        "{}",
        text(&out)
    );

    // The index: this machine's platform, or the one --platform names.
    let multi = format!("{}/kcell/multi:1", reg.host);
    let out = kcell(&store, &["pull", insecure[0], insecure[1], &multi], "", &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(short(&c.amd64.config_digest)),
        "{}",
        text(&out)
    );
    let out = kcell(
        &store,
        &[
            "pull",
            "--platform",
            "linux/arm64",
            insecure[0],
            insecure[1],
            &multi,
        ],
        "",
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(short(&c.arm64.config_digest)),
        "{}",
        text(&out)
    );
    let out = kcell(
        &store,
        &[
            "pull",
            "--platform",
            "linux/s390x",
            insecure[0],
            insecure[1],
            &multi,
        ],
        "",
        &[],
    );
    assert_eq!(out.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no manifest for linux/s390x (it has linux/amd64, linux/arm64)"),
        "{}",
        text(&out)
    );

    // Killed mid-layer (after the small layer finished), then run again:
    // the finished layer is not fetched again, the big one resumes.
    let store2 = work.path().join("store2");
    let [big, small] = [&c.two_layers[0], &c.two_layers[1]];
    let killed = kcell(
        &store2,
        &["pull", insecure[0], insecure[1], &two],
        "",
        &[("KCELL_FAULT", "pull-mid-layer")],
    );
    assert_eq!(killed.status.signal(), Some(9), "{}", text(&killed));
    assert_eq!(
        stored_layers(&store2),
        0,
        "no layer in the store after the kill"
    );
    assert!(
        images(&store2).lines().count() == 1,
        "no image after the kill"
    );
    let out = kcell(&store2, &["pull", insecure[0], insecure[1], &two], "", &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("layers: 0 fetched, 1 resumed, 1 downloaded before, 0 already stored"),
        "{}",
        text(&out)
    );
    assert_eq!(
        reg.requests(&format!("/blobs/{small}")),
        2,
        "the small layer: once by each store, never again"
    );
    assert_eq!(
        reg.requests(&format!("/blobs/{big}")),
        3,
        "the big layer: once by the first store, twice (killed, resumed) by the second"
    );

    // A corrupted blob (same size, other bytes) is refused by digest; nothing stored.
    let file = reg.blob_file(small);
    let mut bytes = std::fs::read(&file).expect("read blob");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, bytes).expect("corrupt the blob");
    let store3 = work.path().join("store3");
    let out = kcell(&store3, &["pull", insecure[0], insecure[1], &two], "", &[]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    // Progress lines go to stderr too; the error is the one `kcell:` line.
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("kcell:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {err}");
    assert!(
        errors[0].contains(small.as_str()) && errors[0].contains("digest"),
        "{err}"
    );
    assert!(images(&store3).lines().count() == 1, "no image stored");
    let _ = c.arm64.blobs.len();
}

#[test]
fn basic_auth_is_refused_without_credentials_and_accepted_with_them() {
    common::on_the_host_only("docker-registry, skopeo and openssl");
    let work = tempfile::Builder::new()
        .prefix("kcell-pull-")
        .tempdir()
        .expect("tempdir");
    let c = content(work.path());
    let reg = Registry::start(Auth::Htpasswd);
    reg.put(&c.layout, "two", "kcell/two:v1");
    let two = format!("{}/kcell/two:v1", reg.host);
    let store = work.path().join("store");
    let insecure = ["--insecure-registry", reg.host.as_str()];
    let out = kcell(&store, &["pull", insecure[0], insecure[1], &two], "", &[]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("authentication failed"),
        "{}",
        text(&out)
    );
    let out = kcell(
        &store,
        &[
            "pull",
            "--username",
            USER,
            "--password-stdin",
            insecure[0],
            insecure[1],
            &two,
        ],
        "wrong\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused"),
        "{}",
        text(&out)
    );
    let out = kcell(
        &store,
        &[
            "pull",
            "--username",
            USER,
            "--password-stdin",
            insecure[0],
            insecure[1],
            &two,
        ],
        &format!("{PASSWORD}\n"),
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    // The Docker config.json form of the same credentials.
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let authfile = work.path().join("auth.json");
    std::fs::write(
        &authfile,
        json!({"auths": {reg.host.clone(): {"auth": auth}}}).to_string(),
    )
    .expect("write");
    let store2 = work.path().join("store2");
    let out = kcell(
        &store2,
        &[
            "pull",
            "--authfile",
            authfile.to_str().expect("utf-8"),
            insecure[0],
            insecure[1],
            &two,
        ],
        "",
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn tls_is_verified_against_the_ca_given_and_refused_without_it() {
    common::on_the_host_only("docker-registry, skopeo and openssl");
    let work = tempfile::Builder::new()
        .prefix("kcell-pull-")
        .tempdir()
        .expect("tempdir");
    let c = content(work.path());
    let reg = Registry::start(Auth::Tls);
    reg.put(&c.layout, "two", "kcell/two:v1");
    let two = format!("{}/kcell/two:v1", reg.host);
    let store = work.path().join("store");
    let out = kcell(&store, &["pull", &two], "", &[]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("certificate") || err.contains("issuer"),
        "{}",
        text(&out)
    );
    let cert_dir = reg.cert_dir();
    let out = kcell(
        &store,
        &[
            "pull",
            "--cert-dir",
            cert_dir.to_str().expect("utf-8"),
            &two,
        ],
        "",
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_pushed_image_reads_back_in_skopeo_and_pulls_back_identical() {
    common::on_the_host_only("docker-registry, skopeo and openssl");
    let work = tempfile::Builder::new()
        .prefix("kcell-push-")
        .tempdir()
        .expect("tempdir");
    let c = content(work.path());
    let reg = Registry::start(Auth::Plain);
    reg.put(&c.layout, "two", "kcell/two:v1");
    let insecure = ["--insecure-registry", reg.host.as_str()];
    let two = format!("{}/kcell/two:v1", reg.host);
    let store = work.path().join("store");
    let out = kcell(&store, &["pull", insecure[0], insecure[1], &two], "", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let pushed_ref = format!("{}/kcell/pushed:v2", reg.host);
    let out = kcell(
        &store,
        &["push", insecure[0], insecure[1], &pushed_ref, &two],
        "",
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let pushed = stdout
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no digest in: {stdout}"))
        .to_string();
    assert_eq!(
        reg.inspect_digest("kcell/pushed:v2"),
        pushed,
        "skopeo reads what kcell pushed"
    );
    let out = kcell(
        &store,
        &["push", insecure[0], insecure[1], &pushed_ref, &two],
        "",
        &[],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0 blobs sent, 3 the registry had"),
        "{}",
        text(&out)
    );
    let store2 = work.path().join("store2");
    let out = kcell(
        &store2,
        &["pull", insecure[0], insecure[1], &pushed_ref],
        "",
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&pushed),
        "pulled back by the same digest: {}",
        text(&out)
    );
    let listed = images(&store2);
    assert!(listed.contains(&pushed[..19]), "{listed}");
}

#[test]
fn bad_references_are_one_line_errors_naming_the_part() {
    let work = tempfile::tempdir().expect("tempdir");
    let store = work.path().join("store");
    let digest62 = format!("x@sha256:{}", "a".repeat(62));
    for (reference, part) in [
        ("UPPER/case", "'UPPER'"),
        ("a:b:c", "'a:b'"),
        ("busybox:", "empty tag"),
        (digest62.as_str(), "64 hex digits, this one 62"),
    ] {
        let out = kcell(&store, &["pull", reference], "", &[]);
        assert_eq!(out.status.code(), Some(125), "{reference}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{reference}: {err}");
        assert!(
            err.contains(reference) && err.contains(part),
            "{reference}: {err}"
        );
    }
}
