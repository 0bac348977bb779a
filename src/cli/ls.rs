//! `imagefs ls [PREFIX]`.

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
    let matches = |name: &str| {
        prefix.is_empty()
            || name == prefix
            || name.starts_with(&format!("{prefix}/"))
            || name.starts_with(&format!("{prefix}:"))
    };
    let mut rows = Vec::new();
    let repositories = store.repositories(None).context("ls")?;
    for registry in store.registries().context("ls")? {
        let repos: Vec<_> = repositories
            .iter()
            .filter(|r| r.registry == registry.name)
            .collect();
        if repos.is_empty() && matches(&registry.name) {
            rows.push(Row {
                registry: registry.name.clone(),
                repository: None,
                tag: None,
                digest: None,
                media_type: None,
                size: None,
            });
        }
        for repo in repos {
            let full = format!("{}/{}", repo.registry, repo.name);
            let tags = store.tags(&repo.registry, &repo.name).context("ls")?;
            if tags.is_empty() && matches(&full) {
                rows.push(Row {
                    registry: repo.registry.clone(),
                    repository: Some(repo.name.clone()),
                    tag: None,
                    digest: None,
                    media_type: None,
                    size: None,
                });
            }
            for tag in tags {
                if !matches(&format!("{full}:{}", tag.name)) && !matches(&full) {
                    continue;
                }
                let info = store.blob(&tag.manifest).context("ls")?;
                rows.push(Row {
                    registry: repo.registry.clone(),
                    repository: Some(repo.name.clone()),
                    tag: Some(tag.name.clone()),
                    digest: Some(tag.manifest.to_string()),
                    media_type: info.map(|i| i.media_type),
                    size: Some(store.image_size(&tag.manifest).context("ls")?),
                });
            }
        }
    }
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
    println!("{:<60} {:<19} {:>10}", "REFERENCE", "DIGEST", "SIZE");
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
        println!("{name:<60} {digest:<19} {size:>10}");
    }
    Ok(())
}
