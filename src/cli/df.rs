//! `imagefs df`.

use imagefs::Store;

use super::{human, print_json, CliError, Context};

/// `df [--json]`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print as JSON
    #[arg(long)]
    pub json: bool,
}

/// Prints space accounting.
pub fn run(store: &Store, args: &Args) -> Result<(), CliError> {
    let report = store.df().context("df")?;
    if args.json {
        #[derive(serde::Serialize)]
        struct WithTags<'a> {
            #[serde(flatten)]
            report: &'a imagefs::DfReport,
            /// Per tag, what removing it alone would free.
            tags: Vec<imagefs::TagBytes>,
        }
        let tags = store.tag_exclusive_bytes().context("df")?;
        return print_json(&WithTags {
            report: &report,
            tags,
        });
    }
    println!(
        "stored   {:>10}  in {} blobs (each stored once)",
        human(report.stored_bytes),
        report.blob_count
    );
    println!(
        "images   {:>10}  if every repository kept its own copy",
        human(report.logical_bytes)
    );
    println!(
        "shared   {:>10}  used by more than one repository",
        human(report.shared_bytes)
    );
    println!(
        "unique   {:>10}  used by exactly one repository",
        human(report.unique_bytes)
    );
    println!(
        "cache    {:>10}  derived data (may be deleted)",
        human(report.cache_bytes)
    );
    if report.lazy_layers > 0 {
        println!(
            "lazy     {:>10}  fetched of {} lazy layers, {} not fetched yet",
            human(report.lazy_fetched_bytes),
            report.lazy_layers,
            human(report.lazy_missing_bytes)
        );
    }
    println!();
    println!(
        "{:<50} {:>10} {:>10} {:>10}",
        "REGISTRY / REPOSITORY", "TOTAL", "UNIQUE", "SHARED"
    );
    for registry in &report.registries {
        println!(
            "{:<50} {:>10} {:>10} {:>10}",
            registry.name,
            human(registry.total_bytes),
            human(registry.unique_bytes),
            human(registry.shared_bytes)
        );
        let prefix = format!("{}/", registry.name);
        for repo in report
            .repositories
            .iter()
            .filter(|r| r.name.starts_with(&prefix))
        {
            println!(
                "  {:<48} {:>10} {:>10} {:>10}",
                &repo.name[prefix.len()..],
                human(repo.total_bytes),
                human(repo.unique_bytes),
                human(repo.shared_bytes)
            );
        }
    }
    Ok(())
}
