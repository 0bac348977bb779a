//! `imagefs tag` and `imagefs rm`.

use imagefs::Store;

use super::{parse_reference, CliError, Context};

/// `tag SRC DST`
#[derive(Debug, clap::Args)]
pub struct TagArgs {
    /// The image to tag: REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:...
    pub source: String,
    /// The new tag: REGISTRY/REPOSITORY[:TAG]
    pub destination: String,
    /// Replace the destination tag if it exists
    #[arg(short, long)]
    pub force: bool,
}

/// `rm REF...`
#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// Tags (or REPOSITORY@DIGEST: every tag of that manifest there) to remove
    #[arg(required = true)]
    pub references: Vec<String>,
}

/// Tags without copying.
pub fn run_tag(store: &Store, args: &TagArgs) -> Result<(), CliError> {
    let source = parse_reference(&args.source)?;
    let destination = parse_reference(&args.destination)?;
    let what = format!("tag {} {}", args.source, args.destination);
    let digest = store.tag(&source, &destination, args.force).context(what)?;
    println!("{destination} -> {digest}");
    Ok(())
}

/// Untags, deleting what nothing references.
pub fn run_rm(store: &Store, args: &RmArgs) -> Result<(), CliError> {
    for text in &args.references {
        let reference = parse_reference(text)?;
        let deleted = store.untag(&reference).context(format!("rm {text}"))?;
        if deleted.is_empty() {
            println!("untagged {reference}");
        } else {
            println!(
                "untagged {reference}; deleted {} blob{}",
                deleted.len(),
                if deleted.len() == 1 { "" } else { "s" }
            );
        }
    }
    Ok(())
}
