//! `imagefs why`.

use imagefs::{Digest, FreedBlobs, Reference, Store, Target, WhyReport};

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
    print!("{}", render(&report, tag.as_ref().zip(freed.as_ref())));
    Ok(())
}

/// The text form: a head line, one line per chain, leases, and for a tag what
/// removing it frees. Built whole, so that 100,000 chains cost one write.
fn render(report: &WhyReport, tag: Option<(&Reference, &FreedBlobs)>) -> String {
    let mut lines = Vec::with_capacity(report.chains.len() + 4);
    let kind = report
        .kind
        .map(|k| format!("{k:?}").to_lowercase())
        .unwrap_or_else(|| "not stored".to_string());
    let size = report
        .size
        .map(|s| format!(", {}", human(s)))
        .unwrap_or_default();
    lines.push(format!(
        "{} ({kind}{size}): count {}",
        report.digest, report.refcount
    ));
    lines.extend(report.chains.iter().map(|chain| chain.to_string()));
    for lease in &report.leases {
        lines.push(format!(
            "lease held by pid {}{}",
            lease.pid,
            if lease.alive {
                " (an import or pull in progress)"
            } else {
                " (dead: gc drops it)"
            }
        ));
    }
    if report.chains.is_empty() && report.leases.iter().all(|l| !l.alive) {
        lines.push(if report.on_disk {
            "nothing keeps it: gc removes it".to_string()
        } else {
            "nothing keeps it".to_string()
        });
    }
    if let Some((reference, freed)) = tag {
        if freed.blobs.is_empty() {
            lines.push(format!(
                "removing {reference} frees nothing: other tags keep its manifest"
            ));
        } else {
            lines.push(format!(
                "removing {reference} frees {} in {} blob{}:",
                human(freed.bytes),
                freed.blobs.len(),
                if freed.blobs.len() == 1 { "" } else { "s" }
            ));
            for blob in &freed.blobs {
                lines.push(format!("  {} {}", blob.digest, human(blob.size)));
            }
        }
    }
    let mut text = lines.join("\n");
    text.push('\n');
    text
}
