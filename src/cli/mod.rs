//! The `imagefs` command line: clap definitions and one small file per subcommand.
//! No logic of its own: each command parses its arguments, calls the library and
//! prints. Errors are printed once, by `main`, as `imagefs: <what>: <why>`.

mod demo;
mod df;
mod export;
mod fsck;
mod import;
mod inspect;
mod ls;
mod mount;
mod progress;
mod pull;
mod push;
mod tag;
mod why;

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use std::any::Any;

use imagefs::{ErrorKind, Reference, Store, StoreError};

/// A failed command: `<what>: <why>`, printed once by `main` after `imagefs: `.
#[derive(Debug)]
pub struct CliError {
    /// The whole message, e.g. `import ./app.tar: blob sha256:...: digest mismatch`.
    pub message: String,
}

impl CliError {
    /// Wraps any displayable error with what was being done. Library errors are
    /// worded by their kind: a full disk always says "no space left on device", and
    /// an import that needs a choice says how to make it on the command line.
    pub fn new(what: impl Into<String>, why: impl std::fmt::Display + 'static) -> Self {
        let what = what.into();
        let error: &dyn Any = &why;
        let store_error = error.downcast_ref::<StoreError>().or_else(|| {
            match error.downcast_ref::<imagefs::Error>() {
                Some(imagefs::Error::Store(inner)) => Some(inner),
                _ => None,
            }
        });
        let kind = match (store_error, error.downcast_ref::<imagefs::Error>()) {
            (Some(inner), _) => Some(inner.kind()),
            (None, Some(other)) => Some(other.kind()),
            (None, None) => None,
        };
        let hint = match store_error {
            Some(StoreError::AmbiguousSource { .. }) => "; with imagefs import SOURCE:NAME",
            Some(StoreError::UnnamedImage { .. }) => {
                ": imagefs import SOURCE REGISTRY/REPOSITORY:TAG"
            }
            _ => "",
        };
        let message = if kind == Some(ErrorKind::NoSpace) {
            format!("{what}: no space left on device: {why}{hint}")
        } else {
            format!("{what}: {why}{hint}")
        };
        CliError { message }
    }

    /// A message that already says what and why.
    pub fn line(message: String) -> Self {
        CliError { message }
    }
}

/// Adds the "what" to a library error.
pub trait Context<T> {
    /// Maps the error to a [`CliError`] naming `what`.
    fn context(self, what: impl Into<String>) -> Result<T, CliError>;
}

impl<T, E: std::fmt::Display + 'static> Context<T> for Result<T, E> {
    fn context(self, what: impl Into<String>) -> Result<T, CliError> {
        self.map_err(|e| CliError::new(what, e))
    }
}

/// imagefs: container images in one deduplicated store, mounted as a filesystem.
#[derive(Debug, Parser)]
#[command(name = "imagefs", version, about, long_about = None)]
pub struct Cli {
    /// The store directory [default: $IMAGEFS_STORE, else /var/lib/imagefs for root,
    /// else ~/.local/share/imagefs]
    #[arg(long, global = true, value_name = "DIR")]
    pub store: Option<PathBuf>,

    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Import images from an OCI layout, an OCI archive or a docker-archive
    Import(import::Args),
    /// Export an image as an OCI layout, OCI archive or docker-archive
    Export(export::Args),
    /// List registries, repositories and tags
    Ls(ls::Args),
    /// Show an image's manifest, platforms, config and layers
    Inspect(inspect::Args),
    /// Tag or promote an image (no data is copied)
    Tag(tag::TagArgs),
    /// Remove tags; blobs nothing references any more are deleted
    Rm(tag::RmArgs),
    /// Show space used: stored, shared and unique bytes, cache
    Df(df::Args),
    /// Re-hash every blob, check every reference and count, find leftovers
    Fsck(fsck::FsckArgs),
    /// Remove leftovers and trim the cache
    Gc(fsck::GcArgs),
    /// Mount the store (returns once the filesystem answers)
    Mount(mount::MountArgs),
    /// Unmount (also after a crashed daemon)
    Unmount(mount::UnmountArgs),
    /// Make a store of sample images, mount it and show a short tour
    Demo(demo::Args),
    /// Show every chain of references that keeps a manifest or blob alive
    Why(why::Args),
    /// Pull an image from a registry into the store
    Pull(pull::Args),
    /// Push a stored image to a registry
    Push(push::Args),
}

impl Cli {
    fn store_root(&self) -> PathBuf {
        self.store.clone().unwrap_or_else(imagefs::default_root)
    }

