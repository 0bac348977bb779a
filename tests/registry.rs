//! `imagefs pull`, `push` and `ls --remote` against a real registry (Debian's
//! docker-registry 2.8.2, started per test on 127.0.0.1) through the built binary:
//! no auth, htpasswd Basic, Bearer tokens, TLS; tags, digests, platforms; what is
//! fetched and sent (the registry's own log counts the bytes); cross-repository
//! mounts; faults through the fault-injecting proxy, each leaving nothing behind;
//! kill -9 mid-blob; and interop with skopeo and umoci both ways.
//!
//! Needs docker-registry, openssl and skopeo (umoci and FUSE for the rootfs
//! comparison): skipped with a message where missing, failing under `CI=true`.

#[path = "util/registry.rs"]
mod registry;
mod util;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use registry::{Fault, FaultProxy, Registry, RegistryAuth, RegistryConfig};
use serde_json::Value;
use util::{Cmd, Output, TestDir};

const DEMO: [&str; 5] = [
    "sample-alpine:3.19",
    "sample-app:1.0",
    "sample-app:1.1",
    "sample-app:1.1-sbom",
    "sample-multi:latest",
];

/// `imagefs --store STORE ...` with a home of its own (no credential file of the
/// machine is read) and a deadline.
fn imagefs(t: &TestDir, store: &Path) -> Cmd {
    let mut cmd = Cmd::imagefs();
    cmd.arg("--store")
        .arg(store)
        .env("HOME", t.path())
        .env("XDG_RUNTIME_DIR", t.path())
        .env("DOCKER_CONFIG", t.join("docker"))
        .timeout_secs(180);
    cmd
}

