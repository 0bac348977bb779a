//! An fsx-style read checker for `rootfs/`: an image is built in code from layer
//! descriptions (files from 0 bytes to a few MiB, overrides, whiteouts, an opaque
//! directory, a hard link), imported with the CLI and mounted; the expected merged
//! contents are computed here from the descriptions alone (not by imagefs's merge
//! code). Then thousands of random reads go through the mount — `pread` at random
//! offsets (past EOF too) and lengths, `lseek` + `read`, whole-file sequential reads
//! in random chunk sizes — with several files open at once, files closed and
//! reopened, and the page cache dropped now and then so reads reach the daemon
//! again. Every byte is compared; a mismatch fails the test and prints the seed.
//!
//! No mmap. The seed is printed on every run; set `IMAGEFS_CONFORMANCE_SEED=N` to
//! replay one, `IMAGEFS_CONFORMANCE_OPS=N` for a longer run. Needs root and
//! /dev/fuse: skipped with a note otherwise, failed when `CI=true`.
//!
//! The POSIX namespace side (unlink, rename, symlink, mkdir, rmdir) is checked by
//! `scripts/pjdfstest.sh`, run by the last test here, which compares its results
//! with the table in docs/CONFORMANCE.md; both checks are described there.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use imagefs::testing::sample::{self, Built, Compression, ImageBuilder, LayerSpec};
use util::{with_timeout, TestDir};

/// Default number of random operations (each op is one or more reads).
const DEFAULT_OPS: u64 = 20_000;
/// At most this many files are open at once.
const MAX_OPEN: usize = 8;

/// xorshift64*: small, seeded, no new crates.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The image under test, and the merged contents it must show, built side by
/// side: every `file` line written to a layer also records its bytes here.
struct Model {
    layers: Vec<String>,
    current: String,
    files: BTreeMap<String, Vec<u8>>,
}

impl Model {
    fn new() -> Model {
        Model {
            layers: Vec::new(),
            current: String::new(),
            files: BTreeMap::new(),
        }
    }

    fn line(&mut self, line: &str) {
        self.current.push_str(line);
        self.current.push('\n');
    }

    fn dir(&mut self, path: &str) {
        self.line(&format!("dir {path} 0755"));
    }

    /// `gen` is `random`, `text` or `zeros`.
    fn file(&mut self, path: &str, gen: &str, size: usize, seed: &str) {
        let bytes = match gen {
            "random" => sample::random_bytes(seed.as_bytes(), size),
            "text" => sample::text_bytes(seed.as_bytes(), size),
            "zeros" => vec![0; size],
            other => panic!("unknown generator {other}"),
        };
        let content = match (gen, size) {
            (_, 0) => "@empty".to_string(),
            ("zeros", _) => format!("@zeros:{size}"),
            _ => format!("@{gen}:{size}:{seed}"),
        };
        self.line(&format!("file {path} 0644 {content}"));
        self.files.insert(path.to_string(), bytes);
    }

    fn hardlink(&mut self, path: &str, target: &str) {
        self.line(&format!("hardlink {path} {target}"));
        let bytes = self.files[target].clone();
        self.files.insert(path.to_string(), bytes);
    }

    fn whiteout(&mut self, path: &str) {
        self.line(&format!("whiteout {path}"));
        let prefix = format!("{path}/");
        self.files
            .retain(|p, _| p.as_str() != path && !p.starts_with(&prefix));
    }

    fn opaque(&mut self, dir: &str) {
        self.line(&format!("opaque {dir}"));
        let prefix = format!("{dir}/");
        self.files.retain(|p, _| !p.starts_with(&prefix));
    }

    fn end_layer(&mut self) {
        self.layers.push(std::mem::take(&mut self.current));
    }
}

