//! Several imagefs processes on one store: imports, removals and gc racing each
//! other never lose or corrupt anything, and a blob an import is about to
//! reference is never deleted (leases), shown with a failpoint that stops the
//! import at the worst instant.

mod util;

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use util::{Cmd, TestDir};

/// Rounds of each race (`IMAGEFS_RACE_ROUNDS` raises it for a long run).
fn rounds() -> usize {
    std::env::var("IMAGEFS_RACE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
}

/// A layout holding `names`, each an image over one shared base layer plus a
/// layer of its own.
fn layout(t: &TestDir, dir: &str, names: &[&str]) -> PathBuf {
    util::layout_sharing_a_base(
        t,
        dir,
        names,
        "dir /usr 0755\nfile /usr/big 0644 @random:300000",
        20000,
    )
}

fn fsck_clean(t: &TestDir) {
    let out = t.run(&["fsck", "--json"]).assert_ok();
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    for key in ["missing", "corrupt", "bad_counts", "dangling"] {
        assert_eq!(report[key], serde_json::json!([]), "{key}: {}", out.stdout);
    }
}

fn spawn(t: &TestDir, args: &[&str]) -> thread::JoinHandle<util::Output> {
    let mut cmd = t.imagefs();
    cmd.args(args).timeout_secs(120);
    thread::spawn(move || cmd.output())
}

#[test]
fn two_imports_sharing_layers() {
    let t = TestDir::new("race-imports");
    let a = layout(&t, "a", &["dev/a:1"]);
    let b = layout(&t, "b", &["dev/b:1"]);
    for round in 0..rounds() {
        let first = spawn(&t, &["import", a.to_str().unwrap()]);
        let second = spawn(&t, &["import", b.to_str().unwrap()]);
        first.join().unwrap().assert_ok();
        second.join().unwrap().assert_ok();
        fsck_clean(&t);
        t.run(&["rm", "local/dev/a:1", "local/dev/b:1"]).assert_ok();
        let left = std::fs::read_dir(t.store().join("blobs/sha256"))
            .unwrap()
            .count();
        assert_eq!(
            left, 0,
            "round {round}: blobs left after removing everything"
        );
    }
}

#[test]
fn import_racing_rm_of_a_sharing_image() {
    let t = TestDir::new("race-import-rm");
    let a = layout(&t, "a", &["dev/a:1"]);
    let b = layout(&t, "b", &["dev/b:1"]);
    for _ in 0..rounds() {
        t.run(&["import", a.to_str().unwrap()]).assert_ok();
        let import = spawn(&t, &["import", b.to_str().unwrap()]);
        let rm = spawn(&t, &["rm", "local/dev/a:1"]);
        import.join().unwrap().assert_ok();
        rm.join().unwrap().assert_ok();
        fsck_clean(&t);
        // b is complete: export re-verifies every blob of it.
        t.run(&["export", "local/dev/b:1", t.join("b-out").to_str().unwrap()])
            .assert_ok();
        std::fs::remove_dir_all(t.join("b-out")).unwrap();
        t.run(&["rm", "local/dev/b:1"]).assert_ok();
    }
}

#[test]
fn import_racing_gc_loop() {
    let t = TestDir::new("race-import-gc");
    let a = layout(&t, "a", &["dev/a:1", "dev/a:2", "dev/a:3"]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gc = {
        let stop = stop.clone();
        let store = t.store();
        thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                Cmd::imagefs()
                    .arg("--store")
                    .arg(&store)
                    .arg("gc")
                    .assert_ok();
                runs += 1;
            }
            runs
        })
    };
    for _ in 0..rounds() {
        t.run(&["import", a.to_str().unwrap()]).assert_ok();
        fsck_clean(&t);
        t.run(&["rm", "local/dev/a:1", "local/dev/a:2", "local/dev/a:3"])
            .assert_ok();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(gc.join().unwrap() > 0);
    fsck_clean(&t);
}

