//! Image references and name validation: `REGISTRY/REPOSITORY[:TAG]` and
//! `REGISTRY/REPOSITORY@sha256:<hex>` (SPEC section 2). Pure string handling.

use std::fmt;

use crate::digest::{Digest, DigestError};

/// Errors from parsing names and references.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    /// No registry component.
    #[error("{0:?} has no registry: write REGISTRY/REPOSITORY[:TAG], e.g. local/{0} or docker.io/library/{0}")]
    NoRegistry(String),
    /// Bad registry name.
    #[error("invalid registry name {0:?} (expected [a-z0-9][a-z0-9.-]* with an optional :port)")]
    BadRegistry(String),
    /// Bad repository name.
    #[error("invalid repository name {0:?} (lowercase components of [a-z0-9] separated by '.', '_', '__' or '-', joined by '/')")]
    BadRepository(String),
    /// A repository component is reserved by the mounted tree.
    #[error("repository name {0:?} uses the reserved component {1:?} (tags, manifests, blobs, index.json and oci-layout are reserved)")]
    ReservedRepository(String, String),
    /// Bad tag.
    #[error("invalid tag {0:?} (expected [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}})")]
    BadTag(String),
    /// Bad digest in a `@` reference.
    #[error(transparent)]
    Digest(#[from] DigestError),
}

/// Path components that the mounted tree uses itself, so a repository may not.
pub const RESERVED_COMPONENTS: &[&str] =
    &["tags", "manifests", "blobs", "index.json", "oci-layout"];

/// Checks a registry name: `[a-z0-9][a-z0-9.-]*` with an optional `:port`.
pub fn validate_registry(name: &str) -> Result<(), ReferenceError> {
    let bad = || ReferenceError::BadRegistry(name.to_string());
    let (host, port) = match name.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (name, None),
    };
    let mut bytes = host.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_lowercase() || b.is_ascii_digit() => {}
        _ => return Err(bad()),
    }
    if !bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-') {
        return Err(bad());
    }
    if host.len() > 255 {
        return Err(bad());
    }
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
    }
    Ok(())
}

/// Checks one repository path component against the distribution grammar
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    if bytes.is_empty() || !is_alnum(bytes[0]) || !is_alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if is_alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__' or one or more '-'.
        let start = i;
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < bytes.len() && bytes[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < bytes.len() && bytes[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= bytes.len() || !is_alnum(bytes[i]) {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// Checks a repository path (`library/alpine`), including the reserved components.
pub fn validate_repository(name: &str) -> Result<(), ReferenceError> {
    if name.is_empty() || name.len() > 255 {
        return Err(ReferenceError::BadRepository(name.to_string()));
    }
    for component in name.split('/') {
        if let Some(reserved) = RESERVED_COMPONENTS.iter().find(|r| **r == component) {
            return Err(ReferenceError::ReservedRepository(
                name.to_string(),
                reserved.to_string(),
            ));
        }
        if !valid_component(component) {
            return Err(ReferenceError::BadRepository(name.to_string()));
        }
    }
    Ok(())
}

/// True when `name` is a valid repository path component (used by the mount's mkdir).
pub fn is_valid_repository_component(component: &str) -> bool {
    !RESERVED_COMPONENTS.contains(&component) && valid_component(component)
}

/// Checks a tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn validate_tag(tag: &str) -> Result<(), ReferenceError> {
    let bytes = tag.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes[1..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ReferenceError::BadTag(tag.to_string()))
    }
}

/// What a reference points at inside its repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A tag name.
    Tag(String),
    /// A manifest digest.
    Digest(Digest),
}

/// A parsed `REGISTRY/REPOSITORY[:TAG|@DIGEST]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry namespace, e.g. `docker.io` or `localhost:5000`.
    pub registry: String,
    /// Repository path, e.g. `library/alpine`.
    pub repository: String,
    /// Tag or digest; a missing tag parses as `latest`.
    pub target: Target,
}

impl Reference {
    /// Parses a full reference. The first component is always the registry.
    pub fn parse(text: &str) -> Result<Self, ReferenceError> {
        let (name, target) = split_target(text)?;
        let Some((registry, repository)) = name.split_once('/') else {
            return Err(ReferenceError::NoRegistry(text.to_string()));
        };
        validate_registry(registry)?;
        validate_repository(repository)?;
        Ok(Reference {
            registry: registry.to_string(),
            repository: repository.to_string(),
            target: target.unwrap_or_else(|| Target::Tag("latest".to_string())),
        })
    }

