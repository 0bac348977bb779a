//! Deterministic sample images, built in code: layers from a one-line-per-entry
//! description, configs, OCI and Docker schema 2 manifests, indexes, OCI artifacts,
//! and the writers that put them on disk as an OCI layout, an OCI archive or a
//! `docker save` archive (classic and Docker 25+ forms).
//!
//! Used by `imagefs demo` and by the tests. Everything is deterministic: the same
//! description gives the same bytes on every run (fixed mtimes, entries in the
//! order written, fixed compression levels), so images built separately share
//! layers exactly as real images built from one base do.
//!
//! This module depends on nothing in the crate but [`crate::digest`]; it must not
//! touch the store, the image parser or the layer indexer, so that tests built on
//! it check those modules instead of agreeing with them.
//!
//! # Layer descriptions
//!
//! One entry per line (or several separated by `;`); `#` or `//` starts a comment.
//! Paths are absolute-looking (`/etc/passwd`) and are written to the tar without
//! the leading `/`; a path or value with spaces or odd bytes is written in double
//! quotes, with the escapes `\n \t \r \0 \\ \" \xNN`.
//!
//! ```text
//! dir      PATH MODE                      directory (written as `path/`)
//! file     PATH MODE CONTENT              regular file
//! symlink  PATH TARGET                    target stored as written
//! hardlink PATH TARGET                    TARGET is a path in the archive
//! fifo     PATH MODE
//! chardev  PATH MODE MAJOR MINOR
//! blockdev PATH MODE MAJOR MINOR
//! whiteout PATH                           writes DIR/.wh.NAME (deletes PATH)
//! opaque   PATH                           writes PATH/.wh..wh..opq
//! xattr    PATH NAME VALUE                PAX SCHILY.xattr.NAME on the entry PATH
//! ```
//!
//! CONTENT is a quoted string, `@empty`, `@zeros:N`, `@random:N[:SEED]`
//! (incompressible pseudo-random bytes; the seed defaults to the path) or
//! `@text:N[:SEED]` (compressible words). MODE is octal and may carry the setuid,
//! setgid and sticky bits (`4755`, `1777`). Any entry takes trailing options:
//! `uid=N gid=N mtime=N` (defaults 0, 0, [`SAMPLE_MTIME`]), `names=ustar|gnu|pax`
//! (how names longer than the ustar fields are written: ustar prefix split, else
//! PAX — Go's and Docker's way — is the default; `gnu` uses `././@LongLink`
//! entries; `pax` always writes PAX `path`/`linkpath` records) and `raw` (write
//! PATH and hard link TARGET byte for byte, without normalisation, for hostile
//! archives: `file ../../escape 0644 "x" raw`).
//!
//! ```
//! use imagefs::sample::{Compression, ImageBuilder, LayerSpec};
//! let base = LayerSpec::parse(r#"
//!     dir /etc 0755
//!     file /etc/os-release 0644 "NAME=Sample\nID=sample\n"
//!     file /bin/busybox 0755 @random:20000 ; symlink /bin/sh busybox
//! "#).expect("valid description");
//! let image = ImageBuilder::new().layer(&base, Compression::Gzip).build().expect("builds");
//! assert_eq!(image.layers.len(), 1);
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;
use serde_json::json;

use crate::digest::{DiffId, Digest};

/// The mtime of every entry unless an entry says otherwise (2024-01-01T00:00:00Z).
pub const SAMPLE_MTIME: u64 = 1_704_067_200;
/// The `created` time written into configs and history.
pub const SAMPLE_CREATED: &str = "2024-01-01T00:00:00Z";
/// The gzip level used for every gzip layer (fixed so bytes never change).
pub const GZIP_LEVEL: u32 = 6;
/// The zstd level used for every zstd layer.
pub const ZSTD_LEVEL: i32 = 3;

/// Media types written by this module.
pub mod media_type {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// OCI uncompressed layer.
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// OCI gzip layer.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// OCI zstd layer.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// The OCI 1.1 empty descriptor's media type (`{}`).
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
    /// Docker schema 2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker uncompressed layer.
    pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
    /// Docker gzip layer.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Docker zstd layer (as containerd names it).
    pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
    /// in-toto attestation layers of buildx attestation manifests.
    pub const IN_TOTO: &str = "application/vnd.in-toto+json";
    /// A layer media type no reader knows (for negative tests).
    pub const UNKNOWN_LAYER: &str = "application/vnd.example.unknown.layer.v1";
}

/// The annotation naming an image in an OCI layout's `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Errors from parsing descriptions, building images and writing them out.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// A layer description line is malformed.
    #[error("layer description line {line}: {message}")]
    Parse {
        /// 1-based line number in the description.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A builder or writer was asked for something inconsistent.
    #[error("{0}")]
    Invalid(String),
    /// Writing failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// JSON encoding or decoding failed.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

type Result<T, E = SampleError> = std::result::Result<T, E>;

fn invalid(message: impl Into<String>) -> SampleError {
    SampleError::Invalid(message.into())
}

// ---------------------------------------------------------------------------
// Layer descriptions
// ---------------------------------------------------------------------------

/// How names longer than the ustar header fields are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum NameFormat {
    /// ustar `prefix`/`name` split when it fits, else a PAX record (Go, Docker).
    #[default]
    Ustar,
    /// GNU `././@LongLink` entries for names over 100 bytes (GNU tar, tar-rs).
    Gnu,
    /// Always a PAX `path` (and `linkpath`) record.
    Pax,
}

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file with its contents.
    File(Vec<u8>),
    /// A symbolic link and its target, stored as written.
    Symlink(Vec<u8>),
    /// A hard link to another path of the archive.
    Hardlink(Vec<u8>),
    /// A named pipe.
    Fifo,
    /// A character device (major, minor).
    CharDevice(u32, u32),
    /// A block device (major, minor).
    BlockDevice(u32, u32),
}

/// One tar entry of a layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The path as written in the tar header (no leading `/`; directories end in `/`).
    pub path: Vec<u8>,
    /// What the entry is.
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
    /// Extended attributes, written as PAX `SCHILY.xattr.*` records.
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// How long names are written.
    pub names: NameFormat,
}

/// A layer's contents: tar entries in the order they are written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerSpec {
    /// The entries, in archive order.
    pub entries: Vec<Entry>,
    /// Whether the tar ends with the two zero blocks (older umoci omitted them).
    pub end_of_archive: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Bare(String),
    Quoted(Vec<u8>),
}

impl Token {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Token::Bare(text) => text.as_bytes().to_vec(),
            Token::Quoted(bytes) => bytes.clone(),
        }
    }
}

/// Splits one line into entries (separated by `;`) of tokens.
fn tokenize(line: &str) -> std::result::Result<Vec<Vec<Token>>, String> {
    let mut entries = vec![Vec::new()];
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == ';' {
            chars.next();
            entries.push(Vec::new());
        } else if c == '#' || line_rest_starts_with(&chars, "//") {
            break;
        } else if c == '"' {
            chars.next();
            let mut bytes = Vec::new();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' => {
                        let escaped = chars.next().ok_or("unfinished escape")?;
                        match escaped {
                            'n' => bytes.push(b'\n'),
                            't' => bytes.push(b'\t'),
                            'r' => bytes.push(b'\r'),
                            '0' => bytes.push(0),
                            '\\' => bytes.push(b'\\'),
                            '"' => bytes.push(b'"'),
                            'x' => {
                                let hex: String = chars.by_ref().take(2).collect();
                                let byte = u8::from_str_radix(&hex, 16)
                                    .map_err(|_| format!("bad escape \\x{hex}"))?;
                                bytes.push(byte);
                            }
                            other => return Err(format!("unknown escape \\{other}")),
                        }
                    }
                    other => {
                        let mut buf = [0u8; 4];
                        bytes.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                    }
                }
            }
            if !closed {
                return Err("unterminated quoted string".into());
            }
            push_token(&mut entries, Token::Quoted(bytes));
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == ';' || c == '"' {
                    break;
                }
                word.push(c);
                chars.next();
            }
            push_token(&mut entries, Token::Bare(word));
        }
    }
    Ok(entries.into_iter().filter(|e| !e.is_empty()).collect())
}

fn line_rest_starts_with(chars: &std::iter::Peekable<std::str::Chars<'_>>, prefix: &str) -> bool {
    chars.clone().take(prefix.len()).eq(prefix.chars())
}

fn push_token(entries: &mut [Vec<Token>], token: Token) {
    if let Some(last) = entries.last_mut() {
        last.push(token);
    }
}

/// Normalises a description path to its tar form: no leading `/`, no empty,
/// `.` or `..` components.
fn normalize_path(raw: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut parts = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                return Err(format!(
                    "path {:?} has '..' (add the option raw to write it anyway)",
                    String::from_utf8_lossy(raw)
                ))
            }
            other => parts.push(other),
        }
    }
    Ok(parts.join(&b'/'))
}

fn parse_mode(token: Option<&Token>) -> std::result::Result<u32, String> {
    match token {
        Some(Token::Bare(text)) => {
            u32::from_str_radix(text, 8).map_err(|_| format!("bad octal mode {text:?}"))
        }
        _ => Err("missing octal mode".into()),
    }
}

fn parse_number(token: Option<&Token>, what: &str) -> std::result::Result<u32, String> {
    match token {
        Some(Token::Bare(text)) => text.parse().map_err(|_| format!("bad {what} {text:?}")),
        _ => Err(format!("missing {what}")),
    }
}

fn parse_content(token: Option<&Token>, path: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let text = match token {
        Some(Token::Quoted(bytes)) => return Ok(bytes.clone()),
        Some(Token::Bare(text)) => text,
        None => return Err("missing file content".into()),
    };
    let mut parts = text.splitn(3, ':');
    let generator = parts.next().unwrap_or_default();
    let size_text = parts.next();
    let seed = parts.next().map(str::as_bytes).unwrap_or(path);
    let size = || -> std::result::Result<usize, String> {
        size_text
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{text:?}: expected a byte count"))
    };
    match generator {
        "@empty" => Ok(Vec::new()),
        "@zeros" => Ok(vec![0; size()?]),
        "@random" => Ok(random_bytes(seed, size()?)),
        "@text" => Ok(text_bytes(seed, size()?)),
        _ => Err(format!(
            "content {text:?}: expected a quoted string, @empty, @zeros:N, @random:N[:SEED] or @text:N[:SEED]"
        )),
    }
}

/// A tiny deterministic generator (splitmix64) seeded from bytes (FNV-1a).
struct SplitMix(u64);

