//! `imagefs inspect REF`.

use imagefs::{BlobKind, EntryWarning, ManifestView, Store};

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
    /// `present`, `lazy` (pulled with `--lazy`, bytes fetched when read) or `bad`.
    state: String,
    /// For a lazy layer: compressed bytes fetched so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    fetched_bytes: Option<u64>,
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
    let view = store
        .manifest_view(&digest)
        .context(&what)?
        .ok_or_else(|| CliError::new(&what, "manifest is not stored"))?;
    let out = Inspected {
        reference: reference.to_string(),
        digest: digest.to_string(),
        media_type: view.info.media_type.clone(),
        size: view.info.size,
        total_size: store.image_size(&digest).context(&what)?,
        platforms: view
            .platforms
            .iter()
            .map(|child| PlatformEntry {
                name: child.name.clone(),
                digest: child.digest.to_string(),
                media_type: child.media_type.clone(),
                size: child.size,
            })
            .collect(),
        config: config_info(store, &view, &what)?,
        layers: layer_infos(store, &view, &what),
        artifact_type: view.artifact_type.clone(),
        subject: view.subject.map(|s| s.to_string()),
    };
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
            if l.state != "present" {
                println!(
                    "      {}: {} fetched",
                    l.state,
                    human(l.fetched_bytes.unwrap_or(0))
                );
            }
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

/// The config of a manifest, parsed when it is an image's.
fn config_info(
    store: &Store,
    view: &ManifestView,
    what: &str,
) -> Result<Option<ConfigInfo>, CliError> {
    let Some(config) = &view.config else {
        return Ok(None);
    };
    let mut info = ConfigInfo {
        digest: config.digest.to_string(),
        media_type: config.media_type.clone(),
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
    if let Some(parsed) = store.image_config(view).context(what)? {
        info.os = Some(parsed.os);
        info.architecture = Some(parsed.architecture);
        info.variant = parsed.variant;
        info.created = parsed.created;
        info.env = parsed.summary.env;
        info.entrypoint = parsed.summary.entrypoint;
        info.cmd = parsed.summary.cmd;
        info.working_dir = parsed.summary.working_dir;
        info.user = parsed.summary.user;
        info.exposed_ports = parsed.summary.exposed_ports;
        info.labels = parsed.summary.labels;
    }
    Ok(Some(info))
}

/// The layers of a manifest, with the entries an image's rootfs leaves out.
fn layer_infos(store: &Store, view: &ManifestView, what: &str) -> Vec<LayerInfo> {
    let mut layers: Vec<LayerInfo> = view
        .layers
        .iter()
        .map(|layer| LayerInfo {
            digest: layer.digest.to_string(),
            media_type: layer.media_type.clone(),
            size: layer.size,
            diff_id: layer
                .blob
                .as_ref()
                .filter(|blob| blob.kind == BlobKind::Layer)
                .and_then(|blob| blob.diff_id)
                .map(|d| d.to_string()),
            state: layer
                .blob
                .as_ref()
                .map_or("missing", |blob| blob.state.as_str())
                .to_string(),
            fetched_bytes: layer
                .blob
                .as_ref()
                .filter(|blob| blob.state != imagefs::BlobState::Present)
                .and_then(|blob| store.lazy_progress(&blob.digest).ok())
                .map(|progress| progress.fetched_bytes),
            warnings_total: 0,
            warnings: Vec::new(),
        })
        .collect();
    if view.is_image() {
        let digests: Vec<_> = view.layers.iter().map(|layer| layer.digest).collect();
        // What the rootfs leaves out is extra information: the image is shown even
        // when a layer index cannot be read.
        match store.skipped_entries(&digests) {
            Ok(skipped) => {
                for layer in skipped {
                    if let Some(info) = layers.get_mut(layer.position) {
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
    layers
}