/// Three layers: sizes around page and FUSE-request boundaries up to 3 MiB, then
/// overrides (bigger and smaller), a whiteout and a re-add, an opaque directory.
fn model() -> Model {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * KIB;
    let mut m = Model::new();

    // Layer 0: the base.
    m.dir("/data");
    let sizes = [
        0,
        1,
        511,
        4095,
        4096,
        4097,
        65_535,
        65_536,
        131_073,
        128 * KIB + 1,
        MIB - 1,
        MIB + 7,
        3 * MIB + 123,
    ];
    for (i, size) in sizes.iter().enumerate() {
        m.file(
            &format!("/data/r{i:02}"),
            "random",
            *size,
            &format!("base-{i}"),
        );
    }
    m.file("/data/text", "text", 200_000, "text-0");
    m.file("/data/zeros", "zeros", 300_000, "");
    m.file("/data/grow", "random", 10_000, "grow-0");
    m.file("/data/shrink", "random", 2 * MIB, "shrink-0");
    m.file("/data/gone", "random", 50_000, "gone-0");
    m.file("/data/back", "random", 70_000, "back-0");
    m.dir("/opq");
    m.file("/opq/old", "random", 40_000, "opq-old");
    m.dir("/deep/a/b/c");
    m.file("/deep/a/b/c/leaf", "random", 300_001, "leaf-0");
    m.file("/data/hl1", "random", 90_000, "hl");
    m.hardlink("/data/hl2", "/data/hl1");
    m.end_layer();

    // Layer 1: overrides and deletions.
    m.file("/data/grow", "random", MIB + 3, "grow-1");
    m.file("/data/shrink", "random", 5_000, "shrink-1");
    m.whiteout("/data/gone");
    m.whiteout("/data/back");
    m.opaque("/opq");
    m.file("/opq/new", "random", 33_333, "opq-new");
    m.file("/data/r03", "text", 4095, "r03-1");
    m.end_layer();

    // Layer 2: a re-add after a whiteout, and one more override.
    m.file("/data/back", "random", 12_345, "back-2");
    m.file("/data/grow", "random", 2 * MIB + 5, "grow-2");
    m.file("/deep/a/b/c/leaf2", "random", 777, "leaf2");
    m.end_layer();
    m
}

fn layout(t: &TestDir, m: &Model) -> PathBuf {
    let mut builder = ImageBuilder::new();
    for (i, text) in m.layers.iter().enumerate() {
        let spec = LayerSpec::parse(text).expect("valid layer description");
        // Mix compressions so every decoder path is read through.
        let compression = match i % 3 {
            0 => Compression::Gzip,
            1 => Compression::Zstd,
            _ => Compression::None,
        };
        builder = builder.layer(&spec, compression);
    }
    let built = Built::from(builder.build().expect("image builds"));
    let path = t.join("layout");
    sample::write_oci_layout(&path, &[(Some("dev/fsx:1"), &built)]).expect("layout written");
    path
}

/// Every regular file below `root`, relative paths with a leading `/`.
fn walk(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("readdir") {
            let entry = entry.expect("dir entry");
            let kind = entry.file_type().expect("file type");
            let path = entry.path();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let rel = path.strip_prefix(root).expect("below root");
                out.insert(format!("/{}", rel.display()));
            }
        }
    }
    out
}

struct Open {
    path: String,
    file: File,
    /// Where the file position is, as the checker believes.
    pos: u64,
}

#[derive(Default)]
struct Figures {
    reads: u64,
    bytes: u64,
    past_eof: u64,
    opens: u64,
    drops: u64,
    whole: u64,
}

fn seed() -> u64 {
    match std::env::var("IMAGEFS_CONFORMANCE_SEED") {
        Ok(text) => text.parse().expect("IMAGEFS_CONFORMANCE_SEED is a number"),
        Err(_) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock after 1970");
            now.as_nanos() as u64 ^ u64::from(std::process::id())
        }
    }
}

fn ops() -> u64 {
    std::env::var("IMAGEFS_CONFORMANCE_OPS")
        .map(|t| t.parse().expect("IMAGEFS_CONFORMANCE_OPS is a number"))
        .unwrap_or(DEFAULT_OPS)
}

