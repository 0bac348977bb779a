//! Registry names as network addresses: which host a reference's registry is,
//! whether plain HTTP is allowed to it, and Docker Hub's `library/` rule.

use std::net::Ipv4Addr;

use super::error::{ErrorKind, RemoteError};

/// Docker Hub's name in references.
pub const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's API host.
pub const DOCKER_HUB_HOST: &str = "registry-1.docker.io";
/// The variable listing registries reached over plain HTTP or with any certificate.
pub const INSECURE_REGISTRIES_VAR: &str = "IMAGEFS_INSECURE_REGISTRIES";

/// Where a registry is and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The registry as references spell it: `docker.io`, `localhost:5000`.
    pub name: String,
    /// `host[:port]` of its API: `registry-1.docker.io`, `localhost:5000`.
    pub host: String,
    /// Plain HTTP may be used (loopback, listed as insecure, or TLS checks off).
    pub allow_http: bool,
    /// Any certificate is accepted (`--tls-verify=false` or listed as insecure).
    pub accept_any_cert: bool,
}

impl Endpoint {
    /// Resolves a registry name. `tls_verify = false` allows plain HTTP and any
    /// certificate. A name without a dot or a port other than `localhost` lives only
    /// in the store and is refused.
    pub fn resolve(name: &str, tls_verify: bool) -> Result<Endpoint, RemoteError> {
        let host = registry_host(name)?;
        let insecure = insecure_registries()
            .iter()
            .any(|r| r == name || *r == host);
        Ok(Endpoint {
            name: name.to_string(),
            allow_http: !tls_verify || insecure || is_loopback(&host),
            accept_any_cert: !tls_verify || insecure,
            host,
        })
    }
}

/// The API host of a registry name (`docker.io` -> `registry-1.docker.io`), or the
/// error that says the name lives only in the store.
pub fn registry_host(name: &str) -> Result<String, RemoteError> {
    if name == DOCKER_HUB || name == "index.docker.io" || name == DOCKER_HUB_HOST {
        return Ok(DOCKER_HUB_HOST.to_string());
    }
    let bad = |problem: &str| RemoteError::new(ErrorKind::StoreOnly, name, "", problem);
    if name.is_empty() || name.contains('/') || name.chars().any(char::is_whitespace) {
        return Err(bad("not a registry name"));
    }
    if !name.contains('.') && !name.contains(':') && name != "localhost" {
        return Err(bad(
            "a registry name without a dot or a port (other than localhost) lives only in \
             the store; it cannot be pulled from or pushed to",
        ));
    }
    Ok(name.to_string())
}

/// The repository path on the wire: Docker Hub puts one-component names under
/// `library/`.
pub fn repository_path(registry: &str, repository: &str) -> String {
    let hub =
        registry == DOCKER_HUB || registry == DOCKER_HUB_HOST || registry == "index.docker.io";
    if hub && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository.to_string()
    }
}

/// The names in `$IMAGEFS_INSECURE_REGISTRIES`.
fn insecure_registries() -> Vec<String> {
    std::env::var(INSECURE_REGISTRIES_VAR)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The host part of `host[:port]` or `[v6]:port`.
pub(crate) fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// `localhost`, `127.0.0.0/8` or `::1`.
pub(crate) fn is_loopback(host: &str) -> bool {
    let bare = host_without_port(host);
    bare == "localhost"
        || bare == "::1"
        || bare.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(registry_host("docker.io").unwrap(), DOCKER_HUB_HOST);
        assert_eq!(registry_host("localhost").unwrap(), "localhost");
        assert_eq!(registry_host("localhost:5000").unwrap(), "localhost:5000");
        assert_eq!(registry_host("myhost:5000").unwrap(), "myhost:5000");
        assert_eq!(registry_host("r.example.com").unwrap(), "r.example.com");
        for store_only in ["dev", "prod", "local"] {
            let err = registry_host(store_only).unwrap_err();
            assert_eq!(err.kind, ErrorKind::StoreOnly);
            assert!(err.to_string().contains("only in the store"), "{err}");
        }
        assert_eq!(repository_path("docker.io", "alpine"), "library/alpine");
        assert_eq!(repository_path("docker.io", "team/app"), "team/app");
        assert_eq!(repository_path("localhost:5000", "app"), "app");
    }

    #[test]
    fn loopback_and_http() {
        for host in [
            "localhost:5000",
            "127.0.0.1:80",
            "127.9.9.9",
            "[::1]:5000",
            "[::1]",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["10.0.0.1:5000", "example.com", "[::2]:1"] {
            assert!(!is_loopback(host), "{host}");
        }
        let local = Endpoint::resolve("127.0.0.1:5000", true).unwrap();
        assert!(local.allow_http && !local.accept_any_cert);
        let remote = Endpoint::resolve("r.example.com", true).unwrap();
        assert!(!remote.allow_http && !remote.accept_any_cert);
        let unchecked = Endpoint::resolve("r.example.com", false).unwrap();
        assert!(unchecked.allow_http && unchecked.accept_any_cert);
    }
}
