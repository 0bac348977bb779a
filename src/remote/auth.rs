//! Who we are to a registry: credentials (explicit, auth.json, Docker's config.json
//! and its helpers), `WWW-Authenticate` challenges, and the per-scope token cache.
//! The HTTP exchange that fetches a token lives in `client`.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::error::{ErrorKind, RemoteError};

/// A username and password, or a Docker identity (refresh) token.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Basic credentials, also sent to a token endpoint.
    UserPassword {
        /// The user name.
        username: String,
        /// The password or access token.
        password: String,
    },
    /// An OAuth2 refresh token from `docker login` (`identitytoken`).
    IdentityToken(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret, even in a debug dump.
        match self {
            Credentials::UserPassword { username, .. } => {
                write!(f, "UserPassword({username:?}, <redacted>)")
            }
            Credentials::IdentityToken(_) => write!(f, "IdentityToken(<redacted>)"),
        }
    }
}

impl Credentials {
    /// Parses `--creds USER[:PASSWORD]`; a missing password is empty (the CLI asks
    /// for it on a terminal before calling this).
    pub fn parse(text: &str) -> Credentials {
        let (username, password) = text.split_once(':').unwrap_or((text, ""));
        Credentials::UserPassword {
            username: username.to_string(),
            password: password.to_string(),
        }
    }

    /// The `Authorization: Basic ...` value, when these are a user and password.
    pub(crate) fn basic_header(&self) -> Option<String> {
        match self {
            Credentials::UserPassword { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            Credentials::IdentityToken(_) => None,
        }
    }
}

/// The credential files searched, in order, after `--creds`: `--authfile`,
/// `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
/// `~/.config/containers/auth.json`, `$DOCKER_CONFIG/config.json` or
/// `~/.docker/config.json`.
pub(crate) fn credential_files(authfile: Option<&Path>) -> Vec<PathBuf> {
    let env_path = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let home = env_path("HOME");
    let mut files = Vec::new();
    files.extend(authfile.map(Path::to_path_buf));
    files.extend(env_path("REGISTRY_AUTH_FILE"));
    files.extend(env_path("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")));
    files.extend(
        home.as_ref()
            .map(|h| h.join(".config/containers/auth.json")),
    );
    match env_path("DOCKER_CONFIG") {
        Some(dir) => files.push(dir.join("config.json")),
        None => files.extend(home.as_ref().map(|h| h.join(".docker/config.json"))),
    }
    files
}

