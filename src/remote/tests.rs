//! The client against a real registry (distribution 2.8.2 on loopback): push and
//! read back, HEAD, mounts, tag pages, Basic and Bearer auth, TLS, every fault of
//! the proxy, and skopeo interop.

#[cfg(test)]
#[path = "../../tests/util/registry.rs"]
mod harness;

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{Fault, FaultProxy, Registry, RegistryAuth, RegistryConfig};

use super::*;
use crate::digest::Digest;
use crate::image::{media_types, ImageSource};
use crate::reference::Reference;

/// Options for tests: no credential files of the machine, short timeouts and
/// backoff so that faults fail fast.
fn options() -> Options {
    Options {
        no_credential_files: true,
        connect_timeout: Duration::from_secs(2),
        response_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(2),
        retry_backoff: Duration::from_millis(10),
        max_retry_wait: Duration::from_millis(300),
        ..Options::default()
    }
}

/// A tiny image: one uncompressed tar layer, its config, its OCI manifest.
struct TestImage {
    layer: Vec<u8>,
    config: Vec<u8>,
    manifest: Vec<u8>,
}

impl TestImage {
    fn new(content: &str) -> TestImage {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        builder
            .append_data(&mut header, "hello.txt", content.as_bytes())
            .expect("append to an in-memory tar");
        let layer = builder.into_inner().expect("finish an in-memory tar");
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [Digest::of(&layer).to_string()]},
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_types::OCI_MANIFEST,
            "config": {"mediaType": media_types::OCI_CONFIG, "digest": Digest::of(&config).to_string(), "size": config.len()},
            "layers": [{"mediaType": media_types::OCI_LAYER_TAR, "digest": Digest::of(&layer).to_string(), "size": layer.len()}],
        }))
        .unwrap();
        TestImage {
            layer,
            config,
            manifest,
        }
    }

    fn manifest_digest(&self) -> Digest {
        Digest::of(&self.manifest)
    }

    fn push(&self, client: &Client, repository: &str, tag: &str) {
        for blob in [&self.layer, &self.config] {
            let digest = Digest::of(blob);
            if client.head_blob(repository, &digest).unwrap().is_none() {
                client.push_blob_bytes(repository, &digest, blob).unwrap();
            }
        }
        let digest = client
            .put_manifest(repository, tag, media_types::OCI_MANIFEST, &self.manifest)
            .unwrap();
        assert_eq!(digest, self.manifest_digest());
    }
}

/// A registry source over `client` for `reference`, its top manifest fetched now.
fn open_source(client: Arc<Client>, reference: &Reference) -> RegistrySource {
    let wanted = match &reference.target {
        crate::reference::Target::Tag(tag) => tag.clone(),
        crate::reference::Target::Digest(digest) => digest.to_string(),
    };
    let top = client.get_manifest(&reference.repository, &wanted).unwrap();
    RegistrySource::with_top(client, reference, top).unwrap()
}

fn read_all(mut reader: impl Read) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn start(config: RegistryConfig) -> Option<Registry> {
    Registry::start(&config)
}

