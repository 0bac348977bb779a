//! A real registry for tests: Debian's `docker-registry` (distribution 2.8.2) on
//! 127.0.0.1 with a free port, its own config and storage in a temp dir, optionally
//! behind htpasswd Basic auth, Bearer token auth (a token endpoint served here,
//! tokens signed with an `openssl`-made key the registry trusts), or TLS with a
//! self-signed CA; and [`FaultProxy`], a small HTTP proxy that delays, drops,
//! truncates, corrupts, redirects, answers 500/429, stalls or never ends a body.
//!
//! Used by the library's tests (`src/remote/tests.rs` includes this file by path)
//! and by integration tests in `tests/`. It needs only std, `base64`, `serde_json`
//! and `tempfile`. Everything started here is stopped on drop; every wait has a
//! deadline. With `CI=true` a missing `docker-registry` fails the test.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

/// The registry binary.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// How long a registry may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// The token service name the registry and the token endpoint agree on.
pub const TOKEN_SERVICE: &str = "imagefs-test-registry";
/// The issuer the registry trusts.
pub const TOKEN_ISSUER: &str = "imagefs-test-issuer";

/// How the registry authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryAuth {
    /// Anyone may pull and push.
    None,
    /// htpasswd (bcrypt) Basic auth with one user.
    Basic {
        /// The user.
        user: String,
        /// Their password.
        password: String,
    },
    /// Bearer tokens from a token endpoint served by the harness. With a user, the
    /// endpoint demands those Basic credentials; without, it serves anyone.
    Token {
        /// Required credentials, if any.
        user: Option<(String, String)>,
        /// The tokens' lifetime (`expires_in`).
        ttl: Duration,
    },
}

/// What to start.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Authentication.
    pub auth: RegistryAuth,
    /// Serve HTTPS with a certificate from a CA made for this registry.
    pub tls: bool,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            auth: RegistryAuth::None,
            tls: false,
        }
    }
}

/// True when running under CI (`CI=true`), where a missing registry fails.
fn under_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Whether the tools this harness needs are here. Under CI their absence panics;
/// elsewhere it prints `skipped: ...` and returns false.
pub fn registry_available() -> bool {
    let mut missing = Vec::new();
    if !Path::new(REGISTRY_BIN).exists() {
        missing.push("docker-registry (apt-get install docker-registry)");
    }
    if Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        missing.push("openssl");
    }
    if missing.is_empty() {
        return true;
    }
    assert!(
        !under_ci(),
        "CI=true and the registry tests cannot run: missing {}",
        missing.join(", ")
    );
    eprintln!("skipped: missing {}", missing.join(", "));
    false
}

/// A free TCP port on 127.0.0.1 (bound and released; a race with another process
/// is possible and retried by [`Registry::start`]).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port on 127.0.0.1");
    listener
        .local_addr()
        .expect("a bound listener has an address")
        .port()
}

/// Runs a command to completion with a deadline, panicking with its stderr on failure.
fn run(command: &mut Command, what: &str) -> Vec<u8> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match child.try_wait().expect("wait for a child") {
            Some(_) => break,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what}: timed out");
            }
            None => thread::sleep(Duration::from_millis(20)),
        }
    }
    let output = child
        .wait_with_output()
        .expect("collect a finished child's output");
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// A CA and a server certificate for 127.0.0.1/localhost, made with openssl.
#[derive(Debug, Clone)]
pub struct TestCerts {
    /// The CA certificate (PEM): what clients trust.
    pub ca_cert: PathBuf,
    /// The server certificate (PEM).
    pub server_cert: PathBuf,
    /// The server key (PEM).
    pub server_key: PathBuf,
}

impl TestCerts {
    /// Makes a CA and a server certificate in `dir`.
    pub fn generate(dir: &Path) -> TestCerts {
        let p = |name: &str| dir.join(name);
        run(
            Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=imagefs test CA",
                ])
                .arg("-keyout")
                .arg(p("ca.key"))
                .arg("-out")
                .arg(p("ca.pem")),
            "openssl req (CA)",
        );
        run(
            Command::new("openssl")
                .args([
                    "req",
                    "-new",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-subj",
                    "/CN=127.0.0.1",
                ])
                .arg("-keyout")
                .arg(p("server.key"))
                .arg("-out")
                .arg(p("server.csr")),
            "openssl req (server)",
        );
        std::fs::write(
            p("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write the extension file");
        run(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
                .arg("-in")
                .arg(p("server.csr"))
                .arg("-CA")
                .arg(p("ca.pem"))
                .arg("-CAkey")
                .arg(p("ca.key"))
                .arg("-extfile")
                .arg(p("server.ext"))
                .arg("-out")
                .arg(p("server.pem")),
            "openssl x509 (sign server)",
        );
        TestCerts {
            ca_cert: p("ca.pem"),
            server_cert: p("server.pem"),
            server_key: p("server.key"),
        }
    }
}

