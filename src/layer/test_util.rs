//! Test layers built in code from one line per entry, and tree listings to compare
//! against.
//!
//! Line format: `<type> <path> [options...]`, `#` starts a comment line.
//! Types: `f` file, `d` dir, `l` symlink, `h` hard link, `c` char device, `b` block
//! device, `p` fifo, `w` a whiteout marker (an empty file; the path is written as is).
//! Options: `-> TARGET` (link target), `mode=0644`, `uid=N`, `gid=N`, `mtime=N`,
//! `data=TEXT` (file content), `size=N` (N bytes of `x`), `dev=MAJ:MIN`,
//! `xattr=NAME=VALUE` (PAX SCHILY.xattr), `pax.KEY=VALUE` (any PAX record),
//! `paxpath` (path and link target carried in a PAX header instead of GNU long names),
//! `typeflag=C` (raw type flag).
//! Paths are written verbatim (`../x`, `/abs` and `./a` included): headers are built
//! by hand, not through `tar::Builder::append_data`, which refuses such names.

use std::fmt::Write as _;

use super::index::{index_layer, DiscardSink, LayerIndex};
use super::tree::{NodeKind, Tree};

/// Builds an uncompressed tar (with end-of-archive blocks) from the line description.
pub(crate) fn tar(description: &str) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for line in description.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        append_line(&mut builder, line);
    }
    builder.into_inner().expect("in-memory tar")
}

/// Builds a tar from the description and indexes it with [`DiscardSink`].
pub(crate) fn index(description: &str) -> LayerIndex {
    index_layer(&tar(description)[..], &mut DiscardSink).expect("test layer indexes")
}

fn append_line(builder: &mut tar::Builder<Vec<u8>>, line: &str) {
    let mut tokens = line.split_whitespace();
    let kind = tokens.next().expect("type");
    let path = tokens.next().expect("path");
    let mut header = tar::Header::new_gnu();
    let (typeflag, default_mode) = match kind {
        "f" | "w" => (b'0', 0o644),
        "d" => (b'5', 0o755),
        "l" => (b'2', 0o777),
        "h" => (b'1', 0o644),
        "c" => (b'3', 0o600),
        "b" => (b'4', 0o600),
        "p" => (b'6', 0o644),
        other => panic!("unknown entry type {other}"),
    };
    let mut typeflag = typeflag;
    let mut data: Vec<u8> = Vec::new();
    let mut target: Option<String> = None;
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    let mut pax_path = false;
    header.set_mode(default_mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_000_000);
    let mut tokens = tokens.peekable();
    while let Some(token) = tokens.next() {
        if token == "->" {
            target = Some(tokens.next().expect("link target").to_string());
            continue;
        }
        if token == "paxpath" {
            pax_path = true;
            continue;
        }
        let (key, value) = token.split_once('=').expect("key=value option");
        match key {
            "mode" => header.set_mode(u32::from_str_radix(value, 8).expect("octal mode")),
            "uid" => header.set_uid(value.parse().expect("uid")),
            "gid" => header.set_gid(value.parse().expect("gid")),
            "mtime" => header.set_mtime(value.parse().expect("mtime")),
            "data" => data = value.as_bytes().to_vec(),
            "size" => data = vec![b'x'; value.parse().expect("size")],
            "typeflag" => typeflag = value.as_bytes()[0],
            "dev" => {
                let (major, minor) = value.split_once(':').expect("MAJ:MIN");
                header
                    .set_device_major(major.parse().expect("major"))
                    .expect("dev");
                header
                    .set_device_minor(minor.parse().expect("minor"))
                    .expect("dev");
            }
            "xattr" => {
                let (name, value) = value.split_once('=').expect("NAME=VALUE");
                pax.push((format!("SCHILY.xattr.{name}"), value.as_bytes().to_vec()));
            }
            _ if key.starts_with("pax.") => {
                pax.push((key[4..].to_string(), value.as_bytes().to_vec()))
            }
            other => panic!("unknown option {other}"),
        }
    }
    header.set_entry_type(tar::EntryType::new(typeflag));
    header.set_size(data.len() as u64);

    if pax_path {
        pax.push(("path".to_string(), path.as_bytes().to_vec()));
        if let Some(target) = &target {
            pax.push(("linkpath".to_string(), target.as_bytes().to_vec()));
        }
    }
    if !pax.is_empty() {
        append_pax(builder, &pax);
    }
    set_name(builder, &mut header, path.as_bytes(), b'L', pax_path);
    if let Some(target) = &target {
        set_name(builder, &mut header, target.as_bytes(), b'K', pax_path);
    }
    header.set_cksum();
    builder.append(&header, &data[..]).expect("append");
}

