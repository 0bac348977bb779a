//! `imagefs why`.

use imagefs::store::{FreedBlobs, WhyReport};
use imagefs::{Digest, Reference, Store, Target};

use super::{human, print_json, CliError, Context};

/// `why REF|sha256:<hex> [--json]`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A tag (REGISTRY/REPOSITORY:TAG), a manifest (REGISTRY/REPOSITORY@sha256:...),
    /// or any blob's digest (sha256:<hex>)
    pub what: String,
    /// Print as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Serialize)]
struct Output<'a> {
    #[serde(flatten)]
    report: &'a WhyReport,
    /// For a tag: what removing it would free.
    #[serde(skip_serializing_if = "Option::is_none")]
    removing_tag_frees: Option<&'a FreedBlobs>,
}

/// Prints every chain that keeps a manifest or blob alive.
pub fn run(store: &Store, args: &Args) -> Result<(), CliError> {
    let what = format!("why {}", args.what);
    let (digest, tag) = if args.what.starts_with("sha256:") {
        (Digest::parse(&args.what).context(&what)?, None)
    } else {
        let reference = Reference::parse(&args.what).context(&what)?;
        let digest = store.resolve(&reference).context(&what)?;
        let tag = matches!(reference.target, Target::Tag(_)).then_some(reference);
        (digest, tag)
    };
    let report = store.why(&digest).context(&what)?;
    let freed = match &tag {
        Some(reference) => Some(store.untag_preview(reference).context(&what)?),
        None => None,
    };
    if args.json {
        return print_json(&Output {
            report: &report,
            removing_tag_frees: freed.as_ref(),
        });
    }
    let kind = report
        .kind
        .map(|k| format!("{k:?}").to_lowercase())
        .unwrap_or_else(|| "not stored".to_string());
    let size = report.size.map(human).unwrap_or_default();
    println!(
        "{} ({kind}{}{size}): count {}",
        report.digest,
        if size.is_empty() { "" } else { ", " },
        report.refcount
    );
    for chain in &report.chains {
        println!("{chain}");
    }
    for lease in &report.leases {
        println!(
            "lease held by pid {}{}",
            lease.pid,
            if lease.alive {
                " (an import or pull in progress)"
            } else {
                " (dead: gc drops it)"
            }
        );
    }
    if report.chains.is_empty() && report.leases.iter().all(|l| !l.alive) {
        if report.on_disk {
            println!("nothing keeps it: gc removes it");
        } else {
            println!("nothing keeps it");
        }
    }
    if let (Some(reference), Some(freed)) = (&tag, &freed) {
        if freed.blobs.is_empty() {
            println!("removing {reference} frees nothing: other tags keep its manifest");
        } else {
            println!(
                "removing {reference} frees {} in {} blob{}:",
                human(freed.bytes),
                freed.blobs.len(),
                if freed.blobs.len() == 1 { "" } else { "s" }
            );
            for blob in &freed.blobs {
                println!("  {} {}", blob.digest, human(blob.size));
            }
        }
    }
    Ok(())
}
