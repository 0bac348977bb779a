//! `mount --pull-through REGISTRY,...` (SPEC section 6): registries of the mount
//! that resolve on lookup, as the remote-cache repository of an Artifactory
//! installation does.
//!
//! Owns: which registries pull through, the decision whether a lookup needs the
//! network ([`Vfs::remote_lookup`]), the pulls themselves (one per reference at a
//! time: single flight), the waits of lookups for them (bounded by the timeout, on
//! threads of their own, never on a FUSE worker), and the memory of misses and
//! failures. Must not decide what the nodes of the tree are: `super::nodes`
//! asks [`Vfs::pulls_through`] and [`Vfs::missing_tag`] where a name is not in the
//! store.
//!
//! How names resolve under a pull-through registry:
//! - the registry's directory exists even when the store has no such registry;
//! - a name that is not in the store is a directory (a `Namespace` node, the same
//!   node it becomes once the store has it) when it is a valid repository path
//!   component: it may be a namespace or a repository, nobody knows before a tag is
//!   looked up; under it, `tags/` exists too (`manifests/` only once the store has
//!   the repository);
//! - such directories list only what the store has (nothing, when it has nothing),
//!   and their `stat` and `readdir` never ask the registry;
//! - only the lookup of a valid tag name in `tags/` that the store lacks goes to
//!   the network: it pulls `REGISTRY/REPOSITORY:TAG` lazily, like `pull --lazy`,
//!   under that same name, and then answers with the new tag. Other processes see
//!   it like any other commit.
//!
//! Answers: a registry's 404 (no such repository, no such tag) is ENOENT, and is
//! remembered for [`MISS_PERIOD`] (lookups of that reference meanwhile answer
//! ENOENT at once, asking nothing). 401/403 is EACCES, remembered the same way.
//! Anything else (the registry down or stuck, a 5xx, a lying registry, a full
//! disk) is EIO with one log line, remembered for [`FAILURE_PERIOD`]; when the
//! registry could not be reached at all (connect, TLS, timeout, a broken
//! connection), every lookup under that registry answers EIO at once for that
//! period. A lookup waits at most the timeout; a pull still running then goes on
//! in the background (a later lookup joins it) and its tag appears when it commits.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::reference::{self, Reference, Target};
use crate::remote::{ErrorKind as RemoteKind, Options as RemoteOptions};
use crate::store::{PullOptions, Store, StoreError};

use super::attr::{Attr, Ino, Volatility};
use super::errno::VfsError;
use super::lock;
use super::nodes::{Node, Result};
use super::vfs::Vfs;

/// How long a registry's "no such tag or repository" is remembered.
pub const MISS_PERIOD: Duration = Duration::from_secs(30);

/// How long a failed pull (or an unreachable registry) is remembered.
pub const FAILURE_PERIOD: Duration = Duration::from_secs(10);

/// Remembered answers kept at most (expired ones are dropped first).
const REMEMBERED: usize = 4096;

/// Lookups waiting for the network at most; more answer EAGAIN.
const WAITING: usize = 256;

/// `mount --pull-through`: which registries resolve on lookup, and how.
#[derive(Debug, Clone)]
pub struct PullThroughOptions {
    /// The registries (network names: `docker.io`, `localhost:5000`).
    pub registries: Vec<String>,
    /// How to reach them: credentials, TLS, timeouts.
    pub remote: RemoteOptions,
    /// How long a lookup waits for its pull.
    pub lookup_timeout: Duration,
    /// How long misses are remembered ([`MISS_PERIOD`]).
    pub miss_period: Duration,
    /// How long failures are remembered ([`FAILURE_PERIOD`]).
    pub failure_period: Duration,
}

impl PullThroughOptions {
    /// Options for `registries` with the defaults; lookups wait as long as the
    /// client waits for an answer.
    pub fn new(registries: Vec<String>, remote: RemoteOptions) -> Self {
        PullThroughOptions {
            lookup_timeout: remote.response_timeout,
            registries,
            remote,
            miss_period: MISS_PERIOD,
            failure_period: FAILURE_PERIOD,
        }
    }

    /// Checks the registry names: valid, and names of the network (`dev` lives only
    /// in the store and cannot be pulled from).
    pub fn validate(&self) -> std::result::Result<(), StoreError> {
        if self.registries.is_empty() {
            return Err(StoreError::Invalid("no registry to pull through".into()));
        }
        for name in &self.registries {
            reference::validate_registry(name)?;
            crate::remote::registry_host(name)?;
        }
        Ok(())
    }
}

