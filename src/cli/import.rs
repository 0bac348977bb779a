//! `imagefs import SOURCE[:NAME] [REF]`: parses `PATH:NAME` (paths need not be
//! UTF-8), calls `Store::import`, prints what was stored.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use imagefs::{DecompressLimits, ImportOptions, Store};

use super::{
    human, parse_reference, parse_size, print_json, print_layer_warnings, printable, CliError,
    Context,
};

/// `import SOURCE [REF] [--registry R]`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// An OCI layout directory, an OCI archive or a docker-archive, optionally
    /// followed by `:NAME` to pick one image by the name it carries there
    pub source: OsString,
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
    /// How many layers are verified and written at once
    #[arg(long, value_name = "N", default_value_t = imagefs::DEFAULT_IMPORT_JOBS,
          value_parser = clap::value_parser!(usize))]
    pub jobs: usize,
}

/// Imports and prints what was stored.
pub fn run(store: &Store, args: &Args) -> Result<(), CliError> {
    let what = format!("import {}", Path::new(&args.source).display());
    imagefs::validate_registry(&args.registry).context(&what)?;
    let (path, name) = split_source_arg(&args.source);
    let name = name
        .map(|name| {
            name.to_str()
                .map(str::to_string)
                .ok_or_else(|| CliError::new(&what, "the image name after ':' is not valid UTF-8"))
        })
        .transpose()?;
    let options = ImportOptions {
        registry: args.registry.clone(),
        reference: args.reference.as_deref().map(parse_reference).transpose()?,
        progress: super::progress::import_progress(),
        decompress_limits: DecompressLimits {
            max_size: args.max_decompressed_size,
            ..DecompressLimits::default()
        },
        jobs: args.jobs.max(1),
        ..ImportOptions::default()
    };
    let report = store
        .import(&path, name.as_deref(), &options)
        .context(&what)?;
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

/// Splits an import argument `PATH[:NAME]`. If `arg` exists as a path it is all
/// path; otherwise the longest prefix ending before a `:` that exists is the path and
/// the rest the name (`./layout:app:1` -> `./layout`, `app:1`). If no prefix exists,
/// the whole argument is the path (opening it then reports it missing). Works on
/// bytes: a path need not be UTF-8.
pub fn split_source_arg(arg: &OsStr) -> (PathBuf, Option<OsString>) {
    if Path::new(arg).exists() {
        return (PathBuf::from(arg), None);
    }
    let bytes = arg.as_bytes();
    for colon in (0..bytes.len()).rev().filter(|&i| bytes[i] == b':') {
        let prefix = OsStr::from_bytes(&bytes[..colon]);
        if !prefix.is_empty() && Path::new(prefix).exists() {
            let name = &bytes[colon + 1..];
            return (
                PathBuf::from(prefix),
                (!name.is_empty()).then(|| OsStr::from_bytes(name).to_os_string()),
            );
        }
    }
    (PathBuf::from(arg), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_source_args() {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        std::fs::create_dir(&layout).unwrap();
        let colon_dir = dir.path().join("we:ird");
        std::fs::create_dir(&colon_dir).unwrap();
        let not_utf8 = dir.path().join(OsStr::from_bytes(b"lay\xffout"));
        std::fs::create_dir(&not_utf8).unwrap();
        let base = layout.clone().into_os_string();
        let weird = colon_dir.clone().into_os_string();
        let joined = |path: &OsStr, tail: &str| {
            let mut arg = path.to_os_string();
            arg.push(tail);
            arg
        };
        let table: Vec<(OsString, (PathBuf, Option<&str>))> = vec![
            (base.clone(), (layout.clone(), None)),
            (joined(&base, ":app:1"), (layout.clone(), Some("app:1"))),
            (joined(&base, ":latest"), (layout.clone(), Some("latest"))),
            (joined(&base, ":"), (layout.clone(), None)),
            (weird.clone(), (colon_dir.clone(), None)),
            (joined(&weird, ":x"), (colon_dir.clone(), Some("x"))),
            (
                joined(not_utf8.as_os_str(), ":app:1"),
                (not_utf8.clone(), Some("app:1")),
            ),
            (
                OsString::from("/no/such:thing"),
                (PathBuf::from("/no/such:thing"), None),
            ),
        ];
        for (arg, (path, name)) in table {
            assert_eq!(
                split_source_arg(&arg),
                (path, name.map(OsString::from)),
                "{arg:?}"
            );
        }
    }
}
