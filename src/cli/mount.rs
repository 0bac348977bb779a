//! `imagefs mount` and `imagefs unmount`: argument parsing and the daemon dance.
//! No filesystem logic here; that lives in the library (`imagefs::spawn_mount`, ...).
//!
//! Without `--foreground`, `mount` re-executes this binary as
//! `imagefs --store ROOT mount MP --foreground ...` in a new session (setsid), with
//! stdin and stdout on /dev/null and stderr on `STORE/mount-<daemon pid>.log` (the
//! daemon deletes that log when it exits cleanly with no ERROR line in it). The parent
//! returns once the mountpoint shows in /proc/self/mountinfo and answers a stat, or
//! reports the daemon's error when it exits first (10 s at most). The remote
//! options (for lazy layers and `--pull-through`) go to the daemon too; a `--creds`
//! password travels on the daemon's stdin, not in its arguments.

use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use imagefs::{
    self as fs, MountOptions, PullThroughOptions, RemoteOptions, Store, DEFAULT_THREADS,
};

use super::RemoteArgs;

/// Environment variable naming the daemon's startup log, set for the child.
const DAEMON_LOG_ENV: &str = "IMAGEFS_DAEMON_LOG";

/// How long `mount` waits for the daemon to answer.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(10);

/// `imagefs mount`
#[derive(clap::Args, Debug)]
#[command(after_help = PULL_THROUGH_HELP)]
pub struct MountArgs {
    /// Directory to mount the store on.
    pub mountpoint: PathBuf,
    /// Stay attached and serve until unmounted (SIGINT/SIGTERM unmount cleanly).
    #[arg(long)]
    pub foreground: bool,
    /// Let other users access the mount (needs `user_allow_other` for non-root).
    #[arg(long)]
    pub allow_other: bool,
    /// Refuse every change with EROFS.
    #[arg(long)]
    pub read_only: bool,
    /// Threads serving requests.
    #[arg(long, default_value_t = DEFAULT_THREADS, value_parser = parse_threads)]
    pub threads: usize,
    /// Cap on the unpack cache, e.g. `512M`, `10G` (binary units).
    #[arg(long, value_parser = parse_size)]
    pub cache_size: Option<u64>,
    /// Registries that resolve on lookup, like a remote-cache repository: looking
    /// up a tag the store lacks in `REGISTRY/REPOSITORY/tags/` pulls it lazily
    /// (see below). The remote options below apply to them.
    #[arg(long, value_name = "REGISTRY[,REGISTRY...]", value_delimiter = ',')]
    pub pull_through: Vec<String>,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

const PULL_THROUGH_HELP: &str = "\
Pull-through (--pull-through docker.io,localhost:5000):
  `cat MOUNT/docker.io/library/alpine/tags/3.19/rootfs/etc/os-release` works on a
  fresh store: the lookup of `3.19` pulls docker.io/library/alpine:3.19 lazily
  (manifests and configs now, layer bytes when read) and the tag then stays in the
  store like any other. Only the lookup of a tag name in tags/ goes to the network;
  listing and stat of anything else show what the store has. A lookup waits at most
  --timeout seconds. A registry's 404 answers ENOENT and is remembered for 30 s;
  401/403 answers EACCES (also remembered 30 s); a registry that is down or
  failing answers EIO with one log line, remembered for 10 s.";

/// `imagefs unmount`
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct UnmountArgs {
    /// The mountpoint; works also when its daemon died.
    pub mountpoint: PathBuf,
}

fn parse_threads(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=1024).contains(&n) => Ok(n),
        _ => Err(format!(
            "{text:?}: expected a number of threads from 1 to 1024"
        )),
    }
}

/// Parses `1234`, `64K`, `512M`, `10G`, `1T` (optionally with `B` or `iB`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?}: expected a size such as 512M or 10G");
    let trimmed = text.trim();
    let upper = trimmed.to_ascii_uppercase();
    let without_b = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B'))
        .unwrap_or(&upper);
    let (digits, shift) = match without_b.chars().last() {
        Some('K') => (&without_b[..without_b.len() - 1], 10),
        Some('M') => (&without_b[..without_b.len() - 1], 20),
        Some('G') => (&without_b[..without_b.len() - 1], 30),
        Some('T') => (&without_b[..without_b.len() - 1], 40),
        _ => (without_b, 0),
    };
    let number: u64 = digits.trim().parse().map_err(|_| bad())?;
    number.checked_mul(1u64 << shift).ok_or_else(bad)
}