/// Why a reference could not be pulled, as remembered.
#[derive(Debug, Clone)]
enum Failure {
    /// The registry has no such repository or tag: ENOENT.
    Missing,
    /// The registry refused us: EACCES.
    Denied(String),
    /// Anything else: EIO.
    Failed(String),
}

impl Failure {
    fn error(&self) -> VfsError {
        match self {
            Failure::Missing => VfsError::NotFound,
            Failure::Denied(why) => VfsError::PullThrough(libc::EACCES, why.clone()),
            Failure::Failed(why) => VfsError::PullThrough(libc::EIO, why.clone()),
        }
    }
}

/// A remembered answer and until when it holds.
#[derive(Debug, Clone)]
struct Remembered {
    until: Instant,
    failure: Failure,
}

/// One pull in progress; lookups of its reference wait for it.
#[derive(Debug, Default)]
struct Flight {
    outcome: Mutex<Option<std::result::Result<(), Failure>>>,
    done: Condvar,
    /// Set once a lookup gave up waiting and said so in the log.
    overdue: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    flights: HashMap<Reference, Arc<Flight>>,
    /// Answers per reference.
    references: HashMap<Reference, Remembered>,
    /// Registries that could not be reached.
    offline: HashMap<String, Remembered>,
}

/// The pull-through side of a mount.
#[derive(Debug)]
pub(crate) struct PullThrough {
    store: Arc<Store>,
    options: PullThroughOptions,
    registries: BTreeSet<String>,
    state: Mutex<State>,
    /// Lookups waiting for the network now.
    waiting: AtomicUsize,
}

impl PullThrough {
    pub(crate) fn new(store: Arc<Store>, options: PullThroughOptions) -> Self {
        PullThrough {
            store,
            registries: options.registries.iter().cloned().collect(),
            options,
            state: Mutex::new(State::default()),
            waiting: AtomicUsize::new(0),
        }
    }

    /// The pull-through registries, sorted.
    pub(crate) fn registries(&self) -> &BTreeSet<String> {
        &self.registries
    }

    /// What is remembered about `reference` (or its registry) now.
    fn remembered(&self, reference: &Reference) -> Option<Failure> {
        let now = Instant::now();
        let state = lock(&self.state);
        let live = |r: &Remembered| (r.until > now).then(|| r.failure.clone());
        state
            .references
            .get(reference)
            .and_then(live)
            .or_else(|| state.offline.get(&reference.registry).and_then(live))
    }

