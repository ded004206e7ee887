//! Image references as docker reads them: `[REGISTRY/]REPOSITORY[:TAG][@DIGEST]`.
//! A reference without a registry means Docker Hub (`docker.io`), and a
//! Docker Hub name without a slash means `library/NAME`. The first
//! component is a registry when it has a `.` or a `:` or is `localhost`.

use super::RegistryError;

/// A parsed reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`, `docker.io` for Docker Hub.
    pub registry: String,
    /// `library/busybox`, `x/y/z`.
    pub repository: String,
    /// The tag, if given (none with a bare digest).
    pub tag: Option<String>,
    /// `sha256:<hex>`, if given.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses `text`; an error names the part that is wrong.
    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        let bad = |part: &str, why: &str| RegistryError::BadReference {
            reference: text.to_string(),
            part: part.to_string(),
            why: why.to_string(),
        };
        if text.is_empty() {
            return Err(bad("", "an empty reference"));
        }
        let (name_tag, digest) = match text.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (text, None),
        };
        if let Some(d) = digest {
            let hex = d
                .strip_prefix("sha256:")
                .ok_or_else(|| bad(d, "a digest is sha256:<64 hex digits>"))?;
            if hex.len() != 64 {
                return Err(bad(
                    d,
                    &format!("a sha256 digest has 64 hex digits, this one {}", hex.len()),
                ));
            }
            if !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(bad(d, "a digest's hex digits are 0-9 and a-f"));
            }
        }
        // A ':' after the last '/' starts the tag (one before it is a port).
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => (
                &name_tag[..last_slash + i],
                Some(&name_tag[last_slash + i + 1..]),
            ),
            None => (name_tag, None),
        };
        if let Some(t) = tag {
            if t.is_empty() {
                return Err(bad(
                    t,
                    "an empty tag: give one after ':' or leave the ':' out",
                ));
            }
            let first_ok = t
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !first_ok
                || t.len() > 128
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                return Err(bad(
                    t,
                    "a tag is up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'",
                ));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        if registry.contains(':') {
            let port = registry.rsplit_once(':').map_or("", |(_, p)| p);
            if port.parse::<u16>().is_err() {
                return Err(bad(&registry, "a registry's port is a number up to 65535"));
            }
        }
        let repository = if registry == "docker.io" && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.is_empty() {
            return Err(bad(name, "no repository name"));
        }
        for component in repository.split('/') {
            let ok = !component.is_empty()
                && component
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && component
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric())
                && component
                    .bytes()
                    .last()
                    .is_some_and(|b| b.is_ascii_alphanumeric());
            if !ok {
                let why = if component.bytes().any(|b| b.is_ascii_uppercase()) {
                    "a repository name is lower case"
                } else if component.contains(':') {
                    "a repository name has no ':' (one tag per reference)"
                } else {
                    "each '/'-separated part of a repository is lower-case letters and digits, joined by '.', '_' or '-'"
                };
                return Err(bad(component, why));
            }
        }
        Ok(Reference {
            registry,
            repository,
            tag: tag.map(str::to_string),
            digest: digest.map(str::to_string),
        })
    }

    /// The tag or digest a request names: the digest when both are given.
    pub fn target(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The host the API is on (Docker Hub's is registry-1.docker.io).
    pub fn api_host(&self) -> &str {
        if self.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    /// `registry/repository`, the name the store tags it with.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `registry/repository:tag` (tag `latest` unless given), for the
    /// store; none for a reference by digest alone.
    pub fn store_tag(&self) -> Option<String> {
        match (&self.tag, &self.digest) {
            (None, Some(_)) => None,
            (t, _) => Some(format!(
                "{}:{}",
                self.name(),
                t.as_deref().unwrap_or("latest")
            )),
        }
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("busybox", "docker.io", "library/busybox", None, None)]
    #[case("busybox:1.36", "docker.io", "library/busybox", Some("1.36"), None)]
    #[case("user/app", "docker.io", "user/app", None, None)]
    #[case("localhost/app:v1", "localhost", "app", Some("v1"), None)]
    #[case(
        "registry.example:5000/library/busybox:1.36",
        "registry.example:5000",
        "library/busybox",
        Some("1.36"),
        None
    )]
    #[case("127.0.0.1:5000/a/b/c", "127.0.0.1:5000", "a/b/c", None, None)]
    fn references_parse_as_docker_does(
        #[case] text: &str,
        #[case] registry: &str,
        #[case] repository: &str,
        #[case] tag: Option<&str>,
        #[case] digest: Option<&str>,
    ) {
        let r = Reference::parse(text).expect("valid");
        assert_eq!(r.registry, registry);
        assert_eq!(r.repository, repository);
        assert_eq!(r.tag.as_deref(), tag);
        assert_eq!(r.digest.as_deref(), digest);
    }

    #[test]
    fn a_digest_reference_keeps_its_digest() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let r = Reference::parse(&format!("h:5000/x@{d}")).expect("valid");
        assert_eq!(r.target(), d);
        assert_eq!(r.store_tag(), None);
        let r = Reference::parse(&format!("h:5000/x:t@{d}")).expect("valid");
        assert_eq!(r.target(), d);
        assert_eq!(r.store_tag().as_deref(), Some("h:5000/x:t"));
    }

    #[rstest]
    #[case("UPPER/case", "UPPER", "lower case")]
    #[case("a:b:c", "a:b", "no ':'")]
    #[case("busybox:", "", "an empty tag")]
    #[case("busybox@sha256:abc", "sha256:abc", "64 hex digits, this one 3")]
    #[case("busybox@md5:abc", "md5:abc", "sha256:<64 hex digits>")]
    #[case("host:port/x", "host:port", "port is a number")]
    #[case("x:-bad", "-bad", "a tag is")]
    #[case("", "", "empty reference")]
    fn bad_references_name_the_wrong_part(
        #[case] text: &str,
        #[case] part: &str,
        #[case] says: &str,
    ) {
        match Reference::parse(text) {
            Err(RegistryError::BadReference { part: p, why, .. }) => {
                assert_eq!(p, part, "{text}");
                assert!(why.contains(says), "{text}: {why}");
            }
            other => panic!("{text}: {other:?}"),
        }
    }
}
