//! `imagefs mount --pull-through` (SPEC section 6) against a real registry (Debian's
//! docker-registry 2.8.2 on 127.0.0.1) behind the fault proxy of the registry
//! harness, which counts every request: a hit on a fresh store, misses remembered,
//! a registry that is down or stuck, two processes looking up one new tag, and
//! listings that never reach the network. Real FUSE mounts of the built binary.
//!
//! Needs FUSE (root) and docker-registry: skipped with a message where missing,
//! failing under `CI=true`.

#[path = "util/registry.rs"]
mod registry;
mod util;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use registry::{Fault, FaultProxy, Registry, RegistryConfig};
use serde_json::Value;
use util::{daemon_log, Cmd, Mount, TestDir};

/// What `/etc/os-release` of the demo's `sample-alpine:3.19` says.
const OS_RELEASE: &str = "Sample Linux v3.19";

/// `imagefs --store STORE ...` with a home of its own (no credential file of the
/// machine is read) and a deadline.
fn imagefs(t: &TestDir, store: &Path) -> Cmd {
    let mut cmd = Cmd::imagefs();
    cmd.arg("--store")
        .arg(store)
        .env("HOME", t.path())
        .env("XDG_RUNTIME_DIR", t.path())
        .env("DOCKER_CONFIG", t.join("docker"))
        .timeout_secs(120);
    cmd
}

/// A registry holding some demo images as `library/<name>`, a counting proxy in
/// front of it, and a fresh store to mount.
struct Remote {
    t: TestDir,
    _reg: Registry,
    proxy: FaultProxy,
}

impl Remote {
    fn start(name: &str, images: &[&str]) -> Option<Remote> {
        if !util::require_fuse() {
            return None;
        }
        let reg = Registry::start(&RegistryConfig::default())?;
        let t = TestDir::new(name);
        let source = t.join("source");
        let (layout, _) = t.demo_layout("demo-layout");
        imagefs(&t, &source).arg("import").arg(&layout).assert_ok();
        for image in images {
            imagefs(&t, &source)
                .arg("push")
                .arg(format!("docker.io/library/{image}"))
                .arg(format!("{}/library/{image}", reg.host()))
                .assert_ok();
        }
        let proxy = FaultProxy::start(reg.addr);
        Some(Remote {
            t,
            _reg: reg,
            proxy,
        })
    }

    /// The pull-through registry's name: the proxy, as `localhost:PORT`.
    fn host(&self) -> String {
        format!("localhost:{}", self.proxy.addr.port())
    }

    /// A fresh store (nothing in it yet).
    fn store(&self) -> PathBuf {
        self.t.join("store")
    }

    /// Mounts the store with the proxy as pull-through registry.
    fn mount(&self, extra: &[&str]) -> Mount {
        let host = self.host();
        let mut args = vec!["--pull-through", host.as_str(), "--timeout", "10"];
        args.extend_from_slice(extra);
        Mount::start(&self.store(), &self.t.join("mnt"), &args)
    }

    /// Requests the registry got for `needle` so far (`METHOD target` contains it).
    fn requests(&self, needle: &str) -> Vec<String> {
        self.proxy
            .requests()
            .into_iter()
            .filter(|r| r.contains(needle))
            .collect()
    }
}

/// The errno of a failed `stat`, or `None` when it worked.
fn stat_errno(path: &Path) -> Option<i32> {
    fs::symlink_metadata(path)
        .err()
        .map(|e| e.raw_os_error().unwrap_or(-1))
}

