//! `imagefs inspect REF`.

use imagefs::image::{self, Parsed};
use imagefs::{BlobKind, EdgeKind, EntryWarning, Store};

use super::{human, parse_reference, print_json, printable, CliError, Context};

/// `inspect REF [--json]`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// REGISTRY/REPOSITORY[:TAG] or REGISTRY/REPOSITORY@sha256:...
    pub reference: String,
    /// Print as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Serialize)]
struct Inspected {
    reference: String,
    digest: String,
    media_type: String,
    size: u64,
    total_size: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    platforms: Vec<PlatformEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<ConfigInfo>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    layers: Vec<LayerInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
}

#[derive(serde::Serialize)]
struct PlatformEntry {
    name: String,
    digest: String,
    media_type: String,
    size: u64,
}

#[derive(serde::Serialize)]
struct ConfigInfo {
    digest: String,
    media_type: String,
    os: Option<String>,
    architecture: Option<String>,
    variant: Option<String>,
    created: Option<String>,
    env: Vec<String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    working_dir: Option<String>,
    user: Option<String>,
    exposed_ports: Vec<String>,
    labels: std::collections::BTreeMap<String, String>,
}

#[derive(serde::Serialize)]
struct LayerInfo {
    digest: String,
    media_type: String,
    size: u64,
    diff_id: Option<String>,
    /// Entries the rootfs leaves out or changes (hostile or malformed tar entries).
    #[serde(skip_serializing_if = "is_zero")]
    warnings_total: usize,
    /// The first of them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<EntryWarning>,
}

fn is_zero(count: &usize) -> bool {
    *count == 0
}

