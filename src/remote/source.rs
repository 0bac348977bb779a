//! A registry repository as an [`ImageSource`]: the import pipeline pulls from it
//! as it imports from a layout, and verifies everything the same way.

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::sync::{Arc, Mutex};

use super::client::{Client, FetchedManifest};
use super::error::RemoteError;
use crate::digest::Digest;
use crate::image::{self, Descriptor, ImageSource, Parsed, SourceImage};
use crate::reference::{Reference, Target};

/// One reference in a registry (`localhost:5000/team/app:1` or `...@sha256:...`),
/// resolved at open to its top manifest or index.
pub struct RegistrySource {
    client: Arc<Client>,
    repository: String,
    reference: Reference,
    images: Vec<SourceImage>,
    top: FetchedManifest,
    /// Sizes from every descriptor of every manifest served so far, so that a blob
    /// body longer or shorter than its descriptor fails while it streams.
    sizes: Mutex<HashMap<Digest, u64>>,
}

impl std::fmt::Debug for RegistrySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySource")
            .field("reference", &self.reference.to_string())
            .finish_non_exhaustive()
    }
}

impl RegistrySource {
    /// A source whose top manifest the caller already has (fetched, or found in
    /// the store by the digest a HEAD gave): nothing is sent now.
    pub fn with_top(
        client: Arc<Client>,
        reference: &Reference,
        top: FetchedManifest,
    ) -> Result<RegistrySource, RemoteError> {
        let mut descriptor =
            Descriptor::new(top.media_type.clone(), top.digest, top.bytes.len() as u64);
        if let Target::Tag(tag) = &reference.target {
            descriptor
                .annotations
                .insert(image::ANNOTATION_REF_NAME.to_string(), tag.clone());
        }
        let source = RegistrySource {
            repository: reference.repository.clone(),
            reference: reference.clone(),
            images: vec![SourceImage {
                name: Some(reference.to_string()),
                descriptor,
            }],
            sizes: Mutex::new(HashMap::new()),
            client,
            top,
        };
        source.learn_sizes(&source.top.bytes, Some(&source.top.media_type));
        Ok(source)
    }

    /// The top manifest or index as served (bytes, media type, digest).
    pub fn top(&self) -> &FetchedManifest {
        &self.top
    }

    fn learn_sizes(&self, bytes: &[u8], media_type: Option<&str>) {
        // A manifest that does not parse is the import pipeline's to report.
        let Ok(parsed) = image::parse_top(bytes, media_type) else {
            return;
        };
        let mut sizes = lock(&self.sizes);
        match parsed {
            Parsed::Manifest(manifest) => {
                sizes.insert(manifest.config.digest, manifest.config.size);
                for layer in &manifest.layers {
                    sizes.insert(layer.digest, layer.size);
                }
            }
            Parsed::Index(index) => {
                for child in &index.manifests {
                    sizes.insert(child.digest, child.size);
                }
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ImageSource for RegistrySource {
    type Error = RemoteError;

    fn images(&self) -> &[SourceImage] {
        &self.images
    }

    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn Read + Send + '_>, RemoteError> {
        let size = lock(&self.sizes).get(digest).copied();
        let reader = self.client.get_blob(&self.repository, digest, size)?;
        Ok(Box::new(reader))
    }

    fn open_manifest(&self, digest: &Digest) -> Result<Box<dyn Read + Send + '_>, RemoteError> {
        if *digest == self.top.digest {
            return Ok(Box::new(Cursor::new(self.top.bytes.clone())));
        }
        let fetched = self
            .client
            .get_manifest(&self.repository, &digest.to_string())?;
        self.learn_sizes(&fetched.bytes, Some(&fetched.media_type));
        Ok(Box::new(Cursor::new(fetched.bytes)))
    }

    fn describe(&self) -> String {
        self.reference.to_string()
    }
}