/// Fails with everything needed to replay the case.
fn check(seed: u64, op: u64, what: &str, path: &str, offset: u64, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "read mismatch (replay with IMAGEFS_CONFORMANCE_SEED={seed}): op {op}: {what} {path} \
         at offset {offset}: got {} bytes, expected {}; first difference at byte {} \
         (file offset {})",
        got.len(),
        want.len(),
        first,
        offset + first as u64
    );
}

/// The expected bytes of `data` for a read of `len` at `offset`.
fn expected(data: &[u8], offset: u64, len: usize) -> &[u8] {
    let start = (offset as usize).min(data.len());
    let end = start.saturating_add(len).min(data.len());
    &data[start..end]
}

/// Reads until `len` bytes or EOF (a FUSE read may be short only at EOF, but be
/// lenient: a short read followed by more data is still correct POSIX).
fn pread_full(file: &File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = file.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    Ok(buf)
}

fn read_full(file: &mut File, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = file.read(&mut buf[done..])?;
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    Ok(buf)
}

/// A random read length: mostly small, sometimes large, sometimes zero.
fn random_len(rng: &mut Rng) -> usize {
    match rng.below(10) {
        0 => 0,
        1..=4 => rng.below(4097) as usize,
        5..=7 => rng.below(70_000) as usize,
        _ => rng.below(600_000) as usize,
    }
}

/// A random offset: mostly inside the file, sometimes at or past EOF.
fn random_offset(rng: &mut Rng, size: u64) -> u64 {
    match rng.below(20) {
        0 => size,
        1 => size + 1 + rng.below(10_000),
        2 => size.saturating_sub(rng.below(16)),
        3 => (rng.below(size / 4096 + 1)) * 4096,
        _ => rng.below(size + 1),
    }
}

