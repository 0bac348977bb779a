//! The HTTP side of the distribution API: one [`Client`] per registry, shared by
//! threads. Each request goes through [`Client::execute`]: the scheme chosen at the
//! first ping, `Authorization` for the request's scope (Basic, or a cached Bearer
//! token), redirects followed here (never carrying `Authorization` to another host),
//! bounded retries with backoff, and one error line naming registry, object and
//! problem.

use std::collections::HashSet;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ureq::http::{self, HeaderMap, Method, StatusCode};
use ureq::tls::{Certificate, RootCerts, TlsConfig};
use ureq::{Agent, SendBody};

use super::auth::{self, Challenge, Credentials, TokenCache};
use super::error::{ErrorKind, RemoteError};
use super::name::{repository_path, Endpoint};
use crate::digest::Digest;
use crate::image::media_types;

/// The largest manifest or index accepted (4 MiB), as the distribution spec and
/// containerd do.
pub const MAX_MANIFEST_SIZE: u64 = crate::image::MAX_JSON_SIZE as u64;

/// The `Accept` list for manifest requests. distribution 2.8 answers 404 to a GET of
/// an OCI manifest whose `Accept` lacks the OCI type, so all four are always sent.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

/// How many redirects one request may follow.
const MAX_REDIRECTS: usize = 10;
/// The largest error body read to find the registry's message.
const MAX_ERROR_BODY: u64 = 16 * 1024;
/// The largest token response or tag page accepted.
const MAX_SMALL_JSON: u64 = 4 * 1024 * 1024;

/// How to reach a registry: credentials, TLS, timeouts, retries.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--creds`: used before any credential file.
    pub credentials: Option<Credentials>,
    /// `--authfile`: searched before the default credential files.
    pub authfile: Option<PathBuf>,
    /// Do not read credential files at all (tests, or `--creds` only).
    pub no_credential_files: bool,
    /// `false` allows plain HTTP and accepts any certificate.
    pub tls_verify: bool,
    /// Extra trusted CA certificates (PEM), beside the system roots.
    pub ca_file: Option<PathBuf>,
    /// How long a TCP connect (and TLS handshake) may take.
    pub connect_timeout: Duration,
    /// How long to wait for the response headers after sending a request.
    pub response_timeout: Duration,
    /// How long a body may stall between two reads.
    pub idle_timeout: Duration,
    /// Tries per request for 429, 5xx and dropped connections (at least 1).
    pub max_tries: u32,
    /// The first backoff between tries; it doubles each time.
    pub retry_backoff: Duration,
    /// The longest wait between tries, `Retry-After` included.
    pub max_retry_wait: Duration,
    /// Blobs up to this size are uploaded in one PUT; bigger ones in PATCH chunks.
    pub monolithic_limit: u64,
    /// The size of each PATCH chunk.
    pub chunk_size: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            credentials: None,
            authfile: None,
            no_credential_files: false,
            tls_verify: true,
            ca_file: None,
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            max_tries: 3,
            retry_backoff: Duration::from_millis(250),
            max_retry_wait: Duration::from_secs(10),
            monolithic_limit: 64 * 1024 * 1024,
            chunk_size: 16 * 1024 * 1024,
        }
    }
}

/// A manifest or index as the registry served it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedManifest {
    /// The exact bytes (their digest is the manifest's digest).
    pub bytes: Vec<u8>,
    /// The `Content-Type` the registry gave, or the `mediaType` inside the JSON.
    pub media_type: String,
    /// The digest of `bytes`.
    pub digest: Digest,
}

/// What a HEAD of a blob or manifest says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// `Content-Length`.
    pub size: Option<u64>,
    /// `Docker-Content-Digest`, when given and valid.
    pub digest: Option<Digest>,
    /// `Content-Type`, when given.
    pub media_type: Option<String>,
}

/// What a cross-repository mount did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOutcome {
    /// 201: the blob is now in the target repository.
    Mounted,
    /// 202: the registry started an upload instead (the caller uploads).
    NotMounted,
}

/// What a manifest `PUT` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutManifest {
    /// The digest of the bytes sent (checked against the registry's answer).
    pub digest: Digest,
    /// The registry answered with `OCI-Subject`: it lists the manifest among its
    /// subject's referrers itself.
    pub subject_indexed: bool,
}

/// One page of a tag list, and the next page's URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagList {
    /// The tags (`"tags": null` reads as none).
    pub tags: Vec<String>,
}

/// Which access a request needs; it picks the Bearer token's scope.
#[derive(Debug, Clone)]
enum Access<'a> {
    /// `repository:REPO:pull`.
    Pull(&'a str),
    /// `repository:REPO:pull,push`.
    Push(&'a str),
    /// push on REPO and pull on FROM.
    Mount(&'a str, &'a str),
}

impl Access<'_> {
    fn scopes(&self) -> Vec<String> {
        match self {
            Access::Pull(repo) => vec![format!("repository:{repo}:pull")],
            Access::Push(repo) => vec![format!("repository:{repo}:pull,push")],
            Access::Mount(repo, from) => vec![
                format!("repository:{repo}:pull,push"),
                format!("repository:{from}:pull"),
            ],
        }
    }
}

