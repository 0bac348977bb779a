//! OCI and Docker image JSON, parsed from bytes: manifests, indexes, configs,
//! descriptors, media types and the platform names used by the mount.
//!
//! Owns: the rules for what a valid manifest, index or config is, and the precise
//! error when one is not. Must not touch: files, the store, SQL; callers hand in
//! bytes (already size-capped or not: [`MAX_JSON_SIZE`] is enforced here too) and
//! add the blob digest or file name to errors they report.

mod config;
mod manifest;
pub mod media_types;
mod platform;
mod source;

pub use config::{parse_config, ConfigSummary, ImageConfig};
pub use manifest::{
    parse_index, parse_manifest, parse_top, Descriptor, Index, Manifest, Parsed, Platform,
    ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME, MAX_BLOB_SIZE,
};
pub use media_types::{is_image_config, LayerCompression};
pub use platform::{platform_dir_name, unique_platform_names};
pub use source::{ImageSource, SourceImage};

/// The largest manifest, index or config we parse (4 MiB), as containerd and the
/// distribution spec do: anything bigger is refused before parsing.
pub const MAX_JSON_SIZE: usize = 4 * 1024 * 1024;

/// Why image JSON was refused. `what` names the document ("manifest", "index",
/// "image config") and `field` the JSON path inside it, e.g. `layers[2].digest`.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The document is bigger than [`MAX_JSON_SIZE`].
    #[error("{what} is {size} bytes, more than the {MAX_JSON_SIZE}-byte (4 MiB) limit for JSON documents")]
    TooLarge {
        /// Which document.
        what: &'static str,
        /// Its size in bytes.
        size: usize,
    },
    /// Not JSON, or JSON of the wrong shape.
    #[error("{what}: malformed JSON: {source}")]
    Json {
        /// Which document.
        what: &'static str,
        /// The parser's message.
        source: serde_json::Error,
    },
    /// A field is missing or holds a bad value.
    #[error("{what}: {field}: {problem}")]
    Invalid {
        /// Which document.
        what: &'static str,
        /// JSON path of the field.
        field: String,
        /// What is wrong, in plain words.
        problem: String,
    },
    /// A media type we do not handle where it appears.
    #[error("{what}: unsupported media type {media_type:?}{}", if field.is_empty() { String::new() } else { format!(" at {field}") })]
    UnsupportedMediaType {
        /// Which document.
        what: &'static str,
        /// JSON path of the field, empty for the document itself.
        field: String,
        /// The media type.
        media_type: String,
    },
    /// The descriptor that pointed at the document and the document disagree.
    #[error("media type conflict: the descriptor says {descriptor:?} but the document says {document:?}")]
    MediaTypeConflict {
        /// The media type in the descriptor.
        descriptor: String,
        /// The media type in (or implied by) the document.
        document: String,
    },
    /// A manifest was expected and an index found, or the other way round.
    #[error("expected {expected} but the document is {found}")]
    WrongKind {
        /// "an image manifest" or "an index".
        expected: &'static str,
        /// What was found instead.
        found: &'static str,
    },
}

impl ImageError {
    pub(crate) fn invalid(
        what: &'static str,
        field: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        ImageError::Invalid {
            what,
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// Refuses documents over [`MAX_JSON_SIZE`] and parses the rest to a JSON value.
pub(crate) fn parse_json_capped(
    what: &'static str,
    bytes: &[u8],
) -> Result<serde_json::Value, ImageError> {
    if bytes.len() > MAX_JSON_SIZE {
        return Err(ImageError::TooLarge {
            what,
            size: bytes.len(),
        });
    }
    serde_json::from_slice(bytes).map_err(|source| ImageError::Json { what, source })
}
