//! `imagefs ls [PREFIX]`, and `imagefs ls --remote REGISTRY/REPOSITORY`: the tags
//! of a remote repository.

use std::io::Write;

use imagefs::{RegistryClient, Store};

use super::{human, print_json, CliError, Context, RemoteArgs};

/// `ls [PREFIX] [--json]`, `ls --remote REGISTRY/REPOSITORY [--json]`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only registries/repositories starting with this, e.g. `docker.io` or `dev/app`;
    /// with --remote, the REGISTRY/REPOSITORY to list
    pub prefix: Option<String>,
    /// List the tags of a repository in a registry over the network
    #[arg(long)]
    pub remote: bool,
    /// With --remote: ask for this many tags per request (the registry's `n`)
    #[arg(long, value_name = "N", requires = "remote")]
    pub page_size: Option<usize>,
    /// Print as JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub registry: RemoteArgs,
}

#[derive(serde::Serialize)]
struct RemoteTags {
    registry: String,
    repository: String,
    tags: Vec<String>,
}

/// Lists the tags of a remote repository, every page of them.
pub fn run_remote(args: &Args) -> Result<(), CliError> {
    let Some(name) = args.prefix.as_deref() else {
        return Err(CliError::line(
            "ls --remote: name a repository: imagefs ls --remote REGISTRY/REPOSITORY".into(),
        ));
    };
    let what = format!("ls --remote {name}");
    let Some((registry, repository)) = name.trim_end_matches('/').split_once('/') else {
        return Err(CliError::new(
            &what,
            "expected REGISTRY/REPOSITORY, e.g. localhost:5000/team/app",
        ));
    };
    imagefs::validate_registry(registry).context(&what)?;
    imagefs::reference::validate_repository(repository).context(&what)?;
    let options = args.registry.options().context(&what)?;
    let client = RegistryClient::new(registry, &options).context(&what)?;
    let mut tags = client
        .list_tags(repository, args.page_size)
        .context(&what)?
        .tags;
    tags.sort();
    tags.dedup();
    if args.json {
        return print_json(&RemoteTags {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tags,
        });
    }
    if tags.is_empty() {
        eprintln!("{registry}/{repository}: no tags");
    }
    for tag in tags {
        println!("{registry}/{repository}:{tag}");
    }
    Ok(())
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
