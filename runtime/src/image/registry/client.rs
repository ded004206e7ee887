//! The distribution protocol's HTTP half: the `/v2/` probe, the
//! `WWW-Authenticate` challenge (bearer tokens from the realm it names,
//! or basic auth), TLS with the system's CA store plus a directory of the
//! user's, plain HTTP for the hosts the user names, and the requests a
//! pull and a push make (manifests, blobs streamed to disk and resumed
//! with `Range`, monolithic blob uploads).
//!
//! ureq carries HTTP and rustls TLS; what is written here is the protocol
//! (which request, which header, which status means what).

use super::{Options, RegistryError};
use base64::Engine;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use ureq::http::{Response, StatusCode};
use ureq::Body;

/// Where the system's CA certificates are (Debian's ca-certificates, then
/// the Red Hat layout).
const SYSTEM_CA_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

/// Media types a manifest request accepts (schema 1 too, to refuse it by name).
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.v1+prettyjws, \
application/vnd.docker.distribution.manifest.v1+json";

/// A request made with the Authorization header given (none before the
/// first challenge).
type MakeRequest<'a> = dyn Fn(Option<&str>) -> Result<Response<Body>, ureq::Error> + 'a;

/// The request with the Authorization header, when there is one.
fn with_auth<B>(req: ureq::RequestBuilder<B>, auth: Option<&str>) -> ureq::RequestBuilder<B> {
    match auth {
        Some(a) => req.header("Authorization", a),
        None => req,
    }
}

/// How a blob reached the downloads directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    /// All of it over the network.
    Whole,
    /// The rest of a partial download (a `Range` request).
    Resumed,
    /// A download finished before (a pull killed after it).
    Before,
}

/// One repository of one registry, with its authentication.
pub struct Client {
    agent: ureq::Agent,
    /// `https://host[:port]` or `http://...`.
    base: String,
    registry: String,
    repository: String,
    credentials: Option<(String, String)>,
    /// The scope tokens are asked for (`repository:NAME:pull[,push]`).
    scope: String,
    /// The Authorization header value once authenticated.
    authorization: Mutex<Option<String>>,
}

fn transport(url: &str, e: ureq::Error) -> RegistryError {
    RegistryError::Transport {
        url: url.to_string(),
        error: e.to_string(),
    }
}

/// The system's CA certificates and those (`*.crt`, PEM) in `cert_dir`.
fn root_certs(
    cert_dir: Option<&Path>,
) -> Result<Vec<ureq::tls::Certificate<'static>>, RegistryError> {
    let mut files: Vec<PathBuf> = SYSTEM_CA_FILES.iter().map(PathBuf::from).collect();
    if let Some(dir) = cert_dir {
        let listed = std::fs::read_dir(dir).map_err(|e| RegistryError::Config {
            what: format!("--cert-dir {}", dir.display()),
            why: e.to_string(),
        })?;
        for entry in listed.filter_map(Result::ok) {
            let p = entry.path();
            if p.extension().is_some_and(|x| x == "crt" || x == "pem") {
                files.push(p);
            }
        }
    }
    let mut certs = Vec::new();
    for file in files {
        let Ok(pem) = std::fs::read(&file) else {
            continue;
        };
        for item in ureq::tls::parse_pem(&pem).filter_map(Result::ok) {
            if let ureq::tls::PemItem::Certificate(c) = item {
                certs.push(c);
            }
        }
    }
    Ok(certs)
}

