//! `imagefs demo [DIR]`: a store of sample images, mounted, with a short tour.

use std::path::{Path, PathBuf};

use imagefs::{ImportOptions, Store};

use super::mount::{run_mount, MountArgs};
use super::{CliError, Context};

/// `demo [DIR]`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to put the demo store and mountpoint
    #[arg(default_value = "/tmp/imagefs-demo")]
    pub dir: PathBuf,
}

/// Builds the sample images, imports them, mounts the store and prints a tour.
pub fn run(args: &Args) -> Result<(), CliError> {
    let what = format!("demo {}", args.dir.display());
    std::fs::create_dir_all(&args.dir).context(&what)?;
    let dir = args.dir.canonicalize().context(&what)?;
    let store_root = dir.join("store");
    let mountpoint = dir.join("mnt");
    let layout = dir.join("sample-images");
    // A previous demo may still be mounted: start clean.
    if imagefs::is_mounted(&mountpoint).unwrap_or(false) {
        imagefs::unmount(&mountpoint).context(&what)?;
    }
    std::fs::create_dir_all(&mountpoint).context(&what)?;
    let images = imagefs::write_demo_layout(&layout).context(&what)?;
    let store = Store::open(&store_root).context(&what)?;
    let report = store
        .import(
            &layout,
            None,
            &ImportOptions {
                progress: super::progress::import_progress(),
                ..ImportOptions::default()
            },
        )
        .context(&what)?;
    drop(store);
    run_mount(
        &store_root,
        &MountArgs {
            mountpoint: mountpoint.clone(),
            foreground: false,
            allow_other: false,
            read_only: false,
            threads: imagefs::DEFAULT_THREADS,
            cache_size: None,
            pull_through: Vec::new(),
            remote: super::RemoteArgs::default(),
        },
    )
    .map_err(CliError::line)?;
    print_tour(&store_root, &mountpoint, images.len(), report.blobs_written);
    Ok(())
}

/// How the tour names the binary: `imagefs` when the one on PATH is this one, else
/// the running binary's path (after `cargo run` there is no `imagefs` on PATH).
fn binary_name() -> String {
    let Ok(exe) = std::env::current_exe() else {
        return "imagefs".to_string();
    };
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            dir.join("imagefs")
                .canonicalize()
                .is_ok_and(|found| Some(found) == exe.canonicalize().ok())
        })
    });
    if on_path {
        "imagefs".to_string()
    } else {
        exe.display().to_string()
    }
}

fn print_tour(store: &Path, mnt: &Path, images: usize, blobs: u64) {
    let m = mnt.display();
    let s = store.display();
    let imagefs = binary_name();
    let lib = format!("{m}/docker.io/library");
    println!("imagefs demo: {images} sample images ({blobs} new blobs) in {s}, mounted at {m}");
    println!();
    println!("Browse:");
    println!("  ls {lib}/");
    println!("  ls -l {lib}/sample-app/tags/");
    println!("  cat {lib}/sample-app/tags/1.1/manifest.json");
    println!("  cat {lib}/sample-app/tags/1.1/rootfs/etc/os-release");
    println!("  diff -r {lib}/sample-app/tags/1.0/rootfs {lib}/sample-app/tags/1.1/rootfs");
    println!("  ls -l {lib}/sample-multi/tags/latest/platforms/");
    println!("  sha256sum {lib}/sample-app/tags/1.1/layers/*/blob");
    println!();
    println!("Manage with plain shell:");
    println!("  mkdir -p {m}/prod/sample-app");
    println!("  ln -s {lib}/sample-app/tags/1.1 {m}/prod/sample-app/tags/1.1   # promote: no data copied");
    println!("  rm {lib}/sample-app/tags/1.1                                   # untag; shared blobs stay");
    println!("  {imagefs} --store {s} df");
    println!();
    println!("When done: {imagefs} unmount {m}");
    if imagefs != "imagefs" {
        println!("(imagefs is not on PATH: `cargo install --path .` puts it in ~/.cargo/bin)");
    }
}
