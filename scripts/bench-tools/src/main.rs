//! Helpers for `scripts/bench.sh`.
//!
//! * `bench-tools gen OUT --files N --dirs D --big BYTES --rm-images K`
//!   writes deterministic benchmark images (fixed seeds: the same arguments give
//!   the same bytes, so the same digests) as two OCI layouts:
//!   - `OUT/layout`: `distro` = [base, modify], `big` = [base, modify, random, text]
//!   - `OUT/layout-rm`: `rm000`.. = one tiny unique layer each (for rm with cleanup)
//!
//!   and `OUT/gen.env` (shell variables: digests, sizes, expected counts).
//! * `bench-tools gunzip FILE...` decompresses each file once with the decompressor
//!   imagefs uses (flate2 on zlib-rs, `MultiGzDecoder`) and discards the output:
//!   the physical floor of an import that checks `diff_ids`. Prints bytes out.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::exit;

mod zran;

use flate2::write::GzEncoder;
use flate2::Compression;
use sha2::{Digest, Sha256};

const MTIME: u64 = 1_700_000_000;
const NEEDLE: &str = "IMAGEFS-BENCH-NEEDLE";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("gen") => gen(&args[1..]),
        Some("gunzip") => gunzip(&args[1..]),
        Some("zran-read") => zran::zran_read(&args[1..]),
        _ => {
            eprintln!("usage: bench-tools gen OUT --files N --dirs D --big BYTES --rm-images K");
            eprintln!("       bench-tools gunzip FILE...");
            eprintln!("       bench-tools zran-read INDEX BLOB SIZE COUNT PEER_COUNT");
            exit(2)
        }
    };
    if let Err(e) = result {
        eprintln!("bench-tools: {e}");
        exit(1)
    }
}

// ---------------------------------------------------------------- gunzip floor

fn gunzip(files: &[String]) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    for f in files {
        let file = File::open(f)?;
        let mut dec = flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 20, file));
        loop {
            let n = dec.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
    }
    println!("{total}");
    Ok(())
}

// ---------------------------------------------------------------- PRNG

/// xoshiro256** seeded by splitmix64: fast, deterministic, good enough.
struct Rng([u64; 4]);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed;
        let mut s = [0u64; 4];
        for v in &mut s {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            *v = x ^ (x >> 31);
        }
        Rng(s)
    }
    fn next(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let v = self.next().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&v[..n]);
    }
}

/// A fixed vocabulary of lowercase words for compressible text.
fn vocabulary() -> Vec<Vec<u8>> {
    let mut rng = Rng::new(42);
    (0..2048)
        .map(|_| {
            let len = 2 + rng.below(9) as usize;
            (0..len).map(|_| b'a' + rng.below(26) as u8).collect()
        })
        .collect()
}

/// Appends about `len` bytes of text lines to `out` (exactly `len` bytes).
fn text(rng: &mut Rng, vocab: &[Vec<u8>], len: usize, out: &mut Vec<u8>) {
    let start = out.len();
    let mut col = 0;
    while out.len() - start < len {
        // Zipf-ish: small indexes are more frequent, like real text.
        let r = rng.below(vocab.len() as u64);
        let w = &vocab[(r * r / vocab.len() as u64) as usize];
        out.extend_from_slice(w);
        col += w.len() + 1;
        if col > 72 {
            out.push(b'\n');
            col = 0;
        } else {
            out.push(b' ');
        }
    }
    out.truncate(start + len);
}

/// A reader of `remaining` deterministic bytes: random or text.
struct GenReader {
    rng: Rng,
    remaining: u64,
    vocab: Option<Vec<Vec<u8>>>,
    pending: Vec<u8>,
    pos: usize,
}

impl Read for GenReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.remaining as usize).min(1 << 20);
        match &self.vocab {
            None => self.rng.fill(&mut buf[..want]),
            Some(vocab) => {
                if self.pos >= self.pending.len() {
                    self.pending.clear();
                    self.pos = 0;
                    text(&mut self.rng, vocab, 1 << 20, &mut self.pending);
                }
                let n = want.min(self.pending.len() - self.pos);
                buf[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
                self.pos += n;
                self.remaining -= n as u64;
                return Ok(n);
            }
        }
        self.remaining -= want as u64;
        Ok(want)
    }
}

// ---------------------------------------------------------------- hashing writers

struct HashWriter<W: Write> {
    inner: W,
    hash: Sha256,
    size: u64,
}

