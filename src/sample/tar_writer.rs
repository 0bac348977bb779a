//! The tar writer: a [`LayerSpec`]'s entries as an uncompressed tar stream
//! ([`LayerSpec::to_tar`], and [`LayerSpec::build`] for the compressed blob), with
//! ustar, GNU long-name or PAX headers as each entry asks, and PAX xattrs.
//!
//! Owns: header bytes. Must not touch: parsing (that is [`super::spec`]) or
//! compression (that is [`super::blob`]). Written by hand rather than through
//! `tar::Builder::append_data`, which refuses the hostile names tests need.

use std::io;

use super::spec::{split_parent, Entry, EntryKind, NameFormat};
use super::{BuiltLayer, Compression, LayerSpec, Result};

impl LayerSpec {
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