/// Writes `name` into the header's name (or link name) field, preceded by a GNU
/// long-name entry when it does not fit (unless a PAX record already carries it).
fn set_name(
    builder: &mut tar::Builder<Vec<u8>>,
    header: &mut tar::Header,
    name: &[u8],
    long_type: u8,
    in_pax: bool,
) {
    let field: &mut [u8] = if long_type == b'L' {
        &mut header.as_old_mut().name
    } else {
        &mut header.as_old_mut().linkname
    };
    field.fill(0);
    let fits = name.len() <= field.len();
    let shown = if fits { name } else { &name[..field.len()] };
    field[..shown.len()].copy_from_slice(shown);
    if !fits && !in_pax {
        let mut long = tar::Header::new_gnu();
        long.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        long.set_entry_type(tar::EntryType::new(long_type));
        long.set_mode(0o644);
        long.set_size(name.len() as u64 + 1);
        long.set_cksum();
        let mut data = name.to_vec();
        data.push(0);
        builder.append(&long, &data[..]).expect("append long name");
    }
}

fn append_pax(builder: &mut tar::Builder<Vec<u8>>, records: &[(String, Vec<u8>)]) {
    let mut data = Vec::new();
    for (key, value) in records {
        let body_len = key.len() + value.len() + 3; // ' ', '=', '\n'
        let mut len = body_len + 1;
        while len.to_string().len() + body_len != len {
            len = len.to_string().len() + body_len;
        }
        data.extend_from_slice(format!("{len} {key}=").as_bytes());
        data.extend_from_slice(value);
        data.push(b'\n');
    }
    let mut header = tar::Header::new_ustar();
    header.as_old_mut().name[..10].copy_from_slice(b"PaxHeaders");
    header.set_entry_type(tar::EntryType::XHeader);
    header.set_mode(0o644);
    header.set_size(data.len() as u64);
    header.set_cksum();
    builder.append(&header, &data[..]).expect("append pax");
}

/// A listing of a tree, one line per path in name order, for comparing with an
/// expected table: `path type mode [uid:gid unless 0:0] [size=N] [nlink=N if > 1]
/// [-> target] [dev=M:m]`. The root is `/`.
pub(crate) fn listing(tree: &Tree) -> String {
    let mut out = String::new();
    for (path, id) in tree.walk() {
        let node = tree.node(id);
        let shown = if path.is_empty() {
            "/".to_string()
        } else {
            String::from_utf8_lossy(&path).into_owned()
        };
        let kind = match node.kind {
            NodeKind::File => "f",
            NodeKind::Dir => "d",
            NodeKind::Symlink => "l",
            NodeKind::CharDevice => "c",
            NodeKind::BlockDevice => "b",
            NodeKind::Fifo => "p",
        };
        write!(out, "{shown} {kind} {:o}", node.mode).expect("string");
        if node.uid != 0 || node.gid != 0 {
            write!(out, " {}:{}", node.uid, node.gid).expect("string");
        }
        match node.kind {
            NodeKind::File => {
                write!(out, " size={}", node.size).expect("string");
                if node.nlink > 1 {
                    write!(out, " nlink={}", node.nlink).expect("string");
                }
            }
            NodeKind::Symlink => {
                let target = node.symlink_target.as_deref().unwrap_or_default();
                write!(out, " -> {}", String::from_utf8_lossy(target)).expect("string");
            }
            NodeKind::CharDevice | NodeKind::BlockDevice => {
                write!(out, " dev={}:{}", node.rdev_major, node.rdev_minor).expect("string");
            }
            _ => {}
        }
        out.push('\n');
    }
    out
}

/// Trims each line of an expected listing so tables can be indented.
pub(crate) fn expected(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect()
}