/// Waits for a paused process to reach its failpoint.
fn wait_reached(gate: &Path) {
    let reached = PathBuf::from(format!("{}.reached", gate.display()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !reached.exists() {
        assert!(Instant::now() < deadline, "failpoint never reached");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn gc_and_rm_never_delete_what_a_paused_import_is_about_to_reference() {
    let t = TestDir::new("lease-pause");
    let a = layout(&t, "a", &["dev/a:1"]);
    let b = layout(&t, "b", &["dev/b:1"]);
    t.run(&["import", a.to_str().unwrap()]).assert_ok();
    let gate = t.join("gate");
    // The import of b stops after its blobs are durable, before its commit.
    let import = {
        let mut cmd = t.imagefs();
        cmd.args(["import", b.to_str().unwrap()])
            .env(
                "IMAGEFS_FAILPOINT",
                format!("import.before_commit:pause:{}", gate.display()),
            )
            .timeout_secs(120);
        thread::spawn(move || cmd.output())
    };
    wait_reached(&gate);
    // a shares b's base layer: removing a would delete it, and gc would remove b's
    // not-yet-referenced blobs, were they not leased.
    t.run(&["rm", "local/dev/a:1"]).assert_ok();
    t.run(&["gc"]).assert_ok();
    std::fs::write(&gate, b"go").unwrap();
    import.join().unwrap().assert_ok();
    fsck_clean(&t);
    t.run(&["export", "local/dev/b:1", t.join("b-out").to_str().unwrap()])
        .assert_ok();
}

#[test]
fn a_killed_import_leaves_only_leftovers_that_gc_removes() {
    let t = TestDir::new("lease-kill");
    let a = layout(&t, "a", &["dev/a:1"]);
    let out = t
        .imagefs()
        .args(["import", a.to_str().unwrap()])
        .env("IMAGEFS_FAILPOINT", "import.before_commit")
        .output();
    assert_ne!(out.code, Some(0), "the failpoint should abort the import");
    // The store is not locked and nothing referenced is missing.
    let fsck: serde_json::Value =
        serde_json::from_str(&t.run(&["fsck", "--json"]).assert_ok().stdout).unwrap();
    assert!(
        !fsck["leftovers"].as_array().unwrap().is_empty(),
        "the aborted import's blobs should be leftovers: {fsck}"
    );
    t.run(&["gc"]).assert_ok();
    let fsck: serde_json::Value =
        serde_json::from_str(&t.run(&["fsck", "--json"]).assert_ok().stdout).unwrap();
    assert_eq!(fsck["leftovers"], serde_json::json!([]));
    assert_eq!(
        std::fs::read_dir(t.store().join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
    // And a new import works.
    t.run(&["import", a.to_str().unwrap()]).assert_ok();
    fsck_clean(&t);
}

/// Regression (seen in CI): processes opening a brand-new store at the same
/// instant got "database is locked" while one of them switched it to WAL.
#[test]
fn many_processes_opening_a_fresh_store_at_once() {
    for round in 0..20 {
        let t = TestDir::new("fresh-open");
        let handles: Vec<_> = (0..12)
            .map(|i| {
                let args: &[&str] = if i % 2 == 0 { &["ls"] } else { &["gc"] };
                spawn(&t, args)
            })
            .collect();
        for handle in handles {
            let out = handle.join().unwrap();
            assert_eq!(out.code, Some(0), "round {round}: {out:?}");
        }
    }
}

/// Starts `imagefs ARGS` with a failpoint that pauses it, and waits until it got
/// there (holding whatever it holds at that instant).
fn paused(t: &TestDir, failpoint: &str, args: &[&str]) -> (std::process::Child, PathBuf) {
    let gate = t.join(format!("gate-{}", failpoint.replace('.', "-")));
    let child = std::process::Command::new(util::imagefs_bin())
        .env_remove("IMAGEFS_STORE")
        .env(
            "IMAGEFS_FAILPOINT",
            format!("{failpoint}:pause:{}", gate.display()),
        )
        .arg("--store")
        .arg(t.store())
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("imagefs starts");
    (child, gate)
}

fn kill9(mut child: std::process::Child) {
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
}

/// Reads a file through a mount, never hanging on a dead one.
fn read_ok(path: PathBuf) -> Vec<u8> {
    let shown = path.display().to_string();
    util::with_timeout(60, move || std::fs::read(path)).unwrap_or_else(|e| panic!("{shown}: {e}"))
}

/// Two mounts and CLI processes on one store; each kind of process is SIGKILLed
/// while it holds the most it ever holds (the metadata write transaction of a tag
/// or rm, gc between its commit and its unlinks, an import before its commit, a
/// daemon unpacking a layer under the layer's flock). Right after each kill the
/// other processes carry on: nothing stays locked.
#[test]
fn a_sigkilled_process_never_leaves_the_store_locked() {
    if !util::require_fuse() {
        return;
    }
    let t = TestDir::new("kill-locks");
    let a = layout(&t, "a", &["dev/a:1", "dev/b:1", "dev/c:1"]);
    let a = a.to_str().unwrap();
    t.run(&["import", a]).assert_ok();
    // New blobs for the killed import and for gc's leftovers.
    let fresh = layout(&t, "fresh", &["dev/y:1", "dev/z:1"]);
    let fresh = fresh.to_str().unwrap();
    let one = util::Mount::start(&t.store(), &t.join("mnt1"), &[]);
    let two = util::Mount::start(&t.store(), &t.join("mnt2"), &[]);
    let big =
        |m: &util::Mount, name: &str| m.join(format!("local/dev/{name}/tags/1/rootfs/usr/big"));

    let cases: &[(&str, &[&str])] = &[
        (
            "tag.before_commit",
            &["tag", "local/dev/a:1", "local/dev/x:1"],
        ),
        ("rm.before_commit", &["rm", "local/dev/c:1"]),
        ("import.before_commit", &["import", fresh]),
        ("gc.before_unlink", &["gc"]),
    ];
    for (round, (failpoint, args)) in cases.iter().enumerate() {
        if *failpoint == "gc.before_unlink" {
            // Something for gc to unlink: an aborted import's leftovers.
            let _ = t
                .imagefs()
                .args(["import", fresh])
                .env("IMAGEFS_FAILPOINT", "import.before_commit")
                .output();
        }
        let (child, gate) = paused(&t, failpoint, args);
        wait_reached(&gate);
        kill9(child);
        // Writers and readers go on at once (each command has a timeout).
        t.run(&["tag", "local/dev/a:1", &format!("local/dev/k:{round}")])
            .assert_ok();
        t.run(&["rm", &format!("local/dev/k:{round}")]).assert_ok();
        t.run(&["ls"]).assert_ok();
        assert_eq!(
            read_ok(big(&one, "a")),
            read_ok(big(&two, "b")),
            "{failpoint}"
        );
        fsck_clean(&t);
    }

    // A daemon killed while it unpacks a layer (holding that layer's flock): the
    // other mounts unpack it themselves.
    t.run(&["import", a]).assert_ok();
    let third = t.join("mnt3");
    std::fs::create_dir_all(&third).unwrap();
    let (daemon, gate) = paused(
        &t,
        "unpack.start",
        &["mount", third.to_str().unwrap(), "--foreground"],
    );
    let _cleanup = util::Mount::adopt(&t.store(), &third);
    assert!(util::wait_for_mount_state(
        &third,
        true,
        Duration::from_secs(10)
    ));
    // Evict first, so the paused daemon really has to unpack.
    t.run(&["gc", "--cache-size", "0"]).assert_ok();
    let stuck = third.join("local/dev/a/tags/1/rootfs/usr/big");
    let reader = thread::spawn(move || std::fs::read(stuck));
    wait_reached(&gate);
    kill9(daemon);
    assert!(
        reader.join().unwrap().is_err(),
        "the killed daemon cannot answer"
    );
    t.run(&["unmount", third.to_str().unwrap()]).assert_ok();
    let bytes = read_ok(big(&one, "a"));
    assert_eq!(bytes.len(), 300_000);
    assert_eq!(read_ok(big(&two, "a")), bytes);
    fsck_clean(&t);
    drop((one, two));
    t.run(&["fsck", "--repair"]).assert_ok();
    let after = t.run(&["fsck", "--json"]).assert_ok();
    let report: serde_json::Value = serde_json::from_str(&after.stdout).unwrap();
    assert_eq!(
        report["leftovers"],
        serde_json::json!([]),
        "{}",
        after.stdout
    );
    t.run(&["fsck"]).assert_ok();
}

/// Opens that take a while (hashing a blob on its first open here; unpacking a
/// layer likewise) run off the FUSE workers: with a single worker and the hash
/// held at a failpoint, listings and attributes keep answering, and the open
/// completes with the right bytes once the hash goes on.
#[test]
fn a_slow_open_does_not_stall_the_mount() {
    if !util::require_fuse() {
        return;
    }
    let t = TestDir::new("slow-open");
    let a = layout(&t, "a", &["dev/a:1", "dev/b:1"]);
    t.run(&["import", a.to_str().unwrap()]).assert_ok();
    let mnt = t.join("mnt-slow");
    std::fs::create_dir_all(&mnt).unwrap();
    let (daemon, gate) = paused(
        &t,
        "verify.hash",
        &[
            "mount",
            mnt.to_str().unwrap(),
            "--foreground",
            "--threads",
            "1",
        ],
    );
    let _cleanup = util::Mount::adopt(&t.store(), &mnt);
    // Dropped first, also when an assert fails: the daemon goes on and is stopped.
    let _daemon = Released {
        gate: gate.clone(),
        child: daemon,
    };
    assert!(util::wait_for_mount_state(
        &mnt,
        true,
        Duration::from_secs(10)
    ));
    let blob = mnt.join("local/dev/a/tags/1/layers/001/blob");
    let reader = {
        let blob = blob.clone();
        thread::spawn(move || std::fs::read(blob))
    };
    wait_reached(&gate);
    let tags = mnt.join("local/dev/b/tags");
    let listed = util::with_timeout(10, move || std::fs::read_dir(tags).map(|d| d.count()));
    assert_eq!(listed.expect("tags/ lists while an open hashes"), 1);
    let manifest = mnt.join("local/dev/b/tags/1/manifest.json");
    let meta = util::with_timeout(10, move || std::fs::metadata(manifest));
    assert!(meta.expect("stat answers while an open hashes").len() > 0);
    assert!(!reader.is_finished(), "the open did not wait for its hash");
    std::fs::write(&gate, b"go").unwrap();
    let bytes = reader.join().unwrap().expect("the open completes");
    let stored = std::fs::read_link(mnt.join("local/dev/a/tags/1")).unwrap();
    assert!(stored.to_string_lossy().contains("sha256:"));
    let digest = {
        use sha2::Digest as _;
        format!("{:x}", sha2::Sha256::digest(&bytes))
    };
    assert!(
        t.store().join("blobs/sha256").join(&digest).exists(),
        "the blob read through the mount hashes to a stored blob"
    );
    t.run(&["unmount", mnt.to_str().unwrap()]).assert_ok();
}

/// A process paused at a failpoint: on drop, its gate opens and it is killed.
struct Released {
    gate: PathBuf,
    child: std::process::Child,
}

impl Drop for Released {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.gate, b"go");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
