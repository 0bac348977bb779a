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

mod util;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use util::{Cmd, Mount, TestDir};

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
