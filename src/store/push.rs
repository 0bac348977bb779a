//! `push`: a stored image (manifest or index) to a registry repository (SPEC
//! section 6). Blobs first, on several threads: HEAD, then a cross-repository
//! mount from a repository of the same registry the store knows has the blob,
//! else an upload from the blob file. Then the manifests, children of an index
//! before the index, with their stored bytes unchanged, so the digest is the same
//! on both sides. Where the blobs now are is recorded for later mounts.
//!
//! Owns: the order and the choice between skip, mount and upload. Must not touch:
//! HTTP details (`remote`), the terminal.

use std::collections::HashSet;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::digest::Digest;
use crate::image;
use crate::reference::{Reference, Target};
use crate::remote::{Client, MountOutcome, Options, RemoteError};
use crate::store::import::DEFAULT_PULL_JOBS;
use crate::store::index_artifact::AttachedIndex;
use crate::store::meta::{self, BlobInfo, BlobKind, EdgeKind, Origin};
use crate::store::progress::{NoProgress, Progress, ProgressReader};
use crate::store::{Store, StoreError};

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How to push.
#[derive(Clone)]
pub struct PushOptions {
    /// How to reach the registry: credentials, TLS, timeouts, retries.
    pub remote: Options,
    /// How many blobs travel at once (at least 1).
    pub jobs: usize,
    /// Where progress goes.
    pub progress: Arc<dyn Progress>,
    /// Attach the store's layer indexes as an index artifact to every image
    /// manifest pushed (`--no-index` turns it off).
    pub index: bool,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            remote: Options::default(),
            jobs: DEFAULT_PULL_JOBS,
            progress: Arc::new(NoProgress),
            index: true,
        }
    }
}

impl std::fmt::Debug for PushOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushOptions")
            .field("remote", &self.remote)
            .field("jobs", &self.jobs)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// What a push did (`--json`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PushReport {
    /// The local reference pushed.
    pub source: String,
    /// The remote reference written.
    pub reference: String,
    /// The manifest (or index) digest, the same on both sides.
    pub digest: Option<Digest>,
    /// Blobs uploaded.
    pub blobs_uploaded: u64,
    /// Bytes uploaded (blob bodies).
    pub bytes_uploaded: u64,
    /// Blobs mounted from another repository of the registry (no bytes sent).
    pub blobs_mounted: u64,
    /// Blobs the repository had already (HEAD).
    pub blobs_skipped: u64,
    /// Manifests and indexes written (the others were there already).
    pub manifests_pushed: u64,
    /// True when at least one index artifact is attached (README "Index
    /// artifacts").
    pub index_attached: bool,
    /// The index artifacts attached: one per image manifest with layers.
    pub index_artifacts: Vec<AttachedIndex>,
    /// Why an index artifact could not be attached (the image itself was pushed).
    pub index_warnings: Vec<String>,
}

/// A blob to send and the repositories of the same registry it may be mounted from.
struct BlobToPush {
    info: BlobInfo,
    mount_from: Vec<String>,
}

enum Sent {
    Present,
    Mounted,
    Uploaded(u64),
}

impl Store {
    /// Pushes the image `local` names to `remote` (a tag, or the image's own
    /// digest). The registry receives only what it lacks.
    pub fn push(
        &self,
        local: &Reference,
        remote: &Reference,
        options: &PushOptions,
    ) -> Result<PushReport> {
        let client = Client::new(&remote.registry, &options.remote)?;
        let result = self
            .push_with_client(&client, local, remote, options)
            .map_err(super::pull::remote_cause);
        options.progress.finished();
        result
    }

