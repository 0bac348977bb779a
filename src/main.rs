//! TEMPORARY `imagefs` binary for the `fs` branch: dispatches only `mount` and
//! `unmount`. The real CLI (src/cli/mod.rs and this file) replaces it at merge.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli {
    pub mod mount;
}

#[derive(Parser, Debug)]
#[command(
    name = "imagefs",
    version,
    about = "Container images in a content-addressed store, mounted"
)]
struct Cli {
    /// Store directory.
    #[arg(long, global = true)]
    store: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Mount the store.
    Mount(cli::mount::MountArgs),
    /// Unmount a mount (also after its daemon died).
    Unmount(cli::mount::UnmountArgs),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let store = cli.store.unwrap_or_else(imagefs::store::default_root);
    let result = match &cli.command {
        Command::Mount(args) => cli::mount::run_mount(&store, args),
        Command::Unmount(args) => cli::mount::run_unmount(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("imagefs: {error}");
            ExitCode::FAILURE
        }
    }
}
