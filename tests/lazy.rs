//! `imagefs pull --lazy` against a real registry (docker-registry 2.8.2 on
//! 127.0.0.1, often behind the fault-injecting proxy) and a real mount: the tag is
//! there at once, listing costs no layer bytes once the indexes exist, reading one
//! file fetches a small part of the image; files spanning many checkpoints, a hard
//! link whose target lies in another span, a sparse file and a multi-member (pigz)
//! layer read right; two readers fetch once; a corrupted range gives EIO, never
//! wrong bytes; a stopped registry gives EIO for what is not fetched while fetched
//! files keep reading; a plain pull completes the image; df, inspect and fsck show
//! the lazy state; kill -9 of the daemon mid-fetch leaves nothing fsck takes for
//! good data.
//!
//! Needs docker-registry, FUSE (root), GNU tar and pigz: skipped with a message
//! where missing, failing under `CI=true`.

#[path = "util/registry.rs"]
mod registry;
mod util;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use imagefs::testing::sample::{self, Blob, Built, BuiltLayer, Compression, ImageBuilder};
use registry::{Fault, FaultProxy, Registry, RegistryAuth, RegistryConfig};
use serde_json::Value;
use util::{with_timeout, Cmd, Mount, Output, TestDir};

const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// `imagefs --store STORE ...` with a home of its own and a deadline.
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

fn sh(dir: &Path, script: &str) -> String {
    Cmd::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .timeout_secs(60)
        .stdout()
}

fn can_run() -> bool {
    util::require_fuse() && util::require_tool("pigz") && util::require_tool("tar")
}

/// The files of the test layer, as written to disk before tar reads them.
struct Source {
    dir: PathBuf,
}

impl Source {
    fn read(&self, path: &str) -> Vec<u8> {
        fs::read(self.dir.join(path)).unwrap()
    }
}

/// A gzip layer of about 20 MB (well over the 10 MiB lazy threshold) made by GNU
/// tar from files on disk, in this order: small text files, a hard-link target,
/// a 6 MB random file (many checkpoints), 12 MB of random filler, a sparse file,
/// more small files, then the hard link (its header far from its target's data).
/// Compressed with pigz in two halves, concatenated: a multi-member gzip stream.
fn big_layer(t: &TestDir) -> (BuiltLayer, Source) {
    layer_of(
        t,
        "mkdir -p etc small more && printf 'NAME=lazy\\nVERSION=1\\n' > etc/os-release && \
         i=0; while [ $i -lt 200 ]; do printf \"small file $i\\n\" > small/f$i; i=$((i+1)); done && \
         head -c 300000 /dev/urandom | base64 > target && \
         head -c 6000000 /dev/urandom > big && \
         head -c 12000000 /dev/urandom > filler && \
         printf head > sparse && truncate -s 5M sparse && printf tail >> sparse && \
         i=0; while [ $i -lt 50 ]; do printf \"more $i\\n\" > more/m$i; i=$((i+1)); done && \
         ln target link && \
         tar --sparse --format=gnu --owner=0 --group=0 -cf ../layer.tar \
             etc small target big filler sparse more link",
    )
}

/// A gzip layer that is mostly one 80 MB file (about 76 spans of the seekable
/// index, nearly all of them the file's), after a few small files.
fn huge_file_layer(t: &TestDir) -> (BuiltLayer, Source) {
    layer_of(
        t,
        "mkdir -p etc && printf 'NAME=lazy\\nVERSION=1\\n' > etc/os-release && \
         head -c 80000000 /dev/urandom > huge && \
         tar --format=gnu --owner=0 --group=0 -cf ../layer.tar etc huge",
    )
}

/// A gzip layer of 80 random files of 1 MiB (about 80 spans of the seekable
/// index, one or two per file), after `etc/os-release`.
fn many_files_layer(t: &TestDir) -> (BuiltLayer, Source) {
    layer_of(
        t,
        "mkdir -p etc d && printf 'NAME=lazy\\nVERSION=1\\n' > etc/os-release && \
         i=0; while [ $i -lt 80 ]; do head -c 1048576 /dev/urandom > d/f$i; i=$((i+1)); done && \
         tar --format=gnu --owner=0 --group=0 -cf ../layer.tar etc d",
    )
}

/// The layer a shell `script` makes as `../layer.tar` from files it writes in
/// `src/`, compressed with pigz in two halves (a multi-member gzip stream).
fn layer_of(t: &TestDir, script: &str) -> (BuiltLayer, Source) {
    let src = t.mkdir("src");
    sh(&src, script);
    let tar = fs::read(t.join("layer.tar")).unwrap();
    let half = tar.len() / 2 + 777;
    let mut data = pigz(&tar[..half]);
    data.extend_from_slice(&pigz(&tar[half..]));
    let layer = BuiltLayer {
        blob: Blob::new(OCI_LAYER_GZIP, data),
        diff_id: imagefs::DiffId(imagefs::Digest::of(&tar)),
        tar,
        compression: Compression::Gzip,
        annotations: Default::default(),
    };
    (layer, Source { dir: src })
}

fn pigz(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("pigz")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("pigz runs");
    let mut stdin = child.stdin.take().expect("piped");
    let input = data.to_vec();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(&input).expect("pigz takes its input");
    });
    let output = child.wait_with_output().expect("pigz ends");
    writer.join().expect("the writer ends");
    assert!(output.status.success(), "pigz failed");
    output.stdout
}

/// A registry holding `lazy/img:1`: the big layer plus a small zstd layer (fetched
/// whole by a lazy pull). Returns the registry and the layer's sources.
struct Setup {
    t: TestDir,
    registry: Registry,
    source: Source,
    image_bytes: u64,
}

/// [`setup_with`] pushing without an index artifact: the lazy pull streams the
/// big layer once to index it.
fn setup(name: &str) -> Option<Setup> {
    setup_with(name, false)
}

