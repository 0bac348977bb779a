#!/usr/bin/env python3
"""Patches a copy of the pjdfstest 0.2.2 runner (src/main.rs) so that it can run
inside an imagefs mount at all. The tests themselves are not changed.

Stock pjdfstest makes its working directories with tempfile (`.tmpXXXXXX`, mixed
case) and chmods them 0755, unwrapping both: in a registry directory the name is
not a valid repository name (EINVAL), in tags/ no directory may be made (EROFS),
and chmod is EROFS everywhere, so the stock runner stops before its first test.

Patched behaviour:
  * working directories are `pjd<pid>` and `pjd<pid>/t<n>` (lowercase, valid
    repository path components), removed afterwards, errors ignored; made with
    create_dir_all, because imagefs drops an empty parent repository when its
    last nested repository is removed (see docs/CONFORMANCE.md, bug 1);
  * the chmod of the working directory is best effort;
  * PJDFSTEST_FLAT=1 runs every test directly in --path (no working directories),
    for tags/, which can hold nothing but symbolic links.
"""
import sys

path = sys.argv[1]
src = open(path).read()

def sub(old, new):
    global src
    if old not in src:
        sys.exit(f"pjdfstest-patch: pattern not found (runner version changed?): {old!r}")
    src = src.replace(old, new)

sub("use tempfile::{tempdir_in, TempDir};", '''
/// A working directory (imagefs patch): lowercase name, or --path itself when flat.
struct TempDir { path: PathBuf, remove: bool }
impl TempDir { fn path(&self) -> &std::path::Path { &self.path } }
impl Drop for TempDir {
    fn drop(&mut self) { if self.remove { let _ = std::fs::remove_dir_all(&self.path); } }
}
fn flat() -> bool { std::env::var_os("PJDFSTEST_FLAT").is_some() }
fn tempdir_in(parent: impl AsRef<std::path::Path>) -> std::io::Result<TempDir> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let parent = parent.as_ref();
    if flat() { return Ok(TempDir { path: parent.to_path_buf(), remove: false }); }
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let name = if n == 0 { format!("pjd{}", std::process::id()) } else { format!("t{n}") };
    let path = parent.join(name);
    std::fs::create_dir_all(&path).map_err(|e| std::io::Error::new(e.kind(), format!("{e} at path {path:?}")))?;
    Ok(TempDir { path, remove: true })
}
''')
sub("let temp_dir = tempdir_in(base_dir.path()).unwrap();",
    "let temp_dir = match tempdir_in(base_dir.path()) { Ok(d) => d, Err(e) => { println!(\"{:73} {}\\n\\tsetup: mkdir working directory: {}\", test_case.name, \"FAILED\", e); failed_tests_count += 1; continue; } };")
sub("chmod(temp_dir.path(), Mode::from_bits_truncate(0o755)).unwrap();",
    "let _ = chmod(temp_dir.path(), Mode::from_bits_truncate(0o755));")
open(path, "w").write(src)