impl SplitMix {
    fn from_seed(seed: &[u8]) -> Self {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in seed {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        SplitMix(hash)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// `len` pseudo-random bytes, the same for the same seed on every run.
pub fn random_bytes(seed: &[u8], len: usize) -> Vec<u8> {
    let mut rng = SplitMix::from_seed(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `len` bytes of deterministic English-looking text in lines, for documentation files.
pub fn text_bytes(seed: &[u8], len: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the",
        "image",
        "layer",
        "store",
        "file",
        "system",
        "container",
        "package",
        "license",
        "version",
        "shared",
        "content",
        "digest",
        "build",
        "config",
        "manifest",
        "index",
        "registry",
        "mount",
        "read",
        "only",
        "copy",
        "sample",
        "data",
        "for",
        "with",
        "and",
        "of",
        "is",
        "a",
        "to",
        "in",
        "this",
        "software",
        "provided",
        "without",
        "warranty",
    ];
    let mut rng = SplitMix::from_seed(seed);
    let mut out = Vec::with_capacity(len + 16);
    let mut line_len = 0;
    while out.len() < len {
        let word = WORDS[(rng.next() % WORDS.len() as u64) as usize];
        if line_len + word.len() + 1 > 72 {
            out.push(b'\n');
            line_len = 0;
        } else if line_len > 0 {
            out.push(b' ');
            line_len += 1;
        }
        out.extend_from_slice(word.as_bytes());
        line_len += word.len();
    }
    out.truncate(len);
    if let Some(last) = out.last_mut() {
        *last = b'\n';
    }
    out
}

fn join_name(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        [dir, b"/", name].concat()
    }
}

fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

impl LayerSpec {
    /// An empty layer (a tar with only the end-of-archive blocks).
    pub fn new() -> Self {
        LayerSpec {
            entries: Vec::new(),
            end_of_archive: true,
        }
    }

    /// Parses a description (see the module documentation for the syntax).
    pub fn parse(text: &str) -> Result<Self> {
        let mut spec = LayerSpec::new();
        for (index, line) in text.lines().enumerate() {
            let line_number = index + 1;
            let parse_error = |message: String| SampleError::Parse {
                line: line_number,
                message,
            };
            for tokens in tokenize(line).map_err(parse_error)? {
                spec.parse_entry(&tokens).map_err(parse_error)?;
            }
        }
        Ok(spec)
    }

    /// Appends the entries of another description.
    pub fn extend(mut self, other: &LayerSpec) -> Self {
        self.entries.extend(other.entries.iter().cloned());
        self
    }

    /// Drops the end-of-archive blocks, as older umoci did.
    pub fn without_end_of_archive(mut self) -> Self {
        self.end_of_archive = false;
        self
    }

    fn parse_entry(&mut self, tokens: &[Token]) -> std::result::Result<(), String> {
        let kind = match tokens.first() {
            Some(Token::Bare(word)) => word.as_str(),
            _ => return Err("expected an entry kind (dir, file, symlink, ...)".into()),
        };
        let positional = match kind {
            "file" | "xattr" => 3,
            "dir" | "fifo" | "symlink" | "hardlink" => 2,
            "chardev" | "blockdev" => 4,
            "whiteout" | "opaque" => 1,
            other => return Err(format!("unknown entry kind {other:?}")),
        };
        if tokens.len() < 1 + positional {
            return Err(format!("{kind}: expected {positional} arguments"));
        }
        let args = &tokens[1..=positional];
        let mut uid = 0;
        let mut gid = 0;
        let mut mtime = SAMPLE_MTIME;
        let mut names = NameFormat::Ustar;
        let mut raw = false;
        for option in &tokens[1 + positional..] {
            let Token::Bare(option) = option else {
                return Err("unexpected quoted string after the arguments".into());
            };
            let (key, value) = option.split_once('=').unwrap_or((option, ""));
            let number = || -> std::result::Result<u64, String> {
                value.parse().map_err(|_| format!("bad option {option:?}"))
            };
            match key {
                "uid" => uid = number()?,
                "gid" => gid = number()?,
                "mtime" => mtime = number()?,
                "raw" => raw = true,
                "names" => {
                    names = match value {
                        "ustar" => NameFormat::Ustar,
                        "gnu" => NameFormat::Gnu,
                        "pax" => NameFormat::Pax,
                        _ => return Err(format!("bad option {option:?} (ustar, gnu or pax)")),
                    }
                }
                _ => return Err(format!("unknown option {option:?}")),
            }
        }
        let raw_path = args[0].bytes();
        let path = if raw {
            raw_path.clone()
        } else {
            normalize_path(&raw_path)?
        };

        if kind == "xattr" {
            let name = String::from_utf8(args[1].bytes())
                .map_err(|_| "xattr name is not UTF-8".to_string())?;
            let value = args[2].bytes();
            let target = self
                .entries
                .iter_mut()
                .rev()
                .find(|entry| entry.path.strip_suffix(b"/").unwrap_or(&entry.path) == path)
                .ok_or_else(|| {
                    format!(
                        "xattr: no earlier entry {:?} in this layer",
                        String::from_utf8_lossy(&raw_path)
                    )
                })?;
            target.xattrs.push((name, value));
            return Ok(());
        }

        let (path, kind, mode) = match kind {
            "dir" => {
                let mut dir = if path.is_empty() { b".".to_vec() } else { path };
                dir.push(b'/');
                (dir, EntryKind::Dir, parse_mode(args.get(1))?)
            }
            "file" => {
                let content = parse_content(args.get(2), &raw_path)?;
                (path, EntryKind::File(content), parse_mode(args.get(1))?)
            }
            "symlink" => (path, EntryKind::Symlink(args[1].bytes()), 0o777),
            "hardlink" => {
                let target = if raw {
                    args[1].bytes()
                } else {
                    normalize_path(&args[1].bytes())?
                };
                let mode = self
                    .entries
                    .iter()
                    .rev()
                    .find(|entry| entry.path == target)
                    .map_or(0o644, |entry| entry.mode);
                (path, EntryKind::Hardlink(target), mode)
            }
            "fifo" => (path, EntryKind::Fifo, parse_mode(args.get(1))?),
            "chardev" | "blockdev" => {
                let major = parse_number(args.get(2), "major number")?;
                let minor = parse_number(args.get(3), "minor number")?;
                let device = if kind == "chardev" {
                    EntryKind::CharDevice(major, minor)
                } else {
                    EntryKind::BlockDevice(major, minor)
                };
                (path, device, parse_mode(args.get(1))?)
            }
            "whiteout" => {
                let (parent, name) = split_parent(&path);
                if name.is_empty() {
                    return Err("whiteout needs a path below /".into());
                }
                let marker = join_name(parent, &[b".wh.", name].concat());
                (marker, EntryKind::File(Vec::new()), 0o644)
            }
            "opaque" => (
                join_name(&path, b".wh..wh..opq"),
                EntryKind::File(Vec::new()),
                0o644,
            ),
            _ => unreachable!("kinds were checked above"),
        };
        if path.is_empty() {
            return Err("empty path".into());
        }
        self.entries.push(Entry {
            path,
            kind,
            mode,
            uid,
            gid,
            mtime,
            xattrs: Vec::new(),
            names,
        });
        Ok(())
    }

    /// The uncompressed tar stream of this layer.
    pub fn to_tar(&self) -> Result<Vec<u8>> {
        let mut builder = tar::Builder::new(Vec::new());
        for entry in &self.entries {
            append_entry(&mut builder, entry)?;
        }
        let mut tar = builder.into_inner()?;
        if !self.end_of_archive {
            // tar::Builder always finishes with two zero blocks; drop them.
            tar.truncate(tar.len() - 1024);
        }
        Ok(tar)
    }

    /// Builds the layer blob with the given compression.
    pub fn build(&self, compression: Compression) -> Result<BuiltLayer> {
        let tar = self.to_tar()?;
        BuiltLayer::from_tar(tar, compression)
    }
}

/// A PAX extended-header record: `"<len> <key>=<value>\n"`, len counting itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body_len = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body_len + 1;
    while len.to_string().len() + body_len != len {
        len = len.to_string().len() + body_len;
    }
    let mut record = format!("{len} {key}=").into_bytes();
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

fn set_field(field: &mut [u8], value: &[u8]) {
    field.fill(0);
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

fn append_special(
    builder: &mut tar::Builder<Vec<u8>>,
    entry_type: tar::EntryType,
    name: &[u8],
    data: &[u8],
    gnu: bool,
) -> io::Result<()> {
    let mut header = if gnu {
        tar::Header::new_gnu()
    } else {
        tar::Header::new_ustar()
    };
    set_field(&mut header.as_old_mut().name, name);
    header.set_entry_type(entry_type);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(data.len() as u64);
    header.set_cksum();
    builder.append(&header, data)
}

/// Places `path` into the ustar `prefix`/`name` fields if it fits.
fn ustar_split(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= 100 {
        return Some((&[], path));
    }
    // Split at a '/' so the prefix fits 155 bytes and the rest 100.
    path.iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'/' && i <= 155 && path.len() - i - 1 <= 100 && i + 1 < path.len())
        .map(|(i, _)| (&path[..i], &path[i + 1..]))
        .next()
}

fn append_entry(builder: &mut tar::Builder<Vec<u8>>, entry: &Entry) -> io::Result<()> {
    let gnu = entry.names == NameFormat::Gnu;
    let mut header = if gnu {
        tar::Header::new_gnu()
    } else {
        tar::Header::new_ustar()
    };
    let mut pax: Vec<u8> = Vec::new();

    match entry.names {
        NameFormat::Gnu => {
            if entry.path.len() > 100 {
                let data = [&entry.path[..], b"\0"].concat();
                append_special(
                    builder,
                    tar::EntryType::GNULongName,
                    b"././@LongLink",
                    &data,
                    true,
                )?;
            }
            set_field(&mut header.as_old_mut().name, &entry.path);
        }
        NameFormat::Ustar => match ustar_split(&entry.path) {
            Some((prefix, name)) => {
                set_field(&mut header.as_old_mut().name, name);
                if let Some(ustar) = header.as_ustar_mut() {
                    set_field(&mut ustar.prefix, prefix);
                }
            }
            None => {
                pax.extend(pax_record("path", &entry.path));
                set_field(&mut header.as_old_mut().name, &entry.path);
            }
        },
        NameFormat::Pax => {
            pax.extend(pax_record("path", &entry.path));
            set_field(&mut header.as_old_mut().name, &entry.path);
        }
    }

    let link = match &entry.kind {
        EntryKind::Symlink(target) | EntryKind::Hardlink(target) => Some(target.as_slice()),
        _ => None,
    };
    if let Some(target) = link {
        let long = target.len() > 100;
        match entry.names {
            NameFormat::Gnu if long => {
                let data = [target, b"\0"].concat();
                append_special(
                    builder,
                    tar::EntryType::GNULongLink,
                    b"././@LongLink",
                    &data,
                    true,
                )?;
            }
            NameFormat::Pax => pax.extend(pax_record("linkpath", target)),
            NameFormat::Ustar if long => pax.extend(pax_record("linkpath", target)),
            _ => {}
        }
        set_field(&mut header.as_old_mut().linkname, target);
    }

    for (name, value) in &entry.xattrs {
        pax.extend(pax_record(&format!("SCHILY.xattr.{name}"), value));
    }
    if !pax.is_empty() {
        let (_, base) = split_parent(entry.path.strip_suffix(b"/").unwrap_or(&entry.path));
        let pax_name = [b"PaxHeaders.0/", base].concat();
        append_special(builder, tar::EntryType::XHeader, &pax_name, &pax, false)?;
    }

    let (entry_type, data): (tar::EntryType, &[u8]) = match &entry.kind {
        EntryKind::Dir => (tar::EntryType::Directory, &[]),
        EntryKind::File(content) => (tar::EntryType::Regular, content),
        EntryKind::Symlink(_) => (tar::EntryType::Symlink, &[]),
        EntryKind::Hardlink(_) => (tar::EntryType::Link, &[]),
        EntryKind::Fifo => (tar::EntryType::Fifo, &[]),
        EntryKind::CharDevice(..) => (tar::EntryType::Char, &[]),
        EntryKind::BlockDevice(..) => (tar::EntryType::Block, &[]),
    };
    header.set_entry_type(entry_type);
    header.set_mode(entry.mode);
    header.set_uid(entry.uid);
    header.set_gid(entry.gid);
    header.set_mtime(entry.mtime);
    header.set_size(data.len() as u64);
    if let EntryKind::CharDevice(major, minor) | EntryKind::BlockDevice(major, minor) = entry.kind {
        header.set_device_major(major)?;
        header.set_device_minor(minor)?;
    } else if !gnu {
        // Go writes zero device numbers on every ustar header; so do we.
        header.set_device_major(0)?;
        header.set_device_minor(0)?;
    }
    header.set_cksum();
    builder.append(&header, data)
}

// ---------------------------------------------------------------------------
// Blobs, layers, descriptors
// ---------------------------------------------------------------------------

/// Layer compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Plain tar.
    None,
    /// tar+gzip at [`GZIP_LEVEL`].
    Gzip,
    /// tar+zstd at [`ZSTD_LEVEL`].
    Zstd,
}

/// Manifest flavour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ManifestFormat {
    /// OCI image manifest / OCI index.
    #[default]
    Oci,
    /// Docker schema 2 manifest / Docker manifest list.
    Docker,
}

/// A blob: bytes with a media type and the digest it is stored under.
///
/// `digest` equals the sha256 of `data` except in images made by
/// [`BuiltImage::corrupt`] with [`Corruption::WrongDigest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    /// Media type used in descriptors pointing at this blob.
    pub media_type: String,
    /// The digest descriptors name and the file name in `blobs/sha256/`.
    pub digest: Digest,
    /// The bytes.
    pub data: Vec<u8>,
}

impl Blob {
    /// A blob whose digest is the sha256 of `data`.
    pub fn new(media_type: &str, data: Vec<u8>) -> Self {
        Blob {
            media_type: media_type.to_string(),
            digest: Digest::of(&data),
            data,
        }
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.data.len() as u64
    }

    /// A descriptor for this blob.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest,
            size: self.size(),
            artifact_type: None,
            platform: None,
            annotations: BTreeMap::new(),
        }
    }
}

