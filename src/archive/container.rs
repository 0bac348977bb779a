//! Read-only access to the files of an import source by relative path: either a
//! directory or a tar file indexed once (member name -> data offset and size) and
//! then read by position, never extracted.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::ArchiveError;

/// How many symlinks or hard links one lookup may follow before it is called a loop.
const MAX_LINK_HOPS: usize = 40;

/// What a tar member is, as far as lookups care.
#[derive(Debug, Clone)]
enum Member {
    File { offset: u64, size: u64 },
    Directory,
    Symlink(String),
    HardLink(String),
    Other,
}

/// A tar file's member table.
pub(crate) struct TarIndex {
    file: File,
    label: String,
    members: HashMap<String, Member>,
}

/// Splits a member name or link target into components, dropping `.` and empty ones.
fn components(name: &str) -> impl DoubleEndedIterator<Item = &str> {
    name.split('/')
        .filter(|part| !part.is_empty() && *part != ".")
}

/// The canonical form of a member name: `./a//b/` -> `a/b`. `None` if it is absolute
/// or climbs out of the archive with `..`.
fn normalize(name: &str) -> Option<String> {
    if name.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in components(name) {
        if part == ".." {
            parts.pop()?;
        } else {
            parts.push(part);
        }
    }
    Some(parts.join("/"))
}

impl TarIndex {
    /// Scans `file` (a plain tar stream) once. `label` names it in errors.
    pub(crate) fn scan(file: File, label: String) -> Result<Self, ArchiveError> {
        let io_error = |source: io::Error| ArchiveError::Invalid {
            location: label.clone(),
            problem: format!("not a readable tar archive: {source}"),
        };
        let file_len = file
            .metadata()
            .map_err(|source| ArchiveError::Io {
                path: label.clone(),
                source,
            })?
            .len();
        let mut members = HashMap::new();
        {
            let mut archive = tar::Archive::new(&file);
            let entries = archive.entries_with_seek().map_err(io_error)?;
            for entry in entries {
                let entry = entry.map_err(|source| {
                    if source.kind() == io::ErrorKind::UnexpectedEof {
                        ArchiveError::Truncated {
                            location: label.clone(),
                            problem: "the archive ends inside a tar header".to_string(),
                        }
                    } else {
                        io_error(source)
                    }
                })?;
                let raw_name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                let Some(name) = normalize(&raw_name) else {
                    return Err(ArchiveError::Invalid {
                        location: format!("{label}: member {raw_name}"),
                        problem: "the name is absolute or leaves the archive with '..'".to_string(),
                    });
                };
                let link_target = || {
                    entry
                        .link_name_bytes()
                        .map(|target| String::from_utf8_lossy(&target).into_owned())
                        .unwrap_or_default()
                };
                let size = entry.size();
                let offset = entry.raw_file_position();
                let member = match entry.header().entry_type() {
                    tar::EntryType::Regular | tar::EntryType::Continuous => {
                        if offset.checked_add(size).is_none_or(|end| end > file_len) {
                            return Err(ArchiveError::Truncated {
                                location: format!("{label}: member {name}"),
                                problem: format!(
                                    "the member declares {size} bytes but the archive ends before them"
                                ),
                            });
                        }
                        Member::File { offset, size }
                    }
                    tar::EntryType::Directory => Member::Directory,
                    tar::EntryType::Symlink => Member::Symlink(link_target()),
                    tar::EntryType::Link => Member::HardLink(link_target()),
                    _ => Member::Other,
                };
                // As with tar itself, a later member of the same name wins.
                members.insert(name, member);
            }
        }
        Ok(TarIndex {
            file,
            label,
            members,
        })
    }

    /// Follows links inside the archive to a regular member: (offset, size).
    fn resolve(&self, name: &str) -> Result<(u64, u64), ArchiveError> {
        let location = || format!("{}: member {name}", self.label);
        let bad_link = |problem: String| ArchiveError::Invalid {
            location: location(),
            problem,
        };
        let mut pending: Vec<String> = components(name).rev().map(str::to_string).collect();
        let mut resolved: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            if part == ".." {
                if resolved.pop().is_none() {
                    return Err(bad_link("a link leads outside the archive".to_string()));
                }
                continue;
            }
            resolved.push(part);
            let current = resolved.join("/");
            let target = match self.members.get(&current) {
                Some(Member::Symlink(target)) => {
                    resolved.pop();
                    target
                }
                Some(Member::HardLink(target)) => {
                    // Hard link targets are named from the archive root.
                    resolved.clear();
                    target
                }
                Some(Member::File { offset, size }) if pending.is_empty() => {
                    return Ok((*offset, *size))
                }
                Some(Member::File { .. }) | Some(Member::Other) if !pending.is_empty() => {
                    return Err(bad_link(format!("{current} is not a directory")))
                }
                _ => continue,
            };
            hops += 1;
            if hops > MAX_LINK_HOPS {
                return Err(bad_link(format!(
                    "more than {MAX_LINK_HOPS} links followed: a link loop"
                )));
            }
            if target.starts_with('/') {
                return Err(bad_link(format!(
                    "{current} is a link to the absolute path {target:?}, outside the archive"
                )));
            }
            pending.extend(components(target).rev().map(str::to_string));
        }
        match self.members.get(&resolved.join("/")) {
            Some(Member::File { offset, size }) => Ok((*offset, *size)),
            Some(_) => Err(bad_link("not a regular file".to_string())),
            None => Err(ArchiveError::MemberNotFound {
                location: self.label.clone(),
                member: name.to_string(),
            }),
        }
    }
}