fn mount_options(args: &MountArgs, remote: RemoteOptions) -> Result<MountOptions, String> {
    let pull_through = if args.pull_through.is_empty() {
        None
    } else {
        let options = PullThroughOptions::new(args.pull_through.clone(), remote);
        options
            .validate()
            .map_err(|e| format!("--pull-through: {e}"))?;
        Some(options)
    };
    Ok(MountOptions {
        allow_other: args.allow_other,
        read_only: args.read_only,
        threads: args.threads,
        cache_size: Some(args.cache_size.unwrap_or_else(super::default_cache_size)),
        pull_through,
    })
}

/// `--creds` for the daemon: the user goes on its command line, the password (read
/// here, from the terminal or stdin, when not given) on its stdin, never in its
/// arguments.
fn daemon_credentials(args: &MountArgs) -> Result<Option<(String, String)>, String> {
    let Some(creds) = args.remote.creds.as_deref() else {
        return Ok(None);
    };
    if let Some((user, password)) = creds.split_once(':') {
        return Ok(Some((user.to_string(), password.to_string())));
    }
    if std::io::stdin().is_terminal() {
        eprint!("password for {creds}: ");
    }
    let mut password = String::new();
    std::io::stdin()
        .read_line(&mut password)
        .map_err(|e| format!("--creds {creds}: reading the password: {e}"))?;
    let password = password.trim_end_matches(['\r', '\n']).to_string();
    Ok(Some((creds.to_string(), password)))
}

/// Runs `imagefs mount`.
pub fn run_mount(store_root: &Path, args: &MountArgs) -> Result<(), String> {
    let shown = args.mountpoint.display().to_string();
    let metadata =
        std::fs::metadata(&args.mountpoint).map_err(|e| format!("mount {shown}: {e}"))?;
    if !metadata.is_dir() {
        return Err(format!("mount {shown}: not a directory"));
    }
    if !args.pull_through.is_empty() {
        let options = PullThroughOptions::new(args.pull_through.clone(), Default::default());
        options
            .validate()
            .map_err(|e| format!("mount {shown}: --pull-through: {e}"))?;
    }
    let store =
        Store::open(store_root).map_err(|e| format!("store {}: {e}", store_root.display()))?;
    if args.foreground {
        run_foreground(store, args)
    } else {
        spawn_daemon(&store, args)
    }
}

fn run_foreground(store: Store, args: &MountArgs) -> Result<(), String> {
    // As a daemon: take the startup log over under our own pid.
    let log = std::env::var_os(DAEMON_LOG_ENV).map(PathBuf::from);
    let log = log.map(|starting| {
        let own = store
            .root()
            .join(format!("mount-{}.log", std::process::id()));
        match std::fs::rename(&starting, &own) {
            Ok(()) => own,
            Err(_) => starting,
        }
    });
    let shown = args.mountpoint.display();
    // Lazy layers and pull-through reach registries with the remote options given
    // (the password of `--creds USER` arrives on stdin).
    let result = args
        .remote
        .options()
        .and_then(|remote| {
            store.set_remote_options(remote.clone());
            mount_options(args, remote)
        })
        .map_err(|e| format!("mount {shown}: {e}"))
        .and_then(|options| {
            fs::mount_foreground(Arc::new(store), &args.mountpoint, &options)
                .map_err(|e| format!("mount {shown}: {e}"))
        });
    if let Some(log) = log {
        // Keep the log only when it says something went wrong.
        let troubled = read_log(&log).is_some_and(|text| text.contains("ERROR"));
        if result.is_ok() && !troubled {
            let _ = std::fs::remove_file(&log);
        }
    }
    result
}