/// A platform as written in index descriptors and configs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Platform {
    /// CPU architecture (`amd64`, `arm64`, `unknown`).
    pub architecture: String,
    /// Operating system (`linux`, `unknown`).
    pub os: String,
    /// Variant (`v8`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `os/arch[/variant]`, e.g. `linux/arm64/v8`.
    pub fn parse(text: &str) -> Result<Self> {
        let parts: Vec<&str> = text.split('/').collect();
        match parts.as_slice() {
            [os, arch] | [os, arch, _] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: parts.get(2).map(|v| v.to_string()),
            }),
            _ => Err(invalid(format!(
                "platform {text:?}: expected os/arch[/variant]"
            ))),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// An OCI content descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced blob.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// OCI 1.1 artifact type (index entries of artifacts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Platform (index entries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A built layer: the blob as stored and the uncompressed tar it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltLayer {
    /// The (possibly compressed) blob; its media type is set by the image builder.
    pub blob: Blob,
    /// sha256 of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: DiffId,
    /// The uncompressed tar (what `docker save` writes as `layer.tar`).
    pub tar: Vec<u8>,
    /// How `blob` was compressed from `tar`.
    pub compression: Compression,
    /// Annotations on the layer's descriptor.
    pub annotations: BTreeMap<String, String>,
}

impl BuiltLayer {
    /// Compresses a tar stream into a layer.
    pub fn from_tar(tar: Vec<u8>, compression: Compression) -> Result<Self> {
        let data = match compression {
            Compression::None => tar.clone(),
            Compression::Gzip => {
                // GzBuilder writes mtime 0 and no file name, so the bytes are stable.
                let mut encoder = flate2::GzBuilder::new()
                    .write(Vec::new(), flate2::Compression::new(GZIP_LEVEL));
                encoder.write_all(&tar)?;
                encoder.finish()?
            }
            Compression::Zstd => zstd::stream::encode_all(&tar[..], ZSTD_LEVEL)?,
        };
        Ok(BuiltLayer {
            blob: Blob::new(layer_media_type(ManifestFormat::Oci, compression), data),
            diff_id: DiffId(Digest::of(&tar)),
            tar,
            compression,
            annotations: BTreeMap::new(),
        })
    }

    fn descriptor(&self) -> Descriptor {
        Descriptor {
            annotations: self.annotations.clone(),
            ..self.blob.descriptor()
        }
    }
}

/// The layer media type for a manifest format and compression.
pub fn layer_media_type(format: ManifestFormat, compression: Compression) -> &'static str {
    use media_type::*;
    match (format, compression) {
        (ManifestFormat::Oci, Compression::None) => OCI_LAYER_TAR,
        (ManifestFormat::Oci, Compression::Gzip) => OCI_LAYER_GZIP,
        (ManifestFormat::Oci, Compression::Zstd) => OCI_LAYER_ZSTD,
        (ManifestFormat::Docker, Compression::None) => DOCKER_LAYER_TAR,
        (ManifestFormat::Docker, Compression::Gzip) => DOCKER_LAYER_GZIP,
        (ManifestFormat::Docker, Compression::Zstd) => DOCKER_LAYER_ZSTD,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestJson<'a> {
    schema_version: u32,
    media_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<&'a str>,
    config: &'a Descriptor,
    layers: &'a [Descriptor],
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a Descriptor>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexJson<'a> {
    schema_version: u32,
    media_type: &'a str,
    manifests: &'a [Descriptor],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a BTreeMap<String, String>,
}

// ---------------------------------------------------------------------------
// Images
// ---------------------------------------------------------------------------

/// A built image manifest (or OCI artifact manifest) with everything it references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltImage {
    /// OCI or Docker schema 2.
    pub format: ManifestFormat,
    /// The platform of an image (None for artifacts).
    pub platform: Option<Platform>,
    /// The manifest blob.
    pub manifest: Blob,
    /// The config blob.
    pub config: Blob,
    /// The layers, base first.
    pub layers: Vec<BuiltLayer>,
    /// `artifactType` of an OCI artifact.
    pub artifact_type: Option<String>,
    /// `subject` of an OCI artifact.
    pub subject: Option<Descriptor>,
    /// Manifest annotations.
    pub annotations: BTreeMap<String, String>,
}

impl BuiltImage {
    /// The manifest digest.
    pub fn digest(&self) -> Digest {
        self.manifest.digest
    }

    /// A descriptor of the manifest (no platform).
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            artifact_type: self.artifact_type.clone(),
            ..self.manifest.descriptor()
        }
    }

    /// The config's `rootfs.diff_ids`, as built.
    pub fn diff_ids(&self) -> Vec<DiffId> {
        self.layers.iter().map(|layer| layer.diff_id).collect()
    }

    /// Every blob: manifest, config, layers.
    pub fn blobs(&self) -> Vec<&Blob> {
        let mut blobs = vec![&self.manifest, &self.config];
        blobs.extend(self.layers.iter().map(|layer| &layer.blob));
        blobs
    }

    fn manifest_media_type(&self) -> &'static str {
        match self.format {
            ManifestFormat::Oci => media_type::OCI_MANIFEST,
            ManifestFormat::Docker => media_type::DOCKER_MANIFEST,
        }
    }

    fn encode_manifest(&self, config: &Descriptor, layers: &[Descriptor]) -> Result<Blob> {
        let media_type = self.manifest_media_type();
        let json = ManifestJson {
            schema_version: 2,
            media_type,
            artifact_type: self.artifact_type.as_deref(),
            config,
            layers,
            subject: self.subject.as_ref(),
            annotations: &self.annotations,
        };
        Ok(Blob::new(media_type, serde_json::to_vec(&json)?))
    }

    fn descriptors(&self) -> (Descriptor, Vec<Descriptor>) {
        (
            self.config.descriptor(),
            self.layers.iter().map(BuiltLayer::descriptor).collect(),
        )
    }

    /// A copy of this image broken in one way, for negative tests. Every other
    /// digest and size stays consistent, so the one fault is what a reader meets.
    pub fn corrupt(&self, corruption: Corruption) -> Result<BuiltImage> {
        let mut image = self.clone();
        let (mut config_desc, mut layer_descs) = image.descriptors();
        let layer_index = |layer: usize| -> Result<usize> {
            if layer < self.layers.len() {
                Ok(layer)
            } else {
                Err(invalid(format!("corrupt: the image has no layer {layer}")))
            }
        };
        match corruption {
            Corruption::WrongDiffId { layer } => {
                let layer = layer_index(layer)?;
                let mut config: serde_json::Value = serde_json::from_slice(&image.config.data)?;
                config["rootfs"]["diff_ids"][layer] =
                    json!(Digest::of(b"not the diff_id").to_string());
                image.config = Blob::new(&image.config.media_type, serde_json::to_vec(&config)?);
                config_desc = image.config.descriptor();
            }
            Corruption::WrongSize(Part::Config) => config_desc.size += 1,
            Corruption::WrongSize(Part::Layer(layer)) => {
                layer_descs[layer_index(layer)?].size += 1;
            }
            Corruption::WrongDigest(Part::Config) => {
                let mut config: serde_json::Value = serde_json::from_slice(&image.config.data)?;
                config["imagefs.corrupted"] = json!(true);
                image.config.data = serde_json::to_vec(&config)?;
                config_desc.size = image.config.size();
            }
            Corruption::WrongDigest(Part::Layer(layer)) => {
                let layer = layer_index(layer)?;
                let other = LayerSpec::parse(r#"file /corrupted 0644 "not the layer you want""#)?
                    .build(image.layers[layer].compression)?;
                image.layers[layer].blob.data = other.blob.data;
                layer_descs[layer].size = image.layers[layer].blob.size();
            }
            Corruption::TruncatedLayer { layer } => {
                let layer = layer_index(layer)?;
                let blob = &mut image.layers[layer].blob;
                let mut data = std::mem::take(&mut blob.data);
                data.truncate(data.len() / 2);
                *blob = Blob::new(&blob.media_type, data);
                layer_descs[layer] = image.layers[layer].descriptor();
            }
            Corruption::MalformedConfig => {
                image.config = Blob::new(
                    &image.config.media_type,
                    br#"{"architecture": "amd64", "os": "linux", "rootfs": {"type": "#.to_vec(),
                );
                config_desc = image.config.descriptor();
            }
            Corruption::MalformedManifest => {
                let mut data = image.manifest.data.clone();
                data.truncate(data.len() / 2);
                image.manifest = Blob::new(&image.manifest.media_type, data);
                return Ok(image);
            }
            Corruption::UnknownLayerMediaType { layer } => {
                let layer = layer_index(layer)?;
                image.layers[layer].blob.media_type = media_type::UNKNOWN_LAYER.to_string();
                layer_descs[layer].media_type = media_type::UNKNOWN_LAYER.to_string();
            }
        }
        image.manifest = image.encode_manifest(&config_desc, &layer_descs)?;
        Ok(image)
    }
}

/// Which blob of an image a corruption applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The config blob.
    Config,
    /// The layer at this position (0 = base).
    Layer(usize),
}

/// Ways to break an image for negative tests (see [`BuiltImage::corrupt`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corruption {
    /// The config lists a wrong `diff_id` for this layer (digests and sizes are right).
    WrongDiffId {
        /// Layer position.
        layer: usize,
    },
    /// The manifest's descriptor claims one byte more than the blob has.
    WrongSize(Part),
    /// The file stored under the descriptor's digest holds other (valid) bytes of
    /// the size the descriptor claims.
    WrongDigest(Part),
    /// The layer blob is cut in half; descriptor digest and size match the cut
    /// bytes, so only decompression or tar parsing finds the fault.
    TruncatedLayer {
        /// Layer position.
        layer: usize,
    },
    /// The config is cut-off JSON (descriptor consistent).
    MalformedConfig,
    /// The manifest is cut-off JSON (its digest is of the cut bytes).
    MalformedManifest,
    /// The layer's media type is [`media_type::UNKNOWN_LAYER`].
    UnknownLayerMediaType {
        /// Layer position.
        layer: usize,
    },
}

enum LayerSource {
    Spec(LayerSpec, Compression),
    Built(BuiltLayer),
}

/// Builds an image: layers, config and manifest.
pub struct ImageBuilder {
    format: ManifestFormat,
    platform: Platform,
    layers: Vec<LayerSource>,
    env: Vec<String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    working_dir: Option<String>,
    user: Option<String>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    created: String,
}

impl Default for ImageBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ImageBuilder {
    /// An OCI linux/amd64 image with no layers and
    /// `PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`.
    pub fn new() -> Self {
        ImageBuilder {
            format: ManifestFormat::Oci,
            platform: Platform {
                os: "linux".into(),
                architecture: "amd64".into(),
                variant: None,
            },
            layers: Vec::new(),
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            working_dir: None,
            user: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            created: SAMPLE_CREATED.into(),
        }
    }

    /// OCI (default) or Docker schema 2 manifest and media types.
    pub fn format(mut self, format: ManifestFormat) -> Self {
        self.format = format;
        self
    }

    /// Sets the config's os, architecture and variant.
    pub fn config(mut self, os: &str, architecture: &str, variant: Option<&str>) -> Self {
        self.platform = Platform {
            os: os.into(),
            architecture: architecture.into(),
            variant: variant.map(Into::into),
        };
        self
    }

    /// Adds a layer built from a description.
    pub fn layer(mut self, spec: &LayerSpec, compression: Compression) -> Self {
        self.layers
            .push(LayerSource::Spec(spec.clone(), compression));
        self
    }

    /// Adds an already built layer (its media type follows this image's format).
    pub fn built_layer(mut self, layer: BuiltLayer) -> Self {
        self.layers.push(LayerSource::Built(layer));
        self
    }

    /// Adds an environment variable `NAME=value` to the config.
    pub fn env(mut self, variable: &str) -> Self {
        self.env.push(variable.into());
        self
    }