    /// Waits, at most the lookup timeout, until `reference` is pulled (joining a
    /// pull already under way, else starting one).
    fn resolve(self: &Arc<Self>, reference: &Reference) -> Result<()> {
        if let Some(failure) = self.remembered(reference) {
            return Err(failure.error());
        }
        let (flight, new) = {
            let mut state = lock(&self.state);
            match state.flights.get(reference) {
                Some(flight) => (flight.clone(), false),
                None => {
                    let flight = Arc::new(Flight::default());
                    state.flights.insert(reference.clone(), flight.clone());
                    (flight, true)
                }
            }
        };
        if new {
            // A pull that ended since the caller looked in the store needs no other.
            if self.stored(reference) {
                self.finish(reference, &flight, Ok(()));
                return Ok(());
            }
            self.start(reference.clone(), flight.clone());
        }
        let timeout = self.options.lookup_timeout;
        let deadline = Instant::now() + timeout;
        let mut outcome = lock(&flight.outcome);
        loop {
            if let Some(outcome) = &*outcome {
                return outcome.clone().map_err(|failure| failure.error());
            }
            let now = Instant::now();
            if now >= deadline {
                drop(outcome);
                if !flight.overdue.swap(true, Ordering::AcqRel) {
                    log::warn!(
                        "pull-through {reference}: no answer within {} s; \
                         the pull goes on in the background",
                        timeout.as_secs_f32()
                    );
                }
                return Err(VfsError::PullThrough(
                    libc::EIO,
                    format!("{reference}: no answer within {timeout:?}"),
                ));
            }
            outcome = flight
                .done
                .wait_timeout(outcome, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
    }

    /// Whether the store has tag `reference` now (an error counts as no).
    fn stored(&self, reference: &Reference) -> bool {
        let tag = reference.tag().unwrap_or_default();
        self.store
            .tag_info(&reference.registry, &reference.repository, tag)
            .is_ok_and(|info| info.is_some())
    }

    /// Starts the pull of `reference` on a thread of its own; `flight` gets its
    /// outcome.
    fn start(self: &Arc<Self>, reference: Reference, flight: Arc<Flight>) {
        let (this, pulled, on) = (self.clone(), reference.clone(), flight.clone());
        let job = move || {
            let outcome = this.pull(&pulled);
            this.finish(&pulled, &on, outcome);
        };
        if let Err(error) = std::thread::Builder::new()
            .name("imagefs-pull-through".into())
            .spawn(job)
        {
            let failure = Failure::Failed(format!("{reference}: no thread for the pull: {error}"));
            self.finish(&reference, &flight, Err((failure, None)));
        }
    }

    /// Pulls `reference` lazily under its own name.
    fn pull(
        &self,
        reference: &Reference,
    ) -> std::result::Result<(), (Failure, Option<RemoteKind>)> {
        let options = PullOptions {
            remote: self.options.remote.clone(),
            lazy: true,
            ..PullOptions::default()
        };
        let started = Instant::now();
        let pulled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.store.pull(reference, &options)
        }));
        match pulled {
            Ok(Ok(report)) => {
                log::info!(
                    "pull-through {reference}: pulled {} in {:.1} s",
                    report.digest,
                    started.elapsed().as_secs_f32()
                );
                Ok(())
            }
            Ok(Err(error)) => Err(classify(reference, &error)),
            Err(_) => Err((
                Failure::Failed(format!("{reference}: the pull panicked")),
                None,
            )),
        }
    }

    /// Records the outcome of the pull of `reference` and wakes its lookups.
    fn finish(
        &self,
        reference: &Reference,
        flight: &Flight,
        outcome: std::result::Result<(), (Failure, Option<RemoteKind>)>,
    ) {
        let now = Instant::now();
        let outcome = {
            let mut state = lock(&self.state);
            state.flights.remove(reference);
            if state.references.len() >= REMEMBERED {
                state.references.retain(|_, r| r.until > now);
                state.offline.retain(|_, r| r.until > now);
            }
            match outcome {
                Ok(()) => {
                    state.references.remove(reference);
                    state.offline.remove(&reference.registry);
                    Ok(())
                }
                Err((failure, kind)) => {
                    let period = match failure {
                        Failure::Missing | Failure::Denied(_) => self.options.miss_period,
                        Failure::Failed(_) => self.options.failure_period,
                    };
                    match &failure {
                        Failure::Missing => log::info!("pull-through {reference}: not there"),
                        Failure::Denied(why) => log::warn!("pull-through {reference}: {why}"),
                        // An error line: the daemon's log is kept after it exits.
                        Failure::Failed(why) => log::error!("pull-through {reference}: {why}"),
                    }
                    let remembered = Remembered {
                        until: now + period,
                        failure: failure.clone(),
                    };
                    if state.references.len() < REMEMBERED {
                        state
                            .references
                            .insert(reference.clone(), remembered.clone());
                    }
                    if kind.is_some_and(unreachable) {
                        state.offline.insert(reference.registry.clone(), remembered);
                    }
                    Err(failure)
                }
            }
        };
        *lock(&flight.outcome) = Some(outcome);
        flight.done.notify_all();
    }
}

/// True for failures that say the registry cannot be reached at all.
fn unreachable(kind: RemoteKind) -> bool {
    matches!(
        kind,
        RemoteKind::Connect | RemoteKind::Tls | RemoteKind::Timeout | RemoteKind::Transport
    )
}

/// What a failed pull of `reference` means for the lookup.
fn classify(reference: &Reference, error: &StoreError) -> (Failure, Option<RemoteKind>) {
    let remote = match error {
        StoreError::Remote(remote) => Some(remote),
        _ => None,
    };
    let failure = match remote.map(|r| r.kind) {
        Some(RemoteKind::NotFound) => Failure::Missing,
        Some(RemoteKind::Unauthorized) => Failure::Denied(error.to_string()),
        _ if remote.is_some() => Failure::Failed(error.to_string()),
        _ => Failure::Failed(format!("{reference}: {error}")),
    };
    (failure, remote.map(|r| r.kind))
}

/// A lookup that needs the network: a tag the store lacks in `tags/` of a
/// repository under a pull-through registry.
#[derive(Debug)]
pub(crate) struct RemoteLookup {
    vfs: Arc<Vfs>,
    through: Arc<PullThrough>,
    parent: Ino,
    name: Vec<u8>,
    reference: Reference,
}

