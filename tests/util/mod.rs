//! The integration-test harness: per-test temp dirs, a command wrapper over the
//! built `imagefs` binary with a timeout, assertion helpers, a mount guard that
//! always unmounts, a timeout for filesystem calls on a possibly dead mount, and
//! the rules for tests that need FUSE or external tools.
//!
//! Use it from a test file with `mod util;`. Nothing here may hang: every child
//! process and every filesystem call on a mount has a deadline.
//!
//! The CI rule: with `CI=true`, a test whose prerequisite (FUSE, root, a tool) is
//! missing fails; elsewhere it prints `skipped: ...` and passes.

// Each test binary uses a different subset of the harness.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use imagefs::testing::sample::{self, Built, Compression, DemoImage, ImageBuilder, LayerSpec};

/// How long a command may run before it is killed (override per command).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `Mount::start` waits for the mount to appear.
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(10);

/// The built binary under test.
pub fn imagefs_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_imagefs"))
}

/// True when running under CI (`CI=true`), where missing prerequisites fail.
pub fn is_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Fails under CI, else prints `skipped: <why>` and returns false.
fn skip_or_fail(why: &str) -> bool {
    if is_ci() {
        panic!("CI=true and {why}: this test must run in CI");
    }
    eprintln!("skipped: {why}");
    false
}

/// True when FUSE mounts can be made here: `/dev/fuse` exists and we are root.
/// Otherwise fails under CI, or prints `skipped: ...` and returns false:
/// `if !util::require_fuse() { return; }`.
pub fn require_fuse() -> bool {
    if !Path::new("/dev/fuse").exists() {
        return skip_or_fail("/dev/fuse is missing (modprobe fuse)");
    }
    if !is_root() {
        return skip_or_fail("FUSE tests need root");
    }
    true
}

/// True when we run as root; otherwise same rule as [`require_fuse`].
pub fn require_root() -> bool {
    is_root() || skip_or_fail("this test needs root")
}

/// True when `tool` is on PATH; otherwise fails under CI, or prints
/// `skipped: ...` and returns false.
pub fn require_tool(tool: &str) -> bool {
    find_on_path(tool).is_some()
        || skip_or_fail(&format!(
            "{tool} is not installed (.ci/run shows how to install it)"
        ))
}