#[test]
fn push_read_back_head_range_mount_tags() {
    let Some(registry) = start(RegistryConfig::default()) else {
        return;
    };
    let client = Client::new(&registry.host(), &options()).unwrap();
    let image = TestImage::new("hello from imagefs\n");
    image.push(&client, "team/app", "1");

    // Manifest by tag and by digest, with the media type and digest.
    let by_tag = client.get_manifest("team/app", "1").unwrap();
    assert_eq!(by_tag.bytes, image.manifest);
    assert_eq!(by_tag.media_type, media_types::OCI_MANIFEST);
    assert_eq!(by_tag.digest, image.manifest_digest());
    let by_digest = client
        .get_manifest("team/app", &image.manifest_digest().to_string())
        .unwrap();
    assert_eq!(by_digest, by_tag);
    let missing = client.get_manifest("team/app", "nope").unwrap_err();
    assert_eq!(missing.kind, ErrorKind::NotFound, "{missing}");
    assert!(
        missing
            .to_string()
            .starts_with(&format!("{}/team/app: manifest nope: 404", registry.host())),
        "{missing}"
    );

    // HEAD.
    let head = client.head_manifest("team/app", "1").unwrap().unwrap();
    assert_eq!(head.digest, Some(image.manifest_digest()));
    let layer_digest = Digest::of(&image.layer);
    let blob_head = client
        .head_blob("team/app", &layer_digest)
        .unwrap()
        .unwrap();
    assert_eq!(blob_head.size, Some(image.layer.len() as u64));
    assert_eq!(
        client
            .head_blob("team/app", &Digest::of(b"absent"))
            .unwrap(),
        None
    );

    // Blob, whole and ranged; a wrong expected size fails.
    let blob = read_all(
        client
            .get_blob("team/app", &layer_digest, Some(image.layer.len() as u64))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(blob, image.layer);
    let range = read_all(
        client
            .get_blob_range("team/app", &layer_digest, 10, 109)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(range, image.layer[10..110]);
    let beyond = client
        .get_blob_range("team/app", &layer_digest, 1 << 30, (1 << 30) + 10)
        .unwrap_err();
    assert_eq!(beyond.kind, ErrorKind::Size, "{beyond}");
    let wrong = client
        .get_blob("team/app", &layer_digest, Some(5))
        .unwrap_err();
    assert_eq!(wrong.kind, ErrorKind::Size, "{wrong}");

    // One client serves several threads at once (pull --jobs).
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    read_all(client.get_blob("team/app", &layer_digest, None).unwrap()).unwrap()
                })
            })
            .collect();
        for worker in workers {
            assert_eq!(worker.join().unwrap(), image.layer);
        }
    });

    // Cross-repository mount: a blob the source repo has mounts; one it lacks does not.
    assert_eq!(
        client
            .mount_blob("other/app", &layer_digest, "team/app")
            .unwrap(),
        MountOutcome::Mounted
    );
    assert!(client
        .head_blob("other/app", &layer_digest)
        .unwrap()
        .is_some());
    let absent = Digest::of(b"not there");
    assert_eq!(
        client.mount_blob("other/app", &absent, "team/app").unwrap(),
        MountOutcome::NotMounted
    );

    // A chunked upload (PATCH) of a blob over the monolithic limit.
    let chunky = Client::new(
        &registry.host(),
        &Options {
            monolithic_limit: 1000,
            chunk_size: 700,
            ..options()
        },
    )
    .unwrap();
    let big: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    chunky
        .push_blob(
            "team/app",
            &Digest::of(&big),
            big.len() as u64,
            &mut &big[..],
        )
        .unwrap();
    assert_eq!(
        read_all(
            client
                .get_blob("team/app", &Digest::of(&big), None)
                .unwrap()
        )
        .unwrap(),
        big
    );

    // A Docker schema 2 manifest keeps its media type.
    let docker = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_types::DOCKER_MANIFEST,
        "config": {"mediaType": media_types::DOCKER_CONFIG, "digest": Digest::of(&image.config).to_string(), "size": image.config.len()},
        "layers": [{"mediaType": media_types::DOCKER_LAYER_TAR_GZIP, "digest": layer_digest.to_string(), "size": image.layer.len()}],
    }))
    .unwrap();
    client
        .put_manifest("docker/app", "1", media_types::DOCKER_MANIFEST, &docker)
        .unwrap_err();
    client
        .mount_blob("docker/app", &layer_digest, "team/app")
        .unwrap();
    client
        .mount_blob("docker/app", &Digest::of(&image.config), "team/app")
        .unwrap();
    client
        .put_manifest("docker/app", "1", media_types::DOCKER_MANIFEST, &docker)
        .unwrap();
    let fetched = client.get_manifest("docker/app", "1").unwrap();
    assert_eq!(
        (fetched.media_type.as_str(), fetched.bytes),
        (media_types::DOCKER_MANIFEST, docker)
    );

    // Tags, page by page (?n=2), including an empty repository's null list.
    for tag in ["2", "3", "4", "5"] {
        client
            .put_manifest("team/app", tag, media_types::OCI_MANIFEST, &image.manifest)
            .unwrap();
    }
    let mut tags = client.list_tags("team/app", Some(2)).unwrap().tags;
    tags.sort();
    assert_eq!(tags, ["1", "2", "3", "4", "5"]);
    assert_eq!(client.list_tags("team/app", None).unwrap().tags.len(), 5);

    // Referrers: 2.8 has no API; the sha256-<hex> tag fallback is found.
    assert_eq!(
        client
            .referrers("team/app", &image.manifest_digest())
            .unwrap(),
        None
    );
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": media_types::OCI_INDEX, "manifests": [],
    }))
    .unwrap();
    let fallback = client::referrers_tag(&image.manifest_digest());
    client
        .put_manifest("team/app", &fallback, media_types::OCI_INDEX, &index)
        .unwrap();
    let referrers = client
        .referrers("team/app", &image.manifest_digest())
        .unwrap()
        .unwrap();
    assert_eq!(referrers.bytes, index);

    // The image source: one top descriptor, manifest and blobs, origins recorded.
    let reference = Reference::parse(&format!("{}/team/app:1", registry.host())).unwrap();
    let source = open_source(
        Arc::new(Client::new(&registry.host(), &options()).unwrap()),
        &reference,
    );
    let images = source.images();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].descriptor.digest, image.manifest_digest());
    assert_eq!(images[0].descriptor.size, image.manifest.len() as u64);
    assert_eq!(images[0].descriptor.media_type, media_types::OCI_MANIFEST);
    assert_eq!(
        read_all(source.open_manifest(&image.manifest_digest()).unwrap()).unwrap(),
        image.manifest
    );
    assert_eq!(
        read_all(source.open_blob(&Digest::of(&image.config)).unwrap()).unwrap(),
        image.config
    );
    assert_eq!(source.describe(), reference.to_string());
    let by_digest = Reference::parse(&format!(
        "{}/team/app@{}",
        registry.host(),
        image.manifest_digest()
    ))
    .unwrap();
    let source = open_source(
        Arc::new(Client::new(&registry.host(), &options()).unwrap()),
        &by_digest,
    );
    assert_eq!(
        source.images()[0].descriptor.digest,
        image.manifest_digest()
    );
    assert!(client.bytes_fetched() > 0);
}

