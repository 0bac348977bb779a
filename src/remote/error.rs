//! The registry client's one error type: what went wrong, where, on which object.

use std::fmt;

/// What kind of failure, coarse enough to map to an errno or an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The registry name lives only in the store (`dev`, `prod`), or is malformed.
    StoreOnly,
    /// A name, option or credential file is unusable.
    Config,
    /// The object (manifest, blob, tag, repository) does not exist (404).
    NotFound,
    /// Authentication failed or was refused (401, 403, a token endpoint's refusal).
    Unauthorized,
    /// Too many requests (429) after every retry.
    RateLimited,
    /// A 5xx answer after every retry.
    Server,
    /// Another unexpected HTTP status.
    Status,
    /// No connection could be made (refused, unresolvable, reset before answering).
    Connect,
    /// A TLS failure: bad certificate, handshake.
    Tls,
    /// Connect, first-byte or idle timeout.
    Timeout,
    /// The connection broke while reading or writing a body.
    Transport,
    /// A redirect loop, too many redirects, or a redirect without `Location`.
    Redirect,
    /// The answer breaks the protocol: a missing header, bad JSON, a bad range.
    Protocol,
    /// A body longer or shorter than its declared or expected size, or a manifest
    /// over the 4 MiB limit.
    Size,
    /// Bytes whose digest is not the one asked for or announced.
    Digest,
}

/// One failed registry operation, printed on one line as
/// `REGISTRY/REPOSITORY: OBJECT: PROBLEM`, e.g.
/// `localhost:5000/team/app: blob sha256:ab..: 500 Internal Server Error after 3 tries`.
#[derive(Debug, Clone, thiserror::Error)]
pub struct RemoteError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// The registry and repository (`localhost:5000/team/app`), or only the registry.
    pub scope: String,
    /// The object: `manifest latest`, `blob sha256:...`, `tags`, `token`.
    pub object: String,
    /// The problem in plain words.
    pub problem: String,
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.object.is_empty() {
            write!(f, "{}: {}", self.scope, self.problem)
        } else {
            write!(f, "{}: {}: {}", self.scope, self.object, self.problem)
        }
    }
}

impl RemoteError {
    /// A new error.
    pub fn new(
        kind: ErrorKind,
        scope: impl Into<String>,
        object: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        // One line, whatever a registry put into its message.
        let problem: String = problem.into();
        let problem = problem.split_whitespace().collect::<Vec<_>>().join(" ");
        RemoteError {
            kind,
            scope: scope.into(),
            object: object.into(),
            problem,
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The errno a filesystem read should give for this failure.
    pub fn errno(&self) -> i32 {
        match self.kind {
            ErrorKind::NotFound => libc::ENOENT,
            ErrorKind::Unauthorized => libc::EACCES,
            ErrorKind::Timeout => libc::ETIMEDOUT,
            ErrorKind::StoreOnly | ErrorKind::Config => libc::EINVAL,
            _ => libc::EIO,
        }
    }
}