/// The path of an executable on PATH.
pub fn find_on_path(tool: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| {
            fs::metadata(candidate)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

// ---------------------------------------------------------------------------
// Temp dirs
// ---------------------------------------------------------------------------

/// Where every test dir lives: `$IMAGEFS_TEST_TMP`, else `$TMPDIR/imagefs-tests`.
/// CI checks that no FUSE mount is left below it.
pub fn test_root() -> PathBuf {
    let root = std::env::var_os("IMAGEFS_TEST_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("imagefs-tests"));
    fs::create_dir_all(&root).expect("test root can be created");
    root.canonicalize().expect("test root exists")
}

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A per-test directory (canonical path), removed on drop unless something is
/// still mounted below it (then it is left for inspection, never recursed into).
pub struct TestDir {
    root: PathBuf,
}

impl TestDir {
    /// A fresh empty directory named after the test.
    pub fn new(name: &str) -> TestDir {
        let unique = format!(
            "{name}-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::SeqCst)
        );
        let root = test_root().join(unique);
        if root.exists() {
            fs::remove_dir_all(&root).expect("stale test dir can be removed");
        }
        fs::create_dir_all(&root).expect("test dir can be created");
        TestDir {
            root: root.canonicalize().expect("test dir exists"),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// A path inside the directory.
    pub fn join(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.root.join(relative)
    }

    /// The store directory of this test (`<dir>/store`, not created: imagefs does).
    pub fn store(&self) -> PathBuf {
        self.join("store")
    }

    /// Creates a directory (and parents) inside, returning its path.
    pub fn mkdir(&self, relative: impl AsRef<Path>) -> PathBuf {
        let path = self.join(relative);
        fs::create_dir_all(&path).expect("mkdir in test dir");
        path
    }

    /// Writes a file inside (parents created), returning its path.
    pub fn write(&self, relative: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("mkdir in test dir");
        }
        fs::write(&path, contents).expect("write in test dir");
        path
    }

    /// `imagefs --store <dir>/store ...`.
    pub fn imagefs(&self) -> Cmd {
        let mut cmd = Cmd::imagefs();
        cmd.arg("--store").arg(self.store());
        cmd
    }

    /// `imagefs --store <dir>/store <args>`, run to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.imagefs().args(args).output()
    }

    /// Writes the demo images as an OCI layout at `<dir>/<name>`.
    pub fn demo_layout(&self, name: &str) -> (PathBuf, Vec<DemoImage>) {
        let dir = self.join(name);
        let images = sample::write_demo_layout(&dir).expect("demo layout can be written");
        (dir, images)
    }

    /// Mounts this test's store at `<dir>/mnt` (see [`Mount::start`]).
    pub fn mount(&self, extra_args: &[&str]) -> Mount {
        Mount::start(&self.store(), &self.join("mnt"), extra_args)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let mounted = mounts_under(&self.root);
        for mountpoint in &mounted {
            force_unmount(mountpoint);
        }
        if mounts_under(&self.root).is_empty() {
            let _ = fs::remove_dir_all(&self.root);
        } else {
            eprintln!(
                "warning: {} still has mounts; left in place",
                self.root.display()
            );
        }
    }
}

/// Writes an OCI layout at `<dir>/<name>` holding one image per entry of `names`
/// (each carrying that name): the layer `base` (a `LayerSpec` text) shared by all,
/// gzip, plus a zstd layer of its own with `own_size` pseudo-random bytes.
pub fn layout_sharing_a_base(
    t: &TestDir,
    dir: &str,
    names: &[&str],
    base: &str,
    own_size: usize,
) -> PathBuf {
    let base = LayerSpec::parse(base).expect("base layer spec");
    let built: Vec<(String, Built)> = names
        .iter()
        .map(|name| {
            let own = LayerSpec::parse(&format!(
                "file /own/{} 0644 @random:{own_size}",
                name.replace([':', '/'], "_")
            ))
            .expect("own layer spec");
            let image = ImageBuilder::new()
                .layer(&base, Compression::Gzip)
                .layer(&own, Compression::Zstd)
                .build()
                .expect("image builds");
            (name.to_string(), Built::from(image))
        })
        .collect();
    let entries: Vec<(Option<&str>, &Built)> =
        built.iter().map(|(n, b)| (Some(n.as_str()), b)).collect();
    let path = t.join(dir);
    sample::write_oci_layout(&path, &entries).expect("layout can be written");
    path
}

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

/// What a finished (or killed) command did.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// Exit code; None when killed by a signal (including our timeout).
    pub code: Option<i32>,
    /// Captured stdout (lossy UTF-8).
    pub stdout: String,
    /// Captured stderr (lossy UTF-8).
    pub stderr: String,
    /// True when the command was killed for running past its timeout.
    pub timed_out: bool,
    /// Wall time.
    pub elapsed: Duration,
}

impl Output {
    fn describe(&self) -> String {
        format!(
            "command: {}\nexit code: {:?}{}\nelapsed: {:.1?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            self.code,
            if self.timed_out { " (killed: timeout)" } else { "" },
            self.elapsed,
            self.stdout,
            self.stderr
        )
    }

    /// Panics unless the exit code is 0; returns self.
    pub fn assert_ok(self) -> Output {
        assert!(
            self.code == Some(0) && !self.timed_out,
            "expected success\n{}",
            self.describe()
        );
        self
    }

    /// Panics unless the exit code is `code`; returns self.
    pub fn assert_code(self, code: i32) -> Output {
        assert!(
            self.code == Some(code) && !self.timed_out,
            "expected exit code {code}\n{}",
            self.describe()
        );
        self
    }

    /// Panics unless this is an imagefs runtime error: exit code 1 and stderr
    /// exactly one line starting with `prefix` (e.g. `"imagefs: import"`).
    pub fn assert_err_line(self, prefix: &str) -> Output {
        let output = self.assert_code(1);
        let lines: Vec<&str> = output.stderr.lines().collect();
        assert!(
            lines.len() == 1 && lines[0].starts_with(prefix),
            "expected one stderr line starting with {prefix:?}\n{}",
            output.describe()
        );
        output
    }

    /// Panics unless this is a usage error: exit code 2 and something on stderr.
    pub fn assert_usage_error(self) -> Output {
        let output = self.assert_code(2);
        assert!(
            !output.stderr.trim().is_empty(),
            "usage error without a message\n{}",
            output.describe()
        );
        output
    }

    /// Panics unless stdout contains `needle`; returns self.
    pub fn assert_stdout_contains(self, needle: &str) -> Output {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}\n{}",
            self.describe()
        );
        self
    }
}