    /// Sets the config's `Entrypoint`.
    pub fn entrypoint(mut self, args: &[&str]) -> Self {
        self.entrypoint = args.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Sets the config's `Cmd`.
    pub fn cmd(mut self, args: &[&str]) -> Self {
        self.cmd = args.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Sets the config's `WorkingDir`.
    pub fn working_dir(mut self, dir: &str) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    /// Sets the config's `User`.
    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Adds a config label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Adds a manifest annotation.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// Sets the config's `created` time (RFC 3339).
    pub fn created(mut self, created: &str) -> Self {
        self.created = created.into();
        self
    }

    /// Builds layers, config and manifest.
    pub fn build(self) -> Result<BuiltImage> {
        let mut layers = Vec::with_capacity(self.layers.len());
        for source in self.layers {
            let mut layer = match source {
                LayerSource::Spec(spec, compression) => spec.build(compression)?,
                LayerSource::Built(layer) => layer,
            };
            layer.blob.media_type = layer_media_type(self.format, layer.compression).to_string();
            layers.push(layer);
        }

        let mut container_config = serde_json::Map::new();
        if let Some(user) = &self.user {
            container_config.insert("User".into(), json!(user));
        }
        if !self.env.is_empty() {
            container_config.insert("Env".into(), json!(self.env));
        }
        if !self.entrypoint.is_empty() {
            container_config.insert("Entrypoint".into(), json!(self.entrypoint));
        }
        if !self.cmd.is_empty() {
            container_config.insert("Cmd".into(), json!(self.cmd));
        }
        if let Some(dir) = &self.working_dir {
            container_config.insert("WorkingDir".into(), json!(dir));
        }
        if !self.labels.is_empty() {
            container_config.insert("Labels".into(), json!(self.labels));
        }
        let history: Vec<serde_json::Value> = (0..layers.len())
            .map(|i| {
                json!({
                    "created": self.created,
                    "created_by": format!("imagefs sample: layer {i}"),
                })
            })
            .collect();
        let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();
        let mut config = json!({
            "architecture": self.platform.architecture,
            "os": self.platform.os,
            "created": self.created,
            "config": container_config,
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": history,
        });
        if let Some(variant) = &self.platform.variant {
            config["variant"] = json!(variant);
        }
        let config_media_type = match self.format {
            ManifestFormat::Oci => media_type::OCI_CONFIG,
            ManifestFormat::Docker => media_type::DOCKER_CONFIG,
        };
        let config = Blob::new(config_media_type, serde_json::to_vec(&config)?);

        let mut image = BuiltImage {
            format: self.format,
            platform: Some(self.platform),
            manifest: Blob::new(media_type::OCI_MANIFEST, Vec::new()),
            config,
            layers,
            artifact_type: None,
            subject: None,
            annotations: self.annotations,
        };
        let (config_desc, layer_descs) = image.descriptors();
        image.manifest = image.encode_manifest(&config_desc, &layer_descs)?;
        Ok(image)
    }
}

/// Builds an OCI 1.1 artifact manifest (any config media type, arbitrary blobs,
/// optional `subject`).
pub struct ArtifactBuilder {
    artifact_type: Option<String>,
    config: Blob,
    blobs: Vec<BuiltLayer>,
    subject: Option<Descriptor>,
    annotations: BTreeMap<String, String>,
}

impl Default for ArtifactBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ArtifactBuilder {
    /// An artifact with the empty config (`application/vnd.oci.empty.v1+json`, `{}`).
    pub fn new() -> Self {
        ArtifactBuilder {
            artifact_type: None,
            config: Blob::new(media_type::OCI_EMPTY, b"{}".to_vec()),
            blobs: Vec::new(),
            subject: None,
            annotations: BTreeMap::new(),
        }
    }

    /// Sets `artifactType`.
    pub fn artifact_type(mut self, artifact_type: &str) -> Self {
        self.artifact_type = Some(artifact_type.into());
        self
    }

    /// Uses a config blob of this media type (e.g. `application/vnd.example.config+json`).
    pub fn config(mut self, media_type: &str, data: &[u8]) -> Self {
        self.config = Blob::new(media_type, data.to_vec());
        self
    }

    /// Adds a blob (a `layers` entry) with an `org.opencontainers.image.title`
    /// annotation, as ORAS does for files.
    pub fn file(mut self, title: &str, media_type: &str, data: &[u8]) -> Self {
        let mut blob = self.raw_blob(media_type, data);
        blob.annotations
            .insert("org.opencontainers.image.title".into(), title.into());
        self.blobs.push(blob);
        self
    }

    /// Adds a blob without annotations.
    pub fn blob(mut self, media_type: &str, data: &[u8]) -> Self {
        let blob = self.raw_blob(media_type, data);
        self.blobs.push(blob);
        self
    }

    fn raw_blob(&self, media_type: &str, data: &[u8]) -> BuiltLayer {
        let blob = Blob::new(media_type, data.to_vec());
        BuiltLayer {
            diff_id: DiffId(blob.digest),
            blob,
            tar: Vec::new(),
            compression: Compression::None,
            annotations: BTreeMap::new(),
        }
    }

    /// Points `subject` at a manifest (the artifact is "about" that image).
    pub fn subject(mut self, descriptor: Descriptor) -> Self {
        self.subject = Some(descriptor);
        self
    }

    /// Adds a manifest annotation.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// Builds the artifact manifest.
    pub fn build(self) -> Result<BuiltImage> {
        if self.artifact_type.is_none() && self.config.media_type == media_type::OCI_EMPTY {
            return Err(invalid(
                "an artifact with the empty config needs an artifactType",
            ));
        }
        let mut blobs = self.blobs;
        if blobs.is_empty() {
            // OCI 1.1: an artifact without blobs lists the empty descriptor.
            let empty = Blob::new(media_type::OCI_EMPTY, b"{}".to_vec());
            blobs.push(BuiltLayer {
                diff_id: DiffId(empty.digest),
                blob: empty,
                tar: Vec::new(),
                compression: Compression::None,
                annotations: BTreeMap::new(),
            });
        }
        let mut image = BuiltImage {
            format: ManifestFormat::Oci,
            platform: None,
            manifest: Blob::new(media_type::OCI_MANIFEST, Vec::new()),
            config: self.config,
            layers: blobs,
            artifact_type: self.artifact_type,
            subject: self.subject,
            annotations: self.annotations,
        };
        let (config_desc, layer_descs) = image.descriptors();
        image.manifest = image.encode_manifest(&config_desc, &layer_descs)?;
        Ok(image)
    }
}

// ---------------------------------------------------------------------------
// Indexes
// ---------------------------------------------------------------------------

/// A built index (OCI index or Docker manifest list) with its children.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltIndex {
    /// OCI index or Docker manifest list.
    pub format: ManifestFormat,
    /// The index blob.
    pub index: Blob,
    /// The children in index order, each with the descriptor the index lists.
    pub children: Vec<(Descriptor, BuiltImage)>,
}

impl BuiltIndex {
    /// The index digest.
    pub fn digest(&self) -> Digest {
        self.index.digest
    }

    /// Every blob: the index, then each child's blobs (duplicates possible).
    pub fn blobs(&self) -> Vec<&Blob> {
        let mut blobs = vec![&self.index];
        for (_, child) in &self.children {
            blobs.extend(child.blobs());
        }
        blobs
    }

    /// The child listed for a platform (`linux/arm64/v8`), if any.
    pub fn child(&self, platform: &str) -> Option<&BuiltImage> {
        self.children
            .iter()
            .find(|(descriptor, _)| {
                descriptor
                    .platform
                    .as_ref()
                    .is_some_and(|p| p.to_string() == platform)
            })
            .map(|(_, image)| image)
    }
}

/// Builds a multi-platform index.
pub struct IndexBuilder {
    format: ManifestFormat,
    manifests: Vec<(Option<Platform>, BuiltImage)>,
    attestations: bool,
    annotations: BTreeMap<String, String>,
}

impl Default for IndexBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl IndexBuilder {
    /// An empty OCI index.
    pub fn new() -> Self {
        IndexBuilder {
            format: ManifestFormat::Oci,
            manifests: Vec::new(),
            attestations: false,
            annotations: BTreeMap::new(),
        }
    }

    /// OCI index (default) or Docker manifest list.
    pub fn format(mut self, format: ManifestFormat) -> Self {
        self.format = format;
        self
    }

    /// Adds a child; its descriptor carries the image's platform.
    pub fn manifest(mut self, image: BuiltImage) -> Self {
        let platform = image.platform.clone();
        self.manifests.push((platform, image));
        self
    }

    /// Adds a child with an explicit platform (or none).
    pub fn manifest_with_platform(mut self, image: BuiltImage, platform: Option<Platform>) -> Self {
        self.manifests.push((platform, image));
        self
    }

    /// Adds a buildx-style attestation manifest (`unknown/unknown`) for every
    /// child that has a platform, after all children.
    pub fn attestations(mut self, enabled: bool) -> Self {
        self.attestations = enabled;
        self
    }

    /// Adds an index annotation.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// Builds the index.
    pub fn build(self) -> Result<BuiltIndex> {
        let mut children = Vec::new();
        let mut attestations = Vec::new();
        for (platform, image) in self.manifests {
            if self.attestations && platform.is_some() {
                attestations.push(attestation_for(&image)?);
            }
            let descriptor = Descriptor {
                platform,
                ..image.descriptor()
            };
            children.push((descriptor, image));
        }
        children.extend(attestations);
        let descriptors: Vec<Descriptor> = children.iter().map(|(d, _)| d.clone()).collect();
        let media_type = match self.format {
            ManifestFormat::Oci => media_type::OCI_INDEX,
            ManifestFormat::Docker => media_type::DOCKER_LIST,
        };
        let json = IndexJson {
            schema_version: 2,
            media_type,
            manifests: &descriptors,
            annotations: &self.annotations,
        };
        Ok(BuiltIndex {
            format: self.format,
            index: Blob::new(media_type, serde_json::to_vec(&json)?),
            children,
        })
    }
}

/// A buildx-style attestation manifest for `image`, with its index descriptor.
fn attestation_for(image: &BuiltImage) -> Result<(Descriptor, BuiltImage)> {
    let statement = json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://spdx.dev/Document",
        "subject": [{
            "name": "pkg:docker/imagefs-sample",
            "digest": { "sha256": image.digest().hex() },
        }],
        "predicate": {
            "spdxVersion": "SPDX-2.3",
            "SPDXID": "SPDXRef-DOCUMENT",
            "name": "sbom",
            "packages": [],
        },
    });
    let statement = Blob::new(media_type::IN_TOTO, serde_json::to_vec(&statement)?);
    let mut layer_annotations = BTreeMap::new();
    layer_annotations.insert(
        "in-toto.io/predicate-type".to_string(),
        "https://spdx.dev/Document".to_string(),
    );
    let config = json!({
        "architecture": "unknown",
        "os": "unknown",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [statement.digest.to_string()] },
    });
    let config = Blob::new(media_type::OCI_CONFIG, serde_json::to_vec(&config)?);
    let mut attestation = BuiltImage {
        format: ManifestFormat::Oci,
        platform: None,
        manifest: Blob::new(media_type::OCI_MANIFEST, Vec::new()),
        config,
        layers: vec![BuiltLayer {
            diff_id: DiffId(statement.digest),
            tar: Vec::new(),
            blob: statement,
            compression: Compression::None,
            annotations: layer_annotations,
        }],
        artifact_type: None,
        subject: None,
        annotations: BTreeMap::new(),
    };
    let (config_desc, layer_descs) = attestation.descriptors();
    attestation.manifest = attestation.encode_manifest(&config_desc, &layer_descs)?;
    let mut annotations = BTreeMap::new();
    annotations.insert(
        "vnd.docker.reference.digest".to_string(),
        image.digest().to_string(),
    );
    annotations.insert(
        "vnd.docker.reference.type".to_string(),
        "attestation-manifest".to_string(),
    );
    let descriptor = Descriptor {
        platform: Some(Platform {
            architecture: "unknown".into(),
            os: "unknown".into(),
            variant: None,
        }),
        annotations,
        ..attestation.descriptor()
    };
    Ok((descriptor, attestation))
}

/// An image or an index: what a layout or archive entry points at.
#[derive(Clone, Debug, PartialEq, Eq)]
// Test fixtures, built a handful at a time: boxing would only add noise.
#[allow(clippy::large_enum_variant)]
pub enum Built {
    /// An image or artifact manifest.
    Image(BuiltImage),
    /// An index.
    Index(BuiltIndex),
}

impl Built {
    /// The digest of the top blob (manifest or index).
    pub fn digest(&self) -> Digest {
        match self {
            Built::Image(image) => image.digest(),
            Built::Index(index) => index.digest(),
        }
    }

    /// The descriptor of the top blob.
    pub fn descriptor(&self) -> Descriptor {
        match self {
            Built::Image(image) => image.descriptor(),
            Built::Index(index) => index.index.descriptor(),
        }
    }

    /// Every blob reachable from the top (duplicates possible).
    pub fn blobs(&self) -> Vec<&Blob> {
        match self {
            Built::Image(image) => image.blobs(),
            Built::Index(index) => index.blobs(),
        }
    }

    /// The image, if this is one.
    pub fn as_image(&self) -> Option<&BuiltImage> {
        match self {
            Built::Image(image) => Some(image),
            Built::Index(_) => None,
        }
    }
}