    /// Parses a name as Docker does for names found inside archives: the first
    /// component is a registry only if it holds `.` or `:` or is `localhost`;
    /// otherwise `default_registry` is put in front. `Ok(None)` when `text` is only a
    /// tag (skopeo's `oci:PATH:TAG` names), which can't name an image by itself.
    pub fn parse_docker_style(
        text: &str,
        default_registry: &str,
    ) -> Result<Option<Self>, ReferenceError> {
        // A bare word with neither '/' nor ':' is what skopeo writes for `oci:PATH:TAG`:
        // only a tag, which names no repository.
        if !text.contains('/') && !text.contains(':') && !text.contains('@') {
            return Ok(None);
        }
        let (name, target) = split_target(text)?;
        let first = name.split('/').next().unwrap_or_default();
        let has_registry = name.contains('/')
            && (first.contains('.') || first.contains(':') || first == "localhost");
        let (registry, repository) = if has_registry {
            let (registry, repository) = name.split_once('/').expect("checked above");
            (registry.to_string(), repository.to_string())
        } else {
            (default_registry.to_string(), name.to_string())
        };
        validate_registry(&registry)?;
        validate_repository(&repository)?;
        Ok(Some(Reference {
            registry,
            repository,
            target: target.unwrap_or_else(|| Target::Tag("latest".to_string())),
        }))
    }

    /// The tag, when the reference names one.
    pub fn tag(&self) -> Option<&str> {
        match &self.target {
            Target::Tag(tag) => Some(tag),
            Target::Digest(_) => None,
        }
    }
}

/// Splits `name[:tag]` / `name@digest`, validating the tag or digest part.
fn split_target(text: &str) -> Result<(&str, Option<Target>), ReferenceError> {
    if let Some((name, digest)) = text.split_once('@') {
        return Ok((name, Some(Target::Digest(Digest::parse(digest)?))));
    }
    // A ':' after the last '/' separates the tag (a ':' before it is a registry port).
    let last_slash = text.rfind('/').map_or(0, |i| i + 1);
    match text[last_slash..].rfind(':') {
        Some(colon) => {
            let split = last_slash + colon;
            let tag = &text[split + 1..];
            validate_tag(tag)?;
            Ok((&text[..split], Some(Target::Tag(tag.to_string()))))
        }
        None => Ok((text, None)),
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::Tag(tag) => write!(f, "{}/{}:{}", self.registry, self.repository, tag),
            Target::Digest(digest) => write!(f, "{}/{}@{}", self.registry, self.repository, digest),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        let cases = [
            (
                "docker.io/library/alpine:3.19",
                "docker.io",
                "library/alpine",
                "3.19",
            ),
            ("localhost:5000/app:1", "localhost:5000", "app", "1"),
            ("dev/myapp", "dev", "myapp", "latest"),
            (
                "prod/my-app/sub_x:v1.0-rc",
                "prod",
                "my-app/sub_x",
                "v1.0-rc",
            ),
        ];
        for (text, registry, repository, tag) in cases {
            let r = Reference::parse(text).unwrap();
            assert_eq!(
                (r.registry.as_str(), r.repository.as_str()),
                (registry, repository)
            );
            assert_eq!(r.tag(), Some(tag), "{text}");
            assert_eq!(Reference::parse(&r.to_string()).unwrap(), r);
        }
        let digest = Digest::of(b"x");
        let r = Reference::parse(&format!("dev/app@{digest}")).unwrap();
        assert_eq!(r.target, Target::Digest(digest));
    }

    #[test]
    fn refuses_bad_references() {
        for bad in [
            "alpine",
            "alpine:3",
            "Dev/app",
            "dev/App",
            "dev/app:",
            "dev/app:-x",
            "dev/a//b",
            "dev/a/tags",
            "dev/manifests/x",
            "dev/a/index.json",
            "dev/a--",
            "-dev/a",
            "dev:port/a",
            "dev/app@sha256:abc",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn docker_style_names() {
        let r = Reference::parse_docker_style("alpine:3.19", "local")
            .unwrap()
            .unwrap();
        assert_eq!(r.to_string(), "local/alpine:3.19");
        let r = Reference::parse_docker_style("library/alpine", "local")
            .unwrap()
            .unwrap();
        assert_eq!(r.to_string(), "local/library/alpine:latest");
        let r = Reference::parse_docker_style("docker.io/library/alpine:3", "x")
            .unwrap()
            .unwrap();
        assert_eq!(r.to_string(), "docker.io/library/alpine:3");
        let r = Reference::parse_docker_style("quay.io/x/y:1", "local")
            .unwrap()
            .unwrap();
        assert_eq!(r.to_string(), "quay.io/x/y:1");
        let r = Reference::parse_docker_style("localhost/y:1", "local")
            .unwrap()
            .unwrap();
        assert_eq!(r.to_string(), "localhost/y:1");
        assert_eq!(
            Reference::parse_docker_style("v1.0", "local").unwrap(),
            None
        );
        assert_eq!(
            Reference::parse_docker_style("latest", "local").unwrap(),
            None
        );
    }
}
