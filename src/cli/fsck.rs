//! `imagefs fsck` and `imagefs gc`.

use imagefs::Store;

use super::{human, print_json, CliError, Context};

/// `fsck [--repair]`
#[derive(Debug, clap::Args)]
pub struct FsckArgs {
    /// Fix counts and remove unreferenced leftovers (never a referenced blob)
    #[arg(long)]
    pub repair: bool,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

/// `gc`
#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// Cap for cache/ (e.g. 2G, 500M); least recently used layers are evicted
    /// [default: $IMAGEFS_CACHE_SIZE, else 10G]
    #[arg(long, value_name = "SIZE", value_parser = super::parse_size)]
    pub cache_size: Option<u64>,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

/// Checks the store; exit 1 when anything referenced is missing or corrupt.
pub fn run_fsck(store: &Store, args: &FsckArgs) -> Result<(), CliError> {
    let report = store.fsck(args.repair).context("fsck")?;
    if args.json {
        print_json(&report)?;
    } else {
        println!(
            "checked {} blobs, {} unpacked files",
            report.blobs_checked, report.cache_files_checked
        );
        for (label, items) in [
            ("missing", &report.missing),
            ("corrupt", &report.corrupt),
            ("bad lazy layer", &report.bad),
            ("lazy layer (not fetched yet, not missing)", &report.lazy),
            ("damaged cache", &report.cache_damaged),
            ("wrong count", &report.bad_counts),
            ("dangling", &report.dangling),
            ("leftover", &report.leftovers),
            ("repaired", &report.repaired),
        ] {
            for item in items {
                println!("{label}: {item}");
            }
        }
    }
    let problems =
        report.missing.len() + report.corrupt.len() + report.dangling.len() + report.bad.len();
    let fixable = report.bad_counts.len() + report.cache_damaged.len();
    if problems > 0 || (!args.repair && fixable > 0) {
        return Err(CliError::new(
            "fsck",
            format!(
                "{} missing, {} corrupt, {} bad lazy layers, {} dangling, {} wrong counts, {} damaged cache files",
                report.missing.len(),
                report.corrupt.len(),
                report.bad.len(),
                report.dangling.len(),
                report.bad_counts.len(),
                report.cache_damaged.len()
            ),
        ));
    }
    if !args.json {
        println!(
            "ok{}",
            if report.leftovers.is_empty() || args.repair {
                String::new()
            } else {
                format!(
                    " ({} unreferenced leftovers; `imagefs fsck --repair` or `imagefs gc` removes them)",
                    report.leftovers.len()
                )
            }
        );
    }
    Ok(())
}

/// Removes leftovers.
pub fn run_gc(store: &Store, args: &GcArgs) -> Result<(), CliError> {
    let cap = args.cache_size.unwrap_or_else(super::default_cache_size);
    let report = store.gc_with_cache_cap(Some(cap)).context("gc")?;
    if args.json {
        return print_json(&report);
    }
    println!(
        "removed {} unreferenced blobs ({}), {} temp files, {} cache entries; evicted {} of unpacked layers; {} dead leases dropped",
        report.blobs_removed,
        human(report.blob_bytes_freed),
        report.temp_removed,
        report.cache_entries_removed,
        human(report.cache_bytes_evicted),
        report.leases_expired
    );
    Ok(())
}