/// The YAML lines of a nested config section: `path` the keys down to it (a first
/// key the config already opened, `http`, is not repeated), then its `key: value`
/// pairs. The base config ends inside `http:`, so TLS continues that section.
fn yaml_section(path: &[&str], pairs: &[(&str, String)]) -> String {
    let mut out = String::new();
    let opened = usize::from(path.first() == Some(&"http"));
    for (depth, key) in path.iter().enumerate().skip(opened) {
        out.push_str(&format!("{}{key}:\n", "  ".repeat(depth)));
    }
    for (key, value) in pairs {
        out.push_str(&format!("{}{key}: {value}\n", "  ".repeat(path.len())));
    }
    out
}

/// A running `docker-registry`, killed on drop.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: SocketAddr,
    /// The temp dir holding config, storage, certificates and the log.
    pub dir: tempfile::TempDir,
    /// The TLS certificates, when started with TLS.
    pub certs: Option<TestCerts>,
    /// The token endpoint, when started with token auth.
    pub tokens: Option<TokenServer>,
    log: PathBuf,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Starts a registry, or `None` (after printing `skipped`) where the tools are
    /// missing outside CI.
    pub fn start(config: &RegistryConfig) -> Option<Registry> {
        if !registry_available() {
            return None;
        }
        let mut last_error = String::new();
        // A free port can be taken by someone else between probe and bind: retry.
        for _ in 0..3 {
            match Self::try_start(config) {
                Ok(registry) => return Some(registry),
                Err(e) => last_error = e,
            }
        }
        panic!("docker-registry did not start: {last_error}");
    }

    fn try_start(config: &RegistryConfig) -> Result<Registry, String> {
        let dir = tempfile::Builder::new()
            .prefix("imagefs-registry-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}")
            .parse()
            .expect("a valid socket address");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: info\n  formatter: text\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: {addr}\n  secret: imagefs-test-secret\n",
            dir.path().join("data").display()
        );
        let certs = config.tls.then(|| TestCerts::generate(dir.path()));
        if let Some(certs) = &certs {
            yaml.push_str(&yaml_section(
                &["http", "tls"],
                &[
                    ("certificate", certs.server_cert.display().to_string()),
                    ("key", certs.server_key.display().to_string()),
                ],
            ));
        }
        let mut tokens = None;
        match &config.auth {
            RegistryAuth::None => {}
            RegistryAuth::Basic { user, password } => {
                let line = run(
                    Command::new("htpasswd").args(["-Bbn", user, password]),
                    "htpasswd -Bbn",
                );
                let path = dir.path().join("htpasswd");
                std::fs::write(&path, line).map_err(|e| e.to_string())?;
                yaml.push_str(&yaml_section(
                    &["auth", "htpasswd"],
                    &[
                        ("realm", "imagefs-test".to_string()),
                        ("path", path.display().to_string()),
                    ],
                ));
            }
            RegistryAuth::Token { user, ttl } => {
                let server = TokenServer::start(dir.path(), user.clone(), *ttl);
                yaml.push_str(&yaml_section(
                    &["auth", "token"],
                    &[
                        ("realm", server.realm()),
                        ("service", TOKEN_SERVICE.to_string()),
                        ("issuer", TOKEN_ISSUER.to_string()),
                        ("rootcertbundle", server.cert.display().to_string()),
                    ],
                ));
                tokens = Some(server);
            }
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, yaml).map_err(|e| e.to_string())?;
        let log = dir.path().join("registry.log");
        let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            // The registry takes any REGISTRY_* variable as config: start from nothing.
            .env_clear()
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot run {REGISTRY_BIN}: {e}"))?;
        let mut registry = Registry {
            child,
            addr,
            dir,
            certs,
            tokens,
            log,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = registry.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("exited with {status}: {}", registry.log_text()));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(registry);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not listening after {START_TIMEOUT:?}: {}",
                    registry.log_text()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:PORT`, the registry part of references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT` or `https://...`.
    pub fn url(&self) -> String {
        let scheme = if self.certs.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The CA certificate to trust, with TLS.
    pub fn ca_cert(&self) -> Option<&Path> {
        self.certs.as_ref().map(|c| c.ca_cert.as_path())
    }

    /// How many tokens the token endpoint issued (or refused).
    pub fn token_requests(&self) -> usize {
        self.tokens
            .as_ref()
            .map_or(0, |t| t.requests.load(Ordering::SeqCst))
    }

    /// The registry's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The sum of `http.response.written` over the log: the bytes the registry sent.
    pub fn bytes_written(&self) -> u64 {
        self.log_text()
            .lines()
            .filter_map(|line| line.split("http.response.written=").nth(1))
            .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .filter_map(|n| n.parse::<u64>().ok())
            .sum()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A token endpoint: `GET /token?service=...&scope=...` answers a JWT (RS256, with
/// the signing certificate in `x5c`) granting every action asked for.
pub struct TokenServer {
    addr: SocketAddr,
    key: PathBuf,
    cert: PathBuf,
    /// Token requests served, refused ones included.
    pub requests: Arc<AtomicUsize>,
    /// The `scope` parameters of each request, space-joined.
    pub scopes: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TokenServer {
    /// Starts the endpoint with a fresh RSA key and self-signed certificate in `dir`.
    pub fn start(dir: &Path, user: Option<(String, String)>, ttl: Duration) -> TokenServer {
        let key = dir.join("token.key");
        let cert = dir.join("token.pem");
        run(
            Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=imagefs test token signer",
                ])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert),
            "openssl req (token key)",
        );
        let der = run(
            Command::new("openssl")
                .args(["x509", "-outform", "DER"])
                .arg("-in")
                .arg(&cert),
            "openssl x509 -outform DER",
        );
        let x5c = base64::engine::general_purpose::STANDARD.encode(der);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the token endpoint");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let requests = Arc::new(AtomicUsize::new(0));
        let scopes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (key, requests, scopes, stop) =
                (key.clone(), requests.clone(), scopes.clone(), stop.clone());
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let _ = serve_token(stream, &key, &x5c, user.as_ref(), ttl, &requests, &scopes);
                }
            })
        };
        TokenServer {
            addr,
            key,
            cert,
            requests,
            scopes,
            stop,
            thread: Some(thread),
        }
    }

    /// The realm URL the registry sends clients to.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One parsed HTTP request (head and body).
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// `GET`, `PUT`, ...
    pub method: String,
    /// The request target: path and query.
    pub target: String,
    /// Headers, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// The body (by `Content-Length`; chunked bodies are decoded).
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// The first header of that (lowercase) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request from a client connection (10 s read deadline).
pub fn read_request(stream: &mut TcpStream) -> Option<HttpRequest> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    // A TLS ClientHello (a client trying HTTPS first) is not HTTP: close at once so
    // that it falls back to plain HTTP without waiting.
    let mut first = [0u8; 1];
    match stream.peek(&mut first) {
        Ok(1) if first[0].is_ascii_uppercase() => {}
        _ => return None,
    }
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    for _ in 0..200 {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut request = HttpRequest {
        method,
        target,
        headers,
        body: Vec::new(),
    };
    if let Some(length) = request
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        request.body = body;
    } else if request
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        let mut body = Vec::new();
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line).ok()?;
            let size = usize::from_str_radix(size_line.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
        request.headers.retain(|(n, _)| n != "transfer-encoding");
        request
            .headers
            .push(("content-length".to_string(), body.len().to_string()));
        request.body = body;
    }
    Some(request)
}