/// A command with a deadline: killed (its whole process group) when it runs past
/// the timeout, with stdout and stderr captured.
pub struct Cmd {
    command: Command,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

impl Cmd {
    /// Any program.
    pub fn new(program: impl AsRef<OsStr>) -> Cmd {
        let mut command = Command::new(program);
        // Tests must never reach a real store by accident.
        command.env_remove("IMAGEFS_STORE");
        Cmd {
            command,
            stdin: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The built `imagefs` binary (add `--store` yourself, or use [`TestDir::imagefs`]).
    pub fn imagefs() -> Cmd {
        Cmd::new(imagefs_bin())
    }

    /// Adds an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Cmd {
        self.command.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    /// Sets an environment variable.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Cmd {
        self.command.env(key, value);
        self
    }

    /// Runs in `dir`.
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Cmd {
        self.command.current_dir(dir);
        self
    }

    /// Feeds these bytes on stdin (default: stdin is /dev/null).
    pub fn stdin(&mut self, bytes: impl Into<Vec<u8>>) -> &mut Cmd {
        self.stdin = Some(bytes.into());
        self
    }

    /// Kills the command after this many seconds (default 60).
    pub fn timeout_secs(&mut self, secs: u64) -> &mut Cmd {
        self.timeout = Duration::from_secs(secs);
        self
    }

    fn command_line(&self) -> String {
        let mut line = self.command.get_program().to_string_lossy().into_owned();
        for arg in self.command.get_args() {
            line.push(' ');
            line.push_str(&arg.to_string_lossy());
        }
        line
    }

    /// Runs to completion (or to the timeout) and returns what happened.
    pub fn output(&mut self) -> Output {
        let command_line = self.command_line();
        let started = Instant::now();
        self.command
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout kills whatever it forked too.
            .process_group(0);
        let mut child = self
            .command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {command_line}: {e}"));
        if let (Some(bytes), Some(mut stdin)) = (self.stdin.take(), child.stdin.take()) {
            thread::spawn(move || {
                let _ = stdin.write_all(&bytes);
            });
        }
        let stdout = capture(child.stdout.take());
        let stderr = capture(child.stderr.take());

        let deadline = started + self.timeout;
        let (code, timed_out) = loop {
            match child.try_wait() {
                Ok(Some(status)) => break (status.code(), false),
                Ok(None) if Instant::now() >= deadline => {
                    kill_group(&mut child);
                    break (None, true);
                }
                Ok(None) => thread::sleep(Duration::from_millis(10)),
                Err(e) => panic!("waiting for {command_line}: {e}"),
            }
        };
        // A daemon forked by the command may hold the pipes open: take what
        // arrived within a short grace period rather than waiting for EOF.
        let grace = Instant::now() + Duration::from_secs(2);
        Output {
            command: command_line,
            code,
            stdout: stdout.collect(grace),
            stderr: stderr.collect(grace),
            timed_out,
            elapsed: started.elapsed(),
        }
    }

    /// Runs and asserts exit code 0.
    pub fn assert_ok(&mut self) -> Output {
        self.output().assert_ok()
    }

    /// Runs and asserts an imagefs runtime error line (see [`Output::assert_err_line`]).
    pub fn assert_err_line(&mut self, prefix: &str) -> Output {
        self.output().assert_err_line(prefix)
    }

    /// Runs and asserts a usage error (exit code 2).
    pub fn assert_usage_error(&mut self) -> Output {
        self.output().assert_usage_error()
    }

    /// Runs, asserts success and returns stdout.
    pub fn stdout(&mut self) -> String {
        self.assert_ok().stdout
    }
}

fn kill_group(child: &mut Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill has no memory-safety preconditions; -pid names the group
        // we created with process_group(0).
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A pipe drained by a thread into a shared buffer.
struct Captured {
    buffer: Arc<Mutex<Vec<u8>>>,
    done: mpsc::Receiver<()>,
}

impl Captured {
    fn collect(self, deadline: Instant) -> String {
        let _ = self
            .done
            .recv_timeout(deadline.saturating_duration_since(Instant::now()));
        let bytes = self.buffer.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

fn capture(pipe: Option<impl Read + Send + 'static>) -> Captured {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let (sender, done) = mpsc::channel();
    if let Some(mut pipe) = pipe {
        let buffer = Arc::clone(&buffer);
        thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => match buffer.lock() {
                        Ok(mut b) => b.extend_from_slice(&chunk[..n]),
                        Err(_) => break,
                    },
                }
            }
            let _ = sender.send(());
        });
    } else {
        let _ = sender.send(());
    }
    Captured { buffer, done }
}

// ---------------------------------------------------------------------------
// Timeouts for filesystem calls
// ---------------------------------------------------------------------------

/// Runs `f` on a thread and returns its result, or fails the test after `secs`
/// seconds instead of hanging on a dead mount (the stuck thread is abandoned).
/// A panic inside `f` is re-raised here.
pub fn with_timeout<T, F>(secs: u64, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (sender, receiver) = mpsc::channel();
    let handle = thread::Builder::new()
        .name("with_timeout".into())
        .spawn(move || {
            let _ = sender.send(f());
        })
        .expect("thread can be spawned");
    match receiver.recv_timeout(Duration::from_secs(secs)) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("timed out after {secs} s (is the mount dead?)")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(payload) => std::panic::resume_unwind(payload),
            Ok(()) => panic!("with_timeout: the closure ended without a result"),
        },
    }
}

