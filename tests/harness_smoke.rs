//! Tests of the test harness itself (tests/util): they need neither the CLI nor FUSE.

mod util;

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use util::{Cmd, Mount, TestDir};

#[test]
fn temp_dirs_are_separate_canonical_and_removed() {
    let first = TestDir::new("smoke");
    let second = TestDir::new("smoke");
    assert_ne!(first.path(), second.path());
    assert_eq!(first.path(), first.path().canonicalize().unwrap());
    assert!(first.path().starts_with(util::test_root()));
    let file = first.write("a/b.txt", "hello");
    assert_eq!(fs::read_to_string(&file).unwrap(), "hello");
    assert!(!second.join("a").exists());
    assert_eq!(first.store(), first.join("store"));
    let kept: PathBuf = first.path().to_path_buf();
    drop(first);
    assert!(!kept.exists(), "dropped test dir is removed");
}

#[test]
fn command_output_and_exit_codes_are_captured() {
    let output = Cmd::new("sh")
        .args(["-c", "echo out; echo err >&2; exit 3"])
        .output();
    assert_eq!(output.code, Some(3));
    assert_eq!(output.stdout, "out\n");
    assert_eq!(output.stderr, "err\n");
    assert!(!output.timed_out);

    Cmd::new("sh")
        .args(["-c", "echo 'imagefs: import ./x: no such file' >&2; exit 1"])
        .assert_err_line("imagefs: import");
    Cmd::new("sh")
        .args(["-c", "echo 'usage: imagefs ...' >&2; exit 2"])
        .assert_usage_error();
    let echoed = Cmd::new("cat").stdin("piped").stdout();
    assert_eq!(echoed, "piped");
}

#[test]
#[should_panic(expected = "expected one stderr line")]
fn err_line_rejects_two_lines() {
    Cmd::new("sh")
        .args(["-c", "echo 'imagefs: a: b' >&2; echo more >&2; exit 1"])
        .assert_err_line("imagefs: a");
}

#[test]
fn commands_are_killed_at_the_timeout_with_their_children() {
    let dir = TestDir::new("timeout");
    let marker = dir.join("child.pid");
    let output = Cmd::new("sh")
        .arg("-c")
        .arg(format!("sleep 30 & echo $! > {}; wait", marker.display()))
        .timeout_secs(1)
        .output();
    assert!(output.timed_out);
    assert_eq!(output.code, None);
    assert!(
        output.elapsed < Duration::from_secs(10),
        "{:?}",
        output.elapsed
    );
    // The backgrounded sleep was in the same process group: it is gone too.
    let pid = fs::read_to_string(&marker).unwrap();
    let alive = PathBuf::from(format!("/proc/{}", pid.trim()));
    let gone = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        fs::read_to_string(alive.join("stat"))
            .map(|stat| stat.contains(") Z "))
            .unwrap_or(true)
    });
    assert!(gone, "child of a timed-out command survived");
}

#[test]
fn with_timeout_returns_the_value() {
    assert_eq!(util::with_timeout(5, || 6 * 7), 42);
}

#[test]
#[should_panic(expected = "timed out after 1 s")]
fn with_timeout_fails_instead_of_hanging() {
    util::with_timeout(1, || std::thread::sleep(Duration::from_secs(30)));
}

#[test]
#[should_panic(expected = "inner failure")]
fn with_timeout_reraises_panics() {
    util::with_timeout(5, || panic!("inner failure"));
}

#[test]
fn mountinfo_escapes_are_decoded() {
    assert_eq!(util::unescape_mountinfo(r"/tmp/a\040b"), "/tmp/a b");
    assert_eq!(util::unescape_mountinfo(r"/x\011y\134z"), "/x\ty\\z");
    assert_eq!(util::unescape_mountinfo(r"/trailing\04"), r"/trailing\04");
    assert!(util::is_mounted(std::path::Path::new("/")));
}

#[test]
fn missing_tools_follow_the_ci_rule() {
    let missing = "imagefs-no-such-tool";
    if util::is_ci() {
        assert!(std::panic::catch_unwind(|| util::require_tool(missing)).is_err());
    } else {
        assert!(!util::require_tool(missing));
    }
    assert!(util::require_tool("sh"));
}

#[test]
fn sample_layout_is_written() {
    let dir = TestDir::new("layout");
    let (layout, images) = dir.demo_layout("layout");
    assert!(layout.join("oci-layout").is_file());
    let index = fs::read_to_string(layout.join("index.json")).unwrap();
    for image in &images {
        assert!(
            index.contains(&image.name),
            "{} not in index.json",
            image.name
        );
        let blob = layout.join("blobs/sha256").join(image.built.digest().hex());
        assert!(blob.is_file());
    }
}

/// The mount guard unmounts on drop, even when the test panics. Uses a tmpfs
/// (root only) so it needs neither FUSE nor the CLI: `imagefs unmount` may refuse
/// a non-imagefs mount, and the guard must then fall back to `umount -l`.
#[test]
fn mount_guard_unmounts_on_panic() {
    if !util::require_root() {
        return;
    }
    let dir = TestDir::new("guard");
    let mountpoint = dir.mkdir("mnt");
    let store = dir.store();
    let mounted = Cmd::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "imagefs-test"])
        .arg(&mountpoint)
        .output();
    if mounted.code != Some(0) {
        // Containers without CAP_SYS_ADMIN: nothing to test with.
        if util::is_ci() {
            panic!("cannot mount a tmpfs: {}", mounted.stderr);
        }
        eprintln!("skipped: cannot mount a tmpfs: {}", mounted.stderr.trim());
        return;
    }
    assert!(util::is_mounted(&mountpoint));
    let in_thread = mountpoint.clone();
    let result = std::thread::spawn(move || {
        let _guard = Mount::adopt(&store, &in_thread);
        panic!("test body fails while mounted");
    })
    .join();
    assert!(result.is_err());
    assert!(
        !util::is_mounted(&mountpoint),
        "guard did not unmount on panic"
    );
    assert!(util::mounts_under(dir.path()).is_empty());
}
