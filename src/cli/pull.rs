//! `imagefs pull REF [LOCAL-REF]`: parses, calls `Store::pull`, prints the report.

use imagefs::{PullOptions, Store};

use super::{
    human, parse_reference, print_json, print_layer_warnings, printable, CliError, Context,
    RemoteArgs,
};

/// `pull REF [LOCAL-REF] [--platform P] [--lazy] [--jobs N] [--json]`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image in a registry: REGISTRY/REPOSITORY[:TAG] or REGISTRY/REPOSITORY@sha256:...
    pub reference: String,
    /// Store it under this REGISTRY/REPOSITORY[:TAG] instead
    pub local_reference: Option<String>,
    /// Of a multi-platform index, pull only this platform and store it as a plain image
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// How many blobs are fetched at once
    #[arg(long, value_name = "N", default_value_t = imagefs::DEFAULT_PULL_JOBS,
          value_parser = clap::value_parser!(usize))]
    pub jobs: usize,
    /// Store manifests and configs now, layer bytes only when read (by HTTP range)
    #[arg(long)]
    pub lazy: bool,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// Pulls and prints what was stored.
pub fn run(store: &Store, args: &Args) -> Result<(), CliError> {
    let what = format!("pull {}", args.reference);
    let reference = parse_reference(&args.reference)?;
    let options = PullOptions {
        remote: args.remote.options().context(&what)?,
        local: args
            .local_reference
            .as_deref()
            .map(parse_reference)
            .transpose()?,
        platform: args
            .platform
            .as_deref()
            .map(imagefs::parse_platform)
            .transpose()
            .context(&what)?,
        jobs: args.jobs.max(1),
        lazy: args.lazy,
        progress: super::progress::transfer_progress("pulling"),
    };
    let report = store.pull(&reference, &options).context(&what)?;
    for image in &report.warnings {
        if let Some(error) = &image.error {
            eprintln!("imagefs: warning: {}: {}", image.image, printable(error));
        }
        print_layer_warnings(&image.image, &image.layers);
    }
    if args.json {
        return print_json(&report);
    }
    println!("{} -> {}", report.reference, report.digest);
    println!(
        "fetched {} blobs ({}), {} already stored",
        report.blobs_fetched,
        human(report.bytes_fetched),
        report.blobs_skipped
    );
    if report.lazy_layers > 0 {
        println!(
            "{} layers lazy: {} fetched whole (small or not gzip), {} indexed by streaming once; the rest is fetched when read",
            report.lazy_layers, report.lazy_fetched_whole, report.layers_streamed
        );
    }
    Ok(())
}