// ---------------------------------------------------------------------------
// Mounts
// ---------------------------------------------------------------------------

/// Decodes the octal escapes (`\040` for space, ...) of `/proc/self/mountinfo`.
pub fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let octal = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(byte) = u8::from_str_radix(octal, 8) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every (mount point, filesystem type) in `/proc/self/mountinfo`.
pub fn mounts() -> Vec<(PathBuf, String)> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let mountpoint = fields.get(4)?;
            let separator = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(separator + 1)?;
            Some((
                PathBuf::from(unescape_mountinfo(mountpoint)),
                fstype.to_string(),
            ))
        })
        .collect()
}

/// True when something is mounted exactly at `path`.
pub fn is_mounted(path: &Path) -> bool {
    mounts().iter().any(|(mountpoint, _)| mountpoint == path)
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mounts()
        .into_iter()
        .map(|(mountpoint, _)| mountpoint)
        .filter(|mountpoint| mountpoint.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// Polls until `path` is (or is not) a mount point; false on timeout.
pub fn wait_for_mount_state(path: &Path, mounted: bool, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if is_mounted(path) == mounted {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Unmounts by every means there is: `imagefs unmount`, `umount -l`,
/// `fusermount3 -uz`. Never panics (it runs in Drop).
pub fn force_unmount(mountpoint: &Path) {
    let attempts: [(&dyn Fn() -> Cmd, &str); 3] = [
        (
            &|| {
                let mut cmd = Cmd::imagefs();
                cmd.arg("unmount").arg(mountpoint).timeout_secs(10);
                cmd
            },
            "imagefs unmount",
        ),
        (
            &|| {
                let mut cmd = Cmd::new("umount");
                cmd.arg("-l").arg(mountpoint).timeout_secs(10);
                cmd
            },
            "umount -l",
        ),
        (
            &|| {
                let mut cmd = Cmd::new("fusermount3");
                cmd.arg("-uz").arg(mountpoint).timeout_secs(10);
                cmd
            },
            "fusermount3 -uz",
        ),
    ];
    for (make, name) in attempts {
        if !is_mounted(mountpoint) {
            return;
        }
        // A missing fallback tool makes spawn panic; keep Drop panic-free.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| make().output()));
        if wait_for_mount_state(mountpoint, false, Duration::from_secs(2)) {
            return;
        }
        if let Ok(output) = result {
            eprintln!(
                "warning: {name} {} did not unmount (code {:?}): {}",
                mountpoint.display(),
                output.code,
                output.stderr.trim()
            );
        }
    }
    if is_mounted(mountpoint) {
        eprintln!("warning: {} is still mounted", mountpoint.display());
    }
}

/// A mounted store that is unmounted when dropped, even when the test panics.
pub struct Mount {
    mountpoint: PathBuf,
    store: PathBuf,
    foreground: Option<Child>,
}

impl Mount {
    /// Runs `imagefs --store STORE mount MOUNTPOINT EXTRA...` (which returns once
    /// the mount answers), then waits up to 10 s for the mount point to appear in
    /// `/proc/self/mountinfo`. The mount point is created if missing.
    pub fn start(store: &Path, mountpoint: &Path, extra_args: &[&str]) -> Mount {
        Mount::start_with_env(store, mountpoint, extra_args, &[])
    }

    /// [`Mount::start`] with variables set in the daemon's environment only (a
    /// failpoint, a log level), not in the test process that other tests share.
    pub fn start_with_env(
        store: &Path,
        mountpoint: &Path,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Mount {
        let mountpoint = canonical_mountpoint(mountpoint);
        // The guard exists before anything can panic, so a failed start still cleans up.
        let guard = Mount {
            mountpoint: mountpoint.clone(),
            store: store.to_path_buf(),
            foreground: None,
        };
        let mut command = Cmd::imagefs();
        for (key, value) in env {
            command.env(key, value);
        }
        command
            .arg("--store")
            .arg(store)
            .arg("mount")
            .arg(&mountpoint)
            .args(extra_args)
            .timeout_secs(30)
            .assert_ok();
        assert!(
            wait_for_mount_state(&mountpoint, true, MOUNT_TIMEOUT),
            "imagefs mount returned but {} did not appear in /proc/self/mountinfo within {:?}",
            mountpoint.display(),
            MOUNT_TIMEOUT
        );
        guard
    }

    /// Runs `imagefs mount --foreground` as a child and waits for the mount; on
    /// drop the mount is unmounted and the child reaped (killed if it lingers).
    pub fn start_foreground(store: &Path, mountpoint: &Path, extra_args: &[&str]) -> Mount {
        let mountpoint = canonical_mountpoint(mountpoint);
        let child = Command::new(imagefs_bin())
            .env_remove("IMAGEFS_STORE")
            .arg("--store")
            .arg(store)
            .arg("mount")
            .arg(&mountpoint)
            .arg("--foreground")
            .args(extra_args)
            .stdin(Stdio::null())
            .spawn()
            .expect("imagefs mount --foreground starts");
        let mut guard = Mount {
            mountpoint: mountpoint.clone(),
            store: store.to_path_buf(),
            foreground: Some(child),
        };
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        while !is_mounted(&mountpoint) {
            if let Some(status) = guard.foreground.as_mut().and_then(|c| c.try_wait().ok()?) {
                panic!("imagefs mount --foreground exited early: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "{} did not appear within {MOUNT_TIMEOUT:?}",
                mountpoint.display()
            );
            thread::sleep(Duration::from_millis(20));
        }
        guard
    }

    /// Takes charge of something already mounted at `mountpoint` (made by other
    /// means): it is unmounted on drop.
    pub fn adopt(store: &Path, mountpoint: &Path) -> Mount {
        Mount {
            mountpoint: canonical_mountpoint(mountpoint),
            store: store.to_path_buf(),
            foreground: None,
        }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// A path inside the mount.
    pub fn join(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.mountpoint.join(relative)
    }

    /// The store this mount serves.
    pub fn store(&self) -> &Path {
        &self.store
    }

    /// The foreground child, if started with [`Mount::start_foreground`].
    pub fn child(&mut self) -> Option<&mut Child> {
        self.foreground.as_mut()
    }

    /// Unmounts with `imagefs unmount`, asserting that it succeeds and that the
    /// mount is gone (the guard's drop then has nothing left to do).
    pub fn unmount(self) -> Output {
        let output = Cmd::imagefs()
            .arg("unmount")
            .arg(&self.mountpoint)
            .timeout_secs(30)
            .assert_ok();
        assert!(
            wait_for_mount_state(&self.mountpoint, false, MOUNT_TIMEOUT),
            "{} still mounted after imagefs unmount",
            self.mountpoint.display()
        );
        output
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        force_unmount(&self.mountpoint);
        if let Some(mut child) = self.foreground.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
            eprintln!("warning: imagefs mount --foreground did not exit after unmount; killing it");
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn canonical_mountpoint(mountpoint: &Path) -> PathBuf {
    fs::create_dir_all(mountpoint).expect("mount point can be created");
    mountpoint.canonicalize().expect("mount point exists")
}

/// Pid of the daemon serving `mountpoint` (started by `imagefs mount`, which runs
/// itself as `mount <MOUNTPOINT> --foreground`).
pub fn daemon_pid(mountpoint: &Path) -> Option<u32> {
    let out = Command::new("pgrep")
        .arg("-f")
        .arg(format!("mount {} --foreground", mountpoint.display()))
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
}

/// Files under `dir` that process `pid` still holds open although they were deleted.
pub fn deleted_files_held(pid: u32, dir: &Path) -> Vec<PathBuf> {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.flatten()
        .filter_map(|fd| fs::read_link(fd.path()).ok())
        .filter(|target| {
            target.starts_with(dir) && target.to_string_lossy().ends_with(" (deleted)")
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Comparing trees
// ---------------------------------------------------------------------------

/// `find -printf` of everything below `dir` (the root itself left out), one
/// `path|type|mode|uid|gid|size|link|nlink` line per path, sorted by path.
/// Directory sizes are `-`: they differ between filesystems by design (and so do
/// directory mtimes, which are left out).
pub fn tree_listing(dir: &Path) -> Vec<String> {
    let out = Cmd::new("sh")
        .arg("-c")
        .arg("find . -mindepth 1 -printf '%P|%y|%m|%U|%G|%s|%l|%n\\n'")
        .current_dir(dir)
        .timeout_secs(60)
        .stdout();
    let mut lines: Vec<String> = out
        .lines()
        .map(|line| {
            let mut fields: Vec<&str> = line.split('|').collect();
            if fields.get(1) == Some(&"d") {
                fields[5] = "-";
            }
            fields.join("|")
        })
        .collect();
    lines.sort_by(|a, b| a.split('|').next().cmp(&b.split('|').next()));
    lines
}

/// sha256 of every regular file below `dir`, by path.
pub fn tree_hashes(dir: &Path) -> String {
    Cmd::new("sh")
        .arg("-c")
        .arg("find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum")
        .current_dir(dir)
        .timeout_secs(60)
        .stdout()
}

/// Every line of the mount daemon's log (`STORE/mount-<pid>.log`).
pub fn daemon_log(store: &Path) -> String {
    let mut text = String::new();
    for entry in fs::read_dir(store).expect("the store").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("mount-") && name.ends_with(".log") {
            text.push_str(&fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    text
}

/// The daemon's statistics (the hidden `user.imagefs.stats` xattr of the mount
/// root): counters by name. Read with getxattr(2) under a timeout, so a stuck
/// mount fails the test instead of hanging it.
pub fn daemon_stats(mnt: &Path) -> std::collections::BTreeMap<String, u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(mnt.as_os_str().as_bytes()).expect("no NUL in a path");
    let text = with_timeout(10, move || {
        let mut buf = vec![0u8; 8192];
        // SAFETY: valid NUL-terminated strings and a writable buffer of that length.
        let n = unsafe {
            libc::getxattr(
                path.as_ptr(),
                c"user.imagefs.stats".as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        assert!(
            n >= 0,
            "getxattr user.imagefs.stats: {}",
            std::io::Error::last_os_error()
        );
        buf.truncate(n as usize);
        String::from_utf8(buf).expect("stats are text")
    });
    text.split_whitespace()
        .filter_map(|word| {
            let (name, value) = word.split_once('=')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}