fn json(output: Output) -> Value {
    serde_json::from_str(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", output.stdout))
}

fn u(value: &Value, key: &str) -> u64 {
    value[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {value}"))
}

/// The demo images imported into the test's store (`docker.io/library/...`).
fn demo_store(t: &TestDir) {
    let (layout, _) = t.demo_layout("demo-layout");
    t.imagefs()
        .arg("import")
        .arg(&layout)
        .timeout_secs(120)
        .assert_ok();
}

/// Tag -> digest of a store, from `ls --json`.
fn stored_tags(t: &TestDir, store: &Path) -> BTreeMap<String, String> {
    let rows = json(imagefs(t, store).args(["ls", "--json"]).assert_ok());
    rows.as_array()
        .expect("ls --json is a list")
        .iter()
        .filter(|row| row["tag"].is_string())
        .map(|row| {
            (
                format!(
                    "{}/{}:{}",
                    row["registry"].as_str().unwrap(),
                    row["repository"].as_str().unwrap(),
                    row["tag"].as_str().unwrap()
                ),
                row["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Pushes every demo image from the test's store to `host/library/...`.
fn push_demo(t: &TestDir, host: &str, extra: &[&str]) {
    for name in DEMO {
        imagefs(t, &t.store())
            .arg("push")
            .arg(format!("docker.io/library/{name}"))
            .arg(format!("{host}/library/{name}"))
            .args(extra)
            .assert_ok();
    }
}

/// Nothing of a failed pull is kept: fsck is clean, no blob or temp file, no lease.
fn assert_nothing_kept(t: &TestDir, store: &Path, blobs_before: usize) {
    let report = json(imagefs(t, store).args(["fsck", "--json"]).output());
    for key in ["missing", "corrupt", "bad_counts", "dangling", "leftovers"] {
        assert_eq!(report[key], Value::Array(Vec::new()), "{key}: {report}");
    }
    assert_eq!(blob_count(store), blobs_before, "blob files");
    let temps: Vec<_> = fs::read_dir(store.join("tmp"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(temps.is_empty(), "temp files left: {temps:?}");
    assert_eq!(lease_count(store), 0, "leases left");
}

fn blob_count(store: &Path) -> usize {
    fs::read_dir(store.join("blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn lease_count(store: &Path) -> i64 {
    let conn = rusqlite::Connection::open(store.join("imagefs.db")).expect("open the store db");
    conn.query_row("SELECT count(*) FROM leases", [], |r| r.get(0))
        .expect("count leases")
}

fn sha256_hex(bytes: &[u8]) -> String {
    imagefs::Digest::of(bytes).to_string()
}

fn require_skopeo() -> bool {
    util::require_tool("skopeo")
}

// ---- no auth: push, pull by tag, by digest, --platform, LOCAL-REF ----

#[test]
fn push_then_pull_by_tag_digest_platform_and_local_ref() {
    let Some(reg) = Registry::start(&RegistryConfig::default()) else {
        return;
    };
    let t = TestDir::new("reg-pull");
    demo_store(&t);
    let host = reg.host();
    let local = stored_tags(&t, &t.store());

    // First push uploads; a second one HEADs and sends nothing.
    let first = json(
        imagefs(&t, &t.store())
            .args(["push", "--json", "docker.io/library/sample-alpine:3.19"])
            .arg(format!("{host}/library/sample-alpine:3.19"))
            .assert_ok(),
    );
    assert_eq!(u(&first, "blobs_uploaded"), 2, "{first}");
    assert_eq!(u(&first, "manifests_pushed"), 1, "{first}");
    let again = json(
        imagefs(&t, &t.store())
            .args(["push", "--json", "docker.io/library/sample-alpine:3.19"])
            .arg(format!("{host}/library/sample-alpine:3.19"))
            .assert_ok(),
    );
    assert_eq!(
        (
            u(&again, "blobs_uploaded"),
            u(&again, "blobs_skipped"),
            u(&again, "manifests_pushed")
        ),
        (0, 2, 0),
        "{again}"
    );
    push_demo(&t, &host, &["--jobs", "2"]);

    // Pull by tag into a fresh store: the same digests.
    let fresh = t.join("fresh");
    let pulled = json(
        imagefs(&t, &fresh)
            .args(["pull", "--json"])
            .arg(format!("{host}/library/sample-app:1.0"))
            .assert_ok(),
    );
    assert_eq!(
        pulled["digest"].as_str(),
        Some(local["docker.io/library/sample-app:1.0"].as_str())
    );
    assert_eq!(u(&pulled, "blobs_fetched"), 4, "{pulled}");
    assert_eq!(u(&pulled, "blobs_skipped"), 0, "{pulled}");

    // A second image sharing the base fetches only what is new; the registry's
    // log agrees with the report.
    let before = get_bytes(&reg);
    let second = json(
        imagefs(&t, &fresh)
            .args(["pull", "--json"])
            .arg(format!("{host}/library/sample-app:1.1"))
            .assert_ok(),
    );
    let sent = get_bytes(&reg) - before;
    assert_eq!(u(&second, "blobs_skipped"), 2, "{second}");
    assert_eq!(u(&second, "blobs_fetched"), 3, "{second}");
    let fetched = u(&second, "bytes_fetched");
    assert!(
        sent >= fetched && sent <= fetched + 4096,
        "registry sent {sent}, report {fetched}"
    );
    let image_size = stored_size(&t, &fresh, &format!("{host}/library/sample-app:1.1"));
    assert!(fetched * 4 < image_size, "{fetched} of {image_size}");

    // Re-pull: nothing fetched at all (one HEAD, no body).
    let before = get_bytes(&reg);
    let repull = json(
        imagefs(&t, &fresh)
            .args(["pull", "--json"])
            .arg(format!("{host}/library/sample-app:1.1"))
            .assert_ok(),
    );
    assert_eq!(
        (u(&repull, "blobs_fetched"), u(&repull, "bytes_fetched")),
        (0, 0)
    );
    // The only body is the ping's `{}`.
    assert!(get_bytes(&reg) - before <= 2, "the registry sent bytes");

    // By digest: exactly that manifest, kept under digest-<12 hex>.
    let digest = local["docker.io/library/sample-app:1.1"].clone();
    let by_digest = t.join("by-digest");
    imagefs(&t, &by_digest)
        .arg("pull")
        .arg(format!("{host}/library/sample-app@{digest}"))
        .assert_ok();
    let tags = stored_tags(&t, &by_digest);
    let tag = format!(
        "{host}/library/sample-app:digest-{}",
        &digest["sha256:".len().."sha256:".len() + 12]
    );
    assert_eq!(tags.get(&tag), Some(&digest), "{tags:?}");

    // --platform: the arm64 child stored as a plain image under LOCAL-REF.
    let index = local["docker.io/library/sample-multi:latest"].clone();
    let platform = json(
        imagefs(&t, &by_digest)
            .args(["pull", "--json", "--platform", "linux/arm64/v8"])
            .arg(format!("{host}/library/sample-multi:latest"))
            .arg("dev/arm:1")
            .assert_ok(),
    );
    let child = platform["digest"].as_str().unwrap().to_string();
    assert_ne!(child, index);
    let inspect = imagefs(&t, &by_digest)
        .args(["inspect", "dev/arm:1"])
        .assert_ok()
        .stdout;
    assert!(inspect.contains("arm64"), "{inspect}");
    let rows = json(
        imagefs(&t, &by_digest)
            .args(["ls", "--json", "dev"])
            .assert_ok(),
    );
    assert_eq!(
        rows[0]["media_type"].as_str(),
        Some("application/vnd.oci.image.manifest.v1+json"),
        "{rows}"
    );
    imagefs(&t, &by_digest)
        .args(["pull", "--platform", "linux/s390x"])
        .arg(format!("{host}/library/sample-multi:latest"))
        .assert_err_line("imagefs: pull ")
        .assert_code(1);
    // The whole index, every child with it.
    imagefs(&t, &fresh)
        .arg("pull")
        .arg(format!("{host}/library/sample-multi:latest"))
        .assert_ok();
    assert_eq!(
        stored_tags(&t, &fresh)[&format!("{host}/library/sample-multi:latest")],
        index
    );
    // The artifact with a subject.
    imagefs(&t, &fresh)
        .arg("pull")
        .arg(format!("{host}/library/sample-app:1.1-sbom"))
        .assert_ok();
    assert_eq!(
        stored_tags(&t, &fresh)[&format!("{host}/library/sample-app:1.1-sbom")],
        local["docker.io/library/sample-app:1.1-sbom"]
    );

    // A store-only registry name is refused, saying so.
    let refused = imagefs(&t, &fresh)
        .args(["pull", "dev/app:1"])
        .assert_err_line("imagefs: pull dev/app:1: dev: ");
    assert!(
        refused.stderr.contains("only in the store"),
        "{}",
        refused.stderr
    );
    imagefs(&t, &t.store())
        .args(["push", "docker.io/library/sample-app:1.1", "local/app:1"])
        .assert_err_line("imagefs: push local/app:1: local: ");

    for store in [&fresh, &by_digest] {
        assert_nothing_kept(&t, store, blob_count(store));
    }
}

/// Body bytes the registry sent for GETs (its log counts a HEAD's Content-Length
/// as written too, though no body goes out).
fn get_bytes(reg: &Registry) -> u64 {
    reg.log_text()
        .lines()
        .filter(|line| line.contains("http.request.method=GET"))
        .filter_map(|line| line.split("http.response.written=").nth(1))
        .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .filter_map(|n| n.parse::<u64>().ok())
        .sum()
}

fn stored_size(t: &TestDir, store: &Path, reference: &str) -> u64 {
    let rows = json(imagefs(t, store).args(["ls", "--json"]).assert_ok());
    rows.as_array()
        .unwrap()
        .iter()
        .find(|row| {
            format!(
                "{}/{}:{}",
                row["registry"].as_str().unwrap_or_default(),
                row["repository"].as_str().unwrap_or_default(),
                row["tag"].as_str().unwrap_or_default()
            ) == reference
        })
        .and_then(|row| row["size"].as_u64())
        .unwrap_or_else(|| panic!("{reference} in {rows}"))
}

// ---- push: cross-repository mounts, and the fallback when refused ----

#[test]
fn push_mounts_from_the_repository_a_blob_came_from() {
    let Some(reg) = Registry::start(&RegistryConfig::default()) else {
        return;
    };
    let t = TestDir::new("reg-mount");
    demo_store(&t);
    let host = reg.host();
    push_demo(&t, &host, &[]);
    // A store that pulled from library/sample-app knows where its blobs are.
    let other = t.join("other");
    imagefs(&t, &other)
        .arg("pull")
        .arg(format!("{host}/library/sample-app:1.0"))
        .assert_ok();
    let pushed = json(
        imagefs(&t, &other)
            .args(["push", "--json"])
            .arg(format!("{host}/library/sample-app:1.0"))
            .arg(format!("{host}/team/app:1"))
            .assert_ok(),
    );
    assert_eq!(
        (u(&pushed, "blobs_mounted"), u(&pushed, "blobs_uploaded")),
        (3, 0),
        "{pushed}"
    );
    let log = reg.log_text();
    assert!(
        log.contains("\"POST /v2/team/app/blobs/uploads/?mount=sha256:"),
        "no mount POST in the log"
    );
    assert!(
        !log.contains("PUT /v2/team/app/blobs/uploads/"),
        "a blob was uploaded to team/app"
    );
    // skopeo sees the same manifest digest.
    if require_skopeo() {
        let raw = skopeo_raw(&format!("{host}/team/app:1"));
        assert_eq!(Some(sha256_hex(&raw).as_str()), pushed["digest"].as_str());
    }

    // Through a proxy that refuses mounts: the blobs are uploaded instead.
    let proxy = FaultProxy::start(reg.addr);
    let via = proxy.host();
    let third = t.join("third");
    imagefs(&t, &third)
        .arg("pull")
        .arg(format!("{via}/library/sample-app:1.1"))
        .assert_ok();
    proxy.add("mount=", Fault::Status(403, None), 0);
    let pushed = json(
        imagefs(&t, &third)
            .args(["push", "--json"])
            .arg(format!("{via}/library/sample-app:1.1"))
            .arg(format!("{via}/team/refused:1"))
            .assert_ok(),
    );
    assert_eq!(
        (u(&pushed, "blobs_mounted"), u(&pushed, "blobs_uploaded")),
        (0, 4),
        "{pushed}"
    );
    assert!(proxy.requests().iter().any(|r| r.contains("mount=")));
}

fn skopeo_raw(reference: &str) -> Vec<u8> {
    let output = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .stdin(Stdio::null())
        .output()
        .expect("run skopeo");
    assert!(
        output.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

// ---- ls --remote ----

/// A registry's tag list API only (distribution 2.8.2 ignores `n`, so paging is
/// served here): `team/app` has tags a..e in pages of `n` linked by `Link`, and
/// `team/empty` answers `"tags": null`. Stops on drop.
struct TagPages {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TagPages {
    fn start() -> TagPages {
        use std::io::Write;
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("address");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (stop_flag, log) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop_flag.load(Ordering::SeqCst) && Instant::now() < deadline {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = stream.set_nonblocking(false);
                let Some(request) = registry::read_request(&mut stream) else {
                    continue;
                };
                log.lock().unwrap().push(request.target.clone());
                let (status, link, body) = tag_page(&request.target);
                let mut head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                if let Some(link) = link {
                    head.push_str(&format!("Link: <{link}>; rel=\"next\"\r\n"));
                }
                head.push_str("\r\n");
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(body.as_bytes());
            }
        });
        TagPages {
            addr,
            stop,
            seen,
            thread: Some(thread),
        }
    }
}

impl Drop for TagPages {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `(status, next link, body)` for a request to [`TagPages`].
fn tag_page(target: &str) -> (&'static str, Option<String>, String) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
    };
    match path {
        "/v2/" => ("200 OK", None, "{}".into()),
        "/v2/team/empty/tags/list" => (
            "200 OK",
            None,
            r#"{"name":"team/empty","tags":null}"#.into(),
        ),
        "/v2/team/app/tags/list" => {
            let all = ["a", "b", "c", "d", "e"];
            let n: usize = param("n").and_then(|n| n.parse().ok()).unwrap_or(all.len());
            let from = param("last")
                .and_then(|last| all.iter().position(|t| *t == last))
                .map_or(0, |i| i + 1);
            let page: Vec<&str> = all.iter().skip(from).take(n).copied().collect();
            let next = (from + page.len() < all.len())
                .then(|| format!("/v2/team/app/tags/list?n={n}&last={}", page[page.len() - 1]));
            let body = serde_json::json!({"name": "team/app", "tags": page}).to_string();
            ("200 OK", next, body)
        }
        _ => (
            "404 Not Found",
            None,
            r#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}"#
                .into(),
        ),
    }
}

#[test]
fn ls_remote_follows_pages_and_accepts_null_tags() {
    let pages = TagPages::start();
    let t = TestDir::new("reg-ls");
    let host = pages.addr.to_string();
    let listed = json(
        imagefs(&t, &t.store())
            .args(["ls", "--remote", "--json", "--page-size", "2"])
            .arg(format!("{host}/team/app"))
            .assert_ok(),
    );
    assert_eq!(
        listed["tags"],
        serde_json::json!(["a", "b", "c", "d", "e"]),
        "{listed}"
    );
    let seen = pages.seen.lock().unwrap().clone();
    let lists: Vec<&String> = seen.iter().filter(|t| t.contains("/tags/list")).collect();
    assert_eq!(
        lists,
        [
            "/v2/team/app/tags/list?n=2",
            "/v2/team/app/tags/list?n=2&last=b",
            "/v2/team/app/tags/list?n=2&last=d"
        ],
        "{seen:?}"
    );
    let text = imagefs(&t, &t.store())
        .args(["ls", "--remote"])
        .arg(format!("{host}/team/app"))
        .assert_ok()
        .stdout;
    assert_eq!(text.lines().count(), 5, "{text}");
    assert!(text.contains(&format!("{host}/team/app:c")), "{text}");
    let empty = json(
        imagefs(&t, &t.store())
            .args(["ls", "--remote", "--json"])
            .arg(format!("{host}/team/empty"))
            .assert_ok(),
    );
    assert_eq!(empty["tags"], serde_json::json!([]), "{empty}");
    imagefs(&t, &t.store())
        .args(["ls", "--remote"])
        .arg(format!("{host}/no/such"))
        .assert_err_line(&format!(
            "imagefs: ls --remote {host}/no/such: {host}/no/such: tags: "
        ));
}

#[test]
fn ls_remote_on_a_real_registry_with_deleted_tags() {
    let Some(reg) = Registry::start(&RegistryConfig::default()) else {
        return;
    };
    let t = TestDir::new("reg-ls-real");
    demo_store(&t);
    let host = reg.host();
    for tag in ["a", "b", "c"] {
        // No index artifact: its sha256-<hex> tag would be listed too.
        imagefs(&t, &t.store())
            .args(["push", "--no-index"])
            .arg("docker.io/library/sample-alpine:3.19")
            .arg(format!("{host}/team/app:{tag}"))
            .assert_ok();
    }
    let listed = json(
        imagefs(&t, &t.store())
            .args(["ls", "--remote", "--json", "--page-size", "1"])
            .arg(format!("{host}/team/app"))
            .assert_ok(),
    );
    assert_eq!(listed["tags"], serde_json::json!(["a", "b", "c"]));
    // Deleting the manifest removes every tag: distribution answers "tags": null.
    let digest = stored_tags(&t, &t.store())["docker.io/library/sample-alpine:3.19"].clone();
    let client =
        imagefs::RegistryClient::new(&host, &imagefs::RemoteOptions::default()).expect("a client");
    client
        .delete_manifest(
            "team/app",
            &imagefs::Digest::parse(&digest).expect("a digest"),
        )
        .expect("DELETE the manifest");
    let empty = json(
        imagefs(&t, &t.store())
            .args(["ls", "--remote", "--json"])
            .arg(format!("{host}/team/app"))
            .assert_ok(),
    );
    assert_eq!(empty["tags"], serde_json::json!([]), "{empty}");
}

// ---- authentication and TLS ----

#[test]
fn basic_auth_with_creds_and_authfile() {
    let config = RegistryConfig {
        auth: RegistryAuth::Basic {
            user: "alice".into(),
            password: "s3cret".into(),
        },
        tls: false,
    };
    let Some(reg) = Registry::start(&config) else {
        return;
    };
    let t = TestDir::new("reg-basic");
    demo_store(&t);
    let host = reg.host();
    let target = format!("{host}/team/app:1");
    let refused = imagefs(&t, &t.store())
        .args(["push", "docker.io/library/sample-app:1.1"])
        .arg(&target)
        .assert_err_line(&format!("imagefs: push {target}: {host}/team/app: "));
    assert!(refused.stderr.contains("401"), "{}", refused.stderr);
    imagefs(&t, &t.store())
        .args([
            "push",
            "--creds",
            "alice:wrong",
            "docker.io/library/sample-app:1.1",
        ])
        .arg(&target)
        .assert_err_line(&format!("imagefs: push {target}: "));
    imagefs(&t, &t.store())
        .args([
            "push",
            "--creds",
            "alice:s3cret",
            "docker.io/library/sample-app:1.1",
        ])
        .arg(&target)
        .assert_ok();
    // A password from stdin.
    let fresh = t.join("fresh");
    imagefs(&t, &fresh)
        .args(["pull", "--creds", "alice"])
        .arg(&target)
        .stdin("s3cret\n")
        .assert_ok();
    // An auth.json, as podman and skopeo write it.
    let authfile = t.write(
        "auth.json",
        serde_json::json!({"auths": {host.clone(): {"auth": base64_of("alice:s3cret")}}})
            .to_string(),
    );
    let other = t.join("other");
    imagefs(&t, &other)
        .arg("pull")
        .arg("--authfile")
        .arg(&authfile)
        .arg(&target)
        .assert_ok();
    assert_eq!(
        stored_tags(&t, &other)[&target],
        stored_tags(&t, &t.store())["docker.io/library/sample-app:1.1"]
    );
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn bearer_token_auth() {
    let config = RegistryConfig {
        auth: RegistryAuth::Token {
            user: Some(("bob".into(), "tok3n".into())),
            ttl: Duration::from_secs(300),
        },
        tls: false,
    };
    let Some(reg) = Registry::start(&config) else {
        return;
    };
    let t = TestDir::new("reg-token");
    demo_store(&t);
    let host = reg.host();
    let target = format!("{host}/team/multi:1");
    imagefs(&t, &t.store())
        .args(["push", "docker.io/library/sample-multi:latest"])
        .arg(&target)
        .assert_err_line(&format!("imagefs: push {target}: "));
    imagefs(&t, &t.store())
        .args([
            "push",
            "--creds",
            "bob:tok3n",
            "docker.io/library/sample-multi:latest",
        ])
        .arg(&target)
        .assert_ok();
    let fresh = t.join("fresh");
    imagefs(&t, &fresh)
        .args(["pull", "--creds", "bob:tok3n", "--jobs", "3"])
        .arg(&target)
        .assert_ok();
    assert_eq!(
        stored_tags(&t, &fresh)[&target],
        stored_tags(&t, &t.store())["docker.io/library/sample-multi:latest"]
    );
    assert!(reg.token_requests() >= 2);
}

#[test]
fn tls_with_a_ca_file_or_without_verification() {
    let config = RegistryConfig {
        auth: RegistryAuth::None,
        tls: true,
    };
    let Some(reg) = Registry::start(&config) else {
        return;
    };
    let t = TestDir::new("reg-tls");
    demo_store(&t);
    // The registry serves HTTPS only, with a certificate from the test's own CA.
    let target = format!("{}/team/app:1", reg.host());
    imagefs(&t, &t.store())
        .args(["push", "docker.io/library/sample-app:1.1"])
        .arg(&target)
        .env("SSL_CERT_FILE", reg.ca_cert().expect("a CA"))
        .assert_ok();
    let fresh = t.join("fresh");
    imagefs(&t, &fresh)
        .args(["pull", "--tls-verify=false"])
        .arg(&target)
        .assert_ok();
    let other = t.join("other");
    imagefs(&t, &other)
        .arg("pull")
        .arg(&target)
        .env("SSL_CERT_FILE", reg.ca_cert().expect("a CA"))
        .assert_ok();
    // Neither: the certificate is refused (and plain HTTP gets nowhere).
    imagefs(&t, &t.join("third"))
        .arg("pull")
        .arg(&target)
        .assert_err_line(&format!("imagefs: pull {target}: "));
}

// ---- faults ----

/// A registry holding the demo images, and a fault proxy in front of it.
struct Faulty {
    t: TestDir,
    reg: Registry,
    proxy: FaultProxy,
}

impl Faulty {
    fn start(name: &str) -> Option<Faulty> {
        let reg = Registry::start(&RegistryConfig::default())?;
        let t = TestDir::new(name);
        demo_store(&t);
        push_demo(&t, &reg.host(), &[]);
        let proxy = FaultProxy::start(reg.addr);
        Some(Faulty { t, reg, proxy })
    }

    /// The digest of layer `position` of `sample-app:1.1`.
    fn layer(&self, position: usize) -> String {
        let manifest =
            stored_tags(&self.t, &self.t.store())["docker.io/library/sample-app:1.1"].clone();
        let manifest: Value = serde_json::from_slice(
            &fs::read(
                self.t
                    .store()
                    .join("blobs/sha256")
                    .join(&manifest["sha256:".len()..]),
            )
            .expect("the stored manifest"),
        )
        .expect("manifest JSON");
        manifest["layers"][position]["digest"]
            .as_str()
            .expect("a layer")
            .to_string()
    }

    /// Pulls `sample-app:1.1` through the proxy into a fresh store `name`.
    fn pull(&self, name: &str, extra: &[&str]) -> (Output, PathBuf) {
        let store = self.t.join(name);
        let output = imagefs(&self.t, &store)
            .args(["pull", "--timeout", "3"])
            .args(extra)
            .arg(format!("{}/library/sample-app:1.1", self.proxy.host()))
            .output();
        (output, store)
    }

    /// The pull fails within `limit` with one line naming the proxy's registry and
    /// containing `needle`; nothing is kept.
    fn refused(&self, name: &str, needle: &str, limit: Duration) -> String {
        let started = Instant::now();
        let (output, store) = self.pull(name, &[]);
        let elapsed = started.elapsed();
        let line = output
            .assert_err_line(&format!(
                "imagefs: pull {}/library/sample-app:1.1: {}/library/sample-app",
                self.proxy.host(),
                self.proxy.host()
            ))
            .stderr;
        assert!(line.contains(needle), "{needle:?} not in {line}");
        assert!(elapsed < limit, "took {elapsed:?}: {line}");
        assert_nothing_kept(&self.t, &store, 0);
        self.proxy.clear();
        line
    }
}

#[test]
fn faults_refused_and_lying_registries_leave_nothing() {
    let Some(f) = Faulty::start("reg-faults") else {
        return;
    };
    let limit = Duration::from_secs(30);
    for status in [401, 403, 404] {
        f.proxy.add("/blobs/", Fault::Status(status, None), 0);
        f.refused(&format!("s{status}"), &status.to_string(), limit);
    }
    // A missing tag.
    let missing = f.t.join("missing");
    imagefs(&f.t, &missing)
        .arg("pull")
        .arg(format!("{}/library/sample-app:9.9", f.proxy.host()))
        .assert_err_line(&format!(
            "imagefs: pull {}/library/sample-app:9.9: {}/library/sample-app: manifest 9.9: ",
            f.proxy.host(),
            f.proxy.host()
        ));
    // Lies: a flipped byte (digest), a short body (size), an endless body, a huge manifest.
    f.proxy.add("/blobs/sha256:", Fault::Corrupt, 0);
    let line = f.refused("corrupt", "sha256:", limit);
    assert!(
        line.contains("digest") || line.contains("diff_id"),
        "{line}"
    );
    f.proxy.add("/blobs/", Fault::Truncate(100), 0);
    f.refused("truncated", "after 100 of", limit);
    f.proxy.add("/blobs/", Fault::Endless, 0);
    f.refused("endless", "longer than", limit);
    f.proxy.add("/manifests/", Fault::Endless, 0);
    f.refused("huge-manifest", "4 MiB", limit);
    // One layer lies while the others arrive on other threads (--jobs 4): what
    // those wrote is deleted too.
    let base = f.layer(0);
    f.proxy.add(&base, Fault::Truncate(5000), 0);
    f.refused("one-layer", &base, limit);
    f.proxy.add(&base, Fault::Corrupt, 0);
    f.refused("one-layer-corrupt", &base, limit);
}

#[test]
fn faults_stalls_drops_and_retries() {
    let Some(f) = Faulty::start("reg-retries") else {
        return;
    };
    // A body that stalls half way: the idle timeout (--timeout 3) ends it.
    f.proxy.add("/blobs/", Fault::StallAfter(100), 0);
    f.refused("stalled", "stalled", Duration::from_secs(60));
    // A registry that never answers: the response timeout, after bounded retries.
    f.proxy
        .add("/blobs/", Fault::Delay(Duration::from_secs(30)), 0);
    f.refused("silent", "within 3 s", Duration::from_secs(60));
    // Always 500: refused after its bounded retries.
    f.proxy.add("/blobs/", Fault::Status(500, None), 0);
    f.refused("always-500", "500", Duration::from_secs(30));
    // A connection dropped mid-blob every time.
    f.proxy.add("/blobs/", Fault::Truncate(1000), 0);
    f.refused("dropped", "after 1000 of", Duration::from_secs(30));

    // Passing faults are retried and the pull succeeds.
    // (Each request is tried 3 times: at most two faults per request.)
    f.proxy.add("/blobs/", Fault::Status(503, None), 1);
    f.proxy.add("/blobs/", Fault::Drop, 1);
    f.proxy.add("/manifests/", Fault::Status(502, None), 1);
    f.proxy.add("/manifests/", Fault::Status(429, Some(1)), 1);
    let (output, store) = f.pull("retried", &["--json"]);
    let report = json(output.assert_ok());
    assert_eq!(u(&report, "blobs_fetched"), 5, "{report}");
    let seen = f.proxy.requests();
    assert!(seen.len() >= 9, "{seen:#?}");
    let fsck = json(imagefs(&f.t, &store).args(["fsck", "--json"]).assert_ok());
    assert_eq!(fsck["corrupt"], serde_json::json!([]));
    drop(f.reg);
}

#[test]
fn kill_9_mid_blob_leaves_only_what_fsck_repair_removes() {
    let Some(f) = Faulty::start("reg-kill") else {
        return;
    };
    let store = f.t.join("killed");
    // The base layer stalls mid-body: the pull sits mid-blob with a temp file open.
    f.proxy.add(&f.layer(0), Fault::StallAfter(100), 0);
    let mut child = Command::new(util::imagefs_bin())
        .arg("--store")
        .arg(&store)
        .args(["pull", "--timeout", "60", "--jobs", "1"])
        .arg(format!("{}/library/sample-app:1.1", f.proxy.host()))
        .env("HOME", f.t.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start imagefs pull");
    let deadline = Instant::now() + Duration::from_secs(30);
    let temp_seen = loop {
        let temps = fs::read_dir(store.join("tmp"))
            .map(|d| d.count())
            .unwrap_or(0);
        if temps > 0 || Instant::now() > deadline {
            break temps > 0;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    assert!(temp_seen, "the pull never started writing a blob");
    f.proxy.clear();
    // Only unreferenced leftovers; repair removes them; then clean.
    let report = json(imagefs(&f.t, &store).args(["fsck", "--json"]).output());
    for key in ["missing", "corrupt", "bad_counts", "dangling"] {
        assert_eq!(report[key], serde_json::json!([]), "{key}: {report}");
    }
    imagefs(&f.t, &store).args(["fsck", "--repair"]).assert_ok();
    assert_nothing_kept(&f.t, &store, 0);
    // And the pull works afterwards.
    f.pull("killed", &[]).0.assert_ok();
}

// ---- interop with skopeo and umoci ----

fn skopeo(args: &[&str]) {
    Cmd::new("skopeo").args(args).timeout_secs(120).assert_ok();
}

#[test]
fn skopeo_copy_in_imagefs_pull_out_same_digests_and_rootfs() {
    if !require_skopeo() {
        return;
    }
    let Some(reg) = Registry::start(&RegistryConfig::default()) else {
        return;
    };
    let t = TestDir::new("reg-skopeo-in");
    let (layout, _) = t.demo_layout("demo-layout");
    let host = reg.host();
    let oci = |name: &str| format!("oci:{}:docker.io/library/{name}", layout.display());
    // OCI images and a multi-platform index, copied by skopeo.
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &oci("sample-alpine:3.19"),
        &format!("docker://{host}/sk/alpine:3.19"),
    ]);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &oci("sample-app:1.1"),
        &format!("docker://{host}/sk/app:1.1"),
    ]);
    skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &oci("sample-multi:latest"),
        &format!("docker://{host}/sk/multi:1"),
    ]);
    for reference in ["sk/alpine:3.19", "sk/app:1.1", "sk/multi:1"] {
        let reference = format!("{host}/{reference}");
        let raw = skopeo_raw(&reference);
        let pulled = json(
            imagefs(&t, &t.store())
                .args(["pull", "--json"])
                .arg(&reference)
                .assert_ok(),
        );
        assert_eq!(pulled["digest"].as_str(), Some(sha256_hex(&raw).as_str()));
    }
    // rootfs/ equals umoci unpack of the same image as skopeo fetches it (umoci
    // 0.4.7 reads no zstd layers: the gzip image).
    if !util::require_fuse() || !util::require_tool("umoci") {
        return;
    }
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{host}/sk/alpine:3.19"),
        &format!("oci:{}:app", t.join("fetched").display()),
    ]);
    Cmd::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:app", t.join("fetched").display()))
        .arg(t.join("unpacked"))
        .timeout_secs(120)
        .assert_ok();
    let m = t.mount(&[]);
    let ours = m.join(format!("{host}/sk/alpine/tags/3.19/rootfs"));
    let theirs = t.join("unpacked/rootfs");
    assert_eq!(util::tree_listing(&ours), util::tree_listing(&theirs));
    assert_eq!(util::tree_hashes(&ours), util::tree_hashes(&theirs));
    drop(m);
}

#[test]
fn imagefs_push_skopeo_reads_same_digests() {
    if !require_skopeo() {
        return;
    }
    let Some(reg) = Registry::start(&RegistryConfig::default()) else {
        return;
    };
    let t = TestDir::new("reg-skopeo-out");
    demo_store(&t);
    let host = reg.host();
    push_demo(&t, &host, &[]);
    let local = stored_tags(&t, &t.store());
    // Every kind: OCI image, Docker schema 2, artifact with a subject, index.
    for name in DEMO {
        let raw = skopeo_raw(&format!("{host}/library/{name}"));
        assert_eq!(
            sha256_hex(&raw),
            local[&format!("docker.io/library/{name}")],
            "{name}"
        );
    }
    let docker = skopeo_raw(&format!("{host}/library/sample-app:1.0"));
    assert!(String::from_utf8_lossy(&docker)
        .contains("application/vnd.docker.distribution.manifest.v2+json"));
    // skopeo copies them out unchanged (OCI into a layout; the Docker manifest
    // registry to registry, as an OCI layout would convert it).
    let out = t.join("out");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{host}/library/sample-app:1.1"),
        &format!("oci:{}:app", out.display()),
    ]);
    skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{host}/library/sample-multi:latest"),
        &format!("oci:{}:multi", out.display()),
    ]);
    let index: Value = serde_json::from_slice(&fs::read(out.join("index.json")).unwrap()).unwrap();
    let digests: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    assert!(digests.contains(&local["docker.io/library/sample-app:1.1"].as_str()));
    assert!(digests.contains(&local["docker.io/library/sample-multi:latest"].as_str()));
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{host}/library/sample-app:1.0"),
        &format!("docker://{host}/copied/app:1.0"),
    ]);
    assert_eq!(
        sha256_hex(&skopeo_raw(&format!("{host}/copied/app:1.0"))),
        local["docker.io/library/sample-app:1.0"]
    );
    // And a pull of skopeo's copy is the same image again.
    let fresh = t.join("fresh");
    let pulled = json(
        imagefs(&t, &fresh)
            .args(["pull", "--json"])
            .arg(format!("{host}/copied/app:1.0"))
            .assert_ok(),
    );
    assert_eq!(
        pulled["digest"].as_str(),
        Some(local["docker.io/library/sample-app:1.0"].as_str())
    );
}
