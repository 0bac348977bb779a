//! `imagefs import SOURCE [REF]`.

use imagefs::store::{ImportOptions, Progress};
use imagefs::Store;

use super::{human, parse_reference, print_json, CliError, Context};

/// `import SOURCE [REF] [--registry R]`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// An OCI layout directory, an OCI archive or a docker-archive, optionally
    /// followed by `:NAME` to pick one image by the name it carries there
    pub source: String,
    /// Store the (one) selected image under this REGISTRY/REPOSITORY[:TAG]
    pub reference: Option<String>,
    /// Registry for image names that carry none
    #[arg(long, default_value = "local")]
    pub registry: String,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

/// Imports and prints what was stored.
pub fn run(store: &Store, args: &Args) -> Result<(), CliError> {
    let what = format!("import {}", args.source);
    imagefs::reference::validate_registry(&args.registry).context(&what)?;
    let options = ImportOptions {
        registry: args.registry.clone(),
        reference: args.reference.as_deref().map(parse_reference).transpose()?,
        progress: Progress::Bar,
    };
    let report = store.import(&args.source, &options).context(&what)?;
    if args.json {
        return print_json(&report);
    }
    for (reference, digest) in &report.images {
        println!("{reference} -> {digest}");
    }
    println!(
        "wrote {} new blobs ({}), {} already stored",
        report.blobs_written,
        human(report.bytes_written),
        report.blobs_present
    );
    Ok(())
}
