//! The mount root: one directory per registry (and per pull-through registry of
//! the mount, even before the store has it); `mkdir`/`rmdir` make and remove
//! (empty) registries.

use crate::reference;
use crate::store::StoreError;

use super::{utf8, Kind, Lives, Namespace, Node, NodeType, Result};
use crate::fs::attr::{Attr, Ino, Volatility};
use crate::fs::errno::VfsError;
use crate::fs::vfs::Vfs;

/// `MOUNT/`
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Root;

fn registry(name: &str) -> Node {
    Node::Namespace(Namespace {
        registry: name.to_string(),
        path: String::new(),
    })
}

/// The registries of the store and the mount's pull-through registries, sorted.
fn registry_names(vfs: &Vfs) -> Result<Vec<String>> {
    let mut names: Vec<String> = vfs.registries()?.iter().map(|r| r.name.clone()).collect();
    if let Some(through) = vfs.pull_through() {
        names.extend(through.registries().iter().cloned());
        names.sort();
        names.dedup();
    }
    Ok(names)
}

impl Kind for Root {
    fn parent(&self) -> Node {
        Node::Root(Root)
    }

    fn name(&self) -> String {
        String::new()
    }

    fn attr(&self, vfs: &Vfs, ino: Ino) -> Result<Attr> {
        let registries = registry_names(vfs)?.len();
        Ok(Attr::dir(
            ino,
            2 + registries,
            vfs.mount_time_ns(),
            Volatility::Volatile,
        ))
    }

    fn lives(&self) -> Lives<'_> {
        Lives::Always
    }

    fn listing_changes(&self) -> bool {
        true
    }

    fn child(&self, vfs: &Vfs, name: &[u8]) -> Result<Node> {
        let name = utf8(name)?;
        // A pull-through registry is there before the store has it.
        if vfs.registry_created(name)?.is_some() || vfs.pulls_through(name) {
            Ok(registry(name))
        } else {
            Err(VfsError::NotFound)
        }
    }

    fn children(&self, vfs: &Vfs) -> Result<Vec<(String, Node, NodeType)>> {
        Ok(registry_names(vfs)?
            .into_iter()
            .map(|name| {
                let node = registry(&name);
                (name, node, NodeType::Directory)
            })
            .collect())
    }

    fn rmdir(&self, vfs: &Vfs, name: &str) -> Result<()> {
        vfs.store().remove_registry(name)?;
        Ok(())
    }

    fn mkdir(&self, vfs: &Vfs, name: &str) -> Result<Node> {
        reference::validate_registry(name).map_err(StoreError::from)?;
        vfs.store().create_registry(name)?;
        Ok(registry(name))
    }
}
