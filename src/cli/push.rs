//! `imagefs push LOCAL-REF [REMOTE-REF]`: parses, calls `Store::push`, prints the
//! report.

use imagefs::{PushOptions, Store};

use super::{human, parse_reference, print_json, printable, CliError, Context, RemoteArgs};

/// `push LOCAL-REF [REMOTE-REF] [--jobs N] [--json]`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The stored image: REGISTRY/REPOSITORY[:TAG]
    pub local_reference: String,
    /// Where to push it: REGISTRY/REPOSITORY[:TAG] [default: LOCAL-REF]
    pub remote_reference: Option<String>,
    /// How many blobs are sent at once
    #[arg(long, value_name = "N", default_value_t = imagefs::DEFAULT_PULL_JOBS,
          value_parser = clap::value_parser!(usize))]
    pub jobs: usize,
    /// Do not attach the store's layer indexes as an index artifact
    #[arg(long)]
    pub no_index: bool,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// Pushes and prints what was sent.
pub fn run(store: &Store, args: &Args) -> Result<(), CliError> {
    let destination = args
        .remote_reference
        .as_deref()
        .unwrap_or(&args.local_reference);
    let what = format!("push {destination}");
    let local = parse_reference(&args.local_reference)?;
    let remote = parse_reference(destination)?;
    let options = PushOptions {
        remote: args.remote.options().context(&what)?,
        jobs: args.jobs.max(1),
        progress: super::progress::transfer_progress("pushing"),
        index: !args.no_index,
    };
    let report = store.push(&local, &remote, &options).context(&what)?;
    for warning in &report.index_warnings {
        eprintln!("imagefs: warning: {what}: {}", printable(warning));
    }
    if args.json {
        return print_json(&report);
    }
    if let Some(digest) = &report.digest {
        println!("{} -> {digest}", report.reference);
    }
    println!(
        "uploaded {} blobs ({}), mounted {}, {} already there; {} manifests written",
        report.blobs_uploaded,
        human(report.bytes_uploaded),
        report.blobs_mounted,
        report.blobs_skipped,
        report.manifests_pushed
    );
    for attached in &report.index_artifacts {
        println!(
            "index artifact {} for {} ({} layers, in {})",
            attached.digest, attached.subject, attached.layers, attached.listed_in
        );
    }
    Ok(())
}