fn spawn_daemon(store: &Store, args: &MountArgs) -> Result<(), String> {
    let shown = args.mountpoint.display().to_string();
    let fail = |why: String| format!("mount {shown}: {why}");
    let mountpoint = args
        .mountpoint
        .canonicalize()
        .map_err(|e| fail(e.to_string()))?;
    let before = fs::fuse_mounts_at(&mountpoint)
        .map_err(|e| fail(e.to_string()))?
        .len();
    let exe = std::env::current_exe().map_err(|e| fail(format!("finding imagefs: {e}")))?;
    let starting = store
        .root()
        .join(format!("mount-starting-{}.log", std::process::id()));
    let log = File::create(&starting)
        .map_err(|e| fail(format!("creating {}: {e}", starting.display())))?;
    let mut command = Command::new(exe);
    command
        .arg("--store")
        .arg(store.root())
        .arg("mount")
        .arg(&mountpoint)
        .arg("--foreground")
        .arg("--threads")
        .arg(args.threads.to_string());
    if args.allow_other {
        command.arg("--allow-other");
    }
    if args.read_only {
        command.arg("--read-only");
    }
    if let Some(size) = args.cache_size {
        command.arg("--cache-size").arg(size.to_string());
    }
    // The remote options go to the daemon whatever it serves: lazy layers fetch
    // with them as pull-through does.
    let credentials = {
        if !args.pull_through.is_empty() {
            command
                .arg("--pull-through")
                .arg(args.pull_through.join(","));
        }
        command
            .arg("--timeout")
            .arg(args.remote.timeout.to_string())
            .arg(format!("--tls-verify={}", args.remote.tls_verify));
        if let Some(file) = &args.remote.authfile {
            // The daemon's directory is the same, but say it whole in its log.
            let file = std::path::absolute(file).unwrap_or_else(|_| file.clone());
            command.arg("--authfile").arg(file);
        }
        let credentials = daemon_credentials(args).map_err(fail)?;
        if let Some((user, _)) = &credentials {
            command.arg("--creds").arg(user);
        }
        credentials
    };
    command
        .env(DAEMON_LOG_ENV, &starting)
        .stdin(if credentials.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: setsid is async-signal-safe and touches no memory of this process.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| fail(format!("starting the daemon: {e}")))?;
    if let (Some((_, password)), Some(mut stdin)) = (credentials, child.stdin.take()) {
        // One line; the pipe closes when `stdin` is dropped.
        if let Err(error) = stdin.write_all(format!("{password}\n").as_bytes()) {
            log::debug!("passing the password to the daemon: {error}");
        }
    }
    let daemon_log = store.root().join(format!("mount-{}.log", child.id()));
    let deadline = Instant::now() + MOUNT_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let text = read_log(&daemon_log).or_else(|| read_log(&starting));
            let _ = std::fs::remove_file(&daemon_log);
            let _ = std::fs::remove_file(&starting);
            let why = text
                .map(|t| {
                    // The daemon already wrote "imagefs: mount MP: why".
                    let line = t.lines().rev().find(|l| !l.trim().is_empty());
                    line.unwrap_or_default().trim().to_string()
                })
                .filter(|line| !line.is_empty())
                .unwrap_or_else(|| format!("the daemon exited with {status}"));
            let why = why.strip_prefix("imagefs: ").unwrap_or(&why).to_string();
            return Err(why);
        }
        let mounted = fs::fuse_mounts_at(&mountpoint)
            .map(|m| m.len() > before)
            .unwrap_or(false);
        if mounted && std::fs::metadata(&mountpoint).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            if mounted {
                let _ = fs::unmount(&mountpoint);
            }
            return Err(fail(format!(
                "the daemon did not answer within {} s (log: {})",
                MOUNT_TIMEOUT.as_secs(),
                daemon_log.display()
            )));
        }
        // The daemon mounts within a few ms of starting: poll finely.
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn read_log(path: &Path) -> Option<String> {
    let mut text = String::new();
    File::open(path).ok()?.read_to_string(&mut text).ok()?;
    Some(text)
}

/// Runs `imagefs unmount`.
pub fn run_unmount(args: &UnmountArgs) -> Result<(), String> {
    fs::unmount(&args.mountpoint).map_err(|e| format!("unmount: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1234"), Ok(1234));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("2GB"), Ok(2 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert!(parse_size("").is_err());
        assert!(parse_size("ten").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn help_says_the_library_periods() {
        let miss = format!("remembered for {} s", imagefs::MISS_PERIOD.as_secs());
        let failure = format!("remembered for {} s", imagefs::FAILURE_PERIOD.as_secs());
        assert!(PULL_THROUGH_HELP.contains(&miss), "{miss}");
        assert!(PULL_THROUGH_HELP.contains(&failure), "{failure}");
    }

    #[test]
    fn threads() {
        assert_eq!(parse_threads("4"), Ok(4));
        assert!(parse_threads("0").is_err());
        assert!(parse_threads("x").is_err());
    }
}