impl RemoteLookup {
    /// Resolves on a thread of its own (the FUSE worker returns at once) and hands
    /// the lookup's answer to `reply`: the new tag's attributes, with one kernel
    /// reference counted, or why not. Waits at most the lookup timeout.
    pub(crate) fn spawn(self, reply: impl FnOnce(Result<Attr>) + Send + 'static) {
        if self.through.waiting.fetch_add(1, Ordering::AcqRel) >= WAITING {
            self.through.waiting.fetch_sub(1, Ordering::AcqRel);
            let error = VfsError::PullThrough(libc::EAGAIN, "too many lookups waiting".into());
            return reply(Err(error));
        }
        let through = self.through.clone();
        let job = move || {
            let answer = self
                .through
                .resolve(&self.reference)
                .and_then(|()| self.vfs.lookup(self.parent, &self.name));
            self.through.waiting.fetch_sub(1, Ordering::AcqRel);
            reply(answer);
        };
        // The job is moved into the thread; if none can be made, nothing is left
        // to answer with: spawn errors are reported and the lookup fails.
        let spawned = std::thread::Builder::new()
            .name("imagefs-lookup".into())
            .spawn(job);
        if let Err(error) = spawned {
            through.waiting.fetch_sub(1, Ordering::AcqRel);
            log::error!("pull-through lookup thread: {error}");
        }
    }
}

impl Vfs {
    /// Whether `registry` is one of the mount's pull-through registries.
    pub(crate) fn pulls_through(&self, registry: &str) -> bool {
        self.pull_through()
            .is_some_and(|through| through.registries.contains(registry))
    }

    /// The attributes of a directory under a pull-through registry that the store
    /// does not have (yet): empty, dated when the mount started.
    pub(crate) fn virtual_dir_attr(&self, ino: Ino) -> Attr {
        Attr::dir(ino, 2, self.mount_time_ns(), Volatility::Volatile)
    }

    /// Whether `path` may name a repository or namespace under a pull-through
    /// registry (each component valid, none reserved).
    pub(crate) fn may_exist_remotely(&self, registry: &str, path: &str) -> bool {
        self.pulls_through(registry)
            && (path.is_empty() || reference::validate_repository(path).is_ok())
    }

    /// The answer to a lookup of tag `reference` the store lacks: what is
    /// remembered of it under a pull-through registry, else ENOENT.
    pub(crate) fn missing_tag(&self, reference: &Reference) -> VfsError {
        match self.pull_through() {
            Some(through) if through.registries.contains(&reference.registry) => through
                .remembered(reference)
                .map_or(VfsError::NotFound, |failure| failure.error()),
            _ => VfsError::NotFound,
        }
    }

