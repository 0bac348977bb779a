//! The `imagefs` binary: parse, run, print errors once, exit with a code.

mod cli;

use clap::Parser;

fn main() {
    // Output piped into `head` should end the program quietly, as for any Unix tool.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    env_logger::Builder::from_env(env_logger::Env::default().filter_or("IMAGEFS_LOG", "warn"))
        .init();
    // clap exits with 2 on usage errors.
    let parsed = cli::Cli::parse();
    if let Err(error) = cli::run(parsed) {
        eprintln!("imagefs: {}", error.message);
        std::process::exit(1);
    }
}