    fn open_store(&self) -> Result<Store, CliError> {
        let root = self.store_root();
        Store::open(&root).context(format!("store {}", root.display()))
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match &cli.command {
        Command::Ls(args) if args.remote => return ls::run_remote(args),
        Command::Mount(args) => {
            return mount::run_mount(&cli.store_root(), args).map_err(CliError::line)
        }
        Command::Unmount(args) => return mount::run_unmount(args).map_err(CliError::line),
        Command::Demo(args) => return demo::run(args),
        _ => {}
    }
    let store = cli.open_store()?;
    match &cli.command {
        Command::Import(args) => import::run(&store, args),
        Command::Export(args) => export::run(&store, args),
        Command::Ls(args) => ls::run(&store, args),
        Command::Inspect(args) => inspect::run(&store, args),
        Command::Tag(args) => tag::run_tag(&store, args),
        Command::Rm(args) => tag::run_rm(&store, args),
        Command::Df(args) => df::run(&store, args),
        Command::Fsck(args) => fsck::run_fsck(&store, args),
        Command::Gc(args) => fsck::run_gc(&store, args),
        Command::Why(args) => why::run(&store, args),
        Command::Pull(args) => pull::run(&store, args),
        Command::Push(args) => push::run(&store, args),
        Command::Mount(_) | Command::Unmount(_) | Command::Demo(_) => Ok(()),
    }
}

/// Options every command that talks to a registry takes (SPEC section 6), and
/// `mount --pull-through`.
#[derive(Debug, Clone, clap::Args)]
pub struct RemoteArgs {
    /// Credentials for the registry; a USER alone reads the password from stdin
    #[arg(long, value_name = "USER[:PASSWORD]")]
    pub creds: Option<String>,
    /// A credential file (containers' auth.json or Docker's config.json format),
    /// read before the default ones
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// `--tls-verify=false` allows plain HTTP and accepts any certificate
    #[arg(long, value_name = "BOOL", default_value_t = true, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub tls_verify: bool,
    /// Seconds to wait for a registry's answer, and for more bytes of a body,
    /// before giving up
    #[arg(long, value_name = "SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
}

impl Default for RemoteArgs {
    /// What the command line gives without any of these options.
    fn default() -> Self {
        RemoteArgs {
            creds: None,
            authfile: None,
            tls_verify: true,
            timeout: 30,
        }
    }
}

impl RemoteArgs {
    /// The library's registry options for these arguments.
    pub fn options(&self) -> Result<imagefs::RemoteOptions, String> {
        let credentials = match self.creds.as_deref() {
            None => None,
            Some(text) if text.contains(':') => Some(imagefs::Credentials::parse(text)),
            Some(user) => {
                if std::io::stdin().is_terminal() {
                    eprint!("password for {user}: ");
                }
                let mut password = String::new();
                std::io::stdin()
                    .read_line(&mut password)
                    .map_err(|e| format!("--creds {user}: reading the password: {e}"))?;
                let password = password.trim_end_matches(['\r', '\n']);
                Some(imagefs::Credentials::parse(&format!("{user}:{password}")))
            }
        };
        Ok(imagefs::RemoteOptions {
            credentials,
            authfile: self.authfile.clone(),
            tls_verify: self.tls_verify,
            response_timeout: std::time::Duration::from_secs(self.timeout),
            idle_timeout: std::time::Duration::from_secs(self.timeout),
            ..imagefs::RemoteOptions::default()
        })
    }
}

/// Parses a full reference, with the error naming it.
pub fn parse_reference(text: &str) -> Result<Reference, CliError> {
    Reference::parse(text).context(text.to_string())
}

/// Prints a value as pretty JSON.
pub fn print_json(value: &impl serde::Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).context("json output")?;
    println!("{text}");
    Ok(())
}

/// Text from an image (tar entry names, reasons quoting them) made safe for a
/// terminal: control characters are escaped, everything else is kept.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Prints what an image's `rootfs/` leaves out to stderr, one line per entry the
/// report kept, then how many more there are: `imagefs: warning: <what>: <path>:
/// <reason>`, `what` naming the image and the layer.
pub fn print_layer_warnings(image: &str, layers: &[imagefs::LayerWarnings]) {
    for layer in layers {
        let what = format!(
            "{image}: layer {} (sha256:{})",
            layer.position,
            layer.layer.short(12)
        );
        for warning in &layer.warnings {
            eprintln!(
                "imagefs: warning: {what}: {}: {}",
                printable(&warning.path),
                printable(&warning.reason)
            );
        }
        let more = layer.total.saturating_sub(layer.warnings.len());
        if more > 0 {
            eprintln!("imagefs: warning: {what}: and {more} more entries skipped or changed");
        }
    }
}

/// Human-readable byte count.
pub fn human(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

pub use mount::parse_size;

/// The cache cap when none is given: `$IMAGEFS_CACHE_SIZE`, else 10 GiB.
pub fn default_cache_size() -> u64 {
    std::env::var("IMAGEFS_CACHE_SIZE")
        .ok()
        .and_then(|v| parse_size(&v).ok())
        .unwrap_or(imagefs::DEFAULT_CACHE_SIZE)
}