/// The names in a directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("ls {}: {e}", dir.display()))
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// The tags `imagefs ls --json` lists, as `registry/repository:tag`.
fn stored_tags(t: &TestDir, store: &Path) -> Vec<String> {
    let out = imagefs(t, store).args(["ls", "--json"]).assert_ok();
    let rows: Value = serde_json::from_str(&out.stdout).expect("ls --json is JSON");
    rows.as_array()
        .expect("a list")
        .iter()
        .filter(|row| row["tag"].is_string())
        .map(|row| {
            format!(
                "{}/{}:{}",
                row["registry"].as_str().unwrap_or_default(),
                row["repository"].as_str().unwrap_or_default(),
                row["tag"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

/// Polls `check` every 50 ms for at most `limit`.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_tag_looked_up_on_a_fresh_store_is_pulled_and_kept() {
    let Some(r) = Remote::start("pt-hit", &["sample-alpine:3.19"]) else {
        return;
    };
    let m = r.mount(&[]);
    let host = r.host();
    // The registry is there before the store has anything; nothing asked yet.
    assert_eq!(names(m.path()), vec![host.clone()]);
    let repo = m.join(&host).join("library/sample-alpine");
    // The empty tags/ is read (and kept by the kernel) before the pull.
    assert!(names(&repo.join("tags")).is_empty());
    assert!(r.requests("/v2/").is_empty(), "{:?}", r.proxy.requests());

    let os_release = repo.join("tags/3.19/rootfs/etc/os-release");
    let text = fs::read_to_string(&os_release).expect("cat through the new tag");
    assert!(text.contains(OS_RELEASE), "{text}");
    let pulled = r.requests("/manifests/3.19");
    assert!(!pulled.is_empty(), "{:?}", r.proxy.requests());

    // In the store like any other image: `imagefs ls`, and the mount's listings.
    let tag = format!("{host}/library/sample-alpine:3.19");
    assert_eq!(stored_tags(&r.t, &r.store()), vec![tag.clone()]);
    assert!(
        eventually(Duration::from_secs(2), || names(&repo.join("tags"))
            == vec!["3.19".to_string()]),
        "tags/ lists {:?}",
        names(&repo.join("tags"))
    );
    assert_eq!(
        names(&repo),
        ["blobs", "index.json", "manifests", "oci-layout", "tags"]
    );
    let link = fs::read_link(repo.join("tags/3.19")).expect("a tag link");
    assert!(link.to_string_lossy().starts_with("../manifests/sha256:"));

    // Looked up again (also after the kernel forgot it): from the store.
    let asked = r.proxy.requests().len();
    assert_eq!(fs::read_to_string(&os_release).expect("cat again"), text);
    fs::write("/proc/sys/vm/drop_caches", "2").expect("drop dentries");
    assert!(fs::metadata(repo.join("tags/3.19/manifest.json")).is_ok());
    assert_eq!(r.proxy.requests().len(), asked, "{:?}", r.proxy.requests());

    // `ln -s` into a repository the registry lacks: the lookup of the new name is
    // a miss, then the link is made (a new repository of the store).
    let digest = link.to_string_lossy().replace("../manifests/", "");
    let other = m.join(&host).join("library/other/tags/1");
    std::os::unix::fs::symlink(&digest, &other).expect("ln -s into a new repository");
    assert!(fs::read_to_string(other.join("rootfs/etc/os-release"))
        .expect("read through the new tag")
        .contains(OS_RELEASE));
    assert!(!r.requests("/v2/library/other/manifests/1").is_empty());
    let before = r.proxy.requests().len();

    // A mount without --pull-through shows it too, and a remount of the same store.
    m.unmount();
    let plain = Mount::start(&r.store(), &r.t.join("mnt"), &[]);
    let text = fs::read_to_string(
        plain
            .join(&host)
            .join("library/sample-alpine/tags/3.19/rootfs/etc/os-release"),
    )
    .expect("cat without pull-through");
    assert!(text.contains(OS_RELEASE));
    assert_eq!(r.proxy.requests().len(), before);
}

#[test]
fn misses_are_remembered_and_names_that_cannot_be_tags_ask_nothing() {
    let Some(r) = Remote::start("pt-miss", &["sample-alpine:3.19"]) else {
        return;
    };
    let m = r.mount(&[]);
    let ns = m.join(r.host()).join("library");
    for path in [
        ns.join("no-such-repo/tags/1.0"),
        ns.join("sample-alpine/tags/9.9"),
    ] {
        assert_eq!(stat_errno(&path), Some(libc::ENOENT), "{}", path.display());
        let asked = r.proxy.requests().len();
        assert!(asked > 0, "the first lookup asks the registry");
        // Within the miss period: ENOENT at once, nothing sent.
        for _ in 0..3 {
            assert_eq!(stat_errno(&path), Some(libc::ENOENT));
        }
        assert!(
            fs::read_to_string(path.join("rootfs/etc/os-release")).is_err(),
            "nothing behind a miss"
        );
        assert_eq!(r.proxy.requests().len(), asked, "{:?}", r.proxy.requests());
        r.proxy.clear();
    }
    // Names that are no tag or no repository path never reach the registry.
    let before = r.proxy.requests().len();
    for path in [
        ns.join("sample-alpine/tags/.hidden"),
        ns.join("sample-alpine/tags/-x"),
        ns.join("Upper/tags/1"),
        ns.join("sample-alpine/manifests/x"),
        ns.join("manifests/1"),
    ] {
        assert_eq!(stat_errno(&path), Some(libc::ENOENT), "{}", path.display());
    }
    assert_eq!(r.proxy.requests().len(), before, "{:?}", r.proxy.requests());
    // A miss did not put anything in the store.
    assert!(stored_tags(&r.t, &r.store()).is_empty());
    // The daemon log says nothing alarming about misses.
    assert!(
        !daemon_log(&r.store()).contains("WARN"),
        "{}",
        daemon_log(&r.store())
    );
}

#[test]
fn listing_and_stat_never_reach_the_registry() {
    let Some(r) = Remote::start("pt-readdir", &["sample-alpine:3.19"]) else {
        return;
    };
    let m = r.mount(&[]);
    let registry = m.join(r.host());
    assert!(fs::metadata(&registry).expect("stat the registry").is_dir());
    assert!(names(&registry).is_empty());
    for dir in [
        "library",
        "library/sample-alpine",
        "a/b/c",
        "library/sample-alpine/tags",
    ] {
        let path = registry.join(dir);
        let meta = fs::metadata(&path).unwrap_or_else(|e| panic!("stat {dir}: {e}"));
        assert!(meta.is_dir(), "{dir}");
        assert!(names(&path).is_empty(), "{dir} lists {:?}", names(&path));
    }
    // `find` walks everything there is (nothing) without asking anyone.
    let found = Command::new("find")
        .arg(&registry)
        .output()
        .expect("find runs");
    assert!(found.status.success());
    assert_eq!(String::from_utf8_lossy(&found.stdout).lines().count(), 1);
    assert!(r.proxy.requests().is_empty(), "{:?}", r.proxy.requests());
    // Registries that do not pull through are not there.
    assert_eq!(stat_errno(&m.join("localhost:1")), Some(libc::ENOENT));
    assert_eq!(names(m.path()), vec![r.host()]);
}

#[test]
fn a_registry_down_fails_in_bounded_time_and_the_mount_keeps_answering() {
    let Some(r) = Remote::start("pt-down", &["sample-alpine:3.19"]) else {
        return;
    };
    // The store has images of its own to read meanwhile.
    let (layout, _) = r.t.demo_layout("local-layout");
    imagefs(&r.t, &r.store())
        .arg("import")
        .arg(&layout)
        .assert_ok();
    // Nothing listens on this port: refused at once.
    let refused = format!("localhost:{}", registry::free_port());
    let stuck = r.host();
    r.proxy
        .add("/v2/", Fault::Delay(Duration::from_secs(30)), 0);
    let through = format!("{refused},{stuck}");
    let m = Mount::start(
        &r.store(),
        &r.t.join("mnt"),
        &["--pull-through", &through, "--timeout", "2"],
    );
    let local = m.join("docker.io/library/sample-alpine/tags/3.19/rootfs/etc/os-release");
    assert!(fs::read_to_string(&local)
        .expect("a local read")
        .contains(OS_RELEASE));

    // Refused: EIO, with one log line naming the reference.
    let path = m.join(&refused).join("library/app/tags/1");
    let started = Instant::now();
    assert_eq!(stat_errno(&path), Some(libc::EIO));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let reference = format!("{refused}/library/app:1");
    let lines = |needle: &str| {
        daemon_log(&r.store())
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    };
    assert_eq!(lines(&reference), 1, "{}", daemon_log(&r.store()));
    // Remembered: EIO at once for the other tags of that registry too, no new line.
    let started = Instant::now();
    assert_eq!(stat_errno(&path), Some(libc::EIO));
    assert_eq!(
        stat_errno(&m.join(&refused).join("library/app/tags/2")),
        Some(libc::EIO)
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(lines(&refused), 1, "{}", daemon_log(&r.store()));

    // Stuck: the lookup gives EIO after the timeout; meanwhile everything else answers.
    let stuck_path = m.join(&stuck).join("library/sample-alpine/tags/3.19");
    let waiting = {
        let stuck_path = stuck_path.clone();
        thread::spawn(move || {
            let started = Instant::now();
            (stat_errno(&stuck_path), started.elapsed())
        })
    };
    assert!(eventually(Duration::from_secs(5), || !r
        .proxy
        .requests()
        .is_empty()));
    let mut answered = 0;
    while !waiting.is_finished() {
        // The kernel forgets names and inodes: every step below reaches the daemon.
        fs::write("/proc/sys/vm/drop_caches", "2").expect("drop dentries");
        let started = Instant::now();
        assert!(names(&m.join("docker.io/library")).contains(&"sample-alpine".to_string()));
        assert!(fs::read_to_string(&local)
            .expect("a local read")
            .contains(OS_RELEASE));
        assert!(fs::metadata(m.join(&stuck).join("library/other")).is_ok());
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the mount waited {:?} for the stuck registry",
            started.elapsed()
        );
        answered += 1;
        thread::sleep(Duration::from_millis(50));
    }
    let (errno, took) = waiting.join().expect("the lookup thread");
    assert_eq!(errno, Some(libc::EIO));
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
        "{took:?}"
    );
    assert!(answered >= 1, "no round while the lookup waited");
    assert!(lines(&format!("{stuck}/library/sample-alpine:3.19")) >= 1);
    assert!(stored_tags(&r.t, &r.store())
        .iter()
        .all(|t| t.starts_with("docker.io/")));
}

/// Two processes at once: one pull, both read. (The kernel itself sends one
/// LOOKUP for concurrent lookups of one name; the daemon's single flight is what
/// the next test shows, where lookups arrive while a pull is under way.)
#[test]
fn two_processes_looking_up_one_new_tag_cause_one_pull() {
    let Some(r) = Remote::start("pt-flight", &["sample-alpine:3.19"]) else {
        return;
    };
    let m = r.mount(&[]);
    // The first manifest request waits a little, so both lookups are under way.
    r.proxy.add(
        "/manifests/3.19",
        Fault::Delay(Duration::from_millis(1500)),
        1,
    );
    let file = m
        .join(r.host())
        .join("library/sample-alpine/tags/3.19/rootfs/etc/os-release");
    let children: Vec<_> = (0..2)
        .map(|_| {
            Command::new("cat")
                .arg(&file)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("cat starts")
        })
        .collect();
    for child in children {
        let out = util::with_timeout(60, move || child.wait_with_output()).expect("cat ends");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains(OS_RELEASE));
    }
    let gets: Vec<String> = r
        .requests("/manifests/3.19")
        .into_iter()
        .filter(|line| line.starts_with("GET "))
        .collect();
    assert_eq!(gets.len(), 1, "{:?}", r.proxy.requests());
    let heads = r
        .requests("/manifests/3.19")
        .iter()
        .filter(|line| line.starts_with("HEAD "))
        .count();
    assert!(heads <= 1, "{:?}", r.proxy.requests());
    assert_eq!(
        stored_tags(&r.t, &r.store()),
        vec![format!("{}/library/sample-alpine:3.19", r.host())]
    );
}

#[test]
fn a_pull_slower_than_the_timeout_goes_on_and_later_lookups_join_it() {
    let Some(r) = Remote::start("pt-slow", &["sample-app:1.0"]) else {
        return;
    };
    // Every request answers within the 1 s timeout, but the pull (ping, manifest,
    // config, layers) takes longer than one lookup may wait.
    r.proxy
        .add("/v2/", Fault::Delay(Duration::from_millis(600)), 0);
    let host = r.host();
    let m = Mount::start(
        &r.store(),
        &r.t.join("mnt"),
        &["--pull-through", &host, "--timeout", "1"],
    );
    let tag = m.join(&host).join("library/sample-app/tags/1.0");
    let lookers: Vec<_> = (0..2)
        .map(|n| {
            let tag = tag.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(150 * n));
                let deadline = Instant::now() + Duration::from_secs(30);
                let mut errors = Vec::new();
                loop {
                    match stat_errno(&tag) {
                        None => return errors,
                        Some(errno) => errors.push(errno),
                    }
                    assert!(Instant::now() < deadline, "never pulled: {errors:?}");
                    thread::sleep(Duration::from_millis(100));
                }
            })
        })
        .collect();
    let errors: Vec<i32> = lookers
        .into_iter()
        .flat_map(|l| l.join().expect("a looker"))
        .collect();
    // Lookups gave up waiting (EIO) while the pull went on, and the later ones
    // joined it instead of starting another.
    assert!(!errors.is_empty(), "no lookup waited out the timeout");
    assert!(errors.iter().all(|e| *e == libc::EIO), "{errors:?}");
    let gets: Vec<String> = r
        .requests("/manifests/1.0")
        .into_iter()
        .filter(|line| line.starts_with("GET "))
        .collect();
    assert_eq!(gets.len(), 1, "{:?}", r.proxy.requests());
    assert_eq!(
        stored_tags(&r.t, &r.store()),
        vec![format!("{host}/library/sample-app:1.0")]
    );
}