#[test]
fn store_only_names_are_refused() {
    let err = Client::new("prod", &options()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::StoreOnly);
    assert!(err.to_string().contains("lives only in the store"), "{err}");
}

#[test]
fn basic_auth_good_and_bad_password() {
    let auth = RegistryAuth::Basic {
        user: "alice".into(),
        password: "wonderland".into(),
    };
    let Some(registry) = start(RegistryConfig { auth, tls: false }) else {
        return;
    };
    let good = Client::new(
        &registry.host(),
        &Options {
            credentials: Some(Credentials::parse("alice:wonderland")),
            ..options()
        },
    )
    .unwrap();
    let image = TestImage::new("basic\n");
    image.push(&good, "team/app", "1");
    assert_eq!(
        good.get_manifest("team/app", "1").unwrap().bytes,
        image.manifest
    );

    // The same credentials from an auth.json given as the authfile.
    let authfile = registry.dir.path().join("auth.json");
    let encoded = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        "alice:wonderland",
    );
    let auths = serde_json::json!({"auths": {registry.host(): {"auth": encoded}}});
    std::fs::write(&authfile, auths.to_string()).unwrap();
    let from_file = Client::new(
        &registry.host(),
        &Options {
            authfile: Some(authfile),
            no_credential_files: false,
            ..options()
        },
    )
    .unwrap();
    assert_eq!(
        from_file.get_manifest("team/app", "1").unwrap().bytes,
        image.manifest
    );

    for creds in [Some(Credentials::parse("alice:wrong")), None] {
        let bad = Client::new(
            &registry.host(),
            &Options {
                credentials: creds,
                ..options()
            },
        )
        .unwrap();
        let err = bad.get_manifest("team/app", "1").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unauthorized, "{err}");
        assert!(
            err.to_string().starts_with(&format!(
                "{}/team/app: manifest 1: 401 Unauthorized",
                registry.host()
            )),
            "{err}"
        );
    }
}

