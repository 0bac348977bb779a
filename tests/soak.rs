//! Soak: importers sharing layers, tag deleters, promoters (`ln -s` across
//! registries through a mount), a gc loop and readers hashing files through a
//! second mount, all on one store at once, for a fixed number of rounds.
//!
//! Invariants after every round: `fsck` finds nothing missing, corrupt, miscounted
//! or dangling (counts equal a fresh recount); every live tag exports (which
//! re-verifies every blob it reaches); readers never saw EIO (ENOENT is fine: a tag
//! can go away between listing and reading).
//!
//! `IMAGEFS_SOAK_ROUNDS` (default 3) makes it longer: `IMAGEFS_SOAK_ROUNDS=50
//! cargo test --release --test soak -- --nocapture`.
//!
//! Memory of a long-running mount: walks over ever new images (the last round's
//! untagged) with the kernel's caches dropped in between; paths that stay keep
//! their inode numbers, the daemon's inode table holds what exists plus a bounded
//! share of what is gone, and its RSS levels off (read through the
//! `user.imagefs.stats` hook of the mount root).

mod util;

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;

use imagefs::testing::sample::{self, Built, Compression, ImageBuilder, LayerSpec};
use util::{daemon_stats, Cmd, Mount, TestDir};

fn rounds() -> usize {
    std::env::var("IMAGEFS_SOAK_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

fn layout(t: &TestDir, dir: &str, names: &[&str]) -> PathBuf {
    util::layout_sharing_a_base(
        t,
        dir,
        names,
        "dir /usr 0755\nfile /usr/base.bin 0644 @random:200000\nfile /etc/os-release 0644 \"ID=soak\\n\"",
        30000,
    )
}

fn imagefs(store: &Path, args: &[&str]) -> util::Output {
    Cmd::imagefs()
        .arg("--store")
        .arg(store)
        .args(args)
        .timeout_secs(120)
        .output()
}

/// Every `<mnt>/<registry>/<repo>/tags/<tag>` reachable now.
fn tag_paths(mnt: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![mnt.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if name == "tags" {
                if let Ok(tags) = std::fs::read_dir(&path) {
                    out.extend(tags.flatten().map(|t| t.path()));
                }
            } else if name != "manifests" && path.is_dir() {
                stack.push(path);
            }
        }
    }
    out
}

/// Reads a file fully; EIO is a failure, a vanished file is not.
fn read_checked(path: &Path, eio: &AtomicU64) -> u64 {
    let mut buf = Vec::new();
    match std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut buf)) {
        Ok(n) => n as u64,
        Err(e) if e.raw_os_error() == Some(libc::EIO) => {
            eprintln!("EIO reading {}", path.display());
            eio.fetch_add(1, Ordering::Relaxed);
            0
        }
        Err(_) => 0,
    }
}

