//! Transfer progress: the CLI's [`imagefs::Progress`], drawn with indicatif on
//! stderr when it is a terminal: one line for the whole transfer and one bar per
//! blob in flight (a pull or an import moves several at once). The library only
//! reports; this draws.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use imagefs::{BlobKind, Digest, NoProgress, Progress};

/// Blobs smaller than this get no bar of their own (manifests, configs): they
/// would only flicker.
const OWN_BAR_FROM: u64 = 1 << 20;

/// The bars of one transfer.
struct TransferBars {
    multi: indicatif::MultiProgress,
    /// `pulling: 3 blobs done, 2 already stored, 12.3 MiB (4 MiB/s)`.
    summary: indicatif::ProgressBar,
    verb: &'static str,
    blobs: Mutex<HashMap<Digest, indicatif::ProgressBar>>,
    done: AtomicU64,
    skipped: AtomicU64,
}

impl TransferBars {
    fn update_summary(&self) {
        self.summary.set_message(format!(
            "{}: {} blobs done, {} already there",
            self.verb,
            self.done.load(Ordering::Relaxed),
            self.skipped.load(Ordering::Relaxed)
        ));
    }

    fn blobs(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, indicatif::ProgressBar>> {
        self.blobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Progress for TransferBars {
    fn blob_started(&self, digest: &Digest, kind: BlobKind, size: u64) {
        if size < OWN_BAR_FROM {
            return;
        }
        let bar = self.multi.add(indicatif::ProgressBar::new(size));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "  {prefix:<24} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        let kind = format!("{kind:?}").to_lowercase();
        bar.set_prefix(format!("{kind} {}", digest.short(12)));
        self.blobs().insert(*digest, bar);
    }

    fn blob_bytes(&self, digest: &Digest, bytes: u64) {
        self.summary.inc(bytes);
        if let Some(bar) = self.blobs().get(digest) {
            bar.inc(bytes);
        }
    }

    fn blob_done(&self, digest: &Digest) {
        if let Some(bar) = self.blobs().remove(digest) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        self.done.fetch_add(1, Ordering::Relaxed);
        self.update_summary();
    }

    fn blob_skipped(&self, _digest: &Digest, _kind: BlobKind, _size: u64) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
        self.update_summary();
    }

    fn finished(&self) {
        for (_, bar) in self.blobs().drain() {
            bar.finish_and_clear();
        }
        self.summary.finish_and_clear();
        let _ = self.multi.clear();
    }
}

/// The progress a transfer shows (`verb`: "importing", "pulling", "pushing"): bars
/// when stderr is a terminal, else nothing.
pub fn transfer_progress(verb: &'static str) -> Arc<dyn Progress> {
    if !std::io::stderr().is_terminal() {
        return Arc::new(NoProgress);
    }
    let multi = indicatif::MultiProgress::new();
    let summary = multi.add(indicatif::ProgressBar::new_spinner());
    summary.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg}, {bytes} ({bytes_per_sec})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    summary.enable_steady_tick(std::time::Duration::from_millis(120));
    let bars = TransferBars {
        multi,
        summary,
        verb,
        blobs: Mutex::new(HashMap::new()),
        done: AtomicU64::new(0),
        skipped: AtomicU64::new(0),
    };
    bars.update_summary();
    Arc::new(bars)
}

/// The progress an import shows.
pub fn import_progress() -> Arc<dyn Progress> {
    transfer_progress("importing")
}