#[test]
fn bearer_auth_caches_tokens_per_scope() {
    let auth = RegistryAuth::Token {
        user: Some(("bob".into(), "builder".into())),
        ttl: Duration::from_secs(300),
    };
    let Some(registry) = start(RegistryConfig { auth, tls: false }) else {
        return;
    };
    let client = Client::new(
        &registry.host(),
        &Options {
            credentials: Some(Credentials::parse("bob:builder")),
            ..options()
        },
    )
    .unwrap();
    let image = TestImage::new("bearer\n");
    image.push(&client, "team/app", "1");
    let after_push = registry.token_requests();
    assert!(after_push >= 1, "a token was fetched");
    // Reads in one scope reuse one token.
    for _ in 0..3 {
        client.get_manifest("team/app", "1").unwrap();
        read_all(
            client
                .get_blob("team/app", &Digest::of(&image.layer), None)
                .unwrap(),
        )
        .unwrap();
    }
    let after_reads = registry.token_requests();
    assert!(
        after_reads <= after_push + 1,
        "pull scope fetched once: {after_push} -> {after_reads}"
    );
    // Another repository is another scope.
    client.get_manifest("team/other", "1").unwrap_err();
    assert_eq!(registry.token_requests(), after_reads + 1);
    assert_eq!(client.token_fetches() as usize, registry.token_requests());
    // The mount asks for both scopes in one token.
    assert_eq!(
        client
            .mount_blob("team/copy", &Digest::of(&image.layer), "team/app")
            .unwrap(),
        MountOutcome::Mounted
    );

    // Bad credentials: the token endpoint's refusal, on one line.
    let bad = Client::new(
        &registry.host(),
        &Options {
            credentials: Some(Credentials::parse("bob:wrong")),
            ..options()
        },
    )
    .unwrap();
    let err = bad.get_manifest("team/app", "1").unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unauthorized, "{err}");
    assert!(
        err.to_string().contains("token") && err.to_string().contains("401"),
        "{err}"
    );
}

#[test]
fn bearer_tokens_are_renewed() {
    let auth = RegistryAuth::Token {
        user: None,
        ttl: Duration::from_secs(2),
    };
    let Some(registry) = start(RegistryConfig { auth, tls: false }) else {
        return;
    };
    let client = Client::new(&registry.host(), &options()).unwrap();
    TestImage::new("renew\n").push(&client, "team/app", "1");
    client.get_manifest("team/app", "1").unwrap();
    let before = registry.token_requests();
    std::thread::sleep(Duration::from_millis(2100));
    client.get_manifest("team/app", "1").unwrap();
    assert!(
        registry.token_requests() > before,
        "an expired token is renewed"
    );
}