    /// Asked by the adapter before a lookup of `name` in directory `parent`:
    /// `Some` when answering it needs the network (see the module's text), to be
    /// run with [`RemoteLookup::spawn`]; `None` for every other lookup, answered as
    /// usual (a remembered miss or failure included, by [`Vfs::missing_tag`]).
    pub(crate) fn remote_lookup(
        self: &Arc<Self>,
        parent: Ino,
        name: &[u8],
    ) -> Option<RemoteLookup> {
        let through = self.pull_through_arc()?;
        let Ok(Node::Tags(tags)) = self.node(parent) else {
            return None;
        };
        let repo = &tags.0;
        if !through.registries.contains(&repo.registry) {
            return None;
        }
        let tag = std::str::from_utf8(name).ok()?;
        reference::validate_tag(tag).ok()?;
        reference::validate_repository(&repo.repository).ok()?;
        match self.repo_tags(repo) {
            Ok(Some(known)) if known.tags.contains_key(tag) => return None,
            Ok(_) => {}
            // The store cannot be read: the usual lookup says why.
            Err(_) => return None,
        }
        let reference = Reference {
            registry: repo.registry.clone(),
            repository: repo.repository.clone(),
            target: Target::Tag(tag.to_string()),
        };
        if through.remembered(&reference).is_some() {
            return None;
        }
        Some(RemoteLookup {
            vfs: self.clone(),
            through,
            parent,
            name: name.to_vec(),
            reference,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::RemoteError;

    fn reference() -> Reference {
        Reference::parse("localhost:5000/library/alpine:3.19").expect("a reference")
    }

    #[test]
    fn failures_map_to_errno() {
        let remote = |kind| {
            StoreError::Remote(RemoteError::new(
                kind,
                "localhost:5000/library/alpine",
                "manifest 3.19",
                "x",
            ))
        };
        let cases = [
            (remote(RemoteKind::NotFound), libc::ENOENT, false),
            (remote(RemoteKind::Unauthorized), libc::EACCES, false),
            (remote(RemoteKind::Connect), libc::EIO, true),
            (remote(RemoteKind::Timeout), libc::EIO, true),
            (remote(RemoteKind::Server), libc::EIO, false),
            (remote(RemoteKind::Digest), libc::EIO, false),
            (StoreError::NoSpace("disk".into()), libc::EIO, false),
        ];
        for (error, errno, offline) in cases {
            let (failure, kind) = classify(&reference(), &error);
            assert_eq!(failure.error().errno(), errno, "{error}");
            assert_eq!(kind.is_some_and(unreachable), offline, "{error}");
        }
    }

    /// A view of an empty store whose registry `localhost:<closed port>` pulls
    /// through (refused at once: nothing listens there).
    fn refused_view(dir: &std::path::Path) -> Arc<Vfs> {
        let store = Arc::new(Store::open(&dir.join("store")).expect("store"));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let remote = RemoteOptions {
            no_credential_files: true,
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(2),
            max_tries: 1,
            ..RemoteOptions::default()
        };
        let options = PullThroughOptions::new(vec![format!("localhost:{port}")], remote);
        let vfs = Vfs::new(store, "/mnt/imagefs-test".into(), false, 1 << 30);
        Arc::new(vfs.with_pull_through(options))
    }

    #[test]
    fn names_under_a_pull_through_registry_resolve_without_the_network() {
        let dir = tempfile::tempdir().expect("temp dir");
        let vfs = refused_view(dir.path());
        let registry = vfs
            .pull_through()
            .and_then(|t| t.registries().first().cloned())
            .expect("a registry");
        let root = super::super::attr::ROOT_INO;
        let names = |ino| -> Vec<String> {
            vfs.readdir(ino)
                .expect("a listing")
                .into_iter()
                .map(|e| String::from_utf8_lossy(&e.name).into_owned())
                .filter(|n| n != "." && n != "..")
                .collect()
        };
        assert_eq!(names(root), vec![registry.clone()]);
        let mut ino = vfs
            .lookup(root, registry.as_bytes())
            .expect("the registry")
            .ino;
        for name in ["library", "alpine"] {
            let attr = vfs.lookup(ino, name.as_bytes()).expect(name);
            assert_eq!(attr.nlink, 2);
            assert!(names(attr.ino).is_empty());
            ino = attr.ino;
        }
        assert!(matches!(
            vfs.lookup(ino, b"manifests"),
            Err(VfsError::NotFound)
        ));
        assert!(matches!(vfs.lookup(ino, b"Upper"), Err(VfsError::NotFound)));
        let tags = vfs.lookup(ino, b"tags").expect("tags/").ino;
        assert!(names(tags).is_empty());
        // Only a valid tag name goes to the network, and only from the adapter.
        assert!(vfs.remote_lookup(tags, b".x").is_none());
        assert!(vfs.remote_lookup(ino, b"alpine").is_none());
        assert!(matches!(vfs.lookup(tags, b"3.19"), Err(VfsError::NotFound)));
        let remote = vfs.remote_lookup(tags, b"3.19").expect("a remote lookup");
        let (send, answer) = std::sync::mpsc::channel();
        remote.spawn(move |result| {
            let _ = send.send(result.map(|attr| attr.ino).map_err(|e| e.errno()));
        });
        let answer = answer
            .recv_timeout(Duration::from_secs(20))
            .expect("an answer within the timeout");
        assert_eq!(answer, Err(libc::EIO));
        // Remembered: answered from memory, for the whole registry.
        assert!(vfs.remote_lookup(tags, b"3.19").is_none());
        assert!(vfs.remote_lookup(tags, b"3.20").is_none());
        assert_eq!(
            vfs.lookup(tags, b"3.20").map_err(|e| e.errno()).err(),
            Some(libc::EIO)
        );
        // Other registries are as before.
        assert!(matches!(
            vfs.lookup(root, b"localhost:1"),
            Err(VfsError::NotFound)
        ));
    }

    #[test]
    fn options_refuse_store_only_registries() {
        let ok = PullThroughOptions::new(
            vec!["docker.io".into(), "localhost:5000".into()],
            RemoteOptions::default(),
        );
        assert!(ok.validate().is_ok());
        for bad in [
            vec![],
            vec!["dev".to_string()],
            vec!["Bad Name".to_string()],
        ] {
            assert!(PullThroughOptions::new(bad, RemoteOptions::default())
                .validate()
                .is_err());
        }
    }
}
