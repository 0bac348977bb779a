//! Named failpoints for crash-consistency tests.
//!
//! `IMAGEFS_FAILPOINT=<name>` makes the process abort (as `kill -9` would: no
//! destructors, no flush) when it reaches the failpoint of that name.
//! `IMAGEFS_FAILPOINT=<name>:pause:<path>` instead waits there until `<path>`
//! exists, so a test can act while the process is stopped at a known instant.
//! Without the variable a failpoint costs one environment lookup.

use std::path::Path;
use std::time::Duration;

/// Reaches the failpoint `name`.
pub fn hit(name: &str) {
    let Ok(spec) = std::env::var("IMAGEFS_FAILPOINT") else {
        return;
    };
    let mut parts = spec.splitn(3, ':');
    if parts.next() != Some(name) {
        return;
    }
    match (parts.next(), parts.next()) {
        (Some("pause"), Some(path)) => {
            // Tell the test we are here, then wait for its go.
            let _ = std::fs::write(format!("{path}.reached"), name);
            while !Path::new(path).exists() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        _ => {
            eprintln!("imagefs: failpoint {name}: aborting");
            std::process::abort();
        }
    }
}