#[test]
fn tls_with_ca_file_and_without_verification() {
    let Some(registry) = start(RegistryConfig {
        auth: RegistryAuth::None,
        tls: true,
    }) else {
        return;
    };
    let ca = registry.ca_cert().unwrap().to_path_buf();
    let trusted = Client::new(
        &registry.host(),
        &Options {
            ca_file: Some(ca),
            ..options()
        },
    )
    .unwrap();
    let image = TestImage::new("tls\n");
    image.push(&trusted, "team/app", "1");
    assert_eq!(
        trusted.get_manifest("team/app", "1").unwrap().bytes,
        image.manifest
    );

    // Loopback allows plain HTTP, but HTTPS certificates are still checked.
    let untrusted = Client::new(&registry.host(), &options()).unwrap();
    let err = untrusted.get_manifest("team/app", "1").unwrap_err();
    assert_eq!(err.kind, ErrorKind::Tls, "{err}");

    let unchecked = Client::new(
        &registry.host(),
        &Options {
            tls_verify: false,
            ..options()
        },
    )
    .unwrap();
    assert_eq!(
        unchecked.get_manifest("team/app", "1").unwrap().bytes,
        image.manifest
    );
}

/// A registry with an image, a proxy in front, and a client through the proxy.
struct Faulty {
    registry: Registry,
    proxy: FaultProxy,
    image: TestImage,
}

impl Faulty {
    fn start(auth: RegistryAuth) -> Option<Faulty> {
        let registry = start(RegistryConfig {
            auth: auth.clone(),
            tls: false,
        })?;
        let proxy = FaultProxy::start(registry.addr);
        let image = TestImage::new("faults\n");
        let direct = Client::new(&registry.host(), &Self::options_for(&auth)).unwrap();
        image.push(&direct, "team/app", "1");
        Some(Faulty {
            registry,
            proxy,
            image,
        })
    }

    fn options_for(auth: &RegistryAuth) -> Options {
        let credentials = match auth {
            RegistryAuth::Basic { user, password } => {
                Some(Credentials::parse(&format!("{user}:{password}")))
            }
            _ => None,
        };
        Options {
            credentials,
            ..options()
        }
    }

    fn client(&self) -> Client {
        Client::new(&self.proxy.host(), &options()).unwrap()
    }

    fn layer(&self) -> Digest {
        Digest::of(&self.image.layer)
    }
}

/// Runs `f`, which must fail within `limit`, and returns its error line.
fn fails_within<T: std::fmt::Debug>(
    limit: Duration,
    f: impl FnOnce() -> Result<T, String>,
) -> String {
    let started = Instant::now();
    let err = f().expect_err("the fault must give an error");
    assert!(
        started.elapsed() < limit,
        "took {:?}: {err}",
        started.elapsed()
    );
    assert!(!err.contains('\n'), "one line: {err:?}");
    err
}

#[test]
fn faults_server_errors_and_retries() {
    let Some(f) = Faulty::start(RegistryAuth::None) else {
        return;
    };
    let client = f.client();
    let host = f.proxy.host();
    let layer = f.layer();

    // 500 every time: three tries, then one line naming registry, blob, status.
    f.proxy.add("/blobs/", Fault::Status(500, None), 0);
    let err = fails_within(Duration::from_secs(10), || {
        client
            .get_blob("team/app", &layer, None)
            .map_err(|e| e.to_string())
    });
    assert_eq!(
        err,
        format!("{host}/team/app: blob {layer}: 500 Internal Server Error after 3 tries")
    );
    f.proxy.clear();

    // One 500, two 429s (Retry-After: 0), one dropped connection: all retried.
    f.proxy.add("/blobs/", Fault::Status(500, None), 1);
    read_all(client.get_blob("team/app", &layer, None).unwrap()).unwrap();
    f.proxy.add("/manifests/", Fault::Status(429, Some(0)), 2);
    client.get_manifest("team/app", "1").unwrap();
    f.proxy.add("/manifests/", Fault::Drop, 1);
    client.get_manifest("team/app", "1").unwrap();
    f.proxy.clear();

    // 429 forever, with a Retry-After over the cap: capped waits, then an error.
    f.proxy
        .add("/manifests/", Fault::Status(429, Some(3600)), 0);
    let err = fails_within(Duration::from_secs(10), || {
        client
            .get_manifest("team/app", "1")
            .map_err(|e| e.to_string())
    });
    assert_eq!(
        err,
        format!("{host}/team/app: manifest 1: 429 Too Many Requests after 3 tries")
    );
    f.proxy.clear();

    // Dropped every time.
    f.proxy.add("/manifests/", Fault::Drop, 0);
    let err = fails_within(Duration::from_secs(10), || {
        client
            .get_manifest("team/app", "1")
            .map_err(|e| e.to_string())
    });
    assert!(
        err.starts_with(&format!("{host}/team/app: manifest 1: "))
            && err.ends_with("after 3 tries"),
        "{err}"
    );
}