impl From<BuiltImage> for Built {
    fn from(image: BuiltImage) -> Self {
        Built::Image(image)
    }
}

impl From<BuiltIndex> for Built {
    fn from(index: BuiltIndex) -> Self {
        Built::Index(index)
    }
}

// ---------------------------------------------------------------------------
// Writers
// ---------------------------------------------------------------------------

/// A file of a layout or archive, in write order.
enum Item<'a> {
    Dir(String),
    File(String, std::borrow::Cow<'a, [u8]>),
    Symlink(String, String),
}

const OCI_LAYOUT_FILE: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// The files of an OCI layout: `oci-layout`, `index.json`, `blobs/sha256/*`.
fn oci_layout_items<'a>(
    entries: &[(Option<&str>, &'a Built)],
    annotate: impl Fn(&str) -> BTreeMap<String, String>,
) -> Result<Vec<Item<'a>>> {
    let mut manifests = Vec::new();
    let mut blobs: BTreeMap<String, &'a [u8]> = BTreeMap::new();
    for (name, built) in entries {
        let mut descriptor = built.descriptor();
        if let Some(name) = name {
            descriptor.annotations = annotate(name);
        }
        manifests.push(descriptor);
        for blob in built.blobs() {
            blobs.entry(blob.digest.hex()).or_insert(&blob.data);
        }
    }
    let index = IndexJson {
        schema_version: 2,
        media_type: media_type::OCI_INDEX,
        manifests: &manifests,
        annotations: &BTreeMap::new(),
    };
    let mut items = vec![
        Item::File("oci-layout".into(), OCI_LAYOUT_FILE.into()),
        Item::File("index.json".into(), serde_json::to_vec(&index)?.into()),
        Item::Dir("blobs".into()),
        Item::Dir("blobs/sha256".into()),
    ];
    for (hex, data) in blobs {
        items.push(Item::File(format!("blobs/sha256/{hex}"), data.into()));
    }
    Ok(items)
}

fn ref_name_annotation(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(REF_NAME_ANNOTATION.to_string(), name.to_string())])
}

fn write_items_to_dir(dir: &Path, items: &[Item<'_>]) -> Result<()> {
    fs::create_dir_all(dir)?;
    for item in items {
        match item {
            Item::Dir(path) => fs::create_dir_all(dir.join(path))?,
            Item::File(path, data) => fs::write(dir.join(path), data)?,
            Item::Symlink(path, target) => {
                let link = dir.join(path);
                let _ = fs::remove_file(&link);
                std::os::unix::fs::symlink(target, link)?;
            }
        }
    }
    Ok(())
}

fn write_items_to_tar(file: &Path, items: &[Item<'_>]) -> Result<()> {
    let mut builder = tar::Builder::new(io::BufWriter::new(fs::File::create(file)?));
    for item in items {
        let mut header = tar::Header::new_ustar();
        header.set_mtime(SAMPLE_MTIME);
        header.set_uid(0);
        header.set_gid(0);
        match item {
            Item::Dir(path) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder.append_data(&mut header, format!("{path}/"), io::empty())?;
            }
            Item::File(path, data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, path, &data[..])?;
            }
            Item::Symlink(path, target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder.append_link(&mut header, path, target)?;
            }
        }
    }
    builder.into_inner()?.flush()?;
    Ok(())
}

/// Writes an OCI image layout to `dir` (created if missing; existing blobs are
/// kept, `index.json` is replaced). Each entry with a name gets an
/// `org.opencontainers.image.ref.name` annotation.
pub fn write_oci_layout(dir: &Path, entries: &[(Option<&str>, &Built)]) -> Result<()> {
    let items = oci_layout_items(entries, ref_name_annotation)?;
    write_items_to_dir(dir, &items)
}

/// Writes an OCI layout as a tar archive (what `skopeo copy ... oci-archive:FILE` makes).
pub fn write_oci_archive(file: &Path, entries: &[(Option<&str>, &Built)]) -> Result<()> {
    let items = oci_layout_items(entries, ref_name_annotation)?;
    write_items_to_tar(file, &items)
}

/// Options of the classic `docker save` writer.
#[derive(Clone, Copy, Debug, Default)]
pub struct DockerArchiveOptions {
    /// A layer whose content was already written under another layer id becomes a
    /// symlink `<id2>/layer.tar -> ../<id1>/layer.tar`, as docker does; otherwise
    /// it is written again.
    pub dedupe_symlinks: bool,
}

/// Groups entries by manifest, collecting RepoTags (docker save lists an image once).
fn docker_images<'a>(
    entries: &[(Option<&str>, &'a BuiltImage)],
) -> Result<Vec<(&'a BuiltImage, Vec<String>)>> {
    let mut images: Vec<(&BuiltImage, Vec<String>)> = Vec::new();
    for (name, image) in entries {
        if image.artifact_type.is_some() || image.platform.is_none() {
            return Err(invalid("docker archives hold images only, not artifacts"));
        }
        let position = match images
            .iter()
            .position(|(i, _)| i.digest() == image.digest())
        {
            Some(position) => position,
            None => {
                images.push((image, Vec::new()));
                images.len() - 1
            }
        };
        if let Some(name) = name {
            images[position].1.push(name.to_string());
        }
    }
    Ok(images)
}

/// `repo:tag` -> (`repo`, `tag`); a missing tag is `latest`, digests are skipped.
fn split_repo_tag(name: &str) -> Option<(&str, &str)> {
    if name.contains('@') {
        return None;
    }
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].rfind(':') {
        Some(colon) => Some((&name[..slash + colon], &name[slash + colon + 1..])),
        None => Some((name, "latest")),
    }
}

/// Writes the classic `docker save` archive: `manifest.json`, `repositories`,
/// `<config hex>.json` and per layer `<id>/layer.tar` (uncompressed), `<id>/VERSION`,
/// `<id>/json`. Layer ids are chain ids (sha256 of parent id and diff_id), so one
/// base shared by several images is written once.
pub fn write_docker_archive(
    file: &Path,
    entries: &[(Option<&str>, &BuiltImage)],
    options: DockerArchiveOptions,
) -> Result<()> {
    let images = docker_images(entries)?;
    let mut items = Vec::new();
    let mut written_ids: HashMap<String, ()> = HashMap::new();
    let mut diff_id_paths: HashMap<DiffId, String> = HashMap::new();
    let mut manifest = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut configs_written: HashMap<Digest, ()> = HashMap::new();

    for (image, names) in &images {
        let mut parent: Option<String> = None;
        let mut layer_paths = Vec::new();
        for layer in &image.layers {
            let chain = match &parent {
                Some(parent) => format!("{parent} {}", layer.diff_id),
                None => layer.diff_id.to_string(),
            };
            let id = Digest::of(chain.as_bytes()).hex();
            let layer_path = format!("{id}/layer.tar");
            if written_ids.insert(id.clone(), ()).is_none() {
                let mut v1 = json!({
                    "id": id,
                    "created": SAMPLE_CREATED,
                    "container_config": { "Cmd": null },
                    "os": image.platform.as_ref().map_or("linux", |p| p.os.as_str()),
                });
                if let Some(parent) = &parent {
                    v1["parent"] = json!(parent);
                }
                items.push(Item::Dir(id.clone()));
                items.push(Item::File(
                    format!("{id}/VERSION"),
                    b"1.0".as_slice().into(),
                ));
                items.push(Item::File(
                    format!("{id}/json"),
                    serde_json::to_vec(&v1)?.into(),
                ));
                match diff_id_paths.get(&layer.diff_id) {
                    Some(existing) if options.dedupe_symlinks => {
                        items.push(Item::Symlink(layer_path.clone(), format!("../{existing}")));
                    }
                    _ => {
                        items.push(Item::File(layer_path.clone(), layer.tar.as_slice().into()));
                        diff_id_paths.insert(layer.diff_id, layer_path.clone());
                    }
                }
            }
            layer_paths.push(layer_path);
            parent = Some(id);
        }
        let config_file = format!("{}.json", image.config.digest.hex());
        if configs_written.insert(image.config.digest, ()).is_none() {
            items.push(Item::File(
                config_file.clone(),
                image.config.data.as_slice().into(),
            ));
        }
        for name in names {
            if let (Some((repo, tag)), Some(top)) = (split_repo_tag(name), &parent) {
                repositories
                    .entry(repo.to_string())
                    .or_default()
                    .insert(tag.to_string(), top.clone());
            }
        }
        manifest.push(json!({
            "Config": config_file,
            "RepoTags": names,
            "Layers": layer_paths,
        }));
    }
    items.push(Item::File(
        "manifest.json".into(),
        serde_json::to_vec(&manifest)?.into(),
    ));
    if !repositories.is_empty() {
        items.push(Item::File(
            "repositories".into(),
            serde_json::to_vec(&repositories)?.into(),
        ));
    }
    write_items_to_tar(file, &items)
}

