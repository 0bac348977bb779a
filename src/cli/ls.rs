//! `imagefs ls [PREFIX]`.

use std::io::Write;

use imagefs::Store;

use super::{human, print_json, CliError, Context};

/// `ls [PREFIX] [--json]`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only registries/repositories starting with this, e.g. `docker.io` or `dev/app`
    pub prefix: Option<String>,
    /// Print as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Serialize)]
struct Row {
    registry: String,
    repository: Option<String>,
    tag: Option<String>,
    digest: Option<String>,
    media_type: Option<String>,
    size: Option<u64>,
}

/// Lists tags (and empty registries and repositories).
pub fn run(store: &Store, args: &Args) -> Result<(), CliError> {
    let prefix = args.prefix.as_deref().unwrap_or("").trim_end_matches('/');
    let rows: Vec<Row> = store
        .list(prefix)
        .context("ls")?
        .into_iter()
        .map(|entry| Row {
            registry: entry.registry,
            repository: entry.repository,
            tag: entry.tag,
            digest: entry.digest.map(|d| d.to_string()),
            media_type: entry.media_type,
            size: entry.size,
        })
        .collect();
    if args.json {
        return print_json(&rows);
    }
    if rows.is_empty() {
        if !prefix.is_empty() {
            return Err(CliError::new(format!("ls {prefix}"), "nothing matches"));
        }
        println!("the store is empty: `imagefs import SOURCE` adds images");
        return Ok(());
    }
    // One write per line would cost a system call each: 100,000 tags print in one go.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let _ = writeln!(out, "{:<60} {:<19} {:>10}", "REFERENCE", "DIGEST", "SIZE");
    for row in rows {
        let name = match (&row.repository, &row.tag) {
            (Some(repo), Some(tag)) => format!("{}/{repo}:{tag}", row.registry),
            (Some(repo), None) => format!("{}/{repo} (no tags)", row.registry),
            _ => format!("{} (no repositories)", row.registry),
        };
        let digest = row
            .digest
            .as_deref()
            .map(|d| d.chars().take(19).collect::<String>())
            .unwrap_or_default();
        let size = row.size.map(human).unwrap_or_default();
        let _ = writeln!(out, "{name:<60} {digest:<19} {size:>10}");
    }
    let _ = out.flush();
    Ok(())
}