impl<W: Write> HashWriter<W> {
    fn new(inner: W) -> Self {
        HashWriter { inner, hash: Sha256::new(), size: 0 }
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A written blob.
#[derive(Clone)]
struct Blob {
    digest: String,
    size: u64,
}

/// A written layer: its blob and its diff_id.
#[derive(Clone)]
struct Layer {
    blob: Blob,
    diff_id: String,
}

type TarW = tar::Builder<HashWriter<GzEncoder<HashWriter<BufWriter<File>>>>>;

struct LayerWriter {
    tar: TarW,
    tmp: PathBuf,
    blobs: PathBuf,
}

impl LayerWriter {
    fn new(blobs: &Path, name: &str, level: u32) -> io::Result<Self> {
        let tmp = blobs.join(format!(".tmp-{name}"));
        let file = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        let gz = GzEncoder::new(HashWriter::new(file), Compression::new(level));
        let mut tar = tar::Builder::new(HashWriter::new(gz));
        tar.mode(tar::HeaderMode::Deterministic);
        Ok(LayerWriter { tar, tmp, blobs: blobs.to_path_buf() })
    }

    fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h.set_size(size);
        h.set_path(path).expect("short path");
        h
    }

    fn dir(&mut self, path: &str) -> io::Result<()> {
        let mut h = Self::header(path, tar::EntryType::Directory, 0o755, 0);
        h.set_cksum();
        self.tar.append(&h, io::empty())
    }

    fn file(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        let mut h = Self::header(path, tar::EntryType::Regular, 0o644, data.len() as u64);
        h.set_cksum();
        self.tar.append(&h, data)
    }

    fn file_from(&mut self, path: &str, size: u64, reader: impl Read) -> io::Result<()> {
        let mut h = Self::header(path, tar::EntryType::Regular, 0o644, size);
        h.set_cksum();
        self.tar.append(&h, reader)
    }

    fn link(&mut self, path: &str, target: &str, hard: bool) -> io::Result<()> {
        let kind = if hard { tar::EntryType::Link } else { tar::EntryType::Symlink };
        let mut h = Self::header(path, kind, 0o777, 0);
        h.set_link_name(target)?;
        h.set_cksum();
        self.tar.append(&h, io::empty())
    }

    fn finish(self) -> io::Result<Layer> {
        let outer = self.tar.into_inner()?;
        let diff_id = hex::encode(outer.hash.finalize());
        let gz = outer.inner;
        let inner = gz.finish()?;
        let digest = hex::encode(inner.hash.finalize());
        let size = inner.size;
        let file = inner.inner.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        fs::rename(&self.tmp, self.blobs.join(&digest))?;
        Ok(Layer { blob: Blob { digest, size }, diff_id })
    }
}

fn write_blob(blobs: &Path, data: &[u8]) -> io::Result<Blob> {
    let digest = hex::encode(Sha256::digest(data));
    fs::write(blobs.join(&digest), data)?;
    Ok(Blob { digest, size: data.len() as u64 })
}

// ---------------------------------------------------------------- the images

struct Params {
    files: usize,
    dirs: usize,
    big: u64,
    rm_images: usize,
}

fn dir_path(d: usize) -> (String, String) {
    (format!("usr/g{:03}/", d / 50), format!("usr/g{:03}/p{:04}/", d / 50, d))
}

/// File `j` of directory `d`: name, whether it is text.
fn file_name(global: usize, j: usize) -> (String, bool) {
    let is_text = global % 10 < 7;
    (format!("f{:03}.{}", j, if is_text { "txt" } else { "bin" }), is_text)
}

/// Deterministic content of base file `global` (version `ver`).
fn content(global: usize, ver: u64, is_text: bool, vocab: &[Vec<u8>]) -> Vec<u8> {
    let mut rng = Rng::new(0x1000_0000 + global as u64 * 7 + ver * 1_000_003);
    // Log-uniform sizes in [64, 32768): mean ~5.2 KB, like a distribution.
    let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
    let size = (64.0 * (512f64).powf(u)) as usize;
    let mut out = Vec::with_capacity(size + 64);
    if is_text {
        text(&mut rng, vocab, size, &mut out);
    } else {
        out.resize(size, 0);
        rng.fill(&mut out);
    }
    if global % 997 == 0 && ver == 0 {
        let mid = out.len() / 2;
        out.splice(mid..mid, format!("\n{NEEDLE}\n").into_bytes());
    }
    out
}

fn base_layer(blobs: &Path, p: &Params, vocab: &[Vec<u8>]) -> io::Result<(Layer, u64)> {
    let mut w = LayerWriter::new(blobs, "base", 6)?;
    let per_dir = p.files / p.dirs;
    w.dir("etc/")?;
    w.file("etc/os-release", b"NAME=\"imagefs-bench\"\nVERSION=1\n")?;
    w.dir("usr/")?;
    let mut bytes = 0u64;
    for d in 0..p.dirs {
        let (group, dir) = dir_path(d);
        if d % 50 == 0 {
            w.dir(&group)?;
        }
        w.dir(&dir)?;
        for j in 0..per_dir {
            let global = d * per_dir + j;
            let (name, is_text) = file_name(global, j);
            let data = content(global, 0, is_text, vocab);
            bytes += data.len() as u64;
            w.file(&format!("{dir}{name}"), &data)?;
        }
        if d % 10 == 0 {
            w.link(&format!("{dir}link"), &file_name(d * per_dir, 0).0, false)?;
        }
        if d % 100 == 0 && per_dir > 1 {
            let (n1, _) = file_name(d * per_dir + 1, 1);
            w.link(&format!("{dir}hard"), &format!("{dir}{n1}"), true)?;
        }
    }
    Ok((w.finish()?, bytes))
}

fn modify_layer(blobs: &Path, p: &Params, vocab: &[Vec<u8>]) -> io::Result<Layer> {
    let mut w = LayerWriter::new(blobs, "modify", 6)?;
    let per_dir = p.files / p.dirs;
    w.dir("etc/")?;
    w.file("etc/os-release", b"NAME=\"imagefs-bench\"\nVERSION=2\n")?;
    w.dir("usr/")?;
    for d in 0..p.dirs {
        let (group, dir) = dir_path(d);
        if d % 50 == 0 {
            w.dir(&group)?;
        }
        if d % 100 == 7 {
            // The whole directory is deleted.
            w.file(&format!("{group}.wh.{}", &dir[group.len()..dir.len() - 1]), b"")?;
            continue;
        }
        w.dir(&dir)?;
        if d % 100 == 13 {
            // Opaque: the directory's old contents are hidden, three new files.
            w.file(&format!("{dir}.wh..wh..opq"), b"")?;
            for j in 0..3 {
                let data = content(1_000_000 + d * 3 + j, 1, true, vocab);
                w.file(&format!("{dir}new{j}.txt"), &data)?;
            }
            continue;
        }
        for j in 0..per_dir {
            let global = d * per_dir + j;
            let (name, is_text) = file_name(global, j);
            if global % 20 == 3 {
                w.file(&format!("{dir}.wh.{name}"), b"")?;
            } else if global % 10 == 1 {
                let data = content(global, 1, is_text, vocab);
                w.file(&format!("{dir}{name}"), &data)?;
            }
        }
    }
    w.dir("usr/new/")?;
    for j in 0..p.files / 40 {
        let data = content(2_000_000 + j, 1, j % 3 != 0, vocab);
        w.file(&format!("usr/new/n{j:05}.dat"), &data)?;
    }
    w.finish()
}

fn big_layer(blobs: &Path, p: &Params, text_: bool) -> io::Result<Layer> {
    let name = if text_ { "text" } else { "random" };
    let mut w = LayerWriter::new(blobs, name, 6)?;
    w.dir("big/")?;
    let reader = GenReader {
        rng: Rng::new(if text_ { 3 } else { 2 }),
        remaining: p.big,
        vocab: if text_ { Some(vocabulary()) } else { None },
        pending: Vec::new(),
        pos: 0,
    };
    let path = if text_ { "big/text.txt" } else { "big/random.bin" };
    w.file_from(path, p.big, reader)?;
    w.finish()
}

fn config_json(layers: &[&Layer], note: &str) -> String {
    let diff_ids: Vec<String> = layers.iter().map(|l| format!("\"sha256:{}\"", l.diff_id)).collect();
    let history: Vec<String> = layers
        .iter()
        .enumerate()
        .map(|(i, _)| format!("{{\"created\":\"2023-11-14T22:13:20Z\",\"created_by\":\"bench layer {i} ({note})\"}}"))
        .collect();
    format!(
        "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"created\":\"2023-11-14T22:13:20Z\",\
         \"config\":{{\"Env\":[\"PATH=/usr/bin:/bin\"],\"Cmd\":[\"/bin/sh\"]}},\
         \"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[{}]}},\"history\":[{}]}}",
        diff_ids.join(","),
        history.join(",")
    )
}

fn manifest_json(config: &Blob, layers: &[&Layer]) -> String {
    let layers: Vec<String> = layers
        .iter()
        .map(|l| {
            format!(
                "{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:{}\",\"size\":{}}}",
                l.blob.digest, l.blob.size
            )
        })
        .collect();
    format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\
         \"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:{}\",\"size\":{}}},\
         \"layers\":[{}]}}",
        config.digest,
        config.size,
        layers.join(",")
    )
}