/// Writes the Docker 25+ `docker save` form: an OCI layout (`index.json` entries
/// annotated with `io.containerd.image.name` and the tag as
/// `org.opencontainers.image.ref.name`) plus a `manifest.json` whose `Config` and
/// `Layers` point into `blobs/sha256/`. Docker itself stores uncompressed layers
/// there; build with [`Compression::None`] to match it exactly.
pub fn write_docker_archive_oci(
    file: &Path,
    entries: &[(Option<&str>, &BuiltImage)],
) -> Result<()> {
    let images = docker_images(entries)?;
    let built: Vec<Built> = images
        .iter()
        .map(|(image, _)| Built::Image((*image).clone()))
        .collect();
    let mut layout_entries: Vec<(Option<&str>, &Built)> = Vec::new();
    for ((_, names), built) in images.iter().zip(&built) {
        if names.is_empty() {
            layout_entries.push((None, built));
        }
        for name in names {
            layout_entries.push((Some(name.as_str()), built));
        }
    }
    let mut items = oci_layout_items(&layout_entries, |name| {
        let tag = split_repo_tag(name).map_or(name, |(_, tag)| tag);
        BTreeMap::from([
            ("io.containerd.image.name".to_string(), name.to_string()),
            (REF_NAME_ANNOTATION.to_string(), tag.to_string()),
        ])
    })?;
    let manifest: Vec<serde_json::Value> = images
        .iter()
        .map(|(image, names)| {
            json!({
                "Config": format!("blobs/sha256/{}", image.config.digest.hex()),
                "RepoTags": names,
                "Layers": image
                    .layers
                    .iter()
                    .map(|layer| format!("blobs/sha256/{}", layer.blob.digest.hex()))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    items.push(Item::File(
        "manifest.json".into(),
        serde_json::to_vec(&manifest)?.into(),
    ));
    write_items_to_tar(file, &items)
}

// ---------------------------------------------------------------------------
// The demo images
// ---------------------------------------------------------------------------

/// One image of the demo set, with the reference it is imported under.
#[derive(Clone, Debug)]
pub struct DemoImage {
    /// Full reference, e.g. `docker.io/library/sample-alpine:3.19`.
    pub name: String,
    /// The image or index.
    pub built: Built,
}

const BUSYBOX_APPLETS_BIN: &[&str] = &[
    "arch", "ash", "base64", "cat", "chgrp", "chmod", "chown", "cp", "date", "dd", "df", "dmesg",
    "echo", "egrep", "false", "fgrep", "grep", "gunzip", "gzip", "hostname", "kill", "ln", "login",
    "ls", "mkdir", "mknod", "mktemp", "more", "mount", "mv", "netstat", "pidof", "ping", "ps",
    "pwd", "rm", "rmdir", "sed", "sh", "sleep", "stat", "stty", "sync", "tar", "touch", "true",
    "umount", "uname", "zcat",
];
const BUSYBOX_APPLETS_SBIN: &[&str] = &[
    "adduser", "addgroup", "halt", "ifconfig", "init", "modprobe", "poweroff", "reboot", "route",
    "sysctl",
];
const BUSYBOX_APPLETS_USR_BIN: &[&str] = &[
    "awk",
    "basename",
    "cut",
    "dirname",
    "du",
    "env",
    "find",
    "head",
    "id",
    "less",
    "md5sum",
    "nslookup",
    "printf",
    "sha256sum",
    "sort",
    "tail",
    "tee",
    "test",
    "tr",
    "uniq",
    "wc",
    "wget",
    "which",
    "xargs",
    "yes",
];
const DOC_PACKAGES: &[&str] = &[
    "alpine-baselayout",
    "apk-tools",
    "busybox",
    "ca-certificates",
    "musl",
    "zlib",
    "xz",
    "libcrypto3",
    "scanelf",
    "ssl_client",
];

/// The base layer of `sample-alpine` for one architecture (`x86_64`, `aarch64`):
/// a little distro of about 150 entries with every entry type, a setuid binary,
/// a sticky /tmp, device nodes, a fifo, xattrs and long (GNU and PAX) names.
pub fn distro_base_spec(arch: &str) -> Result<LayerSpec> {
    let mut text = String::new();
    let mut line = |s: String| {
        text.push_str(&s);
        text.push('\n');
    };
    for (dir, mode) in [
        ("/bin", "0755"),
        ("/dev", "0755"),
        ("/etc", "0755"),
        ("/etc/apk", "0755"),
        ("/etc/profile.d", "0755"),
        ("/home", "0755"),
        ("/lib", "0755"),
        ("/media", "0755"),
        ("/mnt", "0755"),
        ("/opt", "0755"),
        ("/proc", "0555"),
        ("/root", "0700"),
        ("/run", "0755"),
        ("/sbin", "0755"),
        ("/srv", "0755"),
        ("/sys", "0555"),
        ("/tmp", "1777"),
        ("/usr", "0755"),
        ("/usr/bin", "0755"),
        ("/usr/lib", "0755"),
        ("/usr/sbin", "0755"),
        ("/usr/share", "0755"),
        ("/usr/share/doc", "0755"),
        ("/var", "0755"),
        ("/var/cache", "0755"),
        ("/var/cache/apk", "0755"),
        ("/var/lib", "0755"),
        ("/var/log", "0755"),
        ("/var/mail", "2775"),
        ("/var/spool", "0755"),
        ("/var/tmp", "1777"),
    ] {
        line(format!("dir {dir} {mode}"));
    }
    line("dir /home/sample 0750 uid=1000 gid=1000".into());
    line("file /home/sample/.profile 0644 \"export PS1='\\\\u@\\\\h:\\\\w\\\\$ '\\n\" uid=1000 gid=1000".into());
    line(
        "chardev /dev/null 0666 1 3 ; chardev /dev/zero 0666 1 5 ; chardev /dev/tty 0666 5 0"
            .into(),
    );
    line("blockdev /dev/loop0 0660 7 0 gid=6".into());
    line("fifo /run/initctl 0600".into());

    // /etc
    line(r##"file /etc/os-release 0644 "NAME=\"Sample Linux\"\nID=sample\nVERSION_ID=3.19.1\nPRETTY_NAME=\"Sample Linux v3.19 (made by imagefs)\"\nHOME_URL=\"https://example.invalid/sample\"\n""##.into());
    line("xattr /etc/os-release user.imagefs.note \"sample base layer\"".into());
    line(r##"file /etc/alpine-release 0644 "3.19.1\n""##.into());
    line(r##"file /etc/hostname 0644 "sample\n""##.into());
    line(r##"file /etc/hosts 0644 "127.0.0.1\tlocalhost localhost.localdomain\n::1\tlocalhost localhost.localdomain\n""##.into());
    line(r##"file /etc/passwd 0644 "root:x:0:0:root:/root:/bin/sh\nbin:x:1:1:bin:/bin:/sbin/nologin\ndaemon:x:2:2:daemon:/sbin:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\nsample:x:1000:1000:Sample User:/home/sample:/bin/sh\n""##.into());
    line(r##"file /etc/group 0644 "root:x:0:root\nbin:x:1:root,bin,daemon\ndaemon:x:2:root,bin,daemon\ndisk:x:6:root\nmail:x:12:\nshadow:x:42:\nnogroup:x:65533:\nnobody:x:65534:\nsample:x:1000:\n""##.into());
    line(r##"file /etc/shadow 0640 "root:*::0:::::\nbin:!::0:::::\ndaemon:!::0:::::\nnobody:!::0:::::\nsample:!::0:::::\n" gid=42"##.into());
    line(r##"file /etc/shells 0644 "# valid login shells\n/bin/sh\n/bin/ash\n""##.into());
    line(r##"file /etc/profile 0644 "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nexport PAGER=less\numask 022\nfor script in /etc/profile.d/*.sh ; do\n\t[ -r \"$script\" ] && . \"$script\"\ndone\n""##.into());
    line(
        r##"file /etc/profile.d/locale.sh 0644 "export CHARSET=UTF-8\nexport LANG=C.UTF-8\n""##
            .into(),
    );
    line(r##"file /etc/motd 0644 "Welcome to Sample Linux, an image built by imagefs.\n""##.into());
    line(r##"file /etc/issue 0644 "Sample Linux 3.19 \\n \\l\n""##.into());
    line(r##"file /etc/fstab 0644 "/dev/cdrom\t/media/cdrom\tiso9660\tnoauto,ro 0 0\n""##.into());
    line(r##"file /etc/inittab 0644 "::sysinit:/sbin/openrc sysinit\n::ctrlaltdel:/sbin/reboot\n::shutdown:/sbin/openrc shutdown\n""##.into());
    line(r##"file /etc/resolv.conf 0644 "nameserver 192.0.2.53\n""##.into());
    line("file /etc/services 0644 @text:6000".into());
    line(format!(r##"file /etc/apk/arch 0644 "{arch}\n""##));
    line(r##"file /etc/apk/repositories 0644 "https://example.invalid/sample/v3.19/main\nhttps://example.invalid/sample/v3.19/community\n""##.into());
    line(
        r##"file /etc/apk/world 0644 "alpine-baselayout\napk-tools\nbusybox\nmusl\nzlib\n""##
            .into(),
    );
    line("symlink /etc/mtab ../proc/mounts".into());

    // Binaries: one busybox, applets as symlinks, a setuid helper, hard links.
    line(format!(
        "file /bin/busybox 0755 @random:200000:busybox-{arch}"
    ));
    for applet in BUSYBOX_APPLETS_BIN {
        line(format!("symlink /bin/{applet} busybox"));
    }
    for applet in BUSYBOX_APPLETS_SBIN {
        line(format!("symlink /sbin/{applet} /bin/busybox"));
    }
    for applet in BUSYBOX_APPLETS_USR_BIN {
        line(format!("symlink /usr/bin/{applet} /bin/busybox"));
    }
    line(format!("file /bin/bbsuid 4755 @random:14000:bbsuid-{arch}"));
    line("symlink /bin/su bbsuid".into());
    line("xattr /bin/bbsuid user.imagefs.setuid \"yes\"".into());
    line(format!("file /sbin/apk 0755 @random:90000:apk-{arch}"));
    line(format!("file /usr/bin/xz 0755 @random:80000:xz-{arch}"));
    line("hardlink /usr/bin/unxz /usr/bin/xz".into());
    line("hardlink /usr/bin/xzcat /usr/bin/xz".into());
    line(format!(
        "file /usr/bin/ssl_client 2755 @random:12000:ssl-{arch} gid=12"
    ));

    // Libraries.
    line(format!(
        "file /lib/ld-musl-{arch}.so.1 0755 @random:60000:musl-{arch}"
    ));
    line(format!(
        "symlink /lib/libc.musl-{arch}.so.1 ld-musl-{arch}.so.1"
    ));
    line(format!(
        "file /lib/libz.so.1.3.1 0755 @random:50000:zlib-{arch}"
    ));
    line("symlink /lib/libz.so.1 libz.so.1.3.1".into());
    line(format!(
        "file /usr/lib/libcrypto.so.3 0755 @random:40000:crypto-{arch}"
    ));
    line("dir /usr/lib/engines-3 0755".into());

    // Documentation.
    for package in DOC_PACKAGES {
        line(format!("dir /usr/share/doc/{package} 0755"));
        line(format!(
            "file /usr/share/doc/{package}/README 0644 @text:1500"
        ));
        line(format!(
            "file /usr/share/doc/{package}/COPYING 0644 @text:800"
        ));
    }
    let long_gnu = format!(
        "/usr/share/doc/musl/{}",
        "a-rather-long-file-name-".repeat(5)
    );
    line(format!("file {long_gnu}gnu.txt 0644 @text:200 names=gnu"));
    let long_pax = format!(
        "/usr/share/doc/zlib/{}/{}",
        "deeply-nested-directory-name".repeat(6),
        "with-a-long-file-name-".repeat(6)
    );
    line(format!(
        "dir {} 0755",
        long_pax.rsplit_once('/').map_or("", |(d, _)| d)
    ));
    line(format!("file {long_pax}pax.txt 0644 @text:200 names=pax"));

    // /var
    line("file /var/cache/apk/APKINDEX.00000000.tar.gz 0644 @random:30000".into());
    line("file /var/log/messages 0640 @empty".into());
    line("dir /var/lib/apk 0755".into());
    line("file /var/lib/apk/installed 0644 @text:4000".into());
    line("symlink /var/run ../run".into());

    LayerSpec::parse(&text)
}

fn app_layer_spec() -> Result<LayerSpec> {
    LayerSpec::parse(
        r##"
        dir  /app 0755
        file /app/server 0755 @random:50000:app-server-1.0
        file /app/config.yaml 0644 "listen: 0.0.0.0:8080\nlog_level: info\nfeatures:\n  - search\n"
        dir  /app/static 0755
        file /app/static/index.html 0644 "<!doctype html>\n<title>sample app</title>\n<h1>Hello from sample-app</h1>\n"
        file /app/static/style.css 0644 "body { font-family: sans-serif; }\n"
        file /app/static/logo.svg 0644 @text:900
        dir  /etc 0755
        file /etc/app.conf 0644 "# sample-app system configuration\nenabled=yes\n"
        dir  /usr/share/doc/sample-app 0755
        file /usr/share/doc/sample-app/README 0644 @text:1200
        dir  /var/cache 0755
        dir  /var/cache/app 0755
        file /var/cache/app/warm.bin 0644 @random:4096 uid=1000 gid=1000
        "##,
    )
}

fn app_patch_layer_spec() -> Result<LayerSpec> {
    LayerSpec::parse(
        r##"
        dir      /app 0755
        file     /app/server 0755 @random:52000:app-server-1.1
        file     /app/config.yaml 0644 "listen: 0.0.0.0:8080\nlog_level: warn\nfeatures:\n  - search\n  - export\n"
        dir      /app/static 0755
        whiteout /app/static/style.css
        file     /app/static/style.v2.css 0644 "body { font-family: serif; color: #222; }\n"
        dir      /etc 0755
        whiteout /etc/motd
        dir      /usr/share/doc 0755
        whiteout /usr/share/doc/xz
        dir      /var/cache/apk 0755
        opaque   /var/cache/apk
        file     /var/cache/apk/.keep 0644 @empty
        "##,
    )
}

fn sample_alpine(arch: &str, platform: (&str, &str, Option<&str>)) -> Result<BuiltImage> {
    ImageBuilder::new()
        .config(platform.0, platform.1, platform.2)
        .layer(&distro_base_spec(arch)?, Compression::Gzip)
        .cmd(&["/bin/sh"])
        .label("org.opencontainers.image.title", "sample-alpine")
        .annotation("org.opencontainers.image.version", "3.19")
        .build()
}

/// The images `imagefs demo` stores, in import order. They share layers:
///
/// - `docker.io/library/sample-alpine:3.19`: OCI, one gzip base layer (~150 entries).
/// - `docker.io/library/sample-app:1.0`: Docker schema 2, base + app layer.
/// - `docker.io/library/sample-app:1.1`: OCI, base + the same app layer + a zstd
///   layer with whiteouts, replaced files and an opaque directory.
/// - `docker.io/library/sample-app:1.1-sbom`: an OCI artifact whose subject is 1.1.
/// - `docker.io/library/sample-multi:latest`: an OCI index of linux/amd64 (the
///   sample-alpine manifest itself), linux/arm64/v8 and two buildx attestations.
pub fn demo_images() -> Result<Vec<DemoImage>> {
    let base = distro_base_spec("x86_64")?;
    let app = app_layer_spec()?;
    let alpine = sample_alpine("x86_64", ("linux", "amd64", None))?;
    let app_1_0 = ImageBuilder::new()
        .format(ManifestFormat::Docker)
        .layer(&base, Compression::Gzip)
        .layer(&app, Compression::Gzip)
        .cmd(&["/app/server"])
        .working_dir("/app")
        .env("APP_VERSION=1.0")
        .label("org.opencontainers.image.version", "1.0")
        .build()?;
    let app_1_1 = ImageBuilder::new()
        .layer(&base, Compression::Gzip)
        .layer(&app, Compression::Gzip)
        .layer(&app_patch_layer_spec()?, Compression::Zstd)
        .cmd(&["/app/server"])
        .working_dir("/app")
        .user("1000:1000")
        .env("APP_VERSION=1.1")
        .label("org.opencontainers.image.version", "1.1")
        .annotation("org.opencontainers.image.version", "1.1")
        .build()?;
    let sbom = ArtifactBuilder::new()
        .artifact_type("application/spdx+json")
        .config(
            "application/vnd.example.config+json",
            br#"{"tool":"imagefs sample"}"#,
        )
        .file(
            "sbom.spdx.json",
            "application/spdx+json",
            br#"{"spdxVersion":"SPDX-2.3","name":"sample-app-1.1","packages":[]}"#,
        )
        .subject(app_1_1.descriptor())
        .annotation("org.opencontainers.image.created", SAMPLE_CREATED)
        .build()?;
    let multi = IndexBuilder::new()
        .manifest(alpine.clone())
        .manifest(sample_alpine("aarch64", ("linux", "arm64", Some("v8")))?)
        .attestations(true)
        .build()?;
    let library = "docker.io/library";
    Ok(vec![
        DemoImage {
            name: format!("{library}/sample-alpine:3.19"),
            built: alpine.into(),
        },
        DemoImage {
            name: format!("{library}/sample-app:1.0"),
            built: app_1_0.into(),
        },
        DemoImage {
            name: format!("{library}/sample-app:1.1"),
            built: app_1_1.into(),
        },
        DemoImage {
            name: format!("{library}/sample-app:1.1-sbom"),
            built: sbom.into(),
        },
        DemoImage {
            name: format!("{library}/sample-multi:latest"),
            built: multi.into(),
        },
    ])
}

/// Writes the demo images as one OCI layout, each named by its full reference.
pub fn write_demo_layout(dir: &Path) -> Result<Vec<DemoImage>> {
    let images = demo_images()?;
    let entries: Vec<(Option<&str>, &Built)> = images
        .iter()
        .map(|image| (Some(image.name.as_str()), &image.built))
        .collect();
    write_oci_layout(dir, &entries)?;
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::process::Command;

    /// True when `tool` is on PATH. With `CI=true` a missing tool fails the test;
    /// elsewhere the test is skipped with a note.
    fn have_tool(tool: &str) -> bool {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{tool} is required when CI=true (apt-get install -y {tool})");
            }
            eprintln!("skipped: {tool} is not installed");
        }
        found
    }

    fn run(program: &str, args: &[&str]) -> String {
        let output = Command::new(program).args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    fn decompress(layer: &BuiltLayer) -> Vec<u8> {
        let mut out = Vec::new();
        match layer.compression {
            Compression::None => out = layer.blob.data.clone(),
            Compression::Gzip => {
                flate2::read::GzDecoder::new(&layer.blob.data[..])
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Compression::Zstd => out = zstd::stream::decode_all(&layer.blob.data[..]).unwrap(),
        }
        out
    }

    /// (path, type, mode, link name, xattrs) of every entry of a tar.
    type Listed = (
        String,
        tar::EntryType,
        u32,
        Option<String>,
        Vec<(String, Vec<u8>)>,
    );

    fn list(tar_bytes: &[u8]) -> Vec<Listed> {
        let mut archive = tar::Archive::new(tar_bytes);
        let mut out = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let mut xattrs = Vec::new();
            if let Some(extensions) = entry.pax_extensions().unwrap() {
                for extension in extensions {
                    let extension = extension.unwrap();
                    if let Some(name) = extension.key().unwrap().strip_prefix("SCHILY.xattr.") {
                        xattrs.push((name.to_string(), extension.value_bytes().to_vec()));
                    }
                }
            }
            let header = entry.header();
            out.push((
                String::from_utf8(entry.path_bytes().to_vec()).unwrap(),
                header.entry_type(),
                header.mode().unwrap(),
                entry
                    .link_name_bytes()
                    .map(|l| String::from_utf8(l.to_vec()).unwrap()),
                xattrs,
            ));
        }
        out
    }

    #[test]
    fn parses_every_entry_kind() {
        let long = format!("/opt/{}", "x".repeat(120));
        let spec = LayerSpec::parse(&format!(
            r#"
            dir  /etc 0755             # a comment
            file /etc/os-release 0644 "NAME=Sample\nID=sample\n" uid=1 gid=2 mtime=5
            file /bin/busybox 0755 @random:2000   // another comment
            symlink /bin/sh busybox
            hardlink /bin/ls /bin/busybox
            whiteout /etc/motd
            opaque /var/cache
            fifo /run/fifo 0644 ; chardev /dev/null 0666 1 3 ; blockdev /dev/sda 0660 8 0
            file /usr/bin/su 4755 "x"
            xattr /etc/os-release user.note "hello\x00world"
            dir /tmp 1777
            file {long}/gnu 0644 @text:100 names=gnu
            file {long}/pax 0644 @zeros:10 names=pax
            symlink /opt/far {long}/gnu
            file "/with space" 0644 @empty
            file ../../escape 0644 "x" raw
            "#
        ))
        .unwrap();
        let entries = list(&spec.to_tar().unwrap());
        let paths: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        let long_tar = &long[1..];
        assert_eq!(
            paths,
            [
                "etc/",
                "etc/os-release",
                "bin/busybox",
                "bin/sh",
                "bin/ls",
                "etc/.wh.motd",
                "var/cache/.wh..wh..opq",
                "run/fifo",
                "dev/null",
                "dev/sda",
                "usr/bin/su",
                "tmp/",
                &format!("{long_tar}/gnu"),
                &format!("{long_tar}/pax"),
                "opt/far",
                "with space",
                "../../escape",
            ]
        );
        use tar::EntryType as T;
        let types: Vec<T> = entries.iter().map(|e| e.1).collect();
        assert_eq!(
            types,
            [
                T::Directory,
                T::Regular,
                T::Regular,
                T::Symlink,
                T::Link,
                T::Regular,
                T::Regular,
                T::Fifo,
                T::Char,
                T::Block,
                T::Regular,
                T::Directory,
                T::Regular,
                T::Regular,
                T::Symlink,
                T::Regular,
                T::Regular,
            ]
        );
        assert_eq!(entries[3].3.as_deref(), Some("busybox"));
        assert_eq!(entries[4].3.as_deref(), Some("bin/busybox"));
        assert_eq!(entries[4].2, 0o755, "a hard link takes its target's mode");
        assert_eq!(entries[10].2, 0o4755);
        assert_eq!(entries[11].2, 0o1777);
        assert_eq!(entries[14].3, Some(format!("{long}/gnu")));
        assert_eq!(
            entries[1].4,
            [("user.note".to_string(), b"hello\0world".to_vec())]
        );

        // Owners, mtimes, device numbers from the headers.
        let tar = spec.to_tar().unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let headers: Vec<tar::Header> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().header().clone())
            .collect();
        assert_eq!(headers[1].uid().unwrap(), 1);
        assert_eq!(headers[1].gid().unwrap(), 2);
        assert_eq!(headers[1].mtime().unwrap(), 5);
        assert_eq!(headers[2].mtime().unwrap(), SAMPLE_MTIME);
        assert_eq!(headers[8].device_major().unwrap(), Some(1));
        assert_eq!(headers[8].device_minor().unwrap(), Some(3));
        assert_eq!(headers[2].size().unwrap(), 2000);
    }

    #[test]
    fn long_names_use_the_requested_format() {
        let long = format!("/{}/file", "d".repeat(150));
        let spec = LayerSpec::parse(&format!(
            "file {long} 0644 @empty names=gnu\nfile {long} 0644 @empty names=pax\nfile {long} 0644 @empty"
        ))
        .unwrap();
        let tar = spec.to_tar().unwrap();
        // The ustar default splits this one into prefix + name: no extra header.
        let mut archive = tar::Archive::new(&tar[..]);
        let raw_types: Vec<tar::EntryType> = archive
            .entries()
            .unwrap()
            .raw(true)
            .map(|e| e.unwrap().header().entry_type())
            .collect();
        use tar::EntryType as T;
        assert_eq!(
            raw_types,
            [
                T::GNULongName,
                T::Regular,
                T::XHeader,
                T::Regular,
                T::Regular
            ]
        );
        for entry in list(&tar) {
            assert_eq!(entry.0, long[1..]);
        }
    }

    #[test]
    fn parse_errors_name_the_line() {
        for (text, line, needle) in [
            ("dir /etc 0755\nbogus /x", 2, "unknown entry kind"),
            ("file /x 0644", 1, "expected 3 arguments"),
            ("file /x 0999 \"a\"", 1, "bad octal mode"),
            ("file /x 0644 @random", 1, "byte count"),
            ("file /x 0644 \"open", 1, "unterminated"),
            ("\n\nxattr /nope user.a \"b\"", 3, "no earlier entry"),
            ("file /a/../b 0644 @empty", 1, "'..'"),
            ("dir /x 0755 colour=red", 1, "unknown option"),
        ] {
            match LayerSpec::parse(text) {
                Err(SampleError::Parse { line: got, message }) => {
                    assert_eq!(got, line, "{text:?}: {message}");
                    assert!(message.contains(needle), "{text:?}: {message}");
                }
                other => panic!("{text:?}: expected a parse error, got {other:?}"),
            }
        }
    }

    #[test]
    fn missing_end_of_archive_blocks() {
        let spec = LayerSpec::parse("file /a 0644 \"hello\"").unwrap();
        let full = spec.to_tar().unwrap();
        let short = spec.clone().without_end_of_archive().to_tar().unwrap();
        assert_eq!(short.len() + 1024, full.len());
        assert_eq!(list(&short).len(), 1);
        let layer = spec
            .without_end_of_archive()
            .build(Compression::Gzip)
            .unwrap();
        assert_eq!(layer.diff_id, DiffId(Digest::of(&short)));
    }

    fn digests(images: &[DemoImage]) -> Vec<(String, Digest)> {
        images
            .iter()
            .map(|image| (image.name.clone(), image.built.digest()))
            .collect()
    }

    #[test]
    fn demo_images_are_deterministic() {
        let first = demo_images().unwrap();
        let second = demo_images().unwrap();
        assert_eq!(digests(&first), digests(&second));
        assert_eq!(first.len(), 5);
        for (name, digest) in digests(&first) {
            println!("{name} {digest}");
        }
    }

    #[test]
    fn diff_ids_match_the_uncompressed_layers() {
        let images = demo_images().unwrap();
        for image in &images {
            let mut manifests: Vec<&BuiltImage> = Vec::new();
            match &image.built {
                Built::Image(built) => manifests.push(built),
                Built::Index(index) => manifests.extend(index.children.iter().map(|(_, c)| c)),
            }
            for manifest in manifests {
                if manifest.artifact_type.is_some() {
                    continue;
                }
                let config: serde_json::Value =
                    serde_json::from_slice(&manifest.config.data).unwrap();
                let listed: Vec<String> = config["rootfs"]["diff_ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect();
                assert_eq!(listed.len(), manifest.layers.len());
                for (layer, listed) in manifest.layers.iter().zip(&listed) {
                    assert_eq!(layer.blob.digest, Digest::of(&layer.blob.data));
                    let uncompressed = decompress(layer);
                    assert_eq!(
                        &Digest::of(&uncompressed).to_string(),
                        listed,
                        "{}",
                        image.name
                    );
                    assert_eq!(layer.diff_id.to_string(), *listed);
                }
                // The manifest's descriptors are the blobs'.
                let parsed: serde_json::Value =
                    serde_json::from_slice(&manifest.manifest.data).unwrap();
                assert_eq!(
                    parsed["config"]["digest"],
                    manifest.config.digest.to_string()
                );
                assert_eq!(parsed["config"]["size"], manifest.config.size());
                for (descriptor, layer) in parsed["layers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .zip(&manifest.layers)
                {
                    assert_eq!(descriptor["digest"], layer.blob.digest.to_string());
                    assert_eq!(descriptor["size"], layer.blob.size());
                    assert_eq!(descriptor["mediaType"], layer.blob.media_type);
                }
            }
        }
    }

    #[test]
    fn demo_images_share_the_base_layer() {
        let images = demo_images().unwrap();
        let base = |i: usize| match &images[i].built {
            Built::Image(image) => image.layers[0].blob.digest,
            Built::Index(index) => index.children[0].1.layers[0].blob.digest,
        };
        assert_eq!(base(0), base(1));
        assert_eq!(base(0), base(2));
        assert_eq!(base(0), base(4));
        let app = |i: usize| images[i].built.as_image().unwrap().layers[1].blob.digest;
        assert_eq!(app(1), app(2));
        let Built::Index(multi) = &images[4].built else {
            panic!("sample-multi is an index")
        };
        assert_eq!(
            multi.child("linux/amd64").unwrap().digest(),
            images[0].built.digest()
        );
        assert!(multi.child("linux/arm64/v8").is_some());
        let unknown = multi
            .children
            .iter()
            .filter(|(d, _)| {
                d.platform.as_ref().is_some_and(|p| p.os == "unknown")
                    && d.annotations["vnd.docker.reference.type"] == "attestation-manifest"
            })
            .count();
        assert_eq!(unknown, 2);
        let entries = list(&images[0].built.as_image().unwrap().layers[0].tar);
        assert!(
            (140..=200).contains(&entries.len()),
            "{} entries",
            entries.len()
        );
    }

    #[test]
    fn corruptions_break_exactly_one_thing() {
        let spec = LayerSpec::parse("dir /a 0755\nfile /a/b 0644 @text:3000").unwrap();
        let image = ImageBuilder::new()
            .layer(&spec, Compression::Gzip)
            .build()
            .unwrap();
        let manifest = |image: &BuiltImage| -> serde_json::Value {
            serde_json::from_slice(&image.manifest.data).unwrap()
        };

        let broken = image.corrupt(Corruption::WrongDiffId { layer: 0 }).unwrap();
        let config: serde_json::Value = serde_json::from_slice(&broken.config.data).unwrap();
        assert_ne!(
            config["rootfs"]["diff_ids"][0],
            image.layers[0].diff_id.to_string()
        );
        assert_eq!(
            manifest(&broken)["config"]["digest"],
            broken.config.digest.to_string()
        );

        let broken = image
            .corrupt(Corruption::WrongSize(Part::Layer(0)))
            .unwrap();
        assert_eq!(
            manifest(&broken)["layers"][0]["size"],
            image.layers[0].blob.size() + 1
        );

        let broken = image
            .corrupt(Corruption::WrongDigest(Part::Layer(0)))
            .unwrap();
        let layer = &broken.layers[0].blob;
        assert_ne!(layer.digest, Digest::of(&layer.data));
        assert_eq!(manifest(&broken)["layers"][0]["size"], layer.size());
        assert_eq!(
            manifest(&broken)["layers"][0]["digest"],
            layer.digest.to_string()
        );

        let broken = image
            .corrupt(Corruption::WrongDigest(Part::Config))
            .unwrap();
        assert_ne!(broken.config.digest, Digest::of(&broken.config.data));
        assert_eq!(manifest(&broken)["config"]["size"], broken.config.size());

        let broken = image
            .corrupt(Corruption::TruncatedLayer { layer: 0 })
            .unwrap();
        let layer = &broken.layers[0].blob;
        assert_eq!(layer.digest, Digest::of(&layer.data));
        assert!(layer.size() < image.layers[0].blob.size());
        let mut out = Vec::new();
        assert!(flate2::read::GzDecoder::new(&layer.data[..])
            .read_to_end(&mut out)
            .is_err());

        let broken = image.corrupt(Corruption::MalformedConfig).unwrap();
        assert!(serde_json::from_slice::<serde_json::Value>(&broken.config.data).is_err());
        assert_eq!(
            manifest(&broken)["config"]["digest"],
            broken.config.digest.to_string()
        );

        let broken = image.corrupt(Corruption::MalformedManifest).unwrap();
        assert!(serde_json::from_slice::<serde_json::Value>(&broken.manifest.data).is_err());
        assert_eq!(broken.manifest.digest, Digest::of(&broken.manifest.data));

        let broken = image
            .corrupt(Corruption::UnknownLayerMediaType { layer: 0 })
            .unwrap();
        assert_eq!(
            manifest(&broken)["layers"][0]["mediaType"],
            media_type::UNKNOWN_LAYER
        );

        assert!(image
            .corrupt(Corruption::TruncatedLayer { layer: 7 })
            .is_err());
    }

    #[test]
    fn artifact_and_docker_formats() {
        let images = demo_images().unwrap();
        let sbom: serde_json::Value =
            serde_json::from_slice(&images[3].built.as_image().unwrap().manifest.data).unwrap();
        assert_eq!(sbom["artifactType"], "application/spdx+json");
        assert_eq!(
            sbom["config"]["mediaType"],
            "application/vnd.example.config+json"
        );
        assert_eq!(
            sbom["subject"]["digest"],
            images[2].built.digest().to_string()
        );
        let docker: serde_json::Value =
            serde_json::from_slice(&images[1].built.as_image().unwrap().manifest.data).unwrap();
        assert_eq!(docker["mediaType"], media_type::DOCKER_MANIFEST);
        assert_eq!(docker["config"]["mediaType"], media_type::DOCKER_CONFIG);
        assert_eq!(
            docker["layers"][0]["mediaType"],
            media_type::DOCKER_LAYER_GZIP
        );
        assert!(ArtifactBuilder::new().build().is_err());
    }

    #[test]
    fn docker_archive_dedupes_layers_with_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let spec = LayerSpec::parse("file /same 0644 \"same\"").unwrap();
        // The same layer twice: two chain ids, one content.
        let image = ImageBuilder::new()
            .layer(&spec, Compression::None)
            .layer(&spec, Compression::None)
            .build()
            .unwrap();
        let file = dir.path().join("image.tar");
        write_docker_archive(
            &file,
            &[(Some("local/twice:1"), &image)],
            DockerArchiveOptions {
                dedupe_symlinks: true,
            },
        )
        .unwrap();
        let bytes = fs::read(&file).unwrap();
        let entries = list(&bytes);
        let symlinks: Vec<_> = entries
            .iter()
            .filter(|e| e.1 == tar::EntryType::Symlink)
            .collect();
        assert_eq!(symlinks.len(), 1);
        assert!(symlinks[0].0.ends_with("/layer.tar"));
        assert!(symlinks[0].3.as_ref().unwrap().starts_with("../"));
        let manifest = entries.iter().position(|e| e.0 == "manifest.json").unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut text = String::new();
        archive
            .entries()
            .unwrap()
            .nth(manifest)
            .unwrap()
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed[0]["RepoTags"][0], "local/twice:1");
        assert_eq!(parsed[0]["Layers"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn skopeo_and_umoci_read_the_oci_layout() {
        if !have_tool("skopeo") || !have_tool("umoci") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        let images = write_demo_layout(&layout).unwrap();
        for image in &images {
            if let Built::Image(built) = &image.built {
                // skopeo 1.9 lists only OCI manifests and indexes of a layout, so
                // it can't see the Docker schema 2 one (imagefs must); nor
                // does it understand artifacts.
                if built.artifact_type.is_some() || built.format == ManifestFormat::Docker {
                    continue;
                }
            }
            let source = format!("oci:{}:{}", layout.display(), image.name);
            let raw = run("skopeo", &["inspect", "--raw", &source]);
            assert_eq!(
                Digest::of(raw.as_bytes()),
                image.built.digest(),
                "{}",
                image.name
            );
            if image.built.as_image().is_some() {
                let inspected: serde_json::Value =
                    serde_json::from_str(&run("skopeo", &["inspect", &source])).unwrap();
                assert_eq!(inspected["Os"], "linux", "{}", image.name);
            }
        }

        // umoci 0.4 knows neither zstd nor long tag names: app 1.1 with its
        // patch layer in gzip, under a short name.
        let app: Built = ImageBuilder::new()
            .layer(&distro_base_spec("x86_64").unwrap(), Compression::Gzip)
            .layer(&app_layer_spec().unwrap(), Compression::Gzip)
            .layer(&app_patch_layer_spec().unwrap(), Compression::Gzip)
            .build()
            .unwrap()
            .into();
        let app = &app;
        let simple = dir.path().join("simple");
        write_oci_layout(&simple, &[(Some("app"), app)]).unwrap();
        let bundle = dir.path().join("bundle");
        run(
            "umoci",
            &[
                "unpack",
                "--image",
                &format!("{}:app", simple.display()),
                bundle.to_str().unwrap(),
            ],
        );
        let rootfs = bundle.join("rootfs");
        assert!(rootfs.join("etc/os-release").is_file());
        assert!(!rootfs.join("etc/motd").exists(), "whiteout applied");
        assert!(!rootfs.join("app/static/style.css").exists());
        assert!(rootfs.join("app/static/style.v2.css").is_file());
        assert!(!rootfs.join("usr/share/doc/xz").exists());
        assert!(!rootfs
            .join("var/cache/apk/APKINDEX.00000000.tar.gz")
            .exists());
        assert!(rootfs.join("var/cache/apk/.keep").is_file());
        assert!(fs::read_to_string(rootfs.join("app/config.yaml"))
            .unwrap()
            .contains("export"));
        use std::os::unix::fs::MetadataExt;
        let xz = fs::metadata(rootfs.join("usr/bin/xz")).unwrap();
        let unxz = fs::metadata(rootfs.join("usr/bin/unxz")).unwrap();
        assert_eq!(xz.ino(), unxz.ino(), "hard links share an inode");
        assert_eq!(
            fs::metadata(rootfs.join("bin/bbsuid")).unwrap().mode() & 0o7777,
            0o4755
        );
        assert_eq!(
            fs::metadata(rootfs.join("tmp")).unwrap().mode() & 0o7777,
            0o1777
        );
        assert_eq!(
            fs::read_link(rootfs.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );

        // oci-archive form.
        let archive = dir.path().join("layout.tar");
        write_oci_archive(&archive, &[(Some("app"), app)]).unwrap();
        let raw = run(
            "skopeo",
            &[
                "inspect",
                "--raw",
                &format!("oci-archive:{}:app", archive.display()),
            ],
        );
        assert_eq!(Digest::of(raw.as_bytes()), app.digest());
    }

    #[test]
    fn oci_image_tool_validates_the_layout() {
        if !have_tool("oci-image-tool") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let images = demo_images().unwrap();
        // oci-image-tool predates zstd and artifacts: give it the plain images.
        let layout = dir.path().join("layout");
        write_oci_layout(&layout, &[(Some("alpine"), &images[0].built)]).unwrap();
        run(
            "oci-image-tool",
            &[
                "validate",
                "--type",
                "image",
                "--ref",
                "name=alpine",
                layout.to_str().unwrap(),
            ],
        );
    }

    #[test]
    fn skopeo_reads_docker_archives() {
        if !have_tool("skopeo") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let images = demo_images().unwrap();
        let alpine = images[0].built.as_image().unwrap();
        let app = images[2].built.as_image().unwrap();
        let entries = [
            (Some("docker.io/library/sample-alpine:3.19"), alpine),
            (Some("docker.io/library/sample-app:1.1"), app),
        ];

        let classic = dir.path().join("classic.tar");
        write_docker_archive(
            &classic,
            &entries,
            DockerArchiveOptions {
                dedupe_symlinks: true,
            },
        )
        .unwrap();
        let oci_form = dir.path().join("docker25.tar");
        write_docker_archive_oci(&oci_form, &entries).unwrap();

        for archive in [&classic, &oci_form] {
            for (name, image) in &entries {
                let source = format!("docker-archive:{}:{}", archive.display(), name.unwrap());
                let inspected: serde_json::Value =
                    serde_json::from_str(&run("skopeo", &["inspect", &source])).unwrap();
                assert_eq!(
                    inspected["Layers"].as_array().unwrap().len(),
                    image.layers.len()
                );
                let config: serde_json::Value = serde_json::from_str(&run(
                    "skopeo",
                    &["inspect", "--config", "--raw", &source],
                ))
                .unwrap();
                let diff_ids: Vec<String> =
                    image.diff_ids().iter().map(ToString::to_string).collect();
                assert_eq!(config["rootfs"]["diff_ids"], json!(diff_ids));
            }
        }

        // skopeo copy recomputes layer digests from the archive's layer.tar files.
        let copied = dir.path().join("copied");
        run(
            "skopeo",
            &[
                "copy",
                "--quiet",
                &format!(
                    "docker-archive:{}:docker.io/library/sample-app:1.1",
                    classic.display()
                ),
                &format!("oci:{}:x", copied.display()),
            ],
        );
        let config: serde_json::Value = serde_json::from_str(&run(
            "skopeo",
            &[
                "inspect",
                "--config",
                "--raw",
                &format!("oci:{}:x", copied.display()),
            ],
        ))
        .unwrap();
        let diff_ids: Vec<String> = app.diff_ids().iter().map(ToString::to_string).collect();
        assert_eq!(config["rootfs"]["diff_ids"], json!(diff_ids));
    }
}