    fn push_with_client(
        &self,
        client: &Client,
        local: &Reference,
        remote: &Reference,
        options: &PushOptions,
    ) -> Result<PushReport> {
        let top = self.resolve(local)?;
        if let Target::Digest(digest) = &remote.target {
            if *digest != top {
                return Err(StoreError::Invalid(format!(
                    "{remote}: {local} is {top}; a digest reference must be the image's own"
                )));
            }
        }
        let (manifests, blobs) = self.push_plan(&top, &remote.registry, &remote.repository)?;
        let mut report = PushReport {
            source: local.to_string(),
            reference: remote.to_string(),
            ..PushReport::default()
        };
        self.push_blobs(client, &remote.repository, blobs, options, &mut report)?;
        crate::failpoint::hit("push.before_manifests");
        for (position, info) in manifests.iter().enumerate() {
            let is_top = position + 1 == manifests.len();
            let target = match (&remote.target, is_top) {
                (Target::Tag(tag), true) => tag.clone(),
                _ => info.digest.to_string(),
            };
            let present = client
                .head_manifest(&remote.repository, &target)?
                .and_then(|head| head.digest)
                == Some(info.digest);
            if present {
                continue;
            }
            let bytes = self.read_blob(&info.digest)?;
            // The Content-Type is the document's own media type when it has one.
            let media_type = image::parse_top(&bytes, Some(&info.media_type))
                .map(|parsed| match parsed {
                    image::Parsed::Index(index) => index.media_type,
                    image::Parsed::Manifest(manifest) => manifest.media_type,
                })
                .unwrap_or_else(|_| info.media_type.clone());
            let pushed = client.put_manifest(&remote.repository, &target, &media_type, &bytes)?;
            debug_assert_eq!(pushed, info.digest);
            report.manifests_pushed += 1;
        }
        report.digest = Some(top);
        if options.index {
            self.push_index_artifacts(
                client,
                &remote.repository,
                &manifests,
                options.jobs,
                &mut report,
            );
        }
        // Everything reachable is now in that repository: later pushes to other
        // repositories of the registry can mount from it.
        let origin = Origin {
            registry: remote.registry.clone(),
            repository: remote.repository.clone(),
        };
        let mut digests: Vec<Digest> = manifests.iter().map(|m| m.digest).collect();
        digests.extend(self.push_leaf_digests(&top)?);
        let mut conn = self.conn();
        let tx = meta::write_tx(&mut conn)?;
        for digest in digests {
            // A blob deleted meanwhile has no row to hang an origin on.
            if meta::blob(&tx, &digest)?.is_some() {
                meta::add_origins(&tx, &digest, std::slice::from_ref(&origin))?;
            }
        }
        tx.commit()?;
        Ok(report)
    }

    /// Attaches the index artifact of every image manifest pushed (an index's
    /// children each get one). A refusal is a warning in the report: the image
    /// itself is pushed.
    fn push_index_artifacts(
        &self,
        client: &Client,
        repository: &str,
        manifests: &[BlobInfo],
        jobs: usize,
        report: &mut PushReport,
    ) {
        for info in manifests.iter().filter(|m| m.kind == BlobKind::Manifest) {
            match self.attach_index_artifact(client, repository, info, jobs) {
                Ok(Some(attached)) => report.index_artifacts.push(attached),
                Ok(None) => {}
                Err(e) => report.index_warnings.push(format!(
                    "index artifact of {}: not attached: {}",
                    info.digest,
                    super::pull::remote_cause(e)
                )),
            }
        }
        report.index_attached = !report.index_artifacts.is_empty();
    }

    /// The manifests to push, children before parents (the top last), and the
    /// other blobs with the repositories of `registry` they may be mounted from.
    fn push_plan(
        &self,
        top: &Digest,
        registry: &str,
        repository: &str,
    ) -> Result<(Vec<BlobInfo>, Vec<BlobToPush>)> {
        let conn = self.conn();
        let mut manifests = Vec::new();
        let mut blobs = Vec::new();
        let mut seen = HashSet::new();
        // Depth-first, children first: (digest, children visited yet).
        let mut stack = vec![(*top, false)];
        while let Some((digest, expanded)) = stack.pop() {
            let info = meta::blob(&conn, &digest)?
                .ok_or_else(|| StoreError::NotFound(format!("blob {digest}")))?;
            let is_manifest = matches!(info.kind, BlobKind::Manifest | BlobKind::Index);
            if expanded {
                manifests.push(info);
                continue;
            }
            if !seen.insert(digest) {
                continue;
            }
            if !is_manifest {
                let mount_from = meta::origins(&conn, &digest)?
                    .into_iter()
                    .filter(|o| o.registry == registry && o.repository != repository)
                    .map(|o| o.repository)
                    .collect();
                blobs.push(BlobToPush { info, mount_from });
                continue;
            }
            stack.push((digest, true));
            let edges = meta::edges(&conn, &digest)?;
            // Pushed in reverse so that the first child is handled first.
            for edge in edges.iter().rev() {
                if edge.counted && edge.kind != EdgeKind::Subject {
                    stack.push((edge.child, false));
                }
            }
        }
        Ok((manifests, blobs))
    }

