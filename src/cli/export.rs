//! `imagefs export REF PATH`.

use std::path::PathBuf;

use imagefs::{ExportFormat, Store};

use super::{parse_reference, CliError, Context};

/// `export REF PATH [--format oci|oci-archive|docker-archive]`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// REGISTRY/REPOSITORY[:TAG] or REGISTRY/REPOSITORY@sha256:...
    pub reference: String,
    /// Where to write: a directory for `oci`, a file otherwise
    pub path: PathBuf,
    /// Output format [default: oci-archive for a path ending in .tar, else oci]
    #[arg(long, value_enum)]
    pub format: Option<Format>,
}

/// `--format`: the CLI's names for [`ExportFormat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An OCI image layout directory
    Oci,
    /// A tar of an OCI image layout
    OciArchive,
    /// A `docker save` tarball
    DockerArchive,
}

impl From<Format> for ExportFormat {
    fn from(format: Format) -> Self {
        match format {
            Format::Oci => ExportFormat::Oci,
            Format::OciArchive => ExportFormat::OciArchive,
            Format::DockerArchive => ExportFormat::DockerArchive,
        }
    }
}

/// Exports one image.
pub fn run(store: &Store, args: &Args) -> Result<(), CliError> {
    let what = format!("export {} {}", args.reference, args.path.display());
    let reference = parse_reference(&args.reference)?;
    let format = args.format.map(ExportFormat::from).unwrap_or_else(|| {
        if args.path.extension().is_some_and(|e| e == "tar") {
            ExportFormat::OciArchive
        } else {
            ExportFormat::Oci
        }
    });
    store
        .export(std::slice::from_ref(&reference), &args.path, format)
        .context(what)?;
    println!("exported {reference} to {}", args.path.display());
    Ok(())
}