/// A reader over `size` bytes of a file from `offset`, by positioned reads so that
/// several readers can share one `File`.
struct SliceReader<'a> {
    file: &'a File,
    position: u64,
    end: u64,
}

impl Read for SliceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let remaining = self.end.saturating_sub(self.position);
        let wanted = usize::try_from(remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if wanted == 0 {
            return Ok(0);
        }
        let read = self.file.read_at(&mut buf[..wanted], self.position)?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ended inside a member (truncated?)",
            ));
        }
        self.position += read as u64;
        Ok(read)
    }
}

/// The files of an import source.
pub(crate) enum Container {
    /// A directory on disk.
    Directory(PathBuf),
    /// An indexed tar file.
    Tar(TarIndex),
}

impl Container {
    /// A label for errors about `member`.
    pub(crate) fn location(&self, member: &str) -> String {
        match self {
            Container::Directory(root) => root.join(member).display().to_string(),
            Container::Tar(index) => format!("{}: member {member}", index.label),
        }
    }

    /// The source's own label.
    pub(crate) fn label(&self) -> String {
        match self {
            Container::Directory(root) => root.display().to_string(),
            Container::Tar(index) => index.label.clone(),
        }
    }

    /// The on-disk path of `member` inside a directory, refusing names and symlinks
    /// that lead out of it.
    fn directory_path(&self, root: &Path, member: &str) -> Result<PathBuf, ArchiveError> {
        let Some(relative) = normalize(member) else {
            return Err(ArchiveError::Invalid {
                location: self.location(member),
                problem: "the name is absolute or leaves the directory with '..'".to_string(),
            });
        };
        let path = root.join(&relative);
        let canonical = match path.canonicalize() {
            Ok(canonical) => canonical,
            Err(source) if source.kind() == io::ErrorKind::NotFound => {
                return Err(ArchiveError::MemberNotFound {
                    location: root.display().to_string(),
                    member: member.to_string(),
                })
            }
            Err(source) => {
                return Err(ArchiveError::Io {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        let canonical_root = root.canonicalize().map_err(|source| ArchiveError::Io {
            path: root.display().to_string(),
            source,
        })?;
        if !canonical.starts_with(&canonical_root) {
            return Err(ArchiveError::Invalid {
                location: self.location(member),
                problem: "a symbolic link leads outside the directory".to_string(),
            });
        }
        Ok(canonical)
    }

    /// True if `member` exists and is (or links to) a regular file.
    pub(crate) fn exists(&self, member: &str) -> bool {
        self.size(member).is_ok()
    }

    /// The size of a member.
    pub(crate) fn size(&self, member: &str) -> Result<u64, ArchiveError> {
        match self {
            Container::Directory(root) => {
                let path = self.directory_path(root, member)?;
                let metadata = path.metadata().map_err(|source| ArchiveError::Io {
                    path: path.display().to_string(),
                    source,
                })?;
                if !metadata.is_file() {
                    return Err(ArchiveError::Invalid {
                        location: self.location(member),
                        problem: "not a regular file".to_string(),
                    });
                }
                Ok(metadata.len())
            }
            Container::Tar(index) => index.resolve(member).map(|(_, size)| size),
        }
    }

    /// Opens a member for streaming.
    pub(crate) fn open(&self, member: &str) -> Result<Box<dyn Read + Send + '_>, ArchiveError> {
        match self {
            Container::Directory(root) => {
                let path = self.directory_path(root, member)?;
                let file = File::open(&path).map_err(|source| ArchiveError::Io {
                    path: path.display().to_string(),
                    source,
                })?;
                Ok(Box::new(file))
            }
            Container::Tar(index) => {
                let (offset, size) = index.resolve(member)?;
                Ok(Box::new(SliceReader {
                    file: &index.file,
                    position: offset,
                    end: offset + size,
                }))
            }
        }
    }

    /// Reads a whole member of at most `limit` bytes (JSON files).
    pub(crate) fn read_small(&self, member: &str, limit: usize) -> Result<Vec<u8>, ArchiveError> {
        let size = self.size(member)?;
        if size > limit as u64 {
            return Err(ArchiveError::Invalid {
                location: self.location(member),
                problem: format!("{size} bytes is more than the {limit}-byte limit for this file"),
            });
        }
        let mut bytes = Vec::with_capacity(size as usize);
        self.open(member)?
            .take(limit as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| ArchiveError::Io {
                path: self.location(member),
                source,
            })?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_names() {
        let table = [
            ("a/b", Some("a/b")),
            ("./a//b/", Some("a/b")),
            ("a/../b", Some("b")),
            ("../b", None),
            ("/etc/passwd", None),
            (".", Some("")),
        ];
        for (name, expected) in table {
            assert_eq!(normalize(name).as_deref(), expected, "{name}");
        }
    }
}
