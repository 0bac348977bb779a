//! For tests that run a real tool (skopeo, umoci, oci-image-tool): whether it is
//! installed (and what to do when it is not), and running it. Test-only; shared by `sample` and
//! `archive` tests.

use std::process::Command;

/// True when `tool` is on PATH. With `CI=true` a missing tool fails the test (a
/// skipped check must not pass in CI); elsewhere the test is skipped with a note.
pub(crate) fn have_tool(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{tool} is required when CI=true (apt-get install -y {tool})"
        );
        eprintln!("note: {tool} is not installed; skipping a real-tool test");
    }
    found
}

/// Runs a tool to completion and returns its stdout. A tool that cannot start or
/// exits non-zero fails the test, with what it printed.
pub(crate) fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{command:?} did not run: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