fn respond(stream: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let _ = stream.flush();
}

fn serve_token(
    mut stream: TcpStream,
    key: &Path,
    x5c: &str,
    user: Option<&(String, String)>,
    ttl: Duration,
    requests: &AtomicUsize,
    scopes: &Mutex<Vec<String>>,
) -> Option<()> {
    let request = read_request(&mut stream)?;
    requests.fetch_add(1, Ordering::SeqCst);
    let query = request
        .target
        .split_once('?')
        .map(|(_, q)| q.to_string())
        .unwrap_or_default();
    let mut params: Vec<(String, String)> = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect();
    if request.method == "POST" {
        let form = String::from_utf8_lossy(&request.body).into_owned();
        params.extend(
            form.split('&')
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (percent_decode(k), percent_decode(v))),
        );
    }
    let asked: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.clone())
        .collect();
    scopes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(asked.join(" "));
    let mut subject = "anonymous".to_string();
    if let Some((name, password)) = user {
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{name}:{password}"))
        );
        if request.header("authorization") != Some(expected.as_str()) {
            respond(
                &mut stream,
                "401 Unauthorized",
                &[("Content-Type", "application/json".into())],
                br#"{"details":"bad credentials"}"#,
            );
            return Some(());
        }
        subject = name.clone();
    }
    let mut access = Vec::new();
    for scope in asked.iter().flat_map(|s| s.split(' ')) {
        let Some((kind, rest)) = scope.split_once(':') else {
            continue;
        };
        let Some((name, actions)) = rest.rsplit_once(':') else {
            continue;
        };
        let actions: Vec<&str> = actions.split(',').collect();
        access.push(serde_json::json!({"type": kind, "name": name, "actions": actions}));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time after 1970")
        .as_secs();
    let n = requests.load(Ordering::SeqCst);
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER, "sub": subject, "aud": TOKEN_SERVICE,
        "exp": now + ttl.as_secs().max(1), "nbf": now.saturating_sub(1), "iat": now,
        "jti": format!("imagefs-test-{n}"), "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let mut openssl = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    openssl
        .stdin
        .take()?
        .write_all(signing_input.as_bytes())
        .ok()?;
    let signature = openssl.wait_with_output().ok()?.stdout;
    let token = format!("{signing_input}.{}", b64url(&signature));
    let body = serde_json::json!({"token": token, "access_token": token, "expires_in": ttl.as_secs().max(1)});
    respond(
        &mut stream,
        "200 OK",
        &[("Content-Type", "application/json".into())],
        body.to_string().as_bytes(),
    );
    Some(())
}