#[test]
fn faults_lying_bodies() {
    let Some(f) = Faulty::start(RegistryAuth::None) else {
        return;
    };
    let client = f.client();
    let host = f.proxy.host();
    let layer = f.layer();
    let size = f.image.layer.len() as u64;

    // A truncated blob body.
    f.proxy.add("/blobs/", Fault::Truncate(100), 1);
    let err = fails_within(Duration::from_secs(10), || {
        read_all(
            client
                .get_blob("team/app", &layer, Some(size))
                .map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())
    });
    assert!(
        err.starts_with(&format!("{host}/team/app: blob {layer}: ")),
        "{err}"
    );
    assert!(err.contains("100 of"), "{err}");

    // A corrupted manifest asked for by digest: the digest check refuses it.
    let digest = f.image.manifest_digest();
    f.proxy.add("/manifests/", Fault::Corrupt, 1);
    let err = fails_within(Duration::from_secs(10), || {
        client
            .get_manifest("team/app", &digest.to_string())
            .map_err(|e| e.to_string())
    });
    assert!(
        err.starts_with(&format!("{host}/team/app: manifest {digest}: ")),
        "{err}"
    );
    assert!(err.contains("digest"), "{err}");

    // A range answered with the whole blob (200): refused, so the caller can fall back.
    f.proxy.add("/blobs/", Fault::IgnoreRange, 1);
    let err = fails_within(Duration::from_secs(10), || {
        client
            .get_blob_range("team/app", &layer, 0, 9)
            .map_err(|e| e.to_string())
    });
    assert_eq!(err, format!("{host}/team/app: blob {layer} bytes 0-9: the registry ignored the Range header (200, whole blob)"));
    let range = read_all(client.get_blob_range("team/app", &layer, 0, 9).unwrap()).unwrap();
    assert_eq!(range, f.image.layer[..10]);

    // An endless manifest: cut at 4 MiB.
    f.proxy.add("/manifests/", Fault::Endless, 1);
    let err = fails_within(Duration::from_secs(20), || {
        client
            .get_manifest("team/app", "1")
            .map_err(|e| e.to_string())
    });
    assert_eq!(
        err,
        format!("{host}/team/app: manifest 1: manifest is more than the 4 MiB limit")
    );

    // An endless blob: cut one byte past its size.
    f.proxy.add("/blobs/", Fault::Endless, 1);
    let err = fails_within(Duration::from_secs(20), || {
        read_all(
            client
                .get_blob("team/app", &layer, Some(size))
                .map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())
    });
    assert_eq!(
        err,
        format!("{host}/team/app: blob {layer}: the body is longer than {size} bytes")
    );
}