/// The registry holding `lazy/img:1`, pushed by `imagefs push` with its index
/// artifact when `index` (else `--no-index`).
fn setup_with(name: &str, index: bool) -> Option<Setup> {
    setup_in(name, index, &RegistryConfig::default(), &[])
}

/// [`setup_with`] on a registry started with `config`; `creds` are the push's
/// registry options (`--creds USER:PASSWORD`).
fn setup_in(name: &str, index: bool, config: &RegistryConfig, creds: &[&str]) -> Option<Setup> {
    setup_of(name, index, config, creds, big_layer)
}

/// [`setup_in`] with the gzip layer `make_layer` builds.
fn setup_of(
    name: &str,
    index: bool,
    config: &RegistryConfig,
    creds: &[&str],
    make_layer: fn(&TestDir) -> (BuiltLayer, Source),
) -> Option<Setup> {
    if !can_run() {
        return None;
    }
    let registry = Registry::start(config)?;
    let t = TestDir::new(name);
    let (layer, source) = make_layer(&t);
    let small = sample::LayerSpec::parse("file /etc/motd 0644 \"hello from zstd\"").unwrap();
    let image = ImageBuilder::new()
        .built_layer(layer)
        .layer(&small, Compression::Zstd)
        .build()
        .unwrap();
    let built = Built::from(image);
    let layout = t.join("layout");
    sample::write_oci_layout(&layout, &[(Some("lazy/img:1"), &built)]).unwrap();
    let origin = t.join("origin-store");
    imagefs(&t, &origin).arg("import").arg(&layout).assert_ok();
    let image_bytes = json(
        imagefs(&t, &origin)
            .args(["ls", "--json", "local/lazy/img"])
            .assert_ok(),
    )[0]["size"]
        .as_u64()
        .expect("ls --json gives the size");
    imagefs(&t, &origin)
        .arg("push")
        .arg("local/lazy/img:1")
        .arg(format!("{}/lazy/img:1", registry.host()))
        .args(if index { &[][..] } else { &["--no-index"][..] })
        .args(creds)
        .assert_ok();
    Some(Setup {
        t,
        registry,
        source,
        image_bytes,
    })
}

fn rootfs(m: &Mount, host: &str) -> PathBuf {
    m.join(format!("{host}/lazy/img/tags/1/rootfs"))
}

/// Flips a byte of the first range of data in a sparse file.
fn damage_first_data_byte(path: &Path) {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    // SAFETY: lseek on a descriptor we own.
    let at = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_DATA) };
    assert!(at >= 0, "no data in {}", path.display());
    // Inside the first fetched range, past the zeros before it in its block.
    let at = at + 16384;
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, at as u64).unwrap();
    byte[0] ^= 0xff;
    file.write_all_at(&byte, at as u64).unwrap();
}

fn read(path: PathBuf) -> std::io::Result<Vec<u8>> {
    with_timeout(120, move || fs::read(path))
}