/// What [`FaultProxy`] does to a matching request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Wait this long, then forward.
    Delay(Duration),
    /// Close the connection without answering.
    Drop,
    /// Forward the answer's head and only this many body bytes, then close.
    Truncate(usize),
    /// Forward the answer with one body byte flipped.
    Corrupt,
    /// Answer this status without asking the registry; `Some(n)` adds `Retry-After: n`.
    Status(u16, Option<u64>),
    /// Answer `307` to this absolute URL.
    Redirect(String),
    /// Answer `307` to the same URL, forever.
    RedirectLoop,
    /// Fetch the answer from the registry, then `307` to the proxy's second listener
    /// on 127.0.0.2 (another host) that serves it and records `Authorization`.
    RedirectOtherHost,
    /// Answer 200 with a body that never ends (bounded at 2 GiB / 60 s).
    Endless,
    /// Send the head (`Content-Length: 1048576`) and then nothing (for 60 s at most).
    Stall,
    /// Forward the real answer's head and this many body bytes, then send nothing
    /// more, keeping the connection open (for 60 s at most): a stall mid-body.
    StallAfter(usize),
    /// Forward without the `Range` header: a 200 with the whole blob.
    IgnoreRange,
    /// Forward, adding this header line (`Name: value`) to the answer (e.g.
    /// `OCI-Subject`, as a registry with the referrers API answers).
    AddHeader(String),
    /// Answer 200 with this `Content-Type` and body, without asking the registry
    /// (e.g. a referrers API the registry lacks).
    Answer(String, Vec<u8>),
}

/// One rule: requests whose target contains `path_contains` (and whose method is
/// `method`, if given) get `fault`, for the first `times` matches (0: always).
#[derive(Debug, Clone)]
struct Rule {
    path_contains: String,
    method: Option<String>,
    fault: Fault,
    times: usize,
    used: usize,
}

#[derive(Default)]
struct ProxyState {
    rules: Vec<Rule>,
    /// `METHOD target` of each request seen.
    seen: Vec<String>,
    /// Raw answers waiting on the other host, by id.
    stash: HashMap<usize, Vec<u8>>,
    /// The `Authorization` header of each request to the other host.
    other_host_auth: Vec<Option<String>>,
}