/// The first credentials any of `files` holds for `registry` (its name as
/// references spell it), running a credential helper if the file names one. A
/// missing file is skipped; an unreadable one, or a failing helper, is an error.
pub(crate) fn lookup_credentials(
    files: &[PathBuf],
    registry: &str,
) -> Result<Option<Credentials>, RemoteError> {
    use docker_credential::{CredentialRetrievalError as E, DockerCredential};
    // Docker Hub is keyed by its v1 URL in Docker's files and by `docker.io` in
    // containers' auth.json.
    let keys: Vec<&str> = if registry == super::name::DOCKER_HUB {
        vec![
            "docker.io",
            "https://index.docker.io/v1/",
            "index.docker.io",
        ]
    } else {
        vec![registry]
    };
    for file in files {
        let Ok(opened) = File::open(file) else {
            continue;
        };
        let text = std::io::read_to_string(BufReader::new(opened)).map_err(|e| {
            RemoteError::new(
                ErrorKind::Config,
                registry,
                "credentials",
                format!("{}: {e}", file.display()),
            )
        })?;
        for key in &keys {
            match docker_credential::get_credential_from_reader(text.as_bytes(), key) {
                Ok(DockerCredential::UsernamePassword(username, password)) => {
                    return Ok(Some(Credentials::UserPassword { username, password }))
                }
                Ok(DockerCredential::IdentityToken(token)) => {
                    return Ok(Some(Credentials::IdentityToken(token)))
                }
                Err(E::NoCredentialConfigured) => continue,
                Err(e) => {
                    let e = match e {
                        E::HelperFailure { helper, stderr, .. } => {
                            format!("credential helper docker-credential-{helper} failed: {stderr}")
                        }
                        other => other.to_string(),
                    };
                    return Err(RemoteError::new(
                        ErrorKind::Config,
                        registry,
                        "credentials",
                        format!("{}: {e}", file.display()),
                    ));
                }
            }
        }
    }
    Ok(None)
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// `Basic realm=...`.
    Basic,
    /// `Bearer realm=...,service=...,scope=...`.
    Bearer {
        /// The token endpoint.
        realm: String,
        /// The `service` parameter, if any.
        service: Option<String>,
        /// The scope the server asked for, if any.
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` value; `None` for schemes we do not speak.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header
        .split_once(char::is_whitespace)
        .unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest);
    Some(Challenge::Bearer {
        realm: params.get("realm")?.clone(),
        service: params.get("service").cloned(),
        scope: params.get("scope").cloned(),
    })
}

/// `key="value", key=value` pairs; quoted values may hold commas (`scope` does).
fn parse_params(text: &str) -> HashMap<String, String> {
    let mut params = HashMap::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remainder) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end.min(quoted.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.insert(key, value);
        rest = remainder.trim_start().trim_start_matches(',').trim_start();
    }
    params
}

/// A token and when to stop using it.
#[derive(Debug, Clone)]
struct CachedToken {
    token: String,
    renew_at: Instant,
}

/// Bearer tokens by scope, for one registry.
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    tokens: HashMap<String, CachedToken>,
}

impl TokenCache {
    /// A token for `scope` that is not due for renewal.
    pub(crate) fn get(&self, scope: &str) -> Option<String> {
        self.tokens
            .get(scope)
            .filter(|t| Instant::now() < t.renew_at)
            .map(|t| t.token.clone())
    }

    /// Keeps `token` for `scope`, renewing it well before `expires_in` runs out.
    pub(crate) fn put(&mut self, scope: &str, token: String, expires_in: Duration) {
        // Renew at 90% of the lifetime, and at least 5 s early for long ones, so that
        // a request started just before expiry does not arrive with a dead token.
        let early = (expires_in / 10).max(Duration::from_secs(5).min(expires_in / 2));
        let renew_at = Instant::now() + expires_in.saturating_sub(early);
        self.tokens
            .insert(scope.to_string(), CachedToken { token, renew_at });
    }

    /// Forgets the token for `scope` (the registry refused it).
    pub(crate) fn forget(&mut self, scope: &str) {
        self.tokens.remove(scope);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge("Basic realm=\"Registry Realm\""),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                "Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\",scope=\"repository:library/alpine:pull,push\""
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge("bearer realm=http://x/t, error=\"insufficient_scope\""),
            Some(Challenge::Bearer {
                realm: "http://x/t".into(),
                service: None,
                scope: None
            })
        );
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
    }

    #[test]
    fn creds_and_files() {
        assert_eq!(
            Credentials::parse("me:pa:ss"),
            Credentials::UserPassword {
                username: "me".into(),
                password: "pa:ss".into()
            }
        );
        assert_eq!(
            format!("{:?}", Credentials::parse("me:secret")),
            "UserPassword(\"me\", <redacted>)"
        );
        let dir = tempfile::tempdir().unwrap();
        let auth = dir.path().join("auth.json");
        let encoded = base64::engine::general_purpose::STANDARD.encode("alice:wonder");
        std::fs::write(
            &auth,
            format!(r#"{{"auths":{{"localhost:5000":{{"auth":"{encoded}"}}}}}}"#),
        )
        .unwrap();
        let missing = dir.path().join("missing.json");
        let files = vec![missing, auth];
        assert_eq!(
            lookup_credentials(&files, "localhost:5000").unwrap(),
            Some(Credentials::parse("alice:wonder"))
        );
        assert_eq!(lookup_credentials(&files, "other:5000").unwrap(), None);
    }

    #[test]
    fn token_renewal() {
        let mut cache = TokenCache::default();
        cache.put("a", "t".into(), Duration::from_secs(60));
        assert_eq!(cache.get("a").as_deref(), Some("t"));
        cache.put("b", "t".into(), Duration::ZERO);
        assert_eq!(cache.get("b"), None);
        cache.forget("a");
        assert_eq!(cache.get("a"), None);
    }
}