    /// Every non-manifest blob reachable from `top`.
    fn push_leaf_digests(&self, top: &Digest) -> Result<Vec<Digest>> {
        Ok(self
            .reachable_blobs(top)?
            .into_iter()
            .filter(|b| !matches!(b.kind, BlobKind::Manifest | BlobKind::Index))
            .map(|b| b.digest)
            .collect())
    }

    /// Sends every blob the repository lacks, up to `jobs` at once.
    fn push_blobs(
        &self,
        client: &Client,
        repository: &str,
        mut blobs: Vec<BlobToPush>,
        options: &PushOptions,
        report: &mut PushReport,
    ) -> Result<()> {
        if blobs.is_empty() {
            return Ok(());
        }
        blobs.sort_by_key(|blob| std::cmp::Reverse(blob.info.size));
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let first_error: Mutex<Option<StoreError>> = Mutex::new(None);
        let sent: Mutex<Vec<Sent>> = Mutex::new(Vec::new());
        let uploaded = AtomicU64::new(0);
        let progress = options.progress.as_ref();
        let worker = || loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let Some(blob) = blobs.get(next.fetch_add(1, Ordering::Relaxed)) else {
                return;
            };
            match self.push_blob(client, repository, blob, progress, &uploaded) {
                Ok(outcome) => crate::sys::lock(&sent).push(outcome),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    crate::sys::lock(&first_error).get_or_insert(e);
                    return;
                }
            }
        };
        std::thread::scope(|scope| {
            let handles: Vec<_> = (1..options.jobs.max(1).min(blobs.len()))
                .map(|_| scope.spawn(worker))
                .collect();
            worker();
            for handle in handles {
                if handle.join().is_err() {
                    crate::sys::lock(&first_error).get_or_insert(StoreError::Panicked {
                        what: format!("push to {repository}"),
                        stage: "blob upload",
                    });
                }
            }
        });
        if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        for outcome in sent.into_inner().unwrap_or_else(|p| p.into_inner()) {
            match outcome {
                Sent::Present => report.blobs_skipped += 1,
                Sent::Mounted => report.blobs_mounted += 1,
                Sent::Uploaded(bytes) => {
                    report.blobs_uploaded += 1;
                    report.bytes_uploaded += bytes;
                }
            }
        }
        Ok(())
    }

    /// One blob: nothing when the repository has it, a mount when a repository of
    /// the registry has it and agrees, else an upload from the blob file.
    fn push_blob(
        &self,
        client: &Client,
        repository: &str,
        blob: &BlobToPush,
        progress: &dyn Progress,
        uploaded: &AtomicU64,
    ) -> Result<Sent> {
        let info = &blob.info;
        if let Some(head) = client.head_blob(repository, &info.digest)? {
            if head.size.is_none_or(|size| size == info.size) {
                progress.blob_skipped(&info.digest, info.kind, info.size);
                return Ok(Sent::Present);
            }
        }
        for from in &blob.mount_from {
            // A refused mount (the blob is gone there, or no pull access) is not
            // fatal: the upload below sends it.
            if let Ok(MountOutcome::Mounted) = client.mount_blob(repository, &info.digest, from) {
                progress.blob_skipped(&info.digest, info.kind, info.size);
                return Ok(Sent::Mounted);
            }
        }
        // A lazy layer the registry has neither here nor in a repository it can
        // mount from is completed first (fetched from its origin and checked).
        if self.is_absent(&info.digest)? {
            self.complete_layer(&info.digest)?;
        }
        progress.blob_started(&info.digest, info.kind, info.size);
        let file = self.cas.open_blob(&info.digest)?;
        let mut reader = ProgressReader {
            inner: file,
            progress,
            digest: info.digest,
            total: uploaded,
        };
        let mut reader: &mut (dyn Read + Send) = &mut reader;
        client
            .push_blob(repository, &info.digest, info.size, &mut reader)
            .map_err(|e: RemoteError| StoreError::Remote(e))?;
        progress.blob_done(&info.digest);
        Ok(Sent::Uploaded(info.size))
    }
}