/// An HTTP/1.1 proxy between a client and a registry, one request per connection
/// (it answers `Connection: close`), injecting [`Fault`]s.
pub struct FaultProxy {
    /// `127.0.0.1:PORT`: point the client here.
    pub addr: SocketAddr,
    /// `127.0.0.2:PORT`: the "other host" of [`Fault::RedirectOtherHost`].
    pub other_addr: SocketAddr,
    upstream: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

fn lock(state: &Mutex<ProxyState>) -> std::sync::MutexGuard<'_, ProxyState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream` (a plain-HTTP registry).
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let other =
            TcpListener::bind("127.0.0.2:0").expect("bind the proxy's other host on 127.0.0.2");
        let addr = listener.local_addr().expect("bound");
        let other_addr = other.local_addr().expect("bound");
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (listener, is_other) in [(listener, false), (other, true)] {
            let (state, stop) = (state.clone(), stop.clone());
            threads.push(thread::spawn(move || {
                let next_id = Arc::new(AtomicUsize::new(0));
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (state, stop, next_id) = (state.clone(), stop.clone(), next_id.clone());
                    // Connection threads end by themselves: every wait in them is bounded.
                    thread::spawn(move || {
                        if is_other {
                            serve_other(stream, &state);
                        } else {
                            serve_proxy(
                                stream, upstream, addr, other_addr, &state, &stop, &next_id,
                            );
                        }
                    });
                }
            }));
        }
        FaultProxy {
            addr,
            other_addr,
            upstream,
            state,
            stop,
            threads,
        }
    }

    /// `127.0.0.1:PORT`, the registry part of references through the proxy.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Adds a rule: requests whose target contains `path_contains` get `fault` for
    /// the first `times` matches (0: every time).
    pub fn add(&self, path_contains: &str, fault: Fault, times: usize) {
        lock(&self.state).rules.push(Rule {
            path_contains: path_contains.to_string(),
            method: None,
            fault,
            times,
            used: 0,
        });
    }

    /// [`Self::add`] for one method only.
    pub fn add_for(&self, method: &str, path_contains: &str, fault: Fault, times: usize) {
        lock(&self.state).rules.push(Rule {
            path_contains: path_contains.to_string(),
            method: Some(method.to_string()),
            fault,
            times,
            used: 0,
        });
    }

    /// Removes every rule.
    pub fn clear(&self) {
        lock(&self.state).rules.clear();
    }

    /// `METHOD target` of every request seen so far.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.state).seen.clone()
    }

    /// The `Authorization` header of each request the other host received.
    pub fn other_host_authorizations(&self) -> Vec<Option<String>> {
        lock(&self.state).other_host_auth.clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let _ = TcpStream::connect_timeout(&self.other_addr, Duration::from_secs(1));
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Sends `request` to `upstream` and returns its whole raw answer.
fn forward(request: &HttpRequest, upstream: SocketAddr) -> Option<Vec<u8>> {
    let mut up = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)).ok()?;
    up.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    let mut head = format!("{} {} HTTP/1.1\r\n", request.method, request.target);
    for (name, value) in &request.headers {
        if name != "connection" {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str("connection: close\r\n\r\n");
    up.write_all(head.as_bytes()).ok()?;
    up.write_all(&request.body).ok()?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer).ok()?;
    Some(answer)
}

/// The offset of a raw answer's body.
fn body_start(answer: &[u8]) -> usize {
    answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(answer.len(), |i| i + 4)
}