/// Drops the kernel's cached pages of `file` so the next reads reach the daemon.
fn drop_cache(file: &File) {
    // SAFETY: fadvise on an owned, open descriptor; no memory is passed.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}

fn run_checker(rootfs: &Path, files: &BTreeMap<String, Vec<u8>>, seed: u64, ops: u64) -> Figures {
    let mut rng = Rng::new(seed);
    let names: Vec<&String> = files.keys().collect();
    let mut open: Vec<Open> = Vec::new();
    let mut fig = Figures::default();
    let host = |p: &str| rootfs.join(p.trim_start_matches('/'));

    for op in 0..ops {
        // Keep a pool of open files: open more, or close and reopen one.
        if open.is_empty() || (open.len() < MAX_OPEN && rng.chance(5)) {
            let path = names[rng.below(names.len() as u64) as usize].clone();
            let file = File::open(host(&path))
                .unwrap_or_else(|e| panic!("seed {seed} op {op}: open {path}: {e}"));
            fig.opens += 1;
            open.push(Open { path, file, pos: 0 });
            continue;
        }
        if rng.chance(3) {
            let victim = rng.below(open.len() as u64) as usize;
            open.swap_remove(victim);
            continue;
        }
        let slot = rng.below(open.len() as u64) as usize;
        let o = &mut open[slot];
        let data = &files[&o.path];
        let size = data.len() as u64;
        if rng.chance(2) {
            drop_cache(&o.file);
            fig.drops += 1;
        }
        match rng.below(10) {
            // pread at a random place.
            0..=5 => {
                let offset = random_offset(&mut rng, size);
                let len = random_len(&mut rng);
                let got = pread_full(&o.file, offset, len).unwrap_or_else(|e| {
                    panic!("seed {seed} op {op}: pread {} @{offset}+{len}: {e}", o.path)
                });
                check(
                    seed,
                    op,
                    "pread",
                    &o.path,
                    offset,
                    &got,
                    expected(data, offset, len),
                );
                fig.reads += 1;
                fig.bytes += got.len() as u64;
                if offset >= size {
                    fig.past_eof += 1;
                }
            }
            // lseek + read, continuing from there on later ops.
            6..=7 => {
                if rng.chance(50) {
                    let offset = random_offset(&mut rng, size);
                    let at = o.file.seek(SeekFrom::Start(offset)).unwrap_or_else(|e| {
                        panic!("seed {seed} op {op}: lseek {} {offset}: {e}", o.path)
                    });
                    assert_eq!(at, offset, "seed {seed} op {op}: lseek {}", o.path);
                    o.pos = offset;
                }
                let len = random_len(&mut rng);
                let got = read_full(&mut o.file, len).unwrap_or_else(|e| {
                    panic!("seed {seed} op {op}: read {} @{}+{len}: {e}", o.path, o.pos)
                });
                check(
                    seed,
                    op,
                    "read",
                    &o.path,
                    o.pos,
                    &got,
                    expected(data, o.pos, len),
                );
                o.pos += got.len() as u64;
                fig.reads += 1;
                fig.bytes += got.len() as u64;
                if o.pos >= size && got.is_empty() {
                    fig.past_eof += 1;
                }
            }
            // The whole file from the start, in random chunk sizes, on a fresh open.
            8 if rng.chance(30) => {
                let mut file = File::open(host(&o.path))
                    .unwrap_or_else(|e| panic!("seed {seed} op {op}: open {}: {e}", o.path));
                fig.opens += 1;
                let mut pos = 0u64;
                loop {
                    let len = 1 + rng.below(300_000) as usize;
                    let got = read_full(&mut file, len).unwrap_or_else(|e| {
                        panic!("seed {seed} op {op}: read {} @{pos}: {e}", o.path)
                    });
                    check(
                        seed,
                        op,
                        "sequential read",
                        &o.path,
                        pos,
                        &got,
                        expected(data, pos, len),
                    );
                    fig.reads += 1;
                    fig.bytes += got.len() as u64;
                    pos += got.len() as u64;
                    if got.is_empty() {
                        fig.past_eof += 1;
                        break;
                    }
                }
                assert_eq!(pos, size, "seed {seed} op {op}: {} read short", o.path);
                fig.whole += 1;
            }
            // fstat agrees with the expected size.
            _ => {
                let len = o
                    .file
                    .metadata()
                    .unwrap_or_else(|e| panic!("seed {seed} op {op}: fstat {}: {e}", o.path))
                    .len();
                assert_eq!(len, size, "seed {seed} op {op}: st_size of {}", o.path);
            }
        }
    }
    fig
}

#[test]
fn random_reads_match_the_merged_layers() {
    if !util::require_fuse() {
        return;
    }
    let started = Instant::now();
    let seed = seed();
    let ops = ops();
    eprintln!("conformance read checker: seed {seed} (IMAGEFS_CONFORMANCE_SEED={seed} replays), {ops} ops");

    let t = TestDir::new("conformance-fsx");
    let m = model();
    let layout = layout(&t, &m);
    t.imagefs()
        .arg("import")
        .arg(&layout)
        .timeout_secs(60)
        .assert_ok();
    let mount = t.mount(&[]);
    let rootfs = mount.join("local/dev/fsx/tags/1/rootfs");

    // The tree holds exactly the expected regular files, with the expected sizes.
    let files = m.files.clone();
    let root = rootfs.clone();
    let expected_names: BTreeSet<String> = files.keys().cloned().collect();
    let sizes: BTreeMap<String, u64> = files
        .iter()
        .map(|(p, b)| (p.clone(), b.len() as u64))
        .collect();
    with_timeout(30, move || {
        let found = walk(&root);
        assert_eq!(found, expected_names, "regular files in rootfs/");
        for (path, size) in &sizes {
            let meta = fs::metadata(root.join(path.trim_start_matches('/'))).expect("stat");
            assert_eq!(meta.len(), *size, "st_size of {path}");
        }
    });

    let root = rootfs.clone();
    let fig = with_timeout(120, move || run_checker(&root, &files, seed, ops));
    eprintln!(
        "conformance read checker: seed {seed}: {} reads ({} at or past EOF, {} whole-file \
         passes), {} bytes compared, {} opens, {} page-cache drops, {:.1?}",
        fig.reads,
        fig.past_eof,
        fig.whole,
        fig.bytes,
        fig.opens,
        fig.drops,
        started.elapsed()
    );
    assert!(fig.reads > ops / 2, "the checker did too few reads");
    mount.unmount();
}

/// `(passed, failed, skipped)` per (location, group) in docs/CONFORMANCE.md's
/// pjdfstest results table (columns baseline, reg, tags).
fn documented_pjdfstest_results() -> BTreeMap<(String, String), (u32, u32, u32)> {
    let doc = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/CONFORMANCE.md"))
        .expect("docs/CONFORMANCE.md");
    let mut results = BTreeMap::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() != 6
            || !["unlink", "rename", "symlink", "mkdir", "rmdir"].contains(&cells[1])
        {
            continue;
        }
        for (location, cell) in ["baseline", "reg", "tags"].iter().zip(&cells[2..5]) {
            let n: Vec<u32> = cell.split('/').map(|n| n.trim().parse().unwrap()).collect();
            results.insert(
                (location.to_string(), cells[1].to_string()),
                (n[0], n[1], n[2]),
            );
        }
    }
    results
}

