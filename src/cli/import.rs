//! `imagefs import SOURCE [REF]`.

use imagefs::archive::DecompressLimits;
use imagefs::store::{ImportOptions, Progress};
use imagefs::Store;

use super::{
    human, parse_reference, parse_size, print_json, print_layer_warnings, printable, CliError,
    Context,
};

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
    /// Largest size a .tar.gz or .tar.zst SOURCE may decompress to [default: 100
    /// times the archive's size, at least 256M]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_decompressed_size: Option<u64>,
}

/// Imports and prints what was stored.
pub fn run(store: &Store, args: &Args) -> Result<(), CliError> {
    let what = format!("import {}", args.source);
    imagefs::reference::validate_registry(&args.registry).context(&what)?;
    let options = ImportOptions {
        registry: args.registry.clone(),
        reference: args.reference.as_deref().map(parse_reference).transpose()?,
        progress: Progress::Bar,
        decompress_limits: DecompressLimits {
            max_size: args.max_decompressed_size,
            ..DecompressLimits::default()
        },
    };
    let report = store.import(&args.source, &options).context(&what)?;
    for image in &report.warnings {
        if let Some(error) = &image.error {
            eprintln!("imagefs: warning: {}: {}", image.image, printable(error));
        }
        print_layer_warnings(&image.image, &image.layers);
    }
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