#[test]
fn lazy_pull_lists_at_once_and_reads_only_what_is_needed() {
    let Some(s) = setup("lazy-reads") else {
        return;
    };
    let t = &s.t;
    let host = s.registry.host();
    let store = t.store();
    let before = s.registry.bytes_written();
    let report = json(
        imagefs(t, &store)
            .args(["pull", "--lazy", "--json"])
            .arg(format!("{host}/lazy/img:1"))
            .assert_ok(),
    );
    assert_eq!(report["lazy_layers"], 2, "{report}");
    assert_eq!(report["lazy_fetched_whole"], 1, "the zstd layer: {report}");
    assert_eq!(report["layers_streamed"], 1, "{report}");
    // The tag is there; the big layer is lazy, its bytes not stored.
    let inspect = json(
        imagefs(t, &store)
            .args(["inspect", "--json"])
            .arg(format!("{host}/lazy/img:1"))
            .assert_ok(),
    );
    let layers = inspect["layers"].as_array().expect("layers in inspect");
    assert_eq!(layers[0]["state"], "lazy", "{inspect}");
    assert_eq!(layers[1]["state"], "present", "{inspect}");
    let pulled = s.registry.bytes_written() - before;
    assert!(
        pulled >= s.image_bytes,
        "without an index artifact the big layer is streamed once ({pulled} < {})",
        s.image_bytes
    );

    let m = t.mount(&[]);
    let root = rootfs(&m, &host);
    let after_pull = s.registry.bytes_written();
    // Listing and stat: no layer bytes.
    let listing = util::tree_listing(&root);
    assert!(
        listing.iter().any(|l| l.contains("small/f199")),
        "{listing:?}"
    );
    assert_eq!(
        fs::metadata(root.join("big")).unwrap().len(),
        6_000_000,
        "stat needs only the index"
    );
    assert_eq!(
        s.registry.bytes_written(),
        after_pull,
        "listing fetched bytes"
    );

    // One small file: a small part of the image.
    let os_release = read(root.join("etc/os-release")).unwrap();
    assert_eq!(os_release, s.source.read("etc/os-release"));
    let one_file = s.registry.bytes_written() - after_pull;
    assert!(
        one_file > 0 && one_file < s.image_bytes / 10,
        "reading one file fetched {one_file} of {} bytes",
        s.image_bytes
    );
    eprintln!(
        "first read of etc/os-release fetched {one_file} bytes of a {}-byte image",
        s.image_bytes
    );
    // Its neighbours were materialized with it: reading them costs nothing.
    let neighbour = read(root.join("small/f17")).unwrap();
    assert_eq!(neighbour, s.source.read("small/f17"));
    assert_eq!(s.registry.bytes_written() - after_pull, one_file);

    // A file over many checkpoints, a hard link to a file in another span, a
    // sparse file (holes and all), the zstd layer's file.
    for path in ["big", "link", "target", "sparse", "more/m49"] {
        let bytes = read(root.join(path)).unwrap();
        assert!(bytes == s.source.read(path), "{path} differs");
    }
    assert_eq!(read(root.join("etc/motd")).unwrap(), b"hello from zstd");
    let read_so_far = s.registry.bytes_written() - after_pull;
    assert!(
        read_so_far < s.image_bytes * 6 / 10,
        "reading a few files fetched {read_so_far} of {} bytes (the filler is never read)",
        s.image_bytes
    );

    // df and fsck see a lazy layer, partly fetched, and nothing wrong.
    let df = json(imagefs(t, &store).args(["df", "--json"]).assert_ok());
    let fetched = df["lazy_fetched_bytes"]
        .as_u64()
        .expect("df lazy_fetched_bytes");
    let missing = df["lazy_missing_bytes"]
        .as_u64()
        .expect("df lazy_missing_bytes");
    assert!(fetched > 0 && missing > 10_000_000, "{df}");
    let fsck = json(imagefs(t, &store).args(["fsck", "--json"]).assert_ok());
    assert_eq!(fsck["missing"], Value::Array(vec![]), "{fsck}");
    assert_eq!(fsck["cache_damaged"], Value::Array(vec![]), "{fsck}");
    assert_eq!(fsck["lazy"].as_array().map(Vec::len), Some(1), "{fsck}");

    // A fetched range damaged on disk: fsck finds it; the next use fetches it again.
    let ranges = fs::read_dir(store.join("cache/layers"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("ranges/data"))
        .find(|p| p.exists())
        .expect("the lazy layer's fetched ranges");
    damage_first_data_byte(&ranges);
    let fsck = json(imagefs(t, &store).args(["fsck", "--json"]).output());
    assert_eq!(
        fsck["cache_damaged"].as_array().map(Vec::len),
        Some(1),
        "{fsck}"
    );

    // The layer blob reads through the fetched ranges and completes the layer.
    let blob_dir = m.join(format!("{host}/lazy/img/tags/1/layers/000/blob"));
    let blob = read(blob_dir).unwrap();
    assert_eq!(
        imagefs::Digest::of(&blob).to_string(),
        layers[0]["digest"].as_str().unwrap()
    );
    let inspect = json(
        imagefs(t, &store)
            .args(["inspect", "--json"])
            .arg(format!("{host}/lazy/img:1"))
            .assert_ok(),
    );
    assert_eq!(inspect["layers"][0]["state"], "present", "{inspect}");
    // And files still read, now from the complete layer.
    assert!(read(root.join("filler")).unwrap() == s.source.read("filler"));
    drop(m);
    let fsck = json(imagefs(t, &store).args(["fsck", "--json"]).assert_ok());
    assert_eq!(fsck["lazy"], Value::Array(vec![]), "{fsck}");
    assert!(fsck["missing"] == Value::Array(vec![]) && fsck["corrupt"] == Value::Array(vec![]));
}

#[test]
fn plain_pull_completes_a_lazy_image_and_rm_leaves_nothing() {
    let Some(s) = setup("lazy-complete") else {
        return;
    };
    let t = &s.t;
    let host = s.registry.host();
    let store = t.store();
    let reference = format!("{host}/lazy/img:1");
    imagefs(t, &store)
        .args(["pull", "--lazy"])
        .arg(&reference)
        .assert_ok();
    {
        let m = t.mount(&[]);
        let root = rootfs(&m, &host);
        assert_eq!(read(root.join("target")).unwrap(), s.source.read("target"));
    }
    let df = json(imagefs(t, &store).args(["df", "--json"]).assert_ok());
    assert!(df["lazy_missing_bytes"].as_u64().unwrap() > 0, "{df}");
    // A plain pull fetches the layer and checks it; the image is complete.
    imagefs(t, &store).arg("pull").arg(&reference).assert_ok();
    let inspect = json(
        imagefs(t, &store)
            .args(["inspect", "--json"])
            .arg(&reference)
            .assert_ok(),
    );
    for layer in inspect["layers"].as_array().unwrap() {
        assert_eq!(layer["state"], "present", "{inspect}");
    }
    let df = json(imagefs(t, &store).args(["df", "--json"]).assert_ok());
    assert_eq!(df["lazy_missing_bytes"], 0, "{df}");
    assert_fsck_lists_nothing(
        t,
        &store,
        &[
            "missing",
            "corrupt",
            "cache_damaged",
            "lazy",
            "bad",
            "leftovers",
        ],
    );
    // Export works on the complete image.
    imagefs(t, &store)
        .args(["export"])
        .arg(&reference)
        .arg(t.join("out.tar"))
        .assert_ok();
    // rm leaves nothing: no blob, no cache.
    imagefs(t, &store).args(["rm"]).arg(&reference).assert_ok();
    let layers = fs::read_dir(store.join("cache/layers"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(layers, 0, "layer caches left");
}

#[test]
fn rm_of_a_lazy_image_and_gc_leave_nothing() {
    let Some(s) = setup("lazy-rm") else {
        return;
    };
    let t = &s.t;
    let store = t.store();
    let reference = format!("{}/lazy/img:1", s.registry.host());
    imagefs(t, &store)
        .args(["pull", "--lazy"])
        .arg(&reference)
        .assert_ok();
    imagefs(t, &store).args(["rm"]).arg(&reference).assert_ok();
    imagefs(t, &store).args(["gc"]).assert_ok();
    assert_fsck_lists_nothing(
        t,
        &store,
        &["missing", "corrupt", "dangling", "lazy", "leftovers"],
    );
    let layers = fs::read_dir(store.join("cache/layers"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(layers, 0, "layer caches left");
    let blobs = fs::read_dir(store.join("blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(blobs, 0, "blobs left");
}

#[test]
fn faults_corrupt_range_two_readers_and_a_stopped_registry() {
    let Some(s) = setup("lazy-faults") else {
        return;
    };
    let t = &s.t;
    let proxy = FaultProxy::start(s.registry.addr);
    let host = proxy.host();
    let store = t.store();
    imagefs(t, &store)
        .args(["pull", "--lazy"])
        .arg(format!("{host}/lazy/img:1"))
        .assert_ok();
    let m = t.mount(&[]);
    let root = rootfs(&m, &host);
    let blob_gets = |proxy: &FaultProxy| {
        proxy
            .requests()
            .iter()
            .filter(|r| r.starts_with("GET") && r.contains("/blobs/"))
            .count()
    };

    // A corrupted range: EIO, never the wrong bytes; fine once the proxy behaves.
    proxy.add_for("GET", "/blobs/sha256:", Fault::Corrupt, 0);
    let error = read(root.join("target")).expect_err("a corrupted range must not be served");
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    proxy.clear();
    assert_eq!(read(root.join("target")).unwrap(), s.source.read("target"));

    // Two processes reading one file at once: one fetch.
    let gets_before = blob_gets(&proxy);
    let expected = imagefs::Digest::of(&s.source.read("big")).hex();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            Command::new("sha256sum")
                .arg(root.join("big"))
                .stdout(Stdio::piped())
                .spawn()
                .expect("sha256sum runs")
        })
        .collect();
    for reader in readers {
        let output = with_timeout(120, move || reader.wait_with_output()).unwrap();
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(
            output.status.success() && text.starts_with(&expected),
            "{text}"
        );
    }
    assert_eq!(
        blob_gets(&proxy) - gets_before,
        1,
        "two readers of one file made more than one ranged GET"
    );

    // A ranged GET that stalls: listings, stat and fetched files keep answering
    // meanwhile; the stalled read ends with EIO after the client's idle timeout.
    proxy.add_for("GET", "/blobs/sha256:", Fault::StallAfter(1000), 1);
    let path = root.join("filler");
    let stalled = std::thread::spawn(move || fs::read(path));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !proxy
        .requests()
        .iter()
        .skip(gets_before)
        .any(|r| r.starts_with("GET") && r.contains("/blobs/"))
    {
        assert!(
            Instant::now() < deadline,
            "the read never reached the registry"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    for _ in 0..3 {
        let path = root.join("target");
        assert_eq!(
            with_timeout(10, move || fs::read(path)).unwrap(),
            s.source.read("target")
        );
        let sparse = root.join("sparse");
        assert!(with_timeout(10, move || fs::metadata(sparse)).is_ok());
        let listed = root.clone();
        assert!(with_timeout(10, move || util::tree_listing(&listed)).len() > 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let waited = Instant::now();
    let filler = with_timeout(150, move || stalled.join().expect("the reader ends"));
    let error = filler.expect_err("a stalled fetch gives EIO");
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    eprintln!(
        "a stalled ranged GET gave EIO after {:?} more",
        waited.elapsed()
    );

    // The registry stops: what is fetched keeps reading, the rest gives EIO soon.
    let Setup {
        registry, source, ..
    } = s;
    drop(registry);
    let started = Instant::now();
    let error = read(root.join("more/m3")).expect_err("nothing to fetch from");
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "EIO took {:?}",
        started.elapsed()
    );
    assert_eq!(read(root.join("target")).unwrap(), source.read("target"));
    assert!(read(root.join("big")).unwrap() == source.read("big"));
    assert!(util::tree_listing(&root)
        .iter()
        .any(|l| l.contains("filler")));
}

#[test]
fn kill_of_the_daemon_mid_fetch_leaves_nothing_taken_for_good_data() {
    let Some(s) = setup("lazy-kill") else {
        return;
    };
    let t = &s.t;
    let proxy = FaultProxy::start(s.registry.addr);
    let host = proxy.host();
    let store = t.store();
    imagefs(t, &store)
        .args(["pull", "--lazy"])
        .arg(format!("{host}/lazy/img:1"))
        .assert_ok();
    let mountpoint = t.join("mnt");
    let mut m = Mount::start_foreground(&store, &mountpoint, &[]);
    let root = rootfs(&m, &host);
    // The ranged GET stalls mid-body; the daemon dies meanwhile.
    proxy.add_for("GET", "/blobs/sha256:", Fault::StallAfter(100_000), 1);
    let path = root.join("filler");
    let reader = std::thread::spawn(move || fs::read(path));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !proxy
        .requests()
        .iter()
        .any(|r| r.starts_with("GET") && r.contains("/blobs/"))
    {
        assert!(
            Instant::now() < deadline,
            "the read never reached the registry"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let child = m.child().expect("a foreground mount");
    child.kill().expect("kill -9 the daemon");
    let _ = child.wait();
    assert!(reader.join().expect("the reader ends").is_err());
    drop(m);
    assert_fsck_lists_nothing(t, &store, &["missing", "corrupt", "cache_damaged", "bad"]);
    // A new mount reads the file right.
    proxy.clear();
    let m = t.mount(&[]);
    let bytes = read(rootfs(&m, &host).join("filler")).unwrap();
    assert!(bytes == s.source.read("filler"));
}

#[test]
fn registry_quirks_redirect_416_and_ignored_range() {
    let Some(s) = setup("lazy-quirks") else {
        return;
    };
    let t = &s.t;
    let proxy = FaultProxy::start(s.registry.addr);
    let host = proxy.host();
    let reference = format!("{host}/lazy/img:1");
    let state = |store: &Path| {
        json(
            imagefs(t, store)
                .args(["inspect", "--json"])
                .arg(&reference)
                .assert_ok(),
        )["layers"][0]["state"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let store = t.store();
    imagefs(t, &store)
        .args(["pull", "--lazy"])
        .arg(&reference)
        .assert_ok();
    let m = t.mount(&[]);
    let root = rootfs(&m, &host);
    // A ranged GET redirected to another host: followed, without Authorization.
    proxy.add_for("GET", "/blobs/sha256:", Fault::RedirectOtherHost, 1);
    assert_eq!(read(root.join("target")).unwrap(), s.source.read("target"));
    let authorizations = proxy.other_host_authorizations();
    assert_eq!(authorizations.len(), 1, "the redirect was not followed");
    assert!(authorizations.iter().all(Option::is_none));
    assert_eq!(state(&store), "lazy");
    // A 416: the layer is fetched whole instead, checked, and stored.
    proxy.add_for("GET", "/blobs/sha256:", Fault::Status(416, None), 1);
    assert_eq!(
        read(root.join("more/m7")).unwrap(),
        s.source.read("more/m7")
    );
    assert_eq!(state(&store), "present");
    drop(m);

    // A registry that ignores Range (200, whole blob): the same.
    let other = t.join("store-2");
    imagefs(t, &other)
        .args(["pull", "--lazy"])
        .arg(&reference)
        .assert_ok();
    assert_eq!(state(&other), "lazy");
    let m = Mount::start(&other, &t.join("mnt-2"), &[]);
    proxy.add_for("GET", "/blobs/sha256:", Fault::IgnoreRange, 1);
    let root = rootfs(&m, &host);
    assert!(read(root.join("big")).unwrap() == s.source.read("big"));
    assert_eq!(state(&other), "present");
}

#[test]
fn a_layer_that_does_not_match_its_diff_id_is_bad_eio_and_named_by_fsck() {
    if !util::require_tool("skopeo") {
        return;
    }
    let Some(s) = setup("lazy-bad") else {
        return;
    };
    let t = &s.t;
    let host = s.registry.host();
    // The same layer under a config whose diff_id is wrong, copied in by skopeo
    // (imagefs refuses to store such an image).
    let (layer, _) = big_layer(&TestDir::new("lazy-bad-src"));
    let image = ImageBuilder::new()
        .built_layer(layer)
        .build()
        .unwrap()
        .corrupt(sample::Corruption::WrongDiffId { layer: 0 })
        .unwrap();
    let layout = t.join("bad-layout");
    sample::write_oci_layout(&layout, &[(Some("bad:1"), &Built::from(image))]).unwrap();
    Cmd::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:bad:1", layout.display()))
        .arg(format!("docker://{host}/lazy/bad:1"))
        .timeout_secs(120)
        .assert_ok();
    let store = t.store();
    let reference = format!("{host}/lazy/bad:1");
    let pulled = imagefs(t, &store)
        .args(["pull", "--lazy"])
        .arg(&reference)
        .output();
    assert_ne!(pulled.code, Some(0), "the mismatch must be reported");
    assert!(pulled.stderr.contains("diff_id"), "{}", pulled.stderr);
    let fsck = json(imagefs(t, &store).args(["fsck", "--json"]).output());
    assert_eq!(fsck["bad"].as_array().map(Vec::len), Some(1), "{fsck}");
    let m = t.mount(&[]);
    let error = read(m.join(format!("{host}/lazy/bad/tags/1/rootfs/etc/os-release")))
        .expect_err("a bad layer must not be read");
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
}

/// The fleet case: with the index artifact `push` attached, `pull --lazy` streams
/// nothing, `find rootfs` fetches nothing, and a first read fetches a small part
/// of the image. Then an artifact that passes every check on its face (right
/// subject, layer digest, size and diff_id) but whose entry index swaps the data
/// offsets of two same-sized files: the tar header check refuses to serve either
/// (EIO, never the other file's bytes), and other files still read right.
#[test]
fn an_index_artifact_makes_the_lazy_pull_stream_nothing_and_a_lying_one_gives_eio() {
    use imagefs::image::media_types;
    use imagefs::testing::layer::{ContentRef, LayerIndex};
    use imagefs::{Digest, RegistryClient, RemoteOptions};

    let Some(s) = setup_with("lazy-artifact", true) else {
        return;
    };
    let t = &s.t;
    let host = s.registry.host();
    let store = t.store();
    let before = s.registry.bytes_written();
    let report = json(
        imagefs(t, &store)
            .args(["pull", "--lazy", "--json"])
            .arg(format!("{host}/lazy/img:1"))
            .assert_ok(),
    );
    assert_eq!(report["layers_streamed"], 0, "{report}");
    // The artifact indexes the zstd layer too: it is fetched whole when read.
    assert_eq!(report["lazy_fetched_whole"], 0, "{report}");
    let pulled = s.registry.bytes_written() - before;
    assert!(
        pulled < s.image_bytes / 10,
        "pull --lazy with an artifact fetched {pulled} of {} bytes",
        s.image_bytes
    );
    // The big layer's gzip index stays in the registry until the layer is read.
    let big = report_layer(&s, &store, &host);
    let big_hex = big.strip_prefix("sha256:").unwrap();
    let big_cache = store.join("cache/layers").join(big_hex);
    let zran = big_cache.join(format!("index/{big_hex}.zran"));
    let remote = big_cache.join("ranges/gzip-index.remote");
    assert!(big_cache.join(format!("index/{big_hex}.idx")).exists());
    assert!(!zran.exists(), "pull --lazy fetched the gzip index");
    assert!(remote.exists(), "no record of where the gzip index is");
    {
        let m = t.mount(&[]);
        let root = rootfs(&m, &host);
        let after_pull = s.registry.bytes_written();
        let listing = util::tree_listing(&root);
        assert!(
            listing.iter().any(|l| l.contains("more/m49")),
            "{listing:?}"
        );
        assert_eq!(s.registry.bytes_written(), after_pull, "find fetched bytes");
        assert!(!zran.exists(), "listing fetched the gzip index");
        assert_eq!(
            read(root.join("etc/os-release")).unwrap(),
            s.source.read("etc/os-release")
        );
        assert!(zran.exists(), "the first read did not keep the gzip index");
        assert!(!remote.exists(), "the record outlived the fetch");
        assert!(read(root.join("big")).unwrap() == s.source.read("big"));
        assert_eq!(read(root.join("etc/motd")).unwrap(), b"hello from zstd");
        let fetched = s.registry.bytes_written() - after_pull;
        assert!(
            fetched > 0 && fetched < s.image_bytes / 2,
            "two files fetched {fetched} of {} bytes",
            s.image_bytes
        );
    }

    // The lying artifact: the big layer's entry index with the offsets of
    // small/f1 and small/f2 (13 bytes each) swapped, uploaded and listed under the
    // `sha256-<hex>` tag in place of the honest one.
    let client = RegistryClient::new(&host, &RemoteOptions::default()).unwrap();
    let top = client.get_manifest("lazy/img", "1").unwrap();
    let fallback = format!("sha256-{}", top.digest.hex());
    let listed: serde_json::Value =
        serde_json::from_slice(&client.get_manifest("lazy/img", &fallback).unwrap().bytes).unwrap();
    let honest = listed["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut artifact: serde_json::Value =
        serde_json::from_slice(&client.get_manifest("lazy/img", &honest).unwrap().bytes).unwrap();
    let slot = artifact["layers"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|d| {
            d["mediaType"] == media_types::IMAGEFS_LAYER_ENTRIES
                && d["annotations"][media_types::IMAGEFS_LAYER_DIGEST_ANNOTATION]
                    == report_layer(&s, &store, &host)
        })
        .expect("the big layer's entry index in the artifact");
    let entries_digest = Digest::parse(slot["digest"].as_str().unwrap()).unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut client.get_blob("lazy/img", &entries_digest, None).unwrap(),
        &mut bytes,
    )
    .unwrap();
    let mut index = LayerIndex::from_bytes(&bytes).unwrap();
    let position = |path: &[u8]| {
        index
            .entries
            .iter()
            .position(|e| &*e.path == path)
            .unwrap_or_else(|| panic!("{} not in the index", String::from_utf8_lossy(path)))
    };
    let (one, two) = (position(b"small/f1"), position(b"small/f2"));
    assert_eq!(index.entries[one].size, index.entries[two].size);
    assert!(matches!(
        index.entries[one].content,
        ContentRef::StreamOffset(_)
    ));
    let swapped = index.entries[one].content;
    index.entries[one].content = index.entries[two].content;
    index.entries[two].content = swapped;
    let lying = index.to_bytes();
    let lying_digest = Digest::of(&lying);
    client
        .push_blob_bytes("lazy/img", &lying_digest, &lying)
        .unwrap();
    slot["digest"] = serde_json::Value::String(lying_digest.to_string());
    slot["size"] = serde_json::Value::from(lying.len());
    let artifact_bytes = serde_json::to_vec(&artifact).unwrap();
    let artifact_digest = client
        .put_manifest(
            "lazy/img",
            &Digest::of(&artifact_bytes).to_string(),
            media_types::OCI_MANIFEST,
            &artifact_bytes,
        )
        .unwrap();
    let mut listed = listed;
    listed["manifests"][0]["digest"] = serde_json::Value::String(artifact_digest.to_string());
    listed["manifests"][0]["size"] = serde_json::Value::from(artifact_bytes.len());
    client
        .put_manifest(
            "lazy/img",
            &fallback,
            media_types::OCI_INDEX,
            &serde_json::to_vec(&listed).unwrap(),
        )
        .unwrap();

    let fooled = t.join("fooled-store");
    let report = json(
        imagefs(t, &fooled)
            .args(["pull", "--lazy", "--json"])
            .arg(format!("{host}/lazy/img:1"))
            .assert_ok(),
    );
    assert_eq!(
        report["layers_streamed"], 0,
        "the lying artifact was used: {report}"
    );
    let m = Mount::start(&fooled, &t.join("mnt-fooled"), &[]);
    let root = rootfs(&m, &host);
    for swapped in ["small/f1", "small/f2"] {
        match read(root.join(swapped)) {
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{swapped}: {e}"),
            Ok(bytes) => panic!(
                "{swapped} was served from a lying index: {:?}",
                String::from_utf8_lossy(&bytes)
            ),
        }
    }
    assert_eq!(
        read(root.join("small/f3")).unwrap(),
        s.source.read("small/f3")
    );
    assert_eq!(
        read(root.join("etc/os-release")).unwrap(),
        s.source.read("etc/os-release")
    );
}

/// The digest of the image's first (big, gzip) layer, as the store recorded it.
fn report_layer(s: &Setup, store: &Path, host: &str) -> String {
    let inspect = json(
        imagefs(&s.t, store)
            .args(["inspect", "--json"])
            .arg(format!("{host}/lazy/img:1"))
            .assert_ok(),
    );
    inspect["layers"][0]["digest"]
        .as_str()
        .expect("inspect gives layer digests")
        .to_string()
}

/// Panics unless `imagefs fsck --json` of `store` passes and lists nothing under
/// any of `keys`.
fn assert_fsck_lists_nothing(t: &TestDir, store: &Path, keys: &[&str]) {
    let fsck = json(imagefs(t, store).args(["fsck", "--json"]).assert_ok());
    for key in keys {
        assert_eq!(fsck[*key], Value::Array(vec![]), "{key}: {fsck}");
    }
}

/// `pull --lazy` of `lazy/img:1` into the test's store. Returns the store, the
/// reference and the hex digest of the big (first, gzip) layer.
fn pull_lazily(s: &Setup) -> (PathBuf, String, String) {
    let t = &s.t;
    let host = s.registry.host();
    let store = t.store();
    let reference = format!("{host}/lazy/img:1");
    imagefs(t, &store)
        .args(["pull", "--lazy"])
        .arg(&reference)
        .assert_ok();
    let big = report_layer(s, &store, &host);
    let hex = big.strip_prefix("sha256:").unwrap().to_string();
    (store, reference, hex)
}

/// A long-lived mount outlives its Bearer tokens: with tokens good for 2 s, reads
/// well after that still fetch (the token is renewed, not reused past its time),
/// with the credentials the mount was given.
#[test]
fn a_lazy_mount_renews_expired_tokens() {
    let config = RegistryConfig {
        auth: RegistryAuth::Token {
            user: Some(("bob".into(), "tok3n".into())),
            ttl: Duration::from_secs(2),
        },
        tls: false,
    };
    let creds = ["--creds", "bob:tok3n"];
    let Some(s) = setup_in("lazy-tokens", true, &config, &creds) else {
        return;
    };
    let t = &s.t;
    let host = s.registry.host();
    let store = t.store();
    imagefs(t, &store)
        .args(["pull", "--lazy"])
        .args(creds)
        .arg(format!("{host}/lazy/img:1"))
        .assert_ok();
    let m = t.mount(&creds);
    let root = rootfs(&m, &host);
    assert_eq!(
        read(root.join("etc/os-release")).unwrap(),
        s.source.read("etc/os-release")
    );
    let issued = s.registry.token_requests();
    // Past the token's lifetime: the next fetch needs a new one.
    std::thread::sleep(Duration::from_secs(3));
    assert!(read(root.join("big")).unwrap() == s.source.read("big"));
    std::thread::sleep(Duration::from_secs(3));
    assert!(read(root.join("sparse")).unwrap() == s.source.read("sparse"));
    assert!(
        s.registry.token_requests() >= issued + 2,
        "tokens issued: {issued} before, {} after two reads past their lifetime",
        s.registry.token_requests()
    );
}

/// An index artifact whose gzip index (fetched only at the first read) is not the
/// layer's: the entry index passes, so the lazy pull uses the artifact; the first
/// read finds the gzip index wrong, logs it and fetches the layer whole instead,
/// and every file reads right.
#[test]
fn a_wrong_deferred_gzip_index_makes_the_first_read_fetch_the_layer_whole() {
    use imagefs::image::media_types;
    use imagefs::{Digest, RegistryClient, RemoteOptions};

    let Some(s) = setup_with("lazy-bad-zran", true) else {
        return;
    };
    let t = &s.t;
    let host = s.registry.host();
    let client = RegistryClient::new(&host, &RemoteOptions::default()).unwrap();
    let top = client.get_manifest("lazy/img", "1").unwrap();
    let fallback = format!("sha256-{}", top.digest.hex());
    let mut listed: Value =
        serde_json::from_slice(&client.get_manifest("lazy/img", &fallback).unwrap().bytes).unwrap();
    let honest = listed["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut artifact: Value =
        serde_json::from_slice(&client.get_manifest("lazy/img", &honest).unwrap().bytes).unwrap();
    // A blob that hashes right but is no gzip index.
    let garbage = b"not a gzip index at all ".repeat(40);
    let garbage_digest = Digest::of(&garbage);
    client
        .push_blob_bytes("lazy/img", &garbage_digest, &garbage)
        .unwrap();
    let slot = artifact["layers"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|d| d["mediaType"] == media_types::IMAGEFS_GZIP_INDEX)
        .expect("the big layer's gzip index in the artifact");
    slot["digest"] = Value::String(garbage_digest.to_string());
    slot["size"] = Value::from(garbage.len());
    let artifact_bytes = serde_json::to_vec(&artifact).unwrap();
    let artifact_digest = client
        .put_manifest(
            "lazy/img",
            &Digest::of(&artifact_bytes).to_string(),
            media_types::OCI_MANIFEST,
            &artifact_bytes,
        )
        .unwrap();
    listed["manifests"][0]["digest"] = Value::String(artifact_digest.to_string());
    listed["manifests"][0]["size"] = Value::from(artifact_bytes.len());
    client
        .put_manifest(
            "lazy/img",
            &fallback,
            media_types::OCI_INDEX,
            &serde_json::to_vec(&listed).unwrap(),
        )
        .unwrap();

    let store = t.store();
    let report = json(
        imagefs(t, &store)
            .args(["pull", "--lazy", "--json"])
            .arg(format!("{host}/lazy/img:1"))
            .assert_ok(),
    );
    assert_eq!(report["layers_streamed"], 0, "{report}");
    let m = t.mount(&[]);
    let root = rootfs(&m, &host);
    for path in ["etc/os-release", "big", "small/f1", "sparse"] {
        assert!(
            read(root.join(path)).unwrap() == s.source.read(path),
            "{path} read wrong"
        );
    }
    // The daemon's log goes with it when it ends: read it while it runs.
    let log = util::daemon_log(&store);
    assert!(
        log.lines()
            .any(|line| line.contains("gzip index") && line.contains("fetched whole instead")),
        "no log line about the wrong gzip index:\n{log}"
    );
    drop(m);
    // The layer was fetched whole, checked, and is an ordinary layer now.
    let inspect = json(
        imagefs(t, &store)
            .args(["inspect", "--json"])
            .arg(format!("{host}/lazy/img:1"))
            .assert_ok(),
    );
    assert_eq!(inspect["layers"][0]["state"], "present", "{inspect}");
    imagefs(t, &store).arg("fsck").assert_ok();
}

/// Reading every file of a lazy layer completes it from the ranges it fetched:
/// the fetched bytes become the blob (checked against its digest and diff_id),
/// the files read before are kept (checked against the verified stream, not
/// written again) and the layer is unpacked in the same pass, so reads after
/// completion and after a remount serve the same bytes without unpacking again.
#[test]
fn reading_every_file_completes_the_layer_from_its_ranges_and_unpacks_it() {
    let Some(s) = setup_with("lazy-read-all", true) else {
        return;
    };
    let t = &s.t;
    let host = s.registry.host();
    let (store, reference, hex) = pull_lazily(&s);
    let files: Vec<String> = sh(&s.source.dir, "find . -type f | sed 's|^\\./||' | sort")
        .lines()
        .map(str::to_string)
        .collect();
    assert!(files.len() > 250, "{} files", files.len());
    {
        let m = t.mount(&[]);
        let root = rootfs(&m, &host);
        for path in &files {
            assert!(
                read(root.join(path)).unwrap() == s.source.read(path),
                "{path} read wrong"
            );
        }
        // The small zstd layer: fetched whole at its first read.
        assert_eq!(read(root.join("etc/motd")).unwrap(), b"hello from zstd");
        let inspect = json(
            imagefs(t, &store)
                .args(["inspect", "--json"])
                .arg(&reference)
                .assert_ok(),
        );
        for layer in inspect["layers"].as_array().unwrap() {
            assert_eq!(layer["state"], "present", "{inspect}");
        }
        assert!(store.join("blobs/sha256").join(&hex).exists());
        assert!(!store
            .join("cache/layers")
            .join(&hex)
            .join("ranges")
            .exists());
        assert!(
            store
                .join("cache/layers")
                .join(&hex)
                .join("unpacked.idx")
                .exists(),
            "completion by reads did not leave the layer unpacked"
        );
        // Read again after completion: from the unpacked layer.
        for path in ["etc/os-release", "big", "sparse", "target", "more/m49"] {
            assert!(
                read(root.join(path)).unwrap() == s.source.read(path),
                "{path}"
            );
        }
    }
    let m = t.mount(&[]);
    let root = rootfs(&m, &host);
    for path in &files {
        assert!(
            read(root.join(path)).unwrap() == s.source.read(path),
            "{path} read wrong after a remount"
        );
    }
    drop(m);
    assert_fsck_lists_nothing(
        t,
        &store,
        &["missing", "corrupt", "cache_damaged", "lazy", "bad"],
    );
}

/// Opening one file that is most of a lazy layer (80 MB of its ~80 MB) completes
/// the layer in one streaming pass instead of materializing it span by span: the
/// layer is present, checked and unpacked afterwards, the file reads right, and
/// the small file read before it stays good.
#[test]
fn opening_a_file_that_is_most_of_a_layer_completes_it_in_one_pass() {
    let Some(s) = setup_of(
        "lazy-huge",
        true,
        &RegistryConfig::default(),
        &[],
        huge_file_layer,
    ) else {
        return;
    };
    let t = &s.t;
    let host = s.registry.host();
    let (store, reference, hex) = pull_lazily(&s);
    let m = t.mount(&[]);
    let root = rootfs(&m, &host);
    assert_eq!(
        read(root.join("etc/os-release")).unwrap(),
        s.source.read("etc/os-release")
    );
    let state = |store: &Path| {
        json(
            imagefs(t, store)
                .args(["inspect", "--json"])
                .arg(&reference)
                .assert_ok(),
        )["layers"][0]["state"]
            .clone()
    };
    assert_eq!(state(&store), "lazy", "one small file completed the layer");
    assert!(read(root.join("huge")).unwrap() == s.source.read("huge"));
    assert_eq!(state(&store), "present");
    assert!(store.join("blobs/sha256").join(&hex).exists());
    assert!(store
        .join("cache/layers")
        .join(&hex)
        .join("unpacked.idx")
        .exists());
    assert_eq!(
        read(root.join("etc/os-release")).unwrap(),
        s.source.read("etc/os-release")
    );
    drop(m);
    assert_fsck_lists_nothing(t, &store, &["missing", "corrupt", "cache_damaged", "bad"]);
}

/// A reader going through a lazy layer file by file (a scanner) makes the mount
/// fetch the rest of the layer once it has fetched 64 spans and a quarter of
/// them: the layer is present before the last files are read, and every file
/// reads right, before and after.
#[test]
fn a_scan_of_a_lazy_layer_completes_it_before_its_end() {
    let Some(s) = setup_of(
        "lazy-scan",
        true,
        &RegistryConfig::default(),
        &[],
        many_files_layer,
    ) else {
        return;
    };
    let t = &s.t;
    let host = s.registry.host();
    let (store, _, hex) = pull_lazily(&s);
    let m = t.mount(&[]);
    let root = rootfs(&m, &host);
    let present = || store.join("blobs/sha256").join(&hex).exists();
    let mut completed_at = None;
    for i in 0..80 {
        let path = format!("d/f{i}");
        assert!(
            read(root.join(&path)).unwrap() == s.source.read(&path),
            "{path} read wrong"
        );
        if completed_at.is_none() && present() {
            completed_at = Some(i);
        }
    }
    let at = completed_at.expect("the layer was never completed");
    // A file takes one or two spans: 64 spans are fetched after 32 to 64 files.
    assert!(
        (32..79).contains(&at),
        "completed after reading file {at}: expected after 64 spans, before the end"
    );
    assert!(store
        .join("cache/layers")
        .join(&hex)
        .join("unpacked.idx")
        .exists());
    for i in [0, 40, 79] {
        let path = format!("d/f{i}");
        assert!(
            read(root.join(&path)).unwrap() == s.source.read(&path),
            "{path}"
        );
    }
    drop(m);
    assert_fsck_lists_nothing(t, &store, &["missing", "corrupt", "cache_damaged", "bad"]);
}