#[test]
fn soak_importers_deleters_promoters_gc_and_readers() {
    if !util::require_fuse() {
        return;
    }
    let t = TestDir::new("soak");
    let store = t.store();
    let a = layout(&t, "a", &["dev/a:1", "dev/a:2"]);
    let b = layout(&t, "b", &["dev/b:1", "dev/b:2"]);
    imagefs(&store, &["import", a.to_str().unwrap()]).assert_ok();
    let writer_mount = Mount::start(&store, &t.join("mnt1"), &[]);
    let reader_mount = Mount::start(&store, &t.join("mnt2"), &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let eio = Arc::new(AtomicU64::new(0));
    let bytes_read = Arc::new(AtomicU64::new(0));

    // Background: a gc loop and two readers, for the whole run.
    let gc = {
        let (stop, store) = (stop.clone(), store.clone());
        thread::spawn(move || {
            let mut runs = 0u64;
            while !stop.load(Ordering::Relaxed) {
                imagefs(&store, &["gc"]).assert_ok();
                runs += 1;
            }
            runs
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, eio, bytes_read) = (stop.clone(), eio.clone(), bytes_read.clone());
            let mnt = reader_mount.path().to_path_buf();
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for tag in tag_paths(&mnt) {
                        for file in [
                            "manifest.json",
                            "config.json",
                            "layers/000/blob",
                            "rootfs/usr/base.bin",
                            "rootfs/etc/os-release",
                        ] {
                            let n = read_checked(&tag.join(file), &eio);
                            bytes_read.fetch_add(n, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();

    for round in 0..rounds() {
        let mnt = writer_mount.path().to_path_buf();
        let import_a = {
            let (store, a) = (store.clone(), a.clone());
            thread::spawn(move || imagefs(&store, &["import", a.to_str().unwrap()]))
        };
        let import_b = {
            let (store, b) = (store.clone(), b.clone());
            thread::spawn(move || imagefs(&store, &["import", b.to_str().unwrap()]))
        };
        let promoter = {
            let mnt = mnt.clone();
            thread::spawn(move || {
                let target = mnt.join("local/dev/a/tags/1");
                let dir = mnt.join("prod/a");
                let _ = std::fs::create_dir_all(&dir);
                // The tag may be gone for a moment (a deleter); retry briefly.
                for _ in 0..50 {
                    let link = dir.join(format!("tags/r{round}"));
                    if std::os::unix::fs::symlink(&target, &link).is_ok() {
                        return true;
                    }
                    thread::sleep(std::time::Duration::from_millis(20));
                }
                false
            })
        };
        let deleter = {
            let store = store.clone();
            thread::spawn(move || {
                // Removing b's tags races b's import: either order is fine.
                let _ = imagefs(&store, &["rm", "local/dev/b:1"]);
                let _ = imagefs(&store, &["rm", "local/dev/a:2"]);
            })
        };
        import_a.join().unwrap().assert_ok();
        import_b.join().unwrap().assert_ok();
        assert!(
            promoter.join().unwrap(),
            "round {round}: promotion never succeeded"
        );
        deleter.join().unwrap();
        // Every few rounds, drop old promotions through the mount.
        if round >= 2 {
            let _ = std::fs::remove_file(mnt.join(format!("prod/a/tags/r{}", round - 2)));
        }

        let fsck: serde_json::Value =
            serde_json::from_str(&imagefs(&store, &["fsck", "--json"]).assert_ok().stdout).unwrap();
        for key in ["missing", "corrupt", "bad_counts", "dangling"] {
            assert_eq!(
                fsck[key],
                serde_json::json!([]),
                "round {round}: {key}: {fsck}"
            );
        }
        let ls: serde_json::Value =
            serde_json::from_str(&imagefs(&store, &["ls", "--json"]).assert_ok().stdout).unwrap();
        for row in ls.as_array().unwrap() {
            let (Some(repo), Some(tag)) = (row["repository"].as_str(), row["tag"].as_str()) else {
                continue;
            };
            let reference = format!("{}/{repo}:{tag}", row["registry"].as_str().unwrap());
            let out = t.join(format!("export-{round}"));
            imagefs(&store, &["export", &reference, out.to_str().unwrap()]).assert_ok();
            std::fs::remove_dir_all(&out).unwrap();
        }
        eprintln!(
            "round {round}: ok ({} bytes read through the mount so far)",
            bytes_read.load(Ordering::Relaxed)
        );
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.join().unwrap();
    }
    let gc_runs = gc.join().unwrap();
    assert_eq!(
        eio.load(Ordering::Relaxed),
        0,
        "readers saw EIO on live tags"
    );
    assert!(
        bytes_read.load(Ordering::Relaxed) > 0,
        "readers read nothing"
    );
    assert!(gc_runs > 0);
    eprintln!(
        "soak: {} rounds, {gc_runs} gc runs, {} bytes read, 0 EIO",
        rounds(),
        bytes_read.load(Ordering::Relaxed)
    );
    drop(reader_mount);
    drop(writer_mount);
}

// ---- memory of a long-running mount ----

/// Writes an OCI layout at `<dir>/<name>` of `images` images sharing layer `base`,
/// each with a small layer of its own (seeded by `name`) and tagged `tags` times
/// in repository `repository`.
fn layout_of_many_tags(
    t: &TestDir,
    name: &str,
    repository: &str,
    base: &str,
    images: usize,
    tags: usize,
) -> PathBuf {
    let base = LayerSpec::parse(base).expect("base layer spec");
    let built: Vec<Built> = (0..images)
        .map(|i| {
            let own = LayerSpec::parse(&format!("file /own/{name}-{i} 0644 @random:64"))
                .expect("own layer spec");
            let image = ImageBuilder::new()
                .layer(&base, Compression::Gzip)
                .layer(&own, Compression::Gzip)
                .build()
                .expect("image builds");
            Built::from(image)
        })
        .collect();
    let names: Vec<String> = (0..images * tags)
        .map(|n| format!("{repository}:{n}"))
        .collect();
    let entries: Vec<(Option<&str>, &Built)> = names
        .iter()
        .enumerate()
        .map(|(n, tag)| (Some(tag.as_str()), &built[n % images]))
        .collect();
    let path = t.join(name);
    sample::write_oci_layout(&path, &entries).expect("layout can be written");
    path
}

/// VmRSS of process `pid` in KiB.
fn rss_kib(pid: u64) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("daemon status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Makes the kernel drop unused dentries and inodes (and FORGET them to us).
fn drop_kernel_caches() -> std::io::Result<()> {
    std::fs::write("/proc/sys/vm/drop_caches", "2")
}

/// Held by each test that drops the kernel's caches: one test's drops would make
/// the kernel forget in the middle of another's walk.
static KERNEL_CACHES: Mutex<()> = Mutex::new(());

/// Drops the kernel's caches and waits (up to 10 s) until the daemon of `mount`
/// holds only the root's lookup; returns its statistics then.
fn forget_all(mount: &Path) -> BTreeMap<String, u64> {
    drop_kernel_caches().expect("drop_caches");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut after = daemon_stats(mount);
    while after["lookups"] > 1 && std::time::Instant::now() < deadline {
        thread::sleep(std::time::Duration::from_millis(50));
        after = daemon_stats(mount);
    }
    after
}

/// The turn to drop the kernel's caches, for a test that mounts and drops them:
/// `None` (skipped, or a failure under CI) when this machine cannot do either.
fn kernel_caches() -> Option<MutexGuard<'static, ()>> {
    if !util::require_fuse() {
        return None;
    }
    let turn = KERNEL_CACHES.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(error) = drop_kernel_caches() {
        assert!(!util::is_ci(), "CI=true and drop_caches: {error}");
        eprintln!("skipped: cannot write /proc/sys/vm/drop_caches: {error}");
        return None;
    }
    Some(turn)
}

/// Why a walk may hold more lookups than paths (issue 14, part 5): the kernel looks
/// a cached name up again once its entry TTL lapses, and counts that lookup on the
/// same inode; one FORGET gives both back. Most names of the registry tree are kept
/// for a long TTL and dropped explicitly when they change; a manifest directory in
/// `manifests/` keeps the short one (0.5 s), so it shows the relookup.
#[test]
fn a_name_looked_up_again_holds_two_lookups_until_forgotten() {
    let Some(_caches) = kernel_caches() else {
        return;
    };
    let t = TestDir::new("relookup");
    let store = t.store();
    let (layout, _) = t.demo_layout("layout");
    imagefs(&store, &["import", layout.to_str().unwrap()]).assert_ok();
    let listed: serde_json::Value = serde_json::from_str(
        &imagefs(&store, &["ls", "--json", "docker.io/library/sample-alpine"])
            .assert_ok()
            .stdout,
    )
    .expect("ls --json");
    let digest = listed
        .as_array()
        .and_then(|rows| rows.iter().find_map(|row| row["digest"].as_str()))
        .expect("a tagged manifest")
        .to_string();
    let mnt = Mount::start(&store, &t.join("mnt"), &[]);
    assert_eq!(forget_all(mnt.path())["lookups"], 1, "only the root's");
    let manifest = mnt.join(format!(
        "docker.io/library/sample-alpine/manifests/{digest}"
    ));
    let stat = |path: &Path| {
        let path = path.to_path_buf();
        util::with_timeout(10, move || {
            std::fs::symlink_metadata(path).map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        })
        .expect("lstat")
    };
    let ino = stat(&manifest);
    // The root, and docker.io, library, sample-alpine, manifests, the manifest.
    assert_eq!(daemon_stats(mnt.path())["lookups"], 6, "one per component");
    // Within the TTL the kernel answers from its cache.
    assert_eq!(stat(&manifest), ino);
    assert_eq!(daemon_stats(mnt.path())["lookups"], 6);
    thread::sleep(std::time::Duration::from_millis(700));
    assert_eq!(stat(&manifest), ino, "the same number");
    assert_eq!(
        daemon_stats(mnt.path())["lookups"],
        7,
        "one path, two lookups of the manifest held by the kernel"
    );
    // The kernel may keep the dentry a moment longer while another test's walk
    // holds memory: drop the caches again, a bounded number of times.
    let mut lookups = forget_all(mnt.path())["lookups"];
    for _ in 0..10 {
        if lookups == 1 {
            break;
        }
        thread::sleep(std::time::Duration::from_millis(200));
        lookups = forget_all(mnt.path())["lookups"];
    }
    assert_eq!(lookups, 1, "both given back");
}

#[test]
fn memory_levels_off_when_the_kernel_forgets_inodes() {
    let Some(_caches) = kernel_caches() else {
        return;
    };
    // The caches (trees, manifest views, SQLite's) fill during the first rounds;
    // without forgetting, the table grew by about 1 MiB a round here.
    const WARM_UP: usize = 8;
    const ROUNDS: usize = 16;
    const IMAGES: usize = 4;
    const TAGS: usize = 300;
    let t = TestDir::new("forget");
    let store = t.store();
    // A base of 240 files in 24 directories, shared by every image: each rootfs and
    // base layers/000/files/ is a real tree to walk.
    let base: String = (0..240)
        .map(|i| format!("file /usr/share/d{}/f{i} 0644 \"{i}\"\n", i % 24))
        .collect();
    let mnt = Mount::start(&store, &t.join("mnt"), &[]);
    let pid = daemon_stats(mnt.path())["pid"];
    let mut settled = Vec::new();
    let mut numbered = 0;
    let mut last_walk: std::collections::HashMap<String, u64> = Default::default();
    for round in 0..ROUNDS {
        // New images and tags in a new repository every round, the last round's
        // untagged: a user browsing ever new tags.
        let name = format!("r{round}");
        let layout = layout_of_many_tags(&t, &name, &format!("walk/{name}"), &base, IMAGES, TAGS);
        imagefs(&store, &["import", layout.to_str().unwrap()]).assert_ok();
        if round == 0 {
            // One tag that stays: its tree is walked every round, under the same
            // numbers.
            imagefs(&store, &["tag", "local/walk/r0:0", "local/walk/keep:1"]).assert_ok();
        }
        if round > 0 {
            let old: Vec<String> = (0..IMAGES * TAGS)
                .map(|n| format!("local/walk/r{}:{n}", round - 1))
                .collect();
            let mut args = vec!["rm"];
            args.extend(old.iter().map(String::as_str));
            imagefs(&store, &args).assert_ok();
        }

        // `%s` makes find lstat every path, so the kernel looks every one up.
        let found = Cmd::new("find")
            .arg(mnt.path())
            .args(["-printf", "%i %s %p\\n"])
            .timeout_secs(120)
            .assert_ok();
        let walk: std::collections::HashMap<String, u64> = found
            .stdout
            .lines()
            .map(|line| {
                let mut fields = line.splitn(3, ' ');
                let ino = fields
                    .next()
                    .and_then(|i| i.parse().ok())
                    .expect("an inode");
                (fields.nth(1).expect("a path").to_string(), ino)
            })
            .collect();
        let paths = walk.len() as u64;
        let numbers: HashSet<u64> = walk.values().copied().collect();
        assert_eq!(
            numbers.len() as u64,
            paths,
            "round {round}: one number per path"
        );
        // The kernel forgot everything since the last walk, yet (SPEC) a path that
        // still exists keeps its number, and a new path never gets an old number.
        let old_numbers: HashSet<u64> = last_walk.values().copied().collect();
        let mut kept = 0;
        for (path, ino) in &walk {
            match last_walk.get(path) {
                Some(old) => {
                    assert_eq!(ino, old, "round {round}: {path} changed its number");
                    kept += 1;
                }
                None => assert!(
                    !old_numbers.contains(ino),
                    "round {round}: {path} got the old number {ino}"
                ),
            }
        }
        assert!(
            round == 0 || kept > 100,
            "round {round}: only {kept} paths in both walks"
        );
        last_walk = walk;
        let walked = daemon_stats(mnt.path());
        // Every path the walk met holds at least one lookup (the root's own counts
        // too), unless the kernel reclaimed some meanwhile (memory pressure): the
        // lower bound. There is no upper bound of one per path (issue 14: 3946
        // lookups for 3945 paths once under load). The kernel adds one to an inode's
        // count each time it looks a cached name up again: when a name's entry TTL
        // (0.5 s in the volatile directories: the root, repositories, tags/) has
        // lapsed before find's next step on it (`fuse_dentry_revalidate`:
        // `fi->nlookup++`), and when READDIRPLUS lists a name already cached
        // (`fuse_direntplus_link`). `stat P; sleep 0.7; stat P` on a tag shows it:
        // one path, two lookups, both given back by one FORGET
        // (`a_name_looked_up_again_holds_two_lookups_until_forgotten`). So the count
        // is paths + such re-lookups - reclaimed ones, and find meets a path at most
        // three times (listing, lstat, and for a directory its open): at most two
        // re-lookups per path. The check that the daemon counts nothing the kernel
        // does not hold is exact, below: once the kernel forgets everything, only
        // the root's lookup is left.
        assert!(
            walked["lookups"] * 10 >= paths * 9 && walked["lookups"] <= 3 * paths,
            "round {round}: {paths} paths, {walked:?}"
        );
        assert!(walked["numbered"] > numbered, "numbers only grow");
        numbered = walked["numbered"];

        let after = forget_all(mnt.path());
        // Only the root is left held: every count was given back, none twice.
        assert_eq!(after["lookups"], 1, "round {round}: {after:?}");
        assert_eq!(
            (after["held_nodes"], after["held_blocks"]),
            (1, 0),
            "round {round}: {after:?}"
        );
        // What exists plus unheld numbers of things gone, which a sweep drops once
        // they have doubled (4096 at least).
        assert!(
            after["nodes"] <= 3 * walked["nodes"] + 4096,
            "round {round}: the table keeps what is gone: {walked:?} then {after:?}"
        );
        let rss = rss_kib(pid);
        eprintln!(
            "round {round}: {paths} paths; walked: nodes {} blocks {} lookups {}; \
             after: nodes {} blocks {}; numbered {}; rss {rss} KiB",
            walked["nodes"],
            walked["blocks"],
            walked["lookups"],
            after["nodes"],
            after["blocks"],
            after["numbered"],
        );
        settled.push((after["nodes"], after["blocks"], rss));
    }
    // Walk after walk the table holds what exists plus a bounded share of what is
    // gone (it rises until a sweep, then falls): the late rounds peak no higher
    // than the warm-up rounds did, give or take the few empty repositories that
    // every round leaves behind.
    let peak = |rounds: &[(u64, u64, u64)]| {
        rounds.iter().fold((0, 0), |(n, b), &(nodes, blocks, _)| {
            (n.max(nodes), b.max(blocks))
        })
    };
    let (warm_nodes, warm_blocks) = peak(&settled[..WARM_UP]);
    let (late_nodes, late_blocks) = peak(&settled[WARM_UP..]);
    let last_rss = settled[ROUNDS - 1].2;
    assert!(
        late_nodes <= warm_nodes + 512 && late_blocks <= warm_blocks + 64,
        "the table grows walk after walk: {settled:?}"
    );
    let warm_rss = settled[WARM_UP - 2].2.max(settled[WARM_UP - 1].2);
    assert!(
        last_rss <= warm_rss + warm_rss / 10 + 2048,
        "the daemon's RSS grows walk after walk (KiB): {settled:?}"
    );
    mnt.unmount();
}

#[test]
fn lookups_racing_forgets_never_drop_a_held_inode() {
    let Some(_caches) = kernel_caches() else {
        return;
    };
    let t = TestDir::new("forget-race");
    let store = t.store();
    let base: String = (0..60)
        .map(|i| format!("file /etc/d{}/f{i} 0644 \"{i}\"\n", i % 6))
        .collect();
    let names = ["dev/a:1", "dev/a:2", "dev/b:1"];
    let layout = util::layout_sharing_a_base(&t, "a", &names, &base, 1000);
    imagefs(&store, &["import", layout.to_str().unwrap()]).assert_ok();
    let mnt = Mount::start(&store, &t.join("mnt"), &[]);
    let pid = daemon_stats(mnt.path())["pid"];
    let found = Cmd::new("find").arg(mnt.path()).assert_ok().stdout;
    let paths: Arc<Vec<PathBuf>> = Arc::new(found.lines().map(PathBuf::from).collect());

    // Readers look every path up and read every file while the kernel forgets
    // inodes as fast as it can: a lookup racing a forget of the same inode on
    // another daemon thread must never lose a number the kernel holds.
    let failures = util::with_timeout(120, move || {
        let stop = Arc::new(AtomicBool::new(false));
        let dropper = {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut drops = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    drop_kernel_caches().expect("drop_caches");
                    drops += 1;
                    thread::sleep(std::time::Duration::from_millis(10));
                }
                drops
            })
        };
        let readers: Vec<_> = (0..4)
            .map(|reader| {
                let paths = paths.clone();
                thread::spawn(move || {
                    let (mut failures, mut operations) = (Vec::new(), 0u64);
                    let started = std::time::Instant::now();
                    let mut turn = reader;
                    while started.elapsed() < std::time::Duration::from_secs(3) {
                        let path = &paths[turn % paths.len()];
                        turn += 7;
                        operations += 1;
                        let result = std::fs::symlink_metadata(path).and_then(|meta| {
                            if meta.is_file() {
                                std::fs::read(path).map(|_| ())
                            } else {
                                Ok(())
                            }
                        });
                        if let Err(error) = result {
                            failures.push(format!("{}: {error}", path.display()));
                        }
                    }
                    (failures, operations)
                })
            })
            .collect();
        let (mut failures, mut operations) = (Vec::new(), 0);
        for reader in readers {
            let (failed, done) = reader.join().expect("reader");
            failures.extend(failed);
            operations += done;
        }
        stop.store(true, Ordering::Relaxed);
        let drops = dropper.join().expect("dropper");
        eprintln!("{operations} lookups and reads, {drops} cache drops");
        assert!(operations > 100 && drops > 10, "the race ran");
        failures
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    let after = forget_all(mnt.path());
    assert_eq!(
        after["lookups"], 1,
        "a count leaked under the race: {after:?}"
    );
    // The daemon warns when the kernel forgets more than was counted.
    let log =
        std::fs::read_to_string(store.join(format!("mount-{pid}.log"))).expect("the daemon's log");
    assert!(!log.contains("the kernel forgot"), "{log}");
    mnt.unmount();
}