/// A request body.
enum Body<'a> {
    None,
    /// In memory: can be sent again on a retry.
    Bytes(&'a [u8]),
    /// A stream (its length is in the request's `Content-Length`): sent once, never
    /// retried after it started.
    Reader(&'a mut (dyn Read + Send)),
}

/// One request to the registry.
struct Request<'a> {
    method: Method,
    /// A path under the registry (`/v2/...`) or an absolute URL (upload locations).
    target: String,
    headers: Vec<(&'static str, String)>,
    body: Body<'a>,
    access: Access<'a>,
    /// For errors: `scope` and `object` of the error line.
    scope: String,
    object: String,
}

/// Mutable per-registry state shared by the client's threads.
#[derive(Debug, Default)]
struct State {
    /// `https://host` or `http://host`, chosen by the first ping.
    base: Option<String>,
    /// What the registry asked for at the ping or a later 401.
    challenge: Option<Challenge>,
    tokens: TokenCache,
}

/// A blocking client for one registry. Cheap to share between threads (`&Client`).
pub struct Client {
    endpoint: Endpoint,
    options: Options,
    agent: Agent,
    credentials: Option<Credentials>,
    state: Mutex<State>,
    token_fetches: AtomicU64,
    bytes_fetched: Arc<AtomicU64>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `registry` (as references spell it: `docker.io`,
    /// `localhost:5000`). Credentials are looked up now; nothing is sent yet.
    pub fn new(registry: &str, options: &Options) -> Result<Client, RemoteError> {
        let endpoint = Endpoint::resolve(registry, options.tls_verify)?;
        let credentials = match &options.credentials {
            Some(creds) => Some(creds.clone()),
            None if options.no_credential_files => None,
            None => {
                let files = auth::credential_files(options.authfile.as_deref());
                auth::lookup_credentials(&files, registry)?
            }
        };
        let tls = tls_config(&endpoint, options)?;
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .tls_config(tls)
            .timeout_connect(Some(options.connect_timeout))
            .timeout_recv_response(Some(options.response_timeout))
            .timeout_per_read(Some(options.idle_timeout))
            .timeout_per_write(Some(options.idle_timeout))
            .user_agent(concat!("imagefs/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(Client {
            endpoint,
            options: options.clone(),
            agent,
            credentials,
            state: Mutex::new(State::default()),
            token_fetches: AtomicU64::new(0),
            bytes_fetched: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The registry this client talks to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// How many tokens were fetched from a token endpoint so far.
    pub fn token_fetches(&self) -> u64 {
        self.token_fetches.load(Ordering::Relaxed)
    }

    /// Blob and range body bytes read so far (for `--json` reports).
    pub fn bytes_fetched(&self) -> u64 {
        self.bytes_fetched.load(Ordering::Relaxed)
    }

    /// `registry/repository` for error lines.
    fn scope(&self, repository: &str) -> String {
        format!("{}/{}", self.endpoint.name, repository)
    }

    /// The repository path on the wire (`library/` for Docker Hub's short names).
    fn repo(&self, repository: &str) -> String {
        repository_path(&self.endpoint.name, repository)
    }

    // ---- operations -------------------------------------------------------------

    /// GETs a manifest or index by tag or digest (`reference` is either), capped at
    /// 4 MiB. Asked by digest, the bytes must hash to it; a `Docker-Content-Digest`
    /// answer must match the bytes too.
    pub fn get_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<FetchedManifest, RemoteError> {
        let repo = self.repo(repository);
        let object = format!("manifest {reference}");
        let err = |kind, problem: String| {
            RemoteError::new(kind, self.scope(repository), &object, problem)
        };
        let response = self.execute(Request {
            method: Method::GET,
            target: format!("/v2/{repo}/manifests/{reference}"),
            headers: vec![("Accept", MANIFEST_ACCEPT.to_string())],
            body: Body::None,
            access: Access::Pull(&repo),
            scope: self.scope(repository),
            object: object.clone(),
        })?;
        let response = self.expect_status(response, &[StatusCode::OK], repository, &object)?;
        let headers = response.headers().clone();
        if let Some(length) = content_length(&headers) {
            if length > MAX_MANIFEST_SIZE {
                return Err(err(
                    ErrorKind::Size,
                    format!("manifest is {length} bytes, more than the 4 MiB limit"),
                ));
            }
        }
        let mut bytes = Vec::new();
        let mut limited = response
            .into_body()
            .into_reader()
            .take(MAX_MANIFEST_SIZE + 1);
        limited
            .read_to_end(&mut bytes)
            .map_err(|e| self.body_error(&e, repository, &object))?;
        if bytes.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(err(
                ErrorKind::Size,
                "manifest is more than the 4 MiB limit".to_string(),
            ));
        }
        let digest = Digest::of(&bytes);
        if let Ok(asked) = Digest::parse(reference) {
            if asked != digest {
                return Err(err(
                    ErrorKind::Digest,
                    format!("the registry sent bytes whose digest is {digest}"),
                ));
            }
        }
        if let Some(announced) = header_str(&headers, "docker-content-digest") {
            // Only sha256 is checked; another algorithm is not ours to verify.
            if let Ok(announced) = Digest::parse(announced) {
                if announced != digest {
                    return Err(err(
                        ErrorKind::Digest,
                        format!(
                            "Docker-Content-Digest says {announced} but the bytes are {digest}"
                        ),
                    ));
                }
            }
        }
        let media_type = header_str(&headers, "content-type")
            .map(|t| t.split(';').next().unwrap_or(t).trim().to_string())
            .filter(|t| is_manifest_type(t))
            .or_else(|| media_type_in_json(&bytes))
            .ok_or_else(|| {
                err(
                    ErrorKind::Protocol,
                    "the manifest has no known media type".to_string(),
                )
            })?;
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// HEADs a manifest by tag or digest: `None` when it does not exist.
    pub fn head_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<BlobInfo>, RemoteError> {
        let repo = self.repo(repository);
        self.head(
            repository,
            format!("/v2/{repo}/manifests/{reference}"),
            format!("manifest {reference}"),
            &repo,
            Some(MANIFEST_ACCEPT),
        )
    }

    /// HEADs a blob: `None` when the repository lacks it.
    pub fn head_blob(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<Option<BlobInfo>, RemoteError> {
        let repo = self.repo(repository);
        self.head(
            repository,
            format!("/v2/{repo}/blobs/{digest}"),
            format!("blob {digest}"),
            &repo,
            None,
        )
    }

    fn head(
        &self,
        repository: &str,
        target: String,
        object: String,
        repo: &str,
        accept: Option<&str>,
    ) -> Result<Option<BlobInfo>, RemoteError> {
        let response = self.execute(Request {
            method: Method::HEAD,
            target,
            headers: accept
                .map(|a| ("Accept", a.to_string()))
                .into_iter()
                .collect(),
            body: Body::None,
            access: Access::Pull(repo),
            scope: self.scope(repository),
            object: object.clone(),
        })?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = self.expect_status(response, &[StatusCode::OK], repository, &object)?;
        let headers = response.headers();
        Ok(Some(BlobInfo {
            size: content_length(headers),
            digest: header_str(headers, "docker-content-digest")
                .and_then(|d| Digest::parse(d).ok()),
            media_type: header_str(headers, "content-type").map(str::to_string),
        }))
    }

    /// GETs a blob as a stream. `expected_size` (the descriptor's) makes the
    /// reader fail on a body longer or shorter than that; the caller hashes.
    pub fn get_blob(
        &self,
        repository: &str,
        digest: &Digest,
        expected_size: Option<u64>,
    ) -> Result<BlobReader, RemoteError> {
        let repo = self.repo(repository);
        let object = format!("blob {digest}");
        let response = self.execute(Request {
            method: Method::GET,
            target: format!("/v2/{repo}/blobs/{digest}"),
            headers: Vec::new(),
            body: Body::None,
            access: Access::Pull(&repo),
            scope: self.scope(repository),
            object: object.clone(),
        })?;
        let response = self.expect_status(response, &[StatusCode::OK], repository, &object)?;
        let length = content_length(response.headers());
        if let (Some(length), Some(expected)) = (length, expected_size) {
            if length != expected {
                return Err(RemoteError::new(
                    ErrorKind::Size,
                    self.scope(repository),
                    &object,
                    format!(
                        "the registry announces {length} bytes but the descriptor says {expected}"
                    ),
                ));
            }
        }
        Ok(self.blob_reader(response, expected_size.or(length), repository, object))
    }

    /// GETs bytes `start..=end` of a blob (`Range: bytes=start-end`). The answer must
    /// be a 206 whose `Content-Range` is that range; a 200 with the whole blob, a 416
    /// (whose `Content-Length` is the whole blob's in distribution 2.8) or another
    /// range are refused, so the caller can fall back to a full fetch.
    pub fn get_blob_range(
        &self,
        repository: &str,
        digest: &Digest,
        start: u64,
        end: u64,
    ) -> Result<BlobReader, RemoteError> {
        let repo = self.repo(repository);
        let object = format!("blob {digest} bytes {start}-{end}");
        let err = |kind, problem: String| {
            RemoteError::new(kind, self.scope(repository), &object, problem)
        };
        if end < start {
            return Err(err(ErrorKind::Config, "empty range".to_string()));
        }
        let response = self.execute(Request {
            method: Method::GET,
            target: format!("/v2/{repo}/blobs/{digest}"),
            headers: vec![("Range", format!("bytes={start}-{end}"))],
            body: Body::None,
            access: Access::Pull(&repo),
            scope: self.scope(repository),
            object: object.clone(),
        })?;
        match response.status() {
            StatusCode::PARTIAL_CONTENT => {}
            StatusCode::OK => {
                return Err(err(
                    ErrorKind::Protocol,
                    "the registry ignored the Range header (200, whole blob)".to_string(),
                ))
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                return Err(err(
                    ErrorKind::Size,
                    "416 Range Not Satisfiable: the range is beyond the blob".to_string(),
                ))
            }
            _ => {
                self.expect_status(
                    response,
                    &[StatusCode::PARTIAL_CONTENT],
                    repository,
                    &object,
                )?;
                unreachable!("expect_status refuses every status but 206 here");
            }
        }
        let content_range = header_str(response.headers(), "content-range").unwrap_or("");
        let expected_range = format!("bytes {start}-{end}/");
        if !content_range.starts_with(&expected_range) {
            return Err(err(
                ErrorKind::Protocol,
                format!("asked for bytes {start}-{end} but Content-Range is {content_range:?}"),
            ));
        }
        let length = end - start + 1;
        if let Some(announced) = content_length(response.headers()) {
            if announced != length {
                return Err(err(
                    ErrorKind::Size,
                    format!("Content-Length {announced} for a {length}-byte range"),
                ));
            }
        }
        Ok(self.blob_reader(response, Some(length), repository, object))
    }

    /// The body of a blob or range answer as a [`BlobReader`] that must yield
    /// `expected` bytes (when known), counts them, and names `object` in errors.
    fn blob_reader(
        &self,
        response: http::Response<ureq::Body>,
        expected: Option<u64>,
        repository: &str,
        object: String,
    ) -> BlobReader {
        BlobReader::new(
            response.into_body().into_reader(),
            expected,
            RemoteError::new(ErrorKind::Transport, self.scope(repository), object, ""),
            self.bytes_fetched.clone(),
            &self.options,
        )
    }

    /// Asks the registry to mount `digest` from repository `from` into
    /// `repository`: `Mounted` (201), or `NotMounted` (202: the upload the registry
    /// opened instead is left to expire; the caller uploads with [`Self::push_blob`]).
    pub fn mount_blob(
        &self,
        repository: &str,
        digest: &Digest,
        from: &str,
    ) -> Result<MountOutcome, RemoteError> {
        let repo = self.repo(repository);
        let from = self.repo(from);
        let object = format!("blob {digest} (mount from {from})");
        let response = self.execute(Request {
            method: Method::POST,
            target: format!(
                "/v2/{repo}/blobs/uploads/?mount={digest}&from={}",
                query_escape(&from)
            ),
            headers: vec![("Content-Length", "0".to_string())],
            body: Body::Bytes(&[]),
            access: Access::Mount(&repo, &from),
            scope: self.scope(repository),
            object: object.clone(),
        })?;
        let response = self.expect_status(
            response,
            &[StatusCode::CREATED, StatusCode::ACCEPTED],
            repository,
            &object,
        )?;
        Ok(if response.status() == StatusCode::CREATED {
            MountOutcome::Mounted
        } else {
            MountOutcome::NotMounted
        })
    }

    /// Uploads a blob of `size` bytes read from `data`: one PUT up to
    /// `monolithic_limit`, PATCH chunks above it. `data` is read exactly `size`
    /// bytes; the registry checks the digest.
    pub fn push_blob(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
        data: &mut (dyn Read + Send),
    ) -> Result<(), RemoteError> {
        let repo = self.repo(repository);
        let object = format!("blob {digest}");
        let scope = self.scope(repository);
        let err = |kind, problem: String| RemoteError::new(kind, &scope, &object, problem);
        let start = self.execute(Request {
            method: Method::POST,
            target: format!("/v2/{repo}/blobs/uploads/"),
            headers: vec![("Content-Length", "0".to_string())],
            body: Body::Bytes(&[]),
            access: Access::Push(&repo),
            scope: scope.clone(),
            object: object.clone(),
        })?;
        let start = self.expect_status(start, &[StatusCode::ACCEPTED], repository, &object)?;
        let mut location = self.upload_location(start.headers(), repository, &object)?;
        let mut exact = ExactReader {
            inner: data,
            left: size,
        };
        if size > self.options.monolithic_limit {
            let mut sent = 0u64;
            let mut chunk = vec![0u8; self.options.chunk_size.max(1)];
            while sent < size {
                let want = (size - sent).min(chunk.len() as u64) as usize;
                exact.read_exact(&mut chunk[..want]).map_err(|e| {
                    err(ErrorKind::Size, format!("reading the blob to upload: {e}"))
                })?;
                let response = self.execute(Request {
                    method: Method::PATCH,
                    target: location.clone(),
                    headers: vec![
                        ("Content-Type", "application/octet-stream".to_string()),
                        (
                            "Content-Range",
                            format!("{sent}-{}", sent + want as u64 - 1),
                        ),
                        ("Content-Length", want.to_string()),
                    ],
                    body: Body::Bytes(&chunk[..want]),
                    access: Access::Push(&repo),
                    scope: scope.clone(),
                    object: object.clone(),
                })?;
                let response =
                    self.expect_status(response, &[StatusCode::ACCEPTED], repository, &object)?;
                location = self.upload_location(response.headers(), repository, &object)?;
                sent += want as u64;
            }
            let response = self.execute(Request {
                method: Method::PUT,
                target: with_query(&location, &format!("digest={digest}")),
                headers: vec![("Content-Length", "0".to_string())],
                body: Body::Bytes(&[]),
                access: Access::Push(&repo),
                scope: scope.clone(),
                object: object.clone(),
            })?;
            self.expect_status(response, &[StatusCode::CREATED], repository, &object)?;
            return Ok(());
        }
        let response = self.execute(Request {
            method: Method::PUT,
            target: with_query(&location, &format!("digest={digest}")),
            headers: vec![
                ("Content-Type", "application/octet-stream".to_string()),
                ("Content-Length", size.to_string()),
            ],
            body: Body::Reader(&mut exact),
            access: Access::Push(&repo),
            scope: scope.clone(),
            object: object.clone(),
        })?;
        self.expect_status(response, &[StatusCode::CREATED], repository, &object)?;
        Ok(())
    }

    /// Uploads an in-memory blob (a config, a small layer): one POST and one PUT,
    /// retried as a whole on failure.
    pub fn push_blob_bytes(
        &self,
        repository: &str,
        digest: &Digest,
        bytes: &[u8],
    ) -> Result<(), RemoteError> {
        let mut reader: &[u8] = bytes;
        self.push_blob(repository, digest, bytes.len() as u64, &mut reader)
    }

    /// PUTs a manifest or index under `reference` (a tag or its digest) with its
    /// `Content-Type` and exactly these bytes. Returns the digest the registry
    /// reports, checked against the bytes.
    pub fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest, RemoteError> {
        self.put_manifest_with_subject(repository, reference, media_type, bytes)
            .map(|put| put.digest)
    }

    /// [`Client::put_manifest`], also telling whether the registry answered with
    /// `OCI-Subject` (OCI distribution 1.1: it indexed the manifest's `subject` in
    /// its referrers API, so the `sha256-<hex>` tag fallback is not needed).
    pub fn put_manifest_with_subject(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<PutManifest, RemoteError> {
        let repo = self.repo(repository);
        let object = format!("manifest {reference}");
        let response = self.execute(Request {
            method: Method::PUT,
            target: format!("/v2/{repo}/manifests/{reference}"),
            headers: vec![
                ("Content-Type", media_type.to_string()),
                ("Content-Length", bytes.len().to_string()),
            ],
            body: Body::Bytes(bytes),
            access: Access::Push(&repo),
            scope: self.scope(repository),
            object: object.clone(),
        })?;
        let response = self.expect_status(
            response,
            &[StatusCode::CREATED, StatusCode::OK],
            repository,
            &object,
        )?;
        let digest = Digest::of(bytes);
        if let Some(announced) = header_str(response.headers(), "docker-content-digest")
            .and_then(|d| Digest::parse(d).ok())
        {
            if announced != digest {
                return Err(RemoteError::new(
                    ErrorKind::Digest,
                    self.scope(repository),
                    object,
                    format!("the registry stored it as {announced} but the bytes are {digest}"),
                ));
            }
        }
        let subject_indexed = header_str(response.headers(), "oci-subject").is_some();
        Ok(PutManifest {
            digest,
            subject_indexed,
        })
    }

    /// Every tag of a repository, following `Link: <...>; rel="next"` pages. `page`
    /// asks for that many tags per page (`?n=`), or the registry's default.
    pub fn list_tags(&self, repository: &str, page: Option<usize>) -> Result<TagList, RemoteError> {
        let repo = self.repo(repository);
        let object = "tags".to_string();
        let mut target = match page {
            Some(n) => format!("/v2/{repo}/tags/list?n={n}"),
            None => format!("/v2/{repo}/tags/list"),
        };
        let mut tags = Vec::new();
        let mut seen = HashSet::new();
        // A registry that keeps answering with new "next" links is cut off.
        for _ in 0..10_000 {
            if !seen.insert(target.clone()) {
                return Err(RemoteError::new(
                    ErrorKind::Protocol,
                    self.scope(repository),
                    object,
                    "the tag pages link in a loop",
                ));
            }
            let response = self.execute(Request {
                method: Method::GET,
                target: target.clone(),
                headers: vec![("Accept", "application/json".to_string())],
                body: Body::None,
                access: Access::Pull(&repo),
                scope: self.scope(repository),
                object: object.clone(),
            })?;
            let response = self.expect_status(response, &[StatusCode::OK], repository, &object)?;
            let next = header_str(response.headers(), "link").and_then(next_link);
            #[derive(serde::Deserialize)]
            struct Page {
                tags: Option<Vec<String>>,
            }
            let body = self.read_small(response, repository, &object)?;
            let page: Page = serde_json::from_slice(&body).map_err(|e| {
                RemoteError::new(
                    ErrorKind::Protocol,
                    self.scope(repository),
                    &object,
                    format!("bad tag list JSON: {e}"),
                )
            })?;
            tags.extend(page.tags.unwrap_or_default());
            match next {
                Some(next) => target = next,
                None => return Ok(TagList { tags }),
            }
        }
        Err(RemoteError::new(
            ErrorKind::Protocol,
            self.scope(repository),
            object,
            "more than 10000 tag pages",
        ))
    }

    /// The referrers of a manifest, as an OCI index: from the referrers API
    /// (`/v2/<name>/referrers/<digest>`) or, where the registry has none (404, as
    /// distribution 2.8), from the `sha256-<hex>` tag fallback. `None` when neither
    /// exists.
    pub fn referrers(
        &self,
        repository: &str,
        subject: &Digest,
    ) -> Result<Option<FetchedManifest>, RemoteError> {
        let repo = self.repo(repository);
        let object = format!("referrers of {subject}");
        let response = self.execute(Request {
            method: Method::GET,
            target: format!("/v2/{repo}/referrers/{subject}"),
            headers: vec![("Accept", media_types::OCI_INDEX.to_string())],
            body: Body::None,
            access: Access::Pull(&repo),
            scope: self.scope(repository),
            object: object.clone(),
        })?;
        let is_index = header_str(response.headers(), "content-type")
            .is_some_and(|t| t.starts_with(media_types::OCI_INDEX));
        if response.status() == StatusCode::OK && is_index {
            let bytes = self.read_small(response, repository, &object)?;
            if bytes.len() as u64 > MAX_MANIFEST_SIZE {
                return Err(RemoteError::new(
                    ErrorKind::Size,
                    self.scope(repository),
                    object,
                    "referrers index over 4 MiB",
                ));
            }
            let digest = Digest::of(&bytes);
            return Ok(Some(FetchedManifest {
                bytes,
                media_type: media_types::OCI_INDEX.to_string(),
                digest,
            }));
        }
        if response.status() != StatusCode::NOT_FOUND && response.status() != StatusCode::OK {
            self.expect_status(response, &[StatusCode::OK], repository, &object)?;
        }
        match self.get_manifest(repository, &referrers_tag(subject)) {
            Ok(index) => Ok(Some(index)),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes a manifest by digest (tests and `--no-index` cleanups).
    pub fn delete_manifest(&self, repository: &str, digest: &Digest) -> Result<(), RemoteError> {
        let repo = self.repo(repository);
        let object = format!("manifest {digest}");
        let response = self.execute(Request {
            method: Method::DELETE,
            target: format!("/v2/{repo}/manifests/{digest}"),
            headers: Vec::new(),
            body: Body::None,
            access: Access::Push(&repo),
            scope: self.scope(repository),
            object: object.clone(),
        })?;
        self.expect_status(
            response,
            &[StatusCode::ACCEPTED, StatusCode::OK],
            repository,
            &object,
        )?;
        Ok(())
    }

    // ---- plumbing ---------------------------------------------------------------

    /// Reads a small JSON body (tag pages, referrers), capped.
    fn read_small(
        &self,
        response: http::Response<ureq::Body>,
        repository: &str,
        object: &str,
    ) -> Result<Vec<u8>, RemoteError> {
        let mut bytes = Vec::new();
        response
            .into_body()
            .into_reader()
            .take(MAX_SMALL_JSON + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.body_error(&e, repository, object))?;
        if bytes.len() as u64 > MAX_SMALL_JSON {
            return Err(RemoteError::new(
                ErrorKind::Size,
                self.scope(repository),
                object,
                "answer over 4 MiB",
            ));
        }
        Ok(bytes)
    }

    /// The error for a failed body read.
    fn body_error(&self, error: &io::Error, repository: &str, object: &str) -> RemoteError {
        let (kind, problem) = describe_io(error, &self.options);
        RemoteError::new(kind, self.scope(repository), object, problem)
    }

    /// An upload's `Location`, made absolute.
    fn upload_location(
        &self,
        headers: &HeaderMap,
        repository: &str,
        object: &str,
    ) -> Result<String, RemoteError> {
        let location = header_str(headers, "location").ok_or_else(|| {
            RemoteError::new(
                ErrorKind::Protocol,
                self.scope(repository),
                object,
                "upload answer without Location",
            )
        })?;
        let base = self.base()?;
        Ok(resolve_url(&format!("{base}/v2/"), location))
    }

    /// Passes a response whose status is one of `ok`, or turns it into the error
    /// line with the registry's own message (`errors[0].message` of its JSON body).
    fn expect_status(
        &self,
        response: http::Response<ureq::Body>,
        ok: &[StatusCode],
        repository: &str,
        object: &str,
    ) -> Result<http::Response<ureq::Body>, RemoteError> {
        let status = response.status();
        if ok.contains(&status) {
            return Ok(response);
        }
        let kind = match status.as_u16() {
            404 => ErrorKind::NotFound,
            401 | 403 => ErrorKind::Unauthorized,
            429 => ErrorKind::RateLimited,
            500..=599 => ErrorKind::Server,
            _ => ErrorKind::Status,
        };
        let mut body = Vec::new();
        // The message is a courtesy: a body that fails to arrive does not matter.
        let _ = response
            .into_body()
            .into_reader()
            .take(MAX_ERROR_BODY)
            .read_to_end(&mut body);
        let message = registry_message(&body);
        let problem = match message {
            Some(message) => format!("{} ({message})", status_text(status)),
            None => status_text(status),
        };
        Err(RemoteError::new(
            kind,
            self.scope(repository),
            object,
            problem,
        ))
    }

    /// The base URL (`https://host`), pinging `/v2/` the first time: HTTPS, and
    /// plain HTTP only where allowed and HTTPS did not connect. The ping's 401
    /// tells which authentication the registry wants.
    fn base(&self) -> Result<String, RemoteError> {
        if let Some(base) = &self.lock().base {
            return Ok(base.clone());
        }
        let host = &self.endpoint.host;
        let https = format!("https://{host}");
        let tries = self.options.max_tries;
        // Where plain HTTP is allowed, a plain server answers the TLS probe with
        // garbage at once: one try only, so that a loopback registry costs no backoff.
        let probe_tries = if self.endpoint.allow_http { 1 } else { tries };
        let chosen = match self.ping(&https, probe_tries) {
            Ok(challenge) => (https, challenge),
            Err(https_error)
                if self.endpoint.allow_http && https_error.kind != ErrorKind::Timeout =>
            {
                let http = format!("http://{host}");
                match self.ping(&http, tries) {
                    Ok(challenge) => (http, challenge),
                    // A TLS server answers plain HTTP with 400 (an error of the ping):
                    // the HTTPS error is the real one, worth its retries now.
                    Err(_) => match self.ping(&https, tries) {
                        Ok(challenge) => (https, challenge),
                        Err(e) => return Err(e),
                    },
                }
            }
            Err(e) => return Err(e),
        };
        let mut state = self.lock();
        state.base = Some(chosen.0.clone());
        if state.challenge.is_none() {
            state.challenge = chosen.1;
        }
        Ok(chosen.0)
    }

    /// GET `base/v2/`: any HTTP answer means the scheme works; a 401 brings the
    /// challenge. A TLS server's 400 to plain HTTP is an error here.
    fn ping(&self, base: &str, max_tries: u32) -> Result<Option<Challenge>, RemoteError> {
        let url = format!("{base}/v2/");
        let registry = self.endpoint.name.clone();
        let mut tries = 0;
        loop {
            tries += 1;
            let request = http::Request::get(&url)
                .body(())
                .expect("a GET of a valid URL builds");
            match self.agent.run(request) {
                Ok(response) => {
                    let status = response.status();
                    if status.is_server_error() && tries < max_tries {
                        std::thread::sleep(self.backoff(tries, None));
                        continue;
                    }
                    if status == StatusCode::BAD_REQUEST {
                        return Err(RemoteError::new(
                            ErrorKind::Protocol,
                            registry,
                            "",
                            format!("{url}: 400 Bad Request"),
                        ));
                    }
                    if status.is_server_error() {
                        return Err(RemoteError::new(
                            ErrorKind::Server,
                            registry,
                            "",
                            format!("{url}: {} after {tries} tries", status_text(status)),
                        ));
                    }
                    let challenge = if status == StatusCode::UNAUTHORIZED {
                        response
                            .headers()
                            .get_all("www-authenticate")
                            .iter()
                            .filter_map(|v| v.to_str().ok())
                            .find_map(auth::parse_challenge)
                    } else {
                        None
                    };
                    return Ok(challenge);
                }
                Err(e) => {
                    let (kind, problem, retry) = describe_ureq(&e, &self.options, true);
                    if retry && tries < max_tries {
                        std::thread::sleep(self.backoff(tries, None));
                        continue;
                    }
                    let suffix = if tries > 1 {
                        format!(" after {tries} tries")
                    } else {
                        String::new()
                    };
                    return Err(RemoteError::new(
                        kind,
                        registry,
                        "",
                        format!("{url}: {problem}{suffix}"),
                    ));
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves a usable cache.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The wait before try `tries + 1`: exponential backoff, or `Retry-After`
    /// (seconds), both capped.
    fn backoff(&self, tries: u32, retry_after: Option<&str>) -> Duration {
        let cap = self.options.max_retry_wait;
        if let Some(seconds) = retry_after.and_then(|v| v.trim().parse::<u64>().ok()) {
            return Duration::from_secs(seconds).min(cap);
        }
        let factor = 1u32 << (tries.saturating_sub(1)).min(10);
        (self.options.retry_backoff * factor).min(cap)
    }

    /// The `Authorization` value for `access`, fetching a token if needed.
    fn authorization(&self, access: &Access<'_>) -> Result<Option<String>, RemoteError> {
        let challenge = self.lock().challenge.clone();
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self
                .credentials
                .as_ref()
                .and_then(Credentials::basic_header)),
            Some(Challenge::Bearer { realm, service, .. }) => {
                let scopes = access.scopes();
                let token = self.token(&realm, service.as_deref(), &scopes, false)?;
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    /// A Bearer token for `scopes` from `realm`, cached by scope.
    fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
        fresh: bool,
    ) -> Result<String, RemoteError> {
        let key = scopes.join(" ");
        if !fresh {
            if let Some(token) = self.lock().tokens.get(&key) {
                return Ok(token);
            }
        }
        let mut query = Vec::new();
        if let Some(service) = service {
            query.push(format!("service={}", query_escape(service)));
        }
        for scope in scopes {
            query.push(format!("scope={}", query_escape(scope)));
        }
        let registry = self.endpoint.name.clone();
        let err = |kind, problem: String| RemoteError::new(kind, &registry, "token", problem);
        let (method, url, body, authorization) = match &self.credentials {
            Some(Credentials::IdentityToken(refresh)) => {
                query.push("grant_type=refresh_token".to_string());
                query.push("client_id=imagefs".to_string());
                query.push(format!("refresh_token={}", query_escape(refresh)));
                (Method::POST, realm.to_string(), query.join("&"), None)
            }
            other => {
                let url = if query.is_empty() {
                    realm.to_string()
                } else {
                    with_query(realm, &query.join("&"))
                };
                (
                    Method::GET,
                    url,
                    String::new(),
                    other.as_ref().and_then(Credentials::basic_header),
                )
            }
        };
        let auth_host = host_of(&url).map(|h| (h, authorization.unwrap_or_default()));
        let mut headers = vec![];
        if method == Method::POST {
            headers.push((
                "Content-Type",
                "application/x-www-form-urlencoded".to_string(),
            ));
        }
        let body = body.into_bytes();
        let mut tries = 0;
        let response = loop {
            tries += 1;
            let sent = self.send_following(
                &method,
                &url,
                &headers,
                auth_host
                    .as_ref()
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(h, v)| (h.as_str(), v.as_str())),
                if method == Method::POST {
                    Some(&body[..])
                } else {
                    None
                },
            );
            match sent {
                Ok(response)
                    if (response.status().is_server_error()
                        || response.status() == StatusCode::TOO_MANY_REQUESTS)
                        && tries < self.options.max_tries =>
                {
                    let retry_after =
                        header_str(response.headers(), "retry-after").map(str::to_string);
                    std::thread::sleep(self.backoff(tries, retry_after.as_deref()));
                }
                Ok(response) => break response,
                Err(Sent::Http(e)) => {
                    let (kind, problem, retry) = describe_ureq(&e, &self.options, true);
                    if retry && tries < self.options.max_tries {
                        std::thread::sleep(self.backoff(tries, None));
                        continue;
                    }
                    return Err(err(kind, format!("{realm}: {problem}")));
                }
                Err(Sent::Redirect(problem)) => {
                    return Err(err(ErrorKind::Redirect, format!("{realm}: {problem}")))
                }
            }
        };
        self.token_fetches.fetch_add(1, Ordering::Relaxed);
        let status = response.status();
        if status != StatusCode::OK {
            let kind = if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                ErrorKind::Unauthorized
            } else {
                ErrorKind::Status
            };
            return Err(err(
                kind,
                format!(
                    "the token endpoint {realm} answered {}",
                    status_text(status)
                ),
            ));
        }
        let mut bytes = Vec::new();
        response
            .into_body()
            .into_reader()
            .take(MAX_SMALL_JSON)
            .read_to_end(&mut bytes)
            .map_err(|e| {
                err(
                    describe_io(&e, &self.options).0,
                    format!("{realm}: {}", describe_io(&e, &self.options).1),
                )
            })?;
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let answer: TokenAnswer = serde_json::from_slice(&bytes)
            .map_err(|e| err(ErrorKind::Protocol, format!("{realm}: bad token JSON: {e}")))?;
        let token = answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                err(
                    ErrorKind::Protocol,
                    format!("{realm}: the answer holds no token"),
                )
            })?;
        // The token spec's default lifetime is 60 s.
        let expires_in = Duration::from_secs(answer.expires_in.unwrap_or(60).max(1));
        self.lock().tokens.put(&key, token.clone(), expires_in);
        Ok(token)
    }

    /// Sends one request with authentication, redirects and retries. The answer may
    /// have any status; transport failures are errors naming the object.
    fn execute(&self, mut request: Request<'_>) -> Result<http::Response<ureq::Body>, RemoteError> {
        // A failed ping or token fetch is reported as this request's failure.
        let rescope = |e: RemoteError| {
            let problem = if e.object.is_empty() {
                e.problem
            } else {
                format!("{}: {}", e.object, e.problem)
            };
            RemoteError::new(e.kind, &request.scope, &request.object, problem)
        };
        let base = self.base().map_err(rescope)?;
        let url = if request.target.starts_with('/') {
            format!("{base}{}", request.target)
        } else {
            request.target.clone()
        };
        let registry_host = host_of(&url).unwrap_or_default();
        let idempotent = matches!(
            request.method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE
        );
        let replayable = !matches!(request.body, Body::Reader(..));
        let mut tries = 0u32;
        let mut reauthenticated = false;
        let mut authorization = self.authorization(&request.access).map_err(rescope)?;
        let scope = request.scope.clone();
        let object = request.object.clone();
        let fail = |kind, problem: String| RemoteError::new(kind, &scope, &object, problem);
        loop {
            tries += 1;
            let body = match &mut request.body {
                Body::None => None,
                Body::Bytes(bytes) => Some(SendKind::Bytes(bytes)),
                Body::Reader(reader) => Some(SendKind::Reader(&mut **reader)),
            };
            let auth = authorization
                .as_deref()
                .map(|a| (registry_host.as_str(), a));
            let sent =
                self.send_following_body(&request.method, &url, &request.headers, auth, body);
            let after = |tries: u32| {
                if tries > 1 {
                    format!(" after {tries} tries")
                } else {
                    String::new()
                }
            };
            match sent {
                Ok(response) => {
                    let status = response.status();
                    if status == StatusCode::UNAUTHORIZED && !reauthenticated && replayable {
                        reauthenticated = true;
                        if let Some(new_auth) = self
                            .reauthenticate(
                                response.headers(),
                                &request.access,
                                authorization.as_deref(),
                            )
                            .map_err(rescope)?
                        {
                            authorization = Some(new_auth);
                            tries -= 1;
                            continue;
                        }
                    }
                    let transient =
                        status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
                    if transient && replayable && tries < self.options.max_tries {
                        let retry_after =
                            header_str(response.headers(), "retry-after").map(str::to_string);
                        log::debug!("{scope}: {object}: {status}, retrying");
                        std::thread::sleep(self.backoff(tries, retry_after.as_deref()));
                        continue;
                    }
                    if transient && tries > 1 {
                        let kind = if status == StatusCode::TOO_MANY_REQUESTS {
                            ErrorKind::RateLimited
                        } else {
                            ErrorKind::Server
                        };
                        return Err(fail(
                            kind,
                            format!("{}{}", status_text(status), after(tries)),
                        ));
                    }
                    return Ok(response);
                }
                Err(Sent::Http(e)) => {
                    let (kind, problem, retry) = describe_ureq(&e, &self.options, idempotent);
                    if retry && replayable && tries < self.options.max_tries {
                        log::debug!("{scope}: {object}: {problem}, retrying");
                        std::thread::sleep(self.backoff(tries, None));
                        continue;
                    }
                    return Err(fail(kind, format!("{problem}{}", after(tries))));
                }
                Err(Sent::Redirect(problem)) => return Err(fail(ErrorKind::Redirect, problem)),
            }
        }
    }

    /// After a 401: a fresh token for the new challenge's scope, or Basic
    /// credentials the registry now asks for. `None` when there is nothing new to try.
    fn reauthenticate(
        &self,
        headers: &HeaderMap,
        access: &Access<'_>,
        sent: Option<&str>,
    ) -> Result<Option<String>, RemoteError> {
        let challenge = headers
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(auth::parse_challenge);
        match challenge {
            Some(Challenge::Basic) => {
                self.lock().challenge = Some(Challenge::Basic);
                let basic = self
                    .credentials
                    .as_ref()
                    .and_then(Credentials::basic_header);
                Ok(basic.filter(|b| Some(b.as_str()) != sent))
            }
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let mut scopes = access.scopes();
                if let Some(scope) = &scope {
                    for s in scope.split(' ').filter(|s| !s.is_empty()) {
                        if !scopes.iter().any(|have| have == s) {
                            scopes.push(s.to_string());
                        }
                    }
                }
                {
                    let mut state = self.lock();
                    state.tokens.forget(&access.scopes().join(" "));
                    state.challenge = Some(Challenge::Bearer {
                        realm: realm.clone(),
                        service: service.clone(),
                        scope,
                    });
                }
                let token = self.token(&realm, service.as_deref(), &scopes, true)?;
                // The token for the wider scope also serves the request's own scope.
                self.lock().tokens.put(
                    &access.scopes().join(" "),
                    token.clone(),
                    Duration::from_secs(30),
                );
                Ok(Some(format!("Bearer {token}")))
            }
            None => Ok(None),
        }
    }

    /// [`Self::send_following_body`] for token requests (a byte body or none).
    fn send_following(
        &self,
        method: &Method,
        url: &str,
        headers: &[(&'static str, String)],
        auth: Option<(&str, &str)>,
        body: Option<&[u8]>,
    ) -> Result<http::Response<ureq::Body>, Sent> {
        self.send_following_body(method, url, headers, auth, body.map(SendKind::Bytes))
    }

    /// Sends one request, following redirects of GET and HEAD (at most ten, no
    /// loops). `auth` is `(host, Authorization value)`: the header goes only to that
    /// host, never to a redirect target elsewhere.
    fn send_following_body(
        &self,
        method: &Method,
        url: &str,
        headers: &[(&'static str, String)],
        auth: Option<(&str, &str)>,
        mut body: Option<SendKind<'_>>,
    ) -> Result<http::Response<ureq::Body>, Sent> {
        let mut url = url.to_string();
        let mut visited = HashSet::new();
        visited.insert(url.clone());
        for _ in 0..=MAX_REDIRECTS {
            let mut builder = http::Request::builder().method(method.clone()).uri(&url);
            for (name, value) in headers {
                builder = builder.header(*name, value);
            }
            if let Some((host, value)) = auth {
                if host_of(&url).as_deref() == Some(host) {
                    builder = builder.header("Authorization", value);
                }
            }
            let response = match body.take() {
                None => self.agent.run(
                    builder
                        .body(())
                        .map_err(|e| Sent::Redirect(format!("bad request URL {url}: {e}")))?,
                ),
                Some(SendKind::Bytes(bytes)) => self.agent.run(
                    builder
                        .body(bytes)
                        .map_err(|e| Sent::Redirect(format!("bad request URL {url}: {e}")))?,
                ),
                Some(SendKind::Reader(reader)) => self.agent.run(
                    builder
                        .body(SendBody::from_reader(reader))
                        .map_err(|e| Sent::Redirect(format!("bad request URL {url}: {e}")))?,
                ),
            }
            .map_err(Sent::Http)?;
            if !response.status().is_redirection() || response.status() == StatusCode::NOT_MODIFIED
            {
                return Ok(response);
            }
            if *method != Method::GET && *method != Method::HEAD {
                return Ok(response);
            }
            let location = header_str(response.headers(), "location").ok_or_else(|| {
                Sent::Redirect(format!(
                    "{} without Location",
                    status_text(response.status())
                ))
            })?;
            let next = resolve_url(&url, location);
            if !visited.insert(next.clone()) {
                return Err(Sent::Redirect(format!("redirect loop at {next}")));
            }
            url = next;
        }
        Err(Sent::Redirect(format!(
            "more than {MAX_REDIRECTS} redirects"
        )))
    }
}

/// A request body handed to one send.
enum SendKind<'a> {
    Bytes(&'a [u8]),
    Reader(&'a mut (dyn Read + Send)),
}

/// Why a send gave no response.
enum Sent {
    Http(ureq::Error),
    Redirect(String),
}

/// A blob or range body: fails when it is longer or shorter than expected, and
/// names the registry and blob in every error.
pub struct BlobReader {
    inner: ureq::BodyReader<'static>,
    expected: Option<u64>,
    read: u64,
    context: RemoteError,
    counter: Arc<AtomicU64>,
    failed: bool,
    /// For the timeouts named in errors.
    options: Options,
}

impl std::fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobReader")
            .field("expected", &self.expected)
            .field("read", &self.read)
            .finish()
    }
}

impl BlobReader {
    fn new(
        inner: ureq::BodyReader<'static>,
        expected: Option<u64>,
        context: RemoteError,
        counter: Arc<AtomicU64>,
        options: &Options,
    ) -> Self {
        let options = Options {
            credentials: None,
            ..options.clone()
        };
        BlobReader {
            inner,
            expected,
            read: 0,
            context,
            counter,
            failed: false,
            options,
        }
    }

    /// The size the body must have, when known.
    pub fn expected_size(&self) -> Option<u64> {
        self.expected
    }

    fn error(&mut self, kind: io::ErrorKind, error_kind: ErrorKind, problem: String) -> io::Error {
        self.failed = true;
        let mut error = self.context.clone();
        error.kind = error_kind;
        error.problem = problem;
        io::Error::new(kind, error)
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failed {
            return Err(self.error(
                io::ErrorKind::Other,
                ErrorKind::Transport,
                "read after an error".to_string(),
            ));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        // Read at most one byte past the expected end, to notice a longer body
        // without reading an endless one.
        let cap = match self.expected {
            Some(expected) => {
                (expected - self.read.min(expected) + 1).min(buf.len() as u64) as usize
            }
            None => buf.len(),
        };
        let n = match self.inner.read(&mut buf[..cap]) {
            Ok(n) => n,
            Err(e) => {
                let (kind, problem) = describe_io(&e, &self.options);
                let at = match self.expected {
                    Some(expected) => format!(" after {} of {expected} bytes", self.read),
                    None => format!(" after {} bytes", self.read),
                };
                return Err(self.error(e.kind(), kind, format!("{problem}{at}")));
            }
        };
        self.read += n as u64;
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        match self.expected {
            Some(expected) if self.read > expected => Err(self.error(
                io::ErrorKind::InvalidData,
                ErrorKind::Size,
                format!("the body is longer than {expected} bytes"),
            )),
            Some(expected) if n == 0 && self.read < expected => Err(self.error(
                io::ErrorKind::UnexpectedEof,
                ErrorKind::Size,
                format!("the body ended after {} of {expected} bytes", self.read),
            )),
            _ => Ok(n),
        }
    }
}

/// Reads exactly `left` bytes from `inner`, refusing a shorter source.
struct ExactReader<'a> {
    inner: &'a mut (dyn Read + Send),
    left: u64,
}

impl Read for ExactReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.left) as usize;
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the blob ended {} bytes early", self.left),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// The TLS settings: system roots (rustls-native-certs reads `SSL_CERT_FILE` and
/// `SSL_CERT_DIR`), plus `ca_file`; or no verification at all.
fn tls_config(endpoint: &Endpoint, options: &Options) -> Result<TlsConfig, RemoteError> {
    if endpoint.accept_any_cert {
        return Ok(TlsConfig::builder().disable_verification(true).build());
    }
    let config_error =
        |problem: String| RemoteError::new(ErrorKind::Config, &endpoint.name, "", problem);
    let mut roots: Vec<Certificate<'static>> = rustls_native_certs::load_native_certs()
        .certs
        .iter()
        .map(|der| Certificate::from_der(der.as_ref()).to_owned())
        .collect();
    if let Some(ca_file) = &options.ca_file {
        let pem = std::fs::read(ca_file)
            .map_err(|e| config_error(format!("CA file {}: {e}", ca_file.display())))?;
        let before = roots.len();
        for item in ureq::tls::parse_pem(&pem) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(cert)) => roots.push(cert),
                Ok(_) => {}
                Err(e) => return Err(config_error(format!("CA file {}: {e}", ca_file.display()))),
            }
        }
        if roots.len() == before {
            return Err(config_error(format!(
                "CA file {}: no certificate in it",
                ca_file.display()
            )));
        }
    }
    Ok(TlsConfig::builder()
        .root_certs(RootCerts::Specific(Arc::new(roots)))
        .build())
}

/// A transport error in words, its kind, and whether retrying may help.
/// `idempotent` says whether the request may be sent again after it reached the
/// server; a failure to connect is always retryable (nothing was sent).
fn describe_ureq(
    error: &ureq::Error,
    options: &Options,
    idempotent: bool,
) -> (ErrorKind, String, bool) {
    use ureq::Error as E;
    match error {
        E::Timeout(t) => {
            let (what, limit) = match t {
                ureq::Timeout::Connect | ureq::Timeout::Resolve => {
                    ("connect timeout", options.connect_timeout)
                }
                ureq::Timeout::RecvResponse => ("no response", options.response_timeout),
                ureq::Timeout::PerRead | ureq::Timeout::RecvBody => {
                    ("stalled: no data", options.idle_timeout)
                }
                _ => ("timed out", options.idle_timeout),
            };
            let connect = matches!(t, ureq::Timeout::Connect | ureq::Timeout::Resolve);
            (
                ErrorKind::Timeout,
                format!("{what} within {}", seconds(limit)),
                connect || idempotent,
            )
        }
        E::HostNotFound => (ErrorKind::Connect, "host not found".to_string(), true),
        E::ConnectionFailed => (ErrorKind::Connect, "connection failed".to_string(), true),
        E::Io(e) => {
            let (kind, problem) = describe_io(e, options);
            let connect = e.kind() == io::ErrorKind::ConnectionRefused;
            (
                kind,
                problem,
                connect || (idempotent && kind != ErrorKind::Tls),
            )
        }
        E::Tls(message) => (ErrorKind::Tls, format!("TLS: {message}"), false),
        E::Rustls(e) => (ErrorKind::Tls, format!("TLS: {e}"), false),
        E::Pem(e) => (ErrorKind::Tls, format!("TLS: {e}"), false),
        E::Protocol(e) => (
            ErrorKind::Protocol,
            format!("HTTP protocol error: {e}"),
            idempotent,
        ),
        E::TooManyRedirects | E::RedirectFailed => (ErrorKind::Redirect, error.to_string(), false),
        E::LargeResponseHeader(..) => (ErrorKind::Protocol, error.to_string(), false),
        other => (ErrorKind::Transport, other.to_string(), false),
    }
}

/// An I/O error from a socket or a body in words.
fn describe_io(error: &io::Error, options: &Options) -> (ErrorKind, String) {
    if let Some(inner) = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<ureq::Error>())
    {
        let (kind, problem, _) = describe_ureq(inner, options, false);
        return (kind, problem);
    }
    if let Some(inner) = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<RemoteError>())
    {
        return (inner.kind, inner.problem.clone());
    }
    let kind = match error.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ErrorKind::Timeout,
        io::ErrorKind::ConnectionRefused => ErrorKind::Connect,
        io::ErrorKind::InvalidData
            if error
                .to_string()
                .to_ascii_lowercase()
                .contains("certificate") =>
        {
            ErrorKind::Tls
        }
        _ => ErrorKind::Transport,
    };
    let problem = match error.kind() {
        io::ErrorKind::ConnectionReset => "connection reset".to_string(),
        io::ErrorKind::UnexpectedEof => "connection closed early".to_string(),
        io::ErrorKind::BrokenPipe => "connection closed (broken pipe)".to_string(),
        io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        _ => error.to_string(),
    };
    (kind, problem)
}

fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// `500 Internal Server Error`.
fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// The registry's own message: `errors[0].message` (or `.code`) of its JSON.
fn registry_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let first = value.get("errors")?.get(0)?;
    let text = first
        .get("message")
        .and_then(|m| m.as_str())
        .filter(|m| !m.is_empty())
        .or_else(|| first.get("code").and_then(|c| c.as_str()))?;
    let mut text = text.to_string();
    text.truncate(200);
    Some(text)
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    header_str(headers, "content-length").and_then(|v| v.trim().parse().ok())
}

fn is_manifest_type(media_type: &str) -> bool {
    [
        media_types::OCI_MANIFEST,
        media_types::OCI_INDEX,
        media_types::DOCKER_MANIFEST,
        media_types::DOCKER_MANIFEST_LIST,
    ]
    .contains(&media_type)
}

/// The `mediaType` inside a manifest, for registries that send a generic type.
fn media_type_in_json(bytes: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    if let Some(media_type) = value.get("mediaType").and_then(|m| m.as_str()) {
        return Some(media_type.to_string());
    }
    // An OCI document may leave mediaType out: `manifests` means an index.
    if value.get("manifests").is_some() {
        Some(media_types::OCI_INDEX.to_string())
    } else if value.get("layers").is_some() {
        Some(media_types::OCI_MANIFEST.to_string())
    } else {
        None
    }
}

/// The tag that holds referrers where the API is missing: `sha256-<hex>`.
pub(crate) fn referrers_tag(subject: &Digest) -> String {
    format!("sha256-{}", subject.hex())
}

/// The `rel="next"` target of a `Link` header.
pub(crate) fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| target.to_string())
    })
}