fn serve_proxy(
    mut stream: TcpStream,
    upstream: SocketAddr,
    own: SocketAddr,
    other: SocketAddr,
    state: &Mutex<ProxyState>,
    stop: &AtomicBool,
    next_id: &AtomicUsize,
) {
    let Some(request) = read_request(&mut stream) else {
        return;
    };
    let fault = {
        let mut state = lock(state);
        state
            .seen
            .push(format!("{} {}", request.method, request.target));
        let rule = state.rules.iter_mut().find(|r| {
            request.target.contains(&r.path_contains)
                && r.method.as_deref().is_none_or(|m| m == request.method)
                && (r.times == 0 || r.used < r.times)
        });
        rule.map(|r| {
            r.used += 1;
            r.fault.clone()
        })
    };
    let _ = stream.set_write_timeout(Some(Duration::from_secs(20)));
    match fault {
        None => {
            if let Some(answer) = forward(&request, upstream) {
                let _ = stream.write_all(&answer);
            }
        }
        Some(Fault::Delay(delay)) => {
            sleep_unless(stop, delay);
            if let Some(answer) = forward(&request, upstream) {
                let _ = stream.write_all(&answer);
            }
        }
        Some(Fault::IgnoreRange) => {
            let mut whole = request.clone();
            whole.headers.retain(|(name, _)| name != "range");
            if let Some(answer) = forward(&whole, upstream) {
                let _ = stream.write_all(&answer);
            }
        }
        Some(Fault::Drop) => {
            let _ = stream.shutdown(Shutdown::Both);
        }
        Some(Fault::Truncate(keep)) => {
            if let Some(answer) = forward(&request, upstream) {
                let end = (body_start(&answer) + keep).min(answer.len());
                let _ = stream.write_all(&answer[..end]);
            }
        }
        Some(Fault::Corrupt) => {
            if let Some(mut answer) = forward(&request, upstream) {
                let start = body_start(&answer);
                if start < answer.len() {
                    let middle = start + (answer.len() - start) / 2;
                    answer[middle] ^= 0x5a;
                }
                let _ = stream.write_all(&answer);
            }
        }
        Some(Fault::Status(code, retry_after)) => {
            let reason = match code {
                429 => "Too Many Requests",
                500 => "Internal Server Error",
                502 => "Bad Gateway",
                503 => "Service Unavailable",
                _ => "Injected",
            };
            let mut headers = vec![("Content-Type", "application/json".to_string())];
            if let Some(seconds) = retry_after {
                headers.push(("Retry-After", seconds.to_string()));
            }
            let body =
                format!(r#"{{"errors":[{{"code":"INJECTED","message":"injected {code}"}}]}}"#);
            respond(
                &mut stream,
                &format!("{code} {reason}"),
                &headers,
                body.as_bytes(),
            );
        }
        Some(Fault::Redirect(location)) => {
            respond(
                &mut stream,
                "307 Temporary Redirect",
                &[("Location", location)],
                b"",
            );
        }
        Some(Fault::RedirectLoop) => {
            respond(
                &mut stream,
                "307 Temporary Redirect",
                &[("Location", format!("http://{own}{}", request.target))],
                b"",
            );
        }
        Some(Fault::RedirectOtherHost) => {
            if let Some(answer) = forward(&request, upstream) {
                let id = next_id.fetch_add(1, Ordering::SeqCst);
                lock(state).stash.insert(id, answer);
                respond(
                    &mut stream,
                    "307 Temporary Redirect",
                    &[("Location", format!("http://{other}/stash/{id}"))],
                    b"",
                );
            }
        }
        Some(Fault::Endless) => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nConnection: close\r\n\r\n";
            if stream.write_all(head.as_bytes()).is_ok() {
                let chunk = vec![b' '; 64 * 1024];
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut sent = 0u64;
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline && sent < 2 << 30 {
                    if stream.write_all(&chunk).is_err() {
                        break;
                    }
                    sent += chunk.len() as u64;
                }
            }
        }
        Some(Fault::Stall) => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1048576\r\nConnection: close\r\n\r\n";
            if stream.write_all(head.as_bytes()).is_ok() {
                hold_open(&mut stream, stop);
            }
        }
        Some(Fault::AddHeader(line)) => {
            if let Some(answer) = forward(&request, upstream) {
                let at = answer
                    .windows(2)
                    .position(|w| w == b"\r\n")
                    .map_or(answer.len(), |i| i + 2);
                let mut changed = answer[..at].to_vec();
                changed.extend_from_slice(format!("{line}\r\n").as_bytes());
                changed.extend_from_slice(&answer[at..]);
                let _ = stream.write_all(&changed);
            }
        }
        Some(Fault::Answer(content_type, body)) => {
            respond(
                &mut stream,
                "200 OK",
                &[("Content-Type", content_type)],
                &body,
            );
        }
        Some(Fault::StallAfter(keep)) => {
            if let Some(answer) = forward(&request, upstream) {
                let end = (body_start(&answer) + keep).min(answer.len());
                if stream.write_all(&answer[..end]).is_ok() {
                    let _ = stream.flush();
                    hold_open(&mut stream, stop);
                }
            }
        }
    }
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
}

/// Keeps a connection open without sending, until the client gives up (its end
/// closes), the proxy stops, or 60 s pass.
fn hold_open(stream: &mut TcpStream, stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 1];
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
}

fn serve_other(mut stream: TcpStream, state: &Mutex<ProxyState>) {
    let Some(request) = read_request(&mut stream) else {
        return;
    };
    let answer = {
        let mut state = lock(state);
        state
            .other_host_auth
            .push(request.header("authorization").map(str::to_string));
        request
            .target
            .strip_prefix("/stash/")
            .and_then(|id| id.parse::<usize>().ok())
            .and_then(|id| state.stash.remove(&id))
    };
    match answer {
        Some(answer) => {
            let _ = stream.write_all(&answer);
        }
        None => respond(&mut stream, "404 Not Found", &[], b""),
    }
    let _ = stream.shutdown(Shutdown::Both);
}

fn sleep_unless(stop: &AtomicBool, duration: Duration) {
    let deadline = Instant::now() + duration;
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
}
