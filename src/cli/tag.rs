//! `imagefs tag` and `imagefs rm`.

use imagefs::Store;

use super::{parse_reference, CliError, Context};

/// `tag SRC DST`
#[derive(Debug, clap::Args)]
pub struct TagArgs {
    /// The image to tag: REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:...
    pub source: String,
    /// The new tag: REGISTRY/REPOSITORY[:TAG]
    #[arg(required_unless_present = "destinations_from")]
    pub destination: Option<String>,
    /// Bulk path for tools and benchmarks: also make every tag named in FILE (one
    /// reference a line, `-` for stdin), all in one transaction
    #[arg(long, hide = true, value_name = "FILE")]
    pub destinations_from: Option<std::path::PathBuf>,
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
    let Some(file) = &args.destinations_from else {
        let text = args.destination.as_deref().unwrap_or_default();
        let destination = parse_reference(text)?;
        let what = format!("tag {} {text}", args.source);
        let digest = store.tag(&source, &destination, args.force).context(what)?;
        println!("{destination} -> {digest}");
        return Ok(());
    };
    let what = format!("tag {} --destinations-from {}", args.source, file.display());
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context(&what)?
    } else {
        std::fs::read_to_string(file).context(&what)?
    };
    let mut destinations = Vec::new();
    for line in args
        .destination
        .iter()
        .map(String::as_str)
        .chain(text.lines())
    {
        if !line.trim().is_empty() {
            destinations.push(parse_reference(line.trim())?);
        }
    }
    let digest = store.resolve(&source).context(&what)?;
    store
        .set_tags(&destinations, &digest, args.force)
        .context(&what)?;
    println!("{} tags -> {digest}", destinations.len());
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