fn agent(options: &Options, verify: bool) -> Result<ureq::Agent, RegistryError> {
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::new_with_certs(&root_certs(
            options.cert_dir.as_deref(),
        )?))
        .disable_verification(!verify)
        .build();
    let config = ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .user_agent(concat!("kcell/", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(ureq::Agent::new_with_config(config))
}

/// The scheme and parameters of a `WWW-Authenticate` header:
/// `Bearer realm="https://auth",service="reg",scope="repository:x:pull"`.
pub fn parse_challenge(header: &str) -> (String, Vec<(String, String)>) {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        params.push((key.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    (scheme.to_ascii_lowercase(), params)
}

/// The credentials for `registry` in a Docker `config.json` (`auths`:
/// `{"host:port": {"auth": base64("user:password")}}`).
pub fn auth_file_credentials(path: &Path, registry: &str) -> Option<(String, String)> {
    let text = std::fs::read(path).ok()?;
    let json: serde_json::Value = serde_json::from_slice(&text).ok()?;
    let auths = json.get("auths")?.as_object()?;
    let keys = if registry == "docker.io" {
        vec![
            "https://index.docker.io/v1/".to_string(),
            "docker.io".to_string(),
            "index.docker.io".to_string(),
        ]
    } else {
        vec![
            registry.to_string(),
            format!("https://{registry}"),
            format!("http://{registry}"),
        ]
    };
    let entry = keys.iter().find_map(|k| auths.get(k))?;
    let encoded = entry.get("auth")?.as_str()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// The auth file the user named, else $REGISTRY_AUTH_FILE, else Docker's.
fn default_auth_file(options: &Options) -> Option<PathBuf> {
    if let Some(p) = &options.auth_file {
        return Some(p.clone());
    }
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
        return Some(PathBuf::from(p));
    }
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

impl Client {
    /// Probes `/v2/` of `registry` (HTTPS; plain HTTP for the hosts of
    /// `--insecure-registry`, or after a failed TLS connection with
    /// `--tls-verify=false`) for `repository`, with the access `actions`
    /// ("pull" or "pull,push").
    pub fn connect(
        registry: &str,
        api_host: &str,
        repository: &str,
        actions: &str,
        options: &Options,
    ) -> Result<Self, RegistryError> {
        let insecure = options.insecure_registries.iter().any(|h| h == registry);
        let credentials = options.credentials.clone().or_else(|| {
            default_auth_file(options).and_then(|p| auth_file_credentials(&p, registry))
        });
        let mut client = Client {
            agent: agent(options, options.tls_verify && !insecure)?,
            base: format!("{}://{api_host}", if insecure { "http" } else { "https" }),
            registry: registry.to_string(),
            repository: repository.to_string(),
            credentials,
            scope: format!("repository:{repository}:{actions}"),
            authorization: Mutex::new(None),
        };
        let probe = format!("{}/v2/", client.base);
        let first = client.agent.get(&probe).call();
        let response = match first {
            Ok(r) => r,
            Err(e) if !options.tls_verify && !insecure => {
                // As podman's --tls-verify=false: plain HTTP is allowed too.
                client.base = format!("http://{api_host}");
                let probe = format!("{}/v2/", client.base);
                client
                    .agent
                    .get(&probe)
                    .call()
                    .map_err(|e2| RegistryError::Transport {
                        url: probe.clone(),
                        error: format!("{e2} (over HTTPS: {e})"),
                    })?
            }
            Err(e) => {
                let error = e.to_string();
                let hint = if error.to_ascii_lowercase().contains("certificate")
                    || error.contains("tls")
                    || error.contains("TLS")
                {
                    " (a registry with its own CA: --cert-dir DIR holding its ca.crt; plain HTTP: --insecure-registry HOST)"
                } else {
                    ""
                };
                return Err(RegistryError::Transport {
                    url: probe,
                    error: format!("{error}{hint}"),
                });
            }
        };
        if response.status() == StatusCode::UNAUTHORIZED {
            client.authenticate(&response)?;
        } else if !response.status().is_success() {
            return Err(client.status_error(&probe, response));
        }
        Ok(client)
    }

    /// Answers a 401's challenge: a bearer token from the realm (with the
    /// credentials if there are any), or basic auth.
    fn authenticate(&self, response: &Response<Body>) -> Result<(), RegistryError> {
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let (scheme, params) = parse_challenge(&challenge);
        let param = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let basic = self.credentials.as_ref().map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        let value = match scheme.as_str() {
            "bearer" => {
                let realm = param("realm").ok_or_else(|| RegistryError::Auth {
                    registry: self.registry.clone(),
                    why: format!("a bearer challenge without a realm: '{challenge}'"),
                })?;
                let mut request = self.agent.get(&realm).query("scope", &self.scope);
                if let Some(service) = param("service") {
                    request = request.query("service", &service);
                }
                if let Some(b) = &basic {
                    request = request.header("Authorization", b);
                }
                let mut r = request.call().map_err(|e| transport(&realm, e))?;
                if !r.status().is_success() {
                    return Err(RegistryError::Auth {
                        registry: self.registry.clone(),
                        why: format!("the token service {realm} answered {}", r.status()),
                    });
                }
                let json: serde_json::Value =
                    r.body_mut().read_json().map_err(|e| transport(&realm, e))?;
                let token = json
                    .get("token")
                    .or_else(|| json.get("access_token"))
                    .and_then(|t| t.as_str())
                    .ok_or_else(|| RegistryError::Auth {
                        registry: self.registry.clone(),
                        why: format!("the token service {realm} gave no token"),
                    })?;
                format!("Bearer {token}")
            }
            "basic" => basic.ok_or_else(|| RegistryError::Auth {
                registry: self.registry.clone(),
                why: "it asks for a user name and password: --username NAME --password-stdin, \
                      or an auths entry in the Docker config.json (--authfile)"
                    .into(),
            })?,
            _ => {
                return Err(RegistryError::Auth {
                    registry: self.registry.clone(),
                    why: format!("an authentication scheme kcell does not speak: '{challenge}'"),
                })
            }
        };
        *self.authorization.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
        Ok(())
    }

    fn auth_header(&self) -> Option<String> {
        self.authorization
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes a request (through `make`, given the Authorization header);
    /// a 401 is answered once and the request made again.
    fn request(&self, url: &str, make: &MakeRequest) -> Result<Response<Body>, RegistryError> {
        let r = make(self.auth_header().as_deref()).map_err(|e| transport(url, e))?;
        if r.status() != StatusCode::UNAUTHORIZED {
            return Ok(r);
        }
        self.authenticate(&r)?;
        let r = make(self.auth_header().as_deref()).map_err(|e| transport(url, e))?;
        if r.status() == StatusCode::UNAUTHORIZED {
            return Err(RegistryError::Auth {
                registry: self.registry.clone(),
                why: "the credentials were refused (401)".into(),
            });
        }
        Ok(r)
    }

    fn status_error(&self, url: &str, mut r: Response<Body>) -> RegistryError {
        let body = r
            .body_mut()
            .with_config()
            .limit(4096)
            .read_to_string()
            .unwrap_or_default();
        RegistryError::Status {
            url: url.to_string(),
            status: r.status().as_u16(),
            body: body.split_whitespace().collect::<Vec<_>>().join(" "),
        }
    }

    fn url(&self, tail: &str) -> String {
        format!("{}/v2/{}/{tail}", self.base, self.repository)
    }

    /// The manifest (or index) `target` (a tag or digest) names: its bytes
    /// and media type.
    pub fn manifest(&self, target: &str) -> Result<(Vec<u8>, String), RegistryError> {
        let url = self.url(&format!("manifests/{target}"));
        let mut r = self.request(&url, &|auth| {
            let req = self.agent.get(&url).header("Accept", MANIFEST_ACCEPT);
            with_auth(req, auth).call()
        })?;
        if !r.status().is_success() {
            return Err(self.status_error(&url, r));
        }
        let media_type = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let bytes = r
            .body_mut()
            .with_config()
            .limit(8 << 20)
            .read_to_vec()
            .map_err(|e| transport(&url, e))?;
        Ok((bytes, media_type))
    }

    /// Fetches blob `digest` into `dir/<hex>`, resuming `dir/<hex>.partial`
    /// with a `Range` request, and checks its size and digest before the
    /// file takes its name. `progress` hears the bytes written so far;
    /// returns the path and how the bytes came.
    pub fn blob_to_file(
        &self,
        digest: &str,
        size: u64,
        dir: &Path,
        progress: &dyn Fn(u64, u64),
    ) -> Result<(PathBuf, Fetch), RegistryError> {
        let hex = crate::image::digest_hex(digest).ok_or_else(|| RegistryError::Manifest {
            what: format!("blob digest '{digest}'"),
            why: "not sha256:<64 hex digits>".into(),
        })?;
        let done = dir.join(hex);
        let partial = dir.join(format!("{hex}.partial"));
        let io = |what: &str, p: &Path, e: std::io::Error| RegistryError::Io {
            what: format!("{what} {}", p.display()),
            error: e.to_string(),
        };
        if done.is_file() && super::verify_file(&done, digest, size).is_ok() {
            return Ok((done, Fetch::Before));
        }
        let have = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        let have = if have > size { 0 } else { have };
        let url = self.url(&format!("blobs/{digest}"));
        let mut r = self.request(&url, &|auth| {
            let mut req = self.agent.get(&url);
            if have > 0 {
                req = req.header("Range", format!("bytes={have}-"));
            }
            with_auth(req, auth).call()
        })?;
        let resumed = r.status() == StatusCode::PARTIAL_CONTENT && have > 0;
        if !r.status().is_success() {
            return Err(self.status_error(&url, r));
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(resumed)
            .truncate(!resumed)
            .open(&partial)
            .map_err(|e| io("open", &partial, e))?;
        let mut written = if resumed { have } else { 0 };
        let mut reader = r.body_mut().with_config().limit(u64::MAX).reader();
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| RegistryError::Transport {
                    url: url.clone(),
                    error: e.to_string(),
                })?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n])
                .map_err(|e| io("write", &partial, e))?;
            written += n as u64;
            progress(written, size);
            if written > size {
                break;
            }
        }
        file.sync_all().map_err(|e| io("fsync", &partial, e))?;
        drop(file);
        if let Err(e) = super::verify_file(&partial, digest, size) {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
        std::fs::rename(&partial, &done).map_err(|e| io("rename", &done, e))?;
        Ok((
            done,
            if resumed {
                Fetch::Resumed
            } else {
                Fetch::Whole
            },
        ))
    }

    /// Whether the registry has blob `digest` (HEAD).
    pub fn has_blob(&self, digest: &str) -> Result<bool, RegistryError> {
        let url = self.url(&format!("blobs/{digest}"));
        let r = self.request(&url, &|auth| {
            let req = self.agent.head(&url);
            with_auth(req, auth).call()
        })?;
        match r.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.status_error(&url, r)),
        }
    }

    /// Uploads `data` as blob `digest`: POST for an upload location, then
    /// one PUT with the whole blob (the monolithic upload of the spec).
    pub fn upload_blob(&self, digest: &str, data: &[u8]) -> Result<(), RegistryError> {
        let url = self.url("blobs/uploads/");
        let r = self.request(&url, &|auth| {
            let req = self.agent.post(&url);
            with_auth(req, auth).send_empty()
        })?;
        if r.status() != StatusCode::ACCEPTED {
            return Err(self.status_error(&url, r));
        }
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Status {
                url: url.clone(),
                status: 202,
                body: "no Location header for the upload".into(),
            })?;
        let mut put = if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location.to_string()
        };
        put.push(if put.contains('?') { '&' } else { '?' });
        put.push_str(&format!("digest={digest}"));
        let r = self.request(&put, &|auth| {
            let req = self
                .agent
                .put(&put)
                .header("Content-Type", "application/octet-stream");
            with_auth(req, auth).send(data)
        })?;
        if r.status() != StatusCode::CREATED {
            return Err(self.status_error(&put, r));
        }
        Ok(())
    }

    /// Puts manifest `bytes` of `media_type` under `target` (a tag).
    pub fn put_manifest(
        &self,
        target: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), RegistryError> {
        let url = self.url(&format!("manifests/{target}"));
        let r = self.request(&url, &|auth| {
            let req = self.agent.put(&url).header("Content-Type", media_type);
            with_auth(req, auth).send(bytes)
        })?;
        if r.status() != StatusCode::CREATED {
            return Err(self.status_error(&url, r));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_with_quotes_and_commas() {
        let (scheme, params) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        );
        assert_eq!(scheme, "bearer");
        assert_eq!(
            params,
            [
                (
                    "realm".to_string(),
                    "https://auth.docker.io/token".to_string()
                ),
                ("service".to_string(), "registry.docker.io".to_string()),
                (
                    "scope".to_string(),
                    "repository:library/busybox:pull,push".to_string()
                ),
            ]
        );
        let (scheme, params) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(scheme, "basic");
        assert_eq!(
            params,
            [("realm".to_string(), "Registry Realm".to_string())]
        );
    }

    #[test]
    fn auth_files_give_credentials_per_registry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("kcell:s3cret:x");
        std::fs::write(
            &path,
            format!(r#"{{"auths":{{"127.0.0.1:5000":{{"auth":"{auth}"}}}}}}"#),
        )
        .expect("write");
        assert_eq!(
            auth_file_credentials(&path, "127.0.0.1:5000"),
            Some(("kcell".into(), "s3cret:x".into()))
        );
        assert_eq!(auth_file_credentials(&path, "other:5000"), None);
    }
}
