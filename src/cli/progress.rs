//! The import progress bar: the CLI's [`imagefs::Progress`], drawn with indicatif on
//! stderr when it is a terminal. The library only reports; this draws.

use std::io::IsTerminal;
use std::sync::Arc;

use imagefs::{Digest, NoProgress, Progress};

/// A spinner counting the bytes read from the source: `importing: 12.3 MiB read`.
struct ImportBar(indicatif::ProgressBar);

impl Progress for ImportBar {
    fn blob_bytes(&self, _digest: &Digest, bytes: u64) {
        self.0.inc(bytes);
    }

    fn finished(&self) {
        self.0.finish_and_clear();
    }
}

/// The progress an import shows: a bar when stderr is a terminal, else nothing.
pub fn import_progress() -> Arc<dyn Progress> {
    if !std::io::stderr().is_terminal() {
        return Arc::new(NoProgress);
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg}: {bytes} read ({bytes_per_sec})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message("importing");
    Arc::new(ImportBar(bar))
}