/// Runs `scripts/pjdfstest.sh` (pjdfstest 0.2.2 against a real mount, a few
/// minutes; installs the runner with cargo if missing) and checks its summary
/// against docs/CONFORMANCE.md: every run finished (no timeout, no hang), the
/// baseline on the host passes everything it does not skip, the stock runner
/// cannot start inside imagefs for the documented reasons, and the patched
/// runner's counts are exactly the documented ones. About a minute once the
/// runners are built; `.ci/run` installs pjdfstest, elsewhere the test is skipped
/// without it.
#[test]
fn pjdfstest_results_match_the_documentation() {
    if !util::require_fuse() || !util::require_tool("pjdfstest") {
        return;
    }
    let t = TestDir::new("pjdfstest");
    let out_dir = t.join("out");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pjdfstest.sh");
    util::Cmd::new("bash")
        .arg(&script)
        .arg(&out_dir)
        .env("IMAGEFS_BIN", util::imagefs_bin())
        .timeout_secs(3600)
        .assert_ok();
    let summary = fs::read_to_string(out_dir.join("summary.tsv")).expect("summary.tsv");
    let documented = documented_pjdfstest_results();
    assert_eq!(
        documented.len(),
        15,
        "the documented table has 5 groups x 3 places"
    );
    let mut seen = 0;
    for line in summary.lines().skip(1) {
        let cells: Vec<&str> = line.split('\t').collect();
        let (runner, location, group) = (cells[0], cells[1], cells[2]);
        let counts: (u32, u32, u32) = (
            cells[3].parse().unwrap(),
            cells[4].parse().unwrap(),
            cells[5].parse().unwrap(),
        );
        let note = cells.get(6).copied().unwrap_or("");
        match runner {
            "stock" => assert!(
                note.starts_with("runner did not start"),
                "stock runner in {location} {group}: {line}"
            ),
            _ => {
                assert_eq!(note, "", "{line}");
                let expected = documented[&(location.to_string(), group.to_string())];
                assert_eq!(
                    counts, expected,
                    "{location} {group} differs from docs/CONFORMANCE.md"
                );
                seen += 1;
            }
        }
    }
    assert_eq!(seen, 15, "{summary}");
    let leftovers = fs::read_to_string(out_dir.join("leftovers.txt")).unwrap_or_default();
    eprintln!("{summary}\nleftovers in the mount:\n{leftovers}");
}