/// `scheme://host[:port]` of a URL, lowercased host, for same-host checks.
pub(crate) fn host_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    Some(format!(
        "{}://{}",
        scheme.to_ascii_lowercase(),
        authority.to_ascii_lowercase()
    ))
}

/// `location` made absolute against `base`.
pub(crate) fn resolve_url(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let scheme = base.split("://").next().unwrap_or("https");
    if let Some(rest) = location.strip_prefix("//") {
        return format!("{scheme}://{rest}");
    }
    let origin = host_of(base).unwrap_or_default();
    if location.starts_with('/') {
        return format!("{origin}{location}");
    }
    // A relative path: beside the base's last segment.
    let path_start = origin.len();
    let path = base.get(path_start..).unwrap_or("/");
    let path = path.split(['?', '#']).next().unwrap_or("/");
    let dir = match path.rfind('/') {
        Some(i) => &path[..=i],
        None => "/",
    };
    format!("{origin}{dir}{location}")
}

/// `url` with `query` appended (`?` or `&`).
pub(crate) fn with_query(url: &str, query: &str) -> String {
    if url.contains('?') {
        format!("{url}&{query}")
    } else {
        format!("{url}?{query}")
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
pub(crate) fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn links_and_urls() {
        assert_eq!(
            next_link("</v2/app/tags/list?n=2&last=b>; rel=\"next\"").as_deref(),
            Some("/v2/app/tags/list?n=2&last=b")
        );
        assert_eq!(next_link("</x>; rel=\"prev\""), None);
        assert_eq!(
            host_of("http://127.0.0.1:5000/v2/x").as_deref(),
            Some("http://127.0.0.1:5000")
        );
        assert_eq!(
            host_of("https://u:p@Example.com?x").as_deref(),
            Some("https://example.com")
        );
        assert_eq!(resolve_url("http://h:1/v2/a/b", "/v2/c"), "http://h:1/v2/c");
        assert_eq!(
            resolve_url("http://h:1/v2/a/b", "https://s3/x?y"),
            "https://s3/x?y"
        );
        assert_eq!(resolve_url("http://h:1/v2/a/b", "//s3/x"), "http://s3/x");
        assert_eq!(resolve_url("http://h:1/v2/a/b?q", "c"), "http://h:1/v2/a/c");
        assert_eq!(
            with_query("/u?_state=x", "digest=sha256:1"),
            "/u?_state=x&digest=sha256:1"
        );
        assert_eq!(
            query_escape("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
    }

    #[test]
    fn registry_messages() {
        let body = br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#;
        assert_eq!(
            registry_message(body).as_deref(),
            Some("blob unknown to registry")
        );
        assert_eq!(registry_message(b"<html>"), None);
        assert_eq!(
            status_text(StatusCode::INTERNAL_SERVER_ERROR),
            "500 Internal Server Error"
        );
    }
}
