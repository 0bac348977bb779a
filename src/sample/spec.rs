//! The layer description language: one line (or `;`-separated part) per tar entry,
//! parsed into a [`LayerSpec`] (see the syntax in the [`crate::sample`] doc).
//!
//! Owns: tokenizing, path normalisation and the entry model. Must not touch: tar
//! bytes ([`LayerSpec::to_tar`] and [`LayerSpec::build`] live in
//! [`super::tar_writer`], above this module) or compression and digests.

use super::content::{random_bytes, text_bytes};
use super::{Result, SampleError, SAMPLE_MTIME};

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

fn join_name(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        [dir, b"/", name].concat()
    }
}

pub(super) fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
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
}