#[test]
fn faults_timeouts() {
    let Some(f) = Faulty::start(RegistryAuth::None) else {
        return;
    };
    let client = Client::new(
        &f.proxy.host(),
        &Options {
            max_tries: 1,
            response_timeout: Duration::from_secs(1),
            ..options()
        },
    )
    .unwrap();
    let host = f.proxy.host();
    let layer = f.layer();

    // No response within the response timeout.
    f.proxy
        .add("/manifests/", Fault::Delay(Duration::from_secs(5)), 1);
    let err = fails_within(Duration::from_secs(5), || {
        client
            .get_manifest("team/app", "1")
            .map_err(|e| e.to_string())
    });
    assert_eq!(
        err,
        format!("{host}/team/app: manifest 1: no response within 1 s")
    );

    // A body that stalls after its head: the idle timeout.
    f.proxy.add("/blobs/", Fault::Stall, 1);
    let err = fails_within(Duration::from_secs(5), || {
        read_all(
            client
                .get_blob("team/app", &layer, None)
                .map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())
    });
    assert!(
        err.starts_with(&format!(
            "{host}/team/app: blob {layer}: stalled: no data within 2 s"
        )),
        "{err}"
    );

    // Nothing listening at all: a connect error at the ping.
    let dead = Client::new(&format!("127.0.0.1:{}", harness::free_port()), &options()).unwrap();
    let err = fails_within(Duration::from_secs(10), || {
        dead.get_manifest("team/app", "1")
            .map_err(|e| e.to_string())
    });
    assert!(
        err.contains("127.0.0.1:") && err.contains("connect"),
        "{err}"
    );
}

#[test]
fn faults_redirects() {
    let auth = RegistryAuth::Basic {
        user: "alice".into(),
        password: "wonderland".into(),
    };
    let Some(f) = Faulty::start(auth.clone()) else {
        return;
    };
    let client = Client::new(&f.proxy.host(), &Faulty::options_for(&auth)).unwrap();
    let host = f.proxy.host();
    let layer = f.layer();

    // To another host (127.0.0.2, as a storage backend): followed, without Authorization.
    f.proxy.add("/blobs/", Fault::RedirectOtherHost, 1);
    let blob = read_all(client.get_blob("team/app", &layer, None).unwrap()).unwrap();
    assert_eq!(blob, f.image.layer);
    assert_eq!(f.proxy.other_host_authorizations(), vec![None]);

    // A loop.
    f.proxy.add("/blobs/", Fault::RedirectLoop, 0);
    let err = fails_within(Duration::from_secs(10), || {
        client
            .get_blob("team/app", &layer, None)
            .map_err(|e| e.to_string())
    });
    assert!(
        err.starts_with(&format!("{host}/team/app: blob {layer}: redirect loop")),
        "{err}"
    );
    f.proxy.clear();

    // A redirect to the same host keeps Authorization.
    let target = format!("http://{host}/v2/team/app/blobs/{layer}?redirected=1");
    f.proxy.add("/blobs/", Fault::Redirect(target), 1);
    assert_eq!(
        read_all(client.get_blob("team/app", &layer, None).unwrap()).unwrap(),
        f.image.layer
    );
    drop(f.registry);
}

#[test]
fn skopeo_copy_then_read_with_the_client() {
    let Some(registry) = start(RegistryConfig::default()) else {
        return;
    };
    if !std::path::Path::new("/usr/bin/skopeo").exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and skopeo is missing"
        );
        eprintln!("skipped: skopeo missing");
        return;
    }
    let image = TestImage::new("skopeo interop\n");
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    for blob in [&image.layer, &image.config, &image.manifest] {
        std::fs::write(blobs.join(Digest::of(blob).hex()), blob).unwrap();
    }
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": media_types::OCI_MANIFEST, "digest": image.manifest_digest().to_string(),
            "size": image.manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "v1"},
        }],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    let output = std::process::Command::new("timeout")
        .arg("60")
        .arg("skopeo")
        .args([
            "copy",
            "--insecure-policy",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{}/interop/app:v1", registry.host()))
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let client = Arc::new(Client::new(&registry.host(), &options()).unwrap());
    let fetched = client.get_manifest("interop/app", "v1").unwrap();
    assert_eq!(fetched.digest, image.manifest_digest());
    assert_eq!(fetched.bytes, image.manifest);
    let reference = Reference::parse(&format!("{}/interop/app:v1", registry.host())).unwrap();
    let source = open_source(client, &reference);
    let layer = read_all(source.open_blob(&Digest::of(&image.layer)).unwrap()).unwrap();
    assert_eq!(Digest::of(&layer), Digest::of(&image.layer));
}