/// Shows one image.
pub fn run(store: &Store, args: &Args) -> Result<(), CliError> {
    let what = format!("inspect {}", args.reference);
    let reference = parse_reference(&args.reference)?;
    let digest = store.resolve(&reference).context(&what)?;
    let info = store
        .blob(&digest)
        .context(&what)?
        .ok_or_else(|| CliError::new(&what, "manifest is not stored"))?;
    let bytes = store.read_blob(&digest).context(&what)?;
    let parsed = image::parse_top(&bytes, Some(&info.media_type)).context(&what)?;
    let mut out = Inspected {
        reference: reference.to_string(),
        digest: digest.to_string(),
        media_type: info.media_type.clone(),
        size: info.size,
        total_size: store.image_size(&digest).context(&what)?,
        platforms: Vec::new(),
        config: None,
        layers: Vec::new(),
        artifact_type: None,
        subject: None,
    };
    let edges = store.edges(&digest).context(&what)?;
    match parsed {
        Parsed::Index(index) => {
            let children: Vec<_> = index
                .manifests
                .iter()
                .map(|d| (d.digest, d.platform.clone()))
                .collect();
            let names = image::unique_platform_names(&children);
            for (child, name) in index.manifests.iter().zip(names) {
                out.platforms.push(PlatformEntry {
                    name,
                    digest: child.digest.to_string(),
                    media_type: child.media_type.clone(),
                    size: child.size,
                });
            }
            out.artifact_type = index.artifact_type;
            out.subject = index.subject.map(|s| s.digest.to_string());
        }
        Parsed::Manifest(manifest) => {
            let mut config = ConfigInfo {
                digest: manifest.config.digest.to_string(),
                media_type: manifest.config.media_type.clone(),
                os: None,
                architecture: None,
                variant: None,
                created: None,
                env: Vec::new(),
                entrypoint: Vec::new(),
                cmd: Vec::new(),
                working_dir: None,
                user: None,
                exposed_ports: Vec::new(),
                labels: Default::default(),
            };
            if manifest.is_image() {
                let config_bytes = store.read_blob(&manifest.config.digest).context(&what)?;
                let parsed = image::parse_config(&config_bytes).context(&what)?;
                config.os = Some(parsed.os);
                config.architecture = Some(parsed.architecture);
                config.variant = parsed.variant;
                config.created = parsed.created;
                config.env = parsed.summary.env;
                config.entrypoint = parsed.summary.entrypoint;
                config.cmd = parsed.summary.cmd;
                config.working_dir = parsed.summary.working_dir;
                config.user = parsed.summary.user;
                config.exposed_ports = parsed.summary.exposed_ports;
                config.labels = parsed.summary.labels;
            }
            out.config = Some(config);
            for edge in edges.iter().filter(|e| e.kind == EdgeKind::Layer) {
                let layer = store.blob(&edge.child).context(&what)?;
                out.layers.push(LayerInfo {
                    digest: edge.child.to_string(),
                    media_type: edge.media_type.clone(),
                    size: edge.size,
                    diff_id: layer
                        .filter(|l| l.kind == BlobKind::Layer)
                        .and_then(|l| l.diff_id)
                        .map(|d| d.to_string()),
                    warnings_total: 0,
                    warnings: Vec::new(),
                });
            }
            if manifest.is_image() {
                let layers: Vec<_> = manifest.layers.iter().map(|l| l.digest).collect();
                // What the rootfs leaves out is extra information: the image is
                // shown even when a layer index cannot be read.
                match store.skipped_entries(&layers) {
                    Ok(skipped) => {
                        for layer in skipped {
                            if let Some(info) = out.layers.get_mut(layer.position) {
                                info.warnings_total = layer.total;
                                info.warnings = layer.warnings;
                            }
                        }
                    }
                    Err(e) => eprintln!(
                        "imagefs: warning: {what}: cannot check for skipped entries: {}",
                        printable(&e.to_string())
                    ),
                }
            }
            out.artifact_type = manifest.artifact_type;
            out.subject = manifest.subject.map(|s| s.digest.to_string());
        }
    }
    if args.json {
        return print_json(&out);
    }
    println!("Reference:  {}", out.reference);
    println!("Digest:     {}", out.digest);
    println!("MediaType:  {}", out.media_type);
    println!(
        "Size:       {} (with everything it references: {})",
        human(out.size),
        human(out.total_size)
    );
    if let Some(artifact_type) = &out.artifact_type {
        println!("Artifact:   {artifact_type}");
    }
    if let Some(subject) = &out.subject {
        println!("Subject:    {subject}");
    }
    if !out.platforms.is_empty() {
        println!("Platforms:");
        for p in &out.platforms {
            println!("  {:<28} {}  {}", p.name, p.digest, human(p.size));
        }
    }
    if let Some(c) = &out.config {
        println!("Config:     {} ({})", c.digest, c.media_type);
        if let (Some(os), Some(arch)) = (&c.os, &c.architecture) {
            let variant = c
                .variant
                .as_deref()
                .map(|v| format!("/{v}"))
                .unwrap_or_default();
            println!("  Platform:   {os}/{arch}{variant}");
        }
        if let Some(created) = &c.created {
            println!("  Created:    {created}");
        }
        if !c.entrypoint.is_empty() {
            println!("  Entrypoint: {:?}", c.entrypoint);
        }
        if !c.cmd.is_empty() {
            println!("  Cmd:        {:?}", c.cmd);
        }
        if let Some(dir) = &c.working_dir {
            println!("  WorkingDir: {dir}");
        }
        if let Some(user) = &c.user {
            println!("  User:       {user}");
        }
        for env in &c.env {
            println!("  Env:        {env}");
        }
        for port in &c.exposed_ports {
            println!("  Expose:     {port}");
        }
        for (k, v) in &c.labels {
            println!("  Label:      {k}={v}");
        }
    }
    if !out.layers.is_empty() {
        println!("Layers:");
        for (i, l) in out.layers.iter().enumerate() {
            println!(
                "  {i:03} {}  {:>10}  {}",
                l.digest,
                human(l.size),
                l.media_type
            );
            for warning in &l.warnings {
                println!(
                    "      warning: {}: {}",
                    printable(&warning.path),
                    printable(&warning.reason)
                );
            }
            let more = l.warnings_total.saturating_sub(l.warnings.len());
            if more > 0 {
                println!("      warning: and {more} more entries skipped or changed");
            }
        }
    }
    Ok(())
}