/// `imagefs mount --pull-through HOST ARGS...` of `store` at `mountpoint`, with
/// `stdin`; the mount is unmounted when the guard drops.
fn mount_with(t: &TestDir, store: &Path, mountpoint: &Path, args: &[&str], stdin: &str) -> Mount {
    fs::create_dir_all(mountpoint).expect("the mountpoint");
    let guard = Mount::adopt(store, mountpoint);
    imagefs(t, store)
        .arg("mount")
        .arg(mountpoint)
        .args(args)
        .stdin(stdin)
        .timeout_secs(30)
        .assert_ok();
    guard
}

#[test]
fn credentials_come_from_creds_and_the_usual_auth_files() {
    if !util::require_fuse() {
        return;
    }
    let config = RegistryConfig {
        auth: registry::RegistryAuth::Basic {
            user: "alice".into(),
            password: "s3cret".into(),
        },
        tls: false,
    };
    let Some(reg) = Registry::start(&config) else {
        return;
    };
    let t = TestDir::new("pt-creds");
    let (layout, _) = t.demo_layout("demo-layout");
    let source = t.join("source");
    imagefs(&t, &source).arg("import").arg(&layout).assert_ok();
    let host = reg.host();
    imagefs(&t, &source)
        .args(["push", "--creds", "alice:s3cret"])
        .arg("docker.io/library/sample-alpine:3.19")
        .arg(format!("{host}/library/sample-alpine:3.19"))
        .assert_ok();
    let file = |m: &Mount| {
        m.join(&host)
            .join("library/sample-alpine/tags/3.19/rootfs/etc/os-release")
    };

    // Without credentials: EACCES (and nothing stored).
    let m = mount_with(
        &t,
        &t.join("s0"),
        &t.join("m0"),
        &["--pull-through", &host],
        "",
    );
    let error = fs::read_to_string(file(&m)).expect_err("no credentials");
    assert_eq!(error.raw_os_error(), Some(libc::EACCES), "{error}");
    drop(m);

    // `--creds USER`: the password is read from stdin, and reaches the daemon on
    // its stdin, not on its command line.
    let m = mount_with(
        &t,
        &t.join("s1"),
        &t.join("m1"),
        &["--pull-through", &host, "--creds", "alice"],
        "s3cret\n",
    );
    let text = fs::read_to_string(file(&m)).expect("read with --creds");
    assert!(text.contains(OS_RELEASE));
    let mut daemons = 0;
    for entry in fs::read_dir("/proc").expect("/proc").flatten() {
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&*m.path().to_string_lossy()) && cmdline.contains("--foreground") {
            assert!(!cmdline.contains("s3cret"), "{cmdline}");
            assert!(cmdline.contains("--creds alice"), "{cmdline}");
            daemons += 1;
        }
    }
    assert_eq!(daemons, 1, "the daemon's command line");
    drop(m);

    // Docker's config.json ($DOCKER_CONFIG), as `docker login` writes it.
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    t.write(
        "docker/config.json",
        serde_json::json!({"auths": {host.clone(): {"auth": auth}}}).to_string(),
    );
    let m = mount_with(
        &t,
        &t.join("s2"),
        &t.join("m2"),
        &["--pull-through", &host],
        "",
    );
    assert!(fs::read_to_string(file(&m))
        .expect("read with config.json")
        .contains(OS_RELEASE));
}