fn image(blobs: &Path, layers: &[&Layer], note: &str) -> io::Result<Blob> {
    let config = write_blob(blobs, config_json(layers, note).as_bytes())?;
    write_blob(blobs, manifest_json(&config, layers).as_bytes())
}

fn write_layout(dir: &Path, images: &[(String, Blob)]) -> io::Result<()> {
    fs::write(dir.join("oci-layout"), "{\"imageLayoutVersion\":\"1.0.0\"}")?;
    let entries: Vec<String> = images
        .iter()
        .map(|(name, m)| {
            format!(
                "{{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:{}\",\"size\":{},\
                 \"annotations\":{{\"org.opencontainers.image.ref.name\":\"{}\"}}}}",
                m.digest, m.size, name
            )
        })
        .collect();
    fs::write(
        dir.join("index.json"),
        format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[{}]}}",
            entries.join(",")
        ),
    )
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> io::Result<T> {
    let i = args
        .iter()
        .position(|a| a == name)
        .ok_or_else(|| io::Error::other(format!("missing {name}")))?;
    args.get(i + 1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad value for {name}")))
}

fn gen(args: &[String]) -> io::Result<()> {
    let out = PathBuf::from(args.first().ok_or_else(|| io::Error::other("missing OUT"))?);
    let p = Params {
        files: arg(args, "--files")?,
        dirs: arg(args, "--dirs")?,
        big: arg(args, "--big")?,
        rm_images: arg(args, "--rm-images")?,
    };
    let layout = out.join("layout");
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    let vocab = vocabulary();

    // The two big layers take most of the time: one thread each beside the rest.
    let (base, modify, random, text_) = std::thread::scope(|s| {
        let r = s.spawn(|| big_layer(&blobs, &p, false));
        let t = s.spawn(|| big_layer(&blobs, &p, true));
        let base = base_layer(&blobs, &p, &vocab);
        let modify = modify_layer(&blobs, &p, &vocab);
        (base, modify, r.join().expect("thread"), t.join().expect("thread"))
    });
    let ((base, base_bytes), modify, random, text_) = (base?, modify?, random?, text_?);
    let distro = image(&blobs, &[&base, &modify], "distro")?;
    let big = image(&blobs, &[&base, &modify, &random, &text_], "big")?;
    write_layout(&layout, &[("distro".into(), distro.clone()), ("big".into(), big.clone())])?;

    let rm_layout = out.join("layout-rm");
    let rm_blobs = rm_layout.join("blobs/sha256");
    fs::create_dir_all(&rm_blobs)?;
    let mut rm_images = Vec::new();
    for i in 0..p.rm_images {
        let mut w = LayerWriter::new(&rm_blobs, &format!("rm{i}"), 6)?;
        w.dir("rm/")?;
        let mut data = format!("rm image {i}\n").into_bytes();
        let mut tail = vec![0u8; 4096];
        Rng::new(0x5000_0000 + i as u64).fill(&mut tail);
        data.extend_from_slice(&tail);
        w.file("rm/id", &data)?;
        let layer = w.finish()?;
        rm_images.push((format!("rm{i:03}"), image(&rm_blobs, &[&layer], &format!("rm {i}"))?));
    }
    write_layout(&rm_layout, &rm_images)?;

    let mut env = String::new();
    let mut var = |k: &str, v: String| env.push_str(&format!("{k}={v}\n"));
    var("L_BASE", base.blob.digest.clone());
    var("L_MODIFY", modify.blob.digest.clone());
    var("L_RANDOM", random.blob.digest.clone());
    var("L_TEXT", text_.blob.digest.clone());
    var("L_BASE_SIZE", base.blob.size.to_string());
    var("L_MODIFY_SIZE", modify.blob.size.to_string());
    var("L_RANDOM_SIZE", random.blob.size.to_string());
    var("L_TEXT_SIZE", text_.blob.size.to_string());
    var("M_DISTRO", distro.digest.clone());
    var("M_BIG", big.digest.clone());
    var("BASE_FILE_BYTES", base_bytes.to_string());
    var("BIG_BYTES", p.big.to_string());
    var("NEEDLE", NEEDLE.to_string());
    var("RM_IMAGES", p.rm_images.to_string());
    fs::write(out.join("gen.env"), env)?;
    Ok(())
}
