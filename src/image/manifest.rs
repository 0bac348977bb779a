//! Descriptors, manifests and indexes.
//!
//! Parsing goes through `serde_json::Value` and explicit field checks rather than
//! derived structs, so every refusal names the JSON path and the problem.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use super::media_types::{self, LayerCompression};
pub use super::platform::Platform;
use super::{parse_json_capped, ImageError, MAX_JSON_SIZE};
use crate::digest::Digest;

/// The OCI annotation naming an image inside a layout (skopeo puts the tag there).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation containerd and Docker put the full image name in.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The largest blob size a descriptor may declare (1 TiB); bigger is taken as garbage.
pub const MAX_BLOB_SIZE: u64 = 1 << 40;

/// A content descriptor: what a manifest or index says about a blob it points to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Descriptor {
    /// The blob's media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
    /// The platform (index entries only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// The artifact type (OCI 1.1 index entries and subjects).
    #[serde(rename = "artifactType", skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Annotations, sorted by key.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// A plain descriptor without platform or annotations.
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            platform: None,
            artifact_type: None,
            annotations: BTreeMap::new(),
        }
    }
}

/// An image manifest (OCI or Docker schema 2), or an OCI artifact manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The manifest's media type (from the document, else from its descriptor).
    pub media_type: String,
    /// The config blob.
    pub config: Descriptor,
    /// The layers, base first.
    pub layers: Vec<Descriptor>,
    /// OCI 1.1 `subject`: the manifest this one refers to.
    pub subject: Option<Descriptor>,
    /// OCI 1.1 `artifactType`.
    pub artifact_type: Option<String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    /// True when this is a container image (its layers make a rootfs): the config is
    /// an OCI or Docker image config, no `artifactType` marks it as an artifact, and
    /// every layer is a tar layer (buildx attestation manifests are not images).
    pub fn is_image(&self) -> bool {
        media_types::is_image_config(&self.config.media_type)
            && self.artifact_type.is_none()
            && self
                .layers
                .iter()
                .all(|layer| media_types::is_layer(&layer.media_type))
    }

    /// The compression of each layer, base first. Only meaningful for images, whose
    /// layers are all checked to be known layer types at parse time.
    pub fn layer_compressions(&self) -> Vec<Option<LayerCompression>> {
        self.layers
            .iter()
            .map(|layer| LayerCompression::from_media_type(&layer.media_type))
            .collect()
    }
}

/// An image index (OCI) or manifest list (Docker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    /// The index's media type (from the document, else from its descriptor).
    pub media_type: String,
    /// Child manifests (or nested indexes), in document order.
    pub manifests: Vec<Descriptor>,
    /// OCI 1.1 `subject`.
    pub subject: Option<Descriptor>,
    /// OCI 1.1 `artifactType`.
    pub artifact_type: Option<String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
}

/// A top-level document: a manifest or an index.
// Parsed once per document and consumed at once, never stored in bulk: boxing would
// only make matching clumsier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// An image or artifact manifest.
    Manifest(Manifest),
    /// An index or manifest list.
    Index(Index),
}

/// Parses a manifest or an index. `descriptor_media_type` is the media type of the
/// descriptor that pointed here, if any; it must agree with the document's own
/// `mediaType`. With neither, the shape decides (`manifests` → index, `config` →
/// OCI manifest).
pub fn parse_top(bytes: &[u8], descriptor_media_type: Option<&str>) -> Result<Parsed, ImageError> {
    parse_top_as(bytes, descriptor_media_type, "manifest or index")
}

/// [`parse_top`], naming the document `expected` in errors when the descriptor
/// does not say what it is.
fn parse_top_as(
    bytes: &[u8],
    descriptor_media_type: Option<&str>,
    expected: &'static str,
) -> Result<Parsed, ImageError> {
    let what = match descriptor_media_type {
        Some(media_type) if media_types::is_index(media_type) => "index",
        Some(_) => "manifest",
        None => expected,
    };
    let value = parse_json_capped(what, bytes)?;
    let Value::Object(object) = &value else {
        return Err(ImageError::invalid(
            what,
            "(document)",
            "expected a JSON object",
        ));
    };
    let document_media_type = opt_str(object, what, "", "mediaType")?;
    let media_type = match (descriptor_media_type, document_media_type.as_deref()) {
        (Some(descriptor), Some(document)) if descriptor != document => {
            return Err(ImageError::MediaTypeConflict {
                descriptor: descriptor.to_string(),
                document: document.to_string(),
            })
        }
        (_, Some(document)) => document.to_string(),
        (Some(descriptor), None) => descriptor.to_string(),
        (None, None) => {
            let has_manifests = object.contains_key("manifests");
            let has_config = object.contains_key("config");
            match (has_manifests, has_config) {
                (true, false) => media_types::OCI_INDEX.to_string(),
                (false, true) => media_types::OCI_MANIFEST.to_string(),
                _ => {
                    return Err(ImageError::invalid(
                        what,
                        "(document)",
                        "no mediaType, and not recognisable as a manifest (config) or an index (manifests)",
                    ))
                }
            }
        }
    };
    if media_types::is_manifest(&media_type) {
        if object.contains_key("manifests") {
            return Err(ImageError::MediaTypeConflict {
                descriptor: media_type,
                document: "an index (it has `manifests`)".to_string(),
            });
        }
        manifest_from_object(object, media_type).map(Parsed::Manifest)
    } else if media_types::is_index(&media_type) {
        if object.contains_key("config") || object.contains_key("layers") {
            return Err(ImageError::MediaTypeConflict {
                descriptor: media_type,
                document: "a manifest (it has `config`/`layers`)".to_string(),
            });
        }
        index_from_object(object, media_type).map(Parsed::Index)
    } else {
        if media_types::is_docker_schema1(&media_type) {
            return Err(ImageError::invalid(
                what,
                "mediaType",
                format!("{media_type:?} is Docker schema 1, which is obsolete and unsupported; convert the image with a current tool"),
            ));
        }
        Err(ImageError::UnsupportedMediaType {
            what,
            field: String::new(),
            media_type,
        })
    }
}

/// Parses a document that must be a manifest (see [`parse_top`]).
pub fn parse_manifest(
    bytes: &[u8],
    descriptor_media_type: Option<&str>,
) -> Result<Manifest, ImageError> {
    match parse_top_as(bytes, descriptor_media_type, "manifest")? {
        Parsed::Manifest(manifest) => Ok(manifest),
        Parsed::Index(_) => Err(ImageError::WrongKind {
            expected: "an image manifest",
            found: "an index",
        }),
    }
}

/// Parses a document that must be an index (see [`parse_top`]); an OCI layout's
/// `index.json` is parsed with this and no descriptor media type.
pub fn parse_index(bytes: &[u8], descriptor_media_type: Option<&str>) -> Result<Index, ImageError> {
    match parse_top_as(bytes, descriptor_media_type, "index")? {
        Parsed::Index(index) => Ok(index),
        Parsed::Manifest(_) => Err(ImageError::WrongKind {
            expected: "an index",
            found: "an image manifest",
        }),
    }
}

fn check_schema_version(object: &Map<String, Value>, what: &'static str) -> Result<(), ImageError> {
    match object.get("schemaVersion") {
        Some(Value::Number(number)) if number.as_u64() == Some(2) => Ok(()),
        Some(other) => Err(ImageError::invalid(
            what,
            "schemaVersion",
            format!("must be 2, found {other}"),
        )),
        None => Err(ImageError::invalid(
            what,
            "schemaVersion",
            "missing (must be 2)",
        )),
    }
}

fn manifest_from_object(
    object: &Map<String, Value>,
    media_type: String,
) -> Result<Manifest, ImageError> {
    let what = "manifest";
    check_schema_version(object, what)?;
    let config = match object.get("config") {
        Some(value) => descriptor_from_value(value, what, "config")?,
        None => return Err(ImageError::invalid(what, "config", "missing")),
    };
    let artifact_type = opt_str(object, what, "", "artifactType")?;
    let is_image = media_types::is_image_config(&config.media_type) && artifact_type.is_none();
    if is_image && config.size > MAX_JSON_SIZE as u64 {
        return Err(ImageError::invalid(
            what,
            "config.size",
            format!(
                "{} bytes is over the 4 MiB limit for an image config",
                config.size
            ),
        ));
    }
    let layers = match object.get("layers") {
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(position, item)| {
                descriptor_from_value(item, what, &format!("layers[{position}]"))
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(ImageError::invalid(what, "layers", "expected an array")),
        None if is_image => return Err(ImageError::invalid(what, "layers", "missing")),
        None => Vec::new(),
    };
    if is_image {
        for (position, layer) in layers.iter().enumerate() {
            // A type that claims to be a filesystem layer but is not one we can read
            // is refused; anything else (buildx attestations carry in-toto JSON
            // under an image config) makes the manifest an artifact: stored, no rootfs.
            if !media_types::is_layer(&layer.media_type) && looks_like_layer(&layer.media_type) {
                return Err(ImageError::UnsupportedMediaType {
                    what,
                    field: format!("layers[{position}].mediaType"),
                    media_type: layer.media_type.clone(),
                });
            }
        }
    }
    Ok(Manifest {
        media_type,
        config,
        layers,
        subject: opt_descriptor(object, what, "subject")?,
        artifact_type,
        annotations: annotations(object, what, "")?,
    })
}

/// Whether a media type names a filesystem layer (of some compression or vendor).
fn looks_like_layer(media_type: &str) -> bool {
    media_type.contains("layer") || media_type.contains("rootfs") || media_type.contains(".tar")
}

fn index_from_object(object: &Map<String, Value>, media_type: String) -> Result<Index, ImageError> {
    let what = "index";
    check_schema_version(object, what)?;
    let manifests = match object.get("manifests") {
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(position, item)| {
                let field = format!("manifests[{position}]");
                let child = descriptor_from_value(item, what, &field)?;
                if !media_types::is_manifest(&child.media_type)
                    && !media_types::is_index(&child.media_type)
                {
                    return Err(ImageError::UnsupportedMediaType {
                        what,
                        field: format!("{field}.mediaType"),
                        media_type: child.media_type,
                    });
                }
                Ok(child)
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(ImageError::invalid(what, "manifests", "expected an array")),
        None => return Err(ImageError::invalid(what, "manifests", "missing")),
    };
    Ok(Index {
        media_type,
        manifests,
        subject: opt_descriptor(object, what, "subject")?,
        artifact_type: opt_str(object, what, "", "artifactType")?,
        annotations: annotations(object, what, "")?,
    })
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// An optional string field; present but not a string is an error.
pub(super) fn opt_str(
    object: &Map<String, Value>,
    what: &'static str,
    prefix: &str,
    key: &str,
) -> Result<Option<String>, ImageError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(other) => Err(ImageError::invalid(
            what,
            join(prefix, key),
            format!("expected a string, found {}", kind(other)),
        )),
    }
}

/// A JSON value's kind, for error messages.
pub(super) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn annotations(
    object: &Map<String, Value>,
    what: &'static str,
    prefix: &str,
) -> Result<BTreeMap<String, String>, ImageError> {
    string_map(
        object.get("annotations"),
        what,
        &join(prefix, "annotations"),
    )
}

/// A `{string: string}` object, null or absent meaning empty.
pub(super) fn string_map(
    value: Option<&Value>,
    what: &'static str,
    field: &str,
) -> Result<BTreeMap<String, String>, ImageError> {
    match value {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(entries)) => entries
            .iter()
            .map(|(key, value)| match value {
                Value::String(text) => Ok((key.clone(), text.clone())),
                other => Err(ImageError::invalid(
                    what,
                    format!("{field}.{key}"),
                    format!("expected a string, found {}", kind(other)),
                )),
            })
            .collect(),
        Some(other) => Err(ImageError::invalid(
            what,
            field,
            format!("expected an object, found {}", kind(other)),
        )),
    }
}

fn opt_descriptor(
    object: &Map<String, Value>,
    what: &'static str,
    key: &str,
) -> Result<Option<Descriptor>, ImageError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => descriptor_from_value(value, what, key).map(Some),
    }
}

fn descriptor_from_value(
    value: &Value,
    what: &'static str,
    field: &str,
) -> Result<Descriptor, ImageError> {
    let Value::Object(object) = value else {
        return Err(ImageError::invalid(
            what,
            field,
            format!("expected a descriptor object, found {}", kind(value)),
        ));
    };
    let Some(media_type) = opt_str(object, what, field, "mediaType")? else {
        return Err(ImageError::invalid(
            what,
            join(field, "mediaType"),
            "missing",
        ));
    };
    let Some(digest_text) = opt_str(object, what, field, "digest")? else {
        return Err(ImageError::invalid(what, join(field, "digest"), "missing"));
    };
    let digest = Digest::parse(&digest_text)
        .map_err(|error| ImageError::invalid(what, join(field, "digest"), error.to_string()))?;
    let size = match object.get("size") {
        Some(Value::Number(number)) => match number.as_u64() {
            Some(size) if size <= MAX_BLOB_SIZE => size,
            Some(size) => {
                return Err(ImageError::invalid(
                    what,
                    join(field, "size"),
                    format!("{size} bytes is more than the {MAX_BLOB_SIZE}-byte limit"),
                ))
            }
            None => {
                return Err(ImageError::invalid(
                    what,
                    join(field, "size"),
                    format!("must be a non-negative integer, found {number}"),
                ))
            }
        },
        Some(other) => {
            return Err(ImageError::invalid(
                what,
                join(field, "size"),
                format!("expected a number, found {}", kind(other)),
            ))
        }
        None => return Err(ImageError::invalid(what, join(field, "size"), "missing")),
    };
    let platform = match object.get("platform") {
        None | Some(Value::Null) => None,
        Some(value) => Some(platform_from_value(value, what, &join(field, "platform"))?),
    };
    Ok(Descriptor {
        media_type,
        digest,
        size,
        platform,
        artifact_type: opt_str(object, what, field, "artifactType")?,
        annotations: annotations(object, what, field)?,
    })
}

fn platform_from_value(
    value: &Value,
    what: &'static str,
    field: &str,
) -> Result<Platform, ImageError> {
    let Value::Object(object) = value else {
        return Err(ImageError::invalid(
            what,
            field,
            format!("expected an object, found {}", kind(value)),
        ));
    };
    let Some(os) = opt_str(object, what, field, "os")? else {
        return Err(ImageError::invalid(what, join(field, "os"), "missing"));
    };
    let Some(architecture) = opt_str(object, what, field, "architecture")? else {
        return Err(ImageError::invalid(
            what,
            join(field, "architecture"),
            "missing",
        ));
    };
    Ok(Platform {
        os,
        architecture,
        variant: opt_str(object, what, field, "variant")?.filter(|variant| !variant.is_empty()),
        os_version: opt_str(object, what, field, "os.version")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::media_types::*;

    fn digest(n: u8) -> String {
        Digest::of(&[n]).to_string()
    }

    fn image_manifest(layer_type: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",
              "config":{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":10}},
              "layers":[{{"mediaType":"{layer_type}","digest":"{}","size":20}}],
              "annotations":{{"a":"b"}}}}"#,
            digest(1),
            digest(2)
        )
    }

    #[test]
    fn parses_image_manifest() {
        let manifest = parse_manifest(
            image_manifest(OCI_LAYER_TAR_GZIP).as_bytes(),
            Some(OCI_MANIFEST),
        )
        .unwrap();
        assert!(manifest.is_image());
        assert_eq!(manifest.media_type, OCI_MANIFEST);
        assert_eq!(manifest.config.digest.to_string(), digest(1));
        assert_eq!(manifest.layers.len(), 1);
        assert_eq!(manifest.layers[0].size, 20);
        assert_eq!(
            manifest.layer_compressions(),
            vec![Some(LayerCompression::Gzip)]
        );
        assert_eq!(manifest.annotations.get("a").map(String::as_str), Some("b"));
    }

    #[test]
    fn parses_docker_manifest_and_list() {
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
              "config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{}","size":10}},
              "layers":[{{"mediaType":"{DOCKER_LAYER_TAR_GZIP}","digest":"{}","size":20}},
                        {{"mediaType":"{DOCKER_FOREIGN_LAYER_TAR_GZIP}","digest":"{}","size":20,"urls":["https://x"]}}]}}"#,
            digest(1),
            digest(2),
            digest(3)
        );
        let manifest = parse_manifest(manifest.as_bytes(), None).unwrap();
        assert_eq!(manifest.media_type, DOCKER_MANIFEST);
        assert!(manifest.is_image());
        let list = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST_LIST}","manifests":[
                {{"mediaType":"{DOCKER_MANIFEST}","digest":"{}","size":5,"platform":{{"os":"linux","architecture":"arm","variant":"v7"}}}}]}}"#,
            digest(4)
        );
        let index = parse_index(list.as_bytes(), Some(DOCKER_MANIFEST_LIST)).unwrap();
        let platform = index.manifests[0].platform.clone().unwrap();
        assert_eq!(
            (platform.os.as_str(), platform.architecture.as_str()),
            ("linux", "arm")
        );
        assert_eq!(platform.variant.as_deref(), Some("v7"));
    }

    #[test]
    fn parses_oci_index_with_subject_and_os_version() {
        let text = format!(
            r#"{{"schemaVersion":2,"manifests":[
                {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":5,
                  "platform":{{"os":"windows","architecture":"amd64","os.version":"10.0.17763.1"}}}},
                {{"mediaType":"{OCI_INDEX}","digest":"{}","size":6}}],
              "subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":7}}}}"#,
            digest(1),
            digest(2),
            digest(3)
        );
        let Parsed::Index(index) = parse_top(text.as_bytes(), None).unwrap() else {
            panic!("expected an index")
        };
        assert_eq!(index.media_type, OCI_INDEX);
        assert_eq!(index.manifests.len(), 2);
        assert_eq!(
            index.manifests[0]
                .platform
                .as_ref()
                .and_then(|p| p.os_version.as_deref()),
            Some("10.0.17763.1")
        );
        assert_eq!(index.subject.unwrap().size, 7);
    }

    #[test]
    fn artifacts_carry_any_layer_type() {
        let text = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/vnd.example+type",
              "config":{{"mediaType":"{OCI_EMPTY}","digest":"{}","size":2}},
              "layers":[{{"mediaType":"application/vnd.in-toto+json","digest":"{}","size":20}}],
              "subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":7}}}}"#,
            digest(1),
            digest(2),
            digest(3)
        );
        let manifest = parse_manifest(text.as_bytes(), None).unwrap();
        assert!(!manifest.is_image());
        assert_eq!(
            manifest.artifact_type.as_deref(),
            Some("application/vnd.example+type")
        );
        assert!(manifest.subject.is_some());
        // A helm-style artifact: a non-image config and no artifactType.
        let helm = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"{}","size":2}},
              "layers":[{{"mediaType":"application/vnd.cncf.helm.chart.content.v1.tar+gzip","digest":"{}","size":20}}]}}"#,
            digest(1),
            digest(2)
        );
        assert!(!parse_manifest(helm.as_bytes(), None).unwrap().is_image());
    }

    /// Every way a top-level document can be refused, with a fragment of the message.
    #[test]
    fn refusals() {
        let oversized = format!(
            r#"{{"schemaVersion":2,"pad":"{}"}}"#,
            "x".repeat(MAX_JSON_SIZE)
        );
        let with_digest = |text: &str| image_manifest(OCI_LAYER_TAR).replace(&digest(2), text);
        let with_size = |size: &str| {
            image_manifest(OCI_LAYER_TAR).replace("\"size\":20", &format!("\"size\":{size}"))
        };
        let sha512 = format!("sha512:{}", "a".repeat(128));
        let upper = digest(2).to_uppercase().replace("SHA256", "sha256");
        let table: Vec<(String, Option<&str>, &str)> = vec![
            ("not json".into(), None, "malformed JSON"),
            ("[1,2]".into(), None, "expected a JSON object"),
            ("{}".into(), None, "not recognisable"),
            (oversized, None, "4 MiB"),
            (image_manifest(OCI_LAYER_TAR), Some(OCI_INDEX), "media type conflict"),
            (image_manifest(OCI_LAYER_TAR), Some(DOCKER_MANIFEST), "media type conflict"),
            (
                image_manifest(OCI_LAYER_TAR).replace(OCI_MANIFEST, OCI_INDEX),
                None,
                "it has `config`",
            ),
            (
                format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","manifests":[]}}"#),
                None,
                "it has `manifests`",
            ),
            (
                image_manifest("application/vnd.oci.image.layer.v1.tar+bzip2"),
                None,
                "unsupported media type \"application/vnd.oci.image.layer.v1.tar+bzip2\" at layers[0].mediaType",
            ),
            (with_digest("sha256:../../x"), None, "layers[0].digest"),
            (with_digest(&upper), None, "layers[0].digest"),
            (with_digest(&sha512), None, "unsupported algorithm"),
            (with_size("-1"), None, "non-negative integer"),
            (with_size("1.5"), None, "non-negative integer"),
            (with_size("\"20\""), None, "expected a number"),
            (with_size("99999999999999999"), None, "more than the"),
            (image_manifest(OCI_LAYER_TAR).replace("\"schemaVersion\":2", "\"schemaVersion\":1"), None, "schemaVersion"),
            (
                image_manifest(OCI_LAYER_TAR).replace(OCI_MANIFEST, "application/vnd.docker.distribution.manifest.v1+prettyjws"),
                None,
                "schema 1",
            ),
            (
                format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","layers":[]}}"#),
                None,
                "config: missing",
            ),
            (
                format!(r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_LAYER_TAR}","digest":"{}","size":1}}]}}"#, digest(1)),
                None,
                "manifests[0].mediaType",
            ),
            (
                format!(r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"os":"linux"}}}}]}}"#, digest(1)),
                None,
                "manifests[0].platform.architecture: missing",
            ),
            (
                image_manifest(OCI_LAYER_TAR).replace("{\"a\":\"b\"}", "{\"a\":1}"),
                None,
                "annotations.a",
            ),
            (
                image_manifest(OCI_LAYER_TAR).replace("\"size\":10", "\"size\":5000000"),
                None,
                "config.size",
            ),
        ];
        for (text, media_type, expected) in table {
            let error = parse_top(text.as_bytes(), media_type)
                .expect_err(expected)
                .to_string();
            assert!(error.contains(expected), "{error:?} lacks {expected:?}");
        }
    }

    #[test]
    fn wrong_kind() {
        let error = parse_index(image_manifest(OCI_LAYER_TAR).as_bytes(), None).unwrap_err();
        assert!(matches!(error, ImageError::WrongKind { .. }));
    }

    #[test]
    fn descriptor_serializes_compactly() {
        let descriptor = Descriptor::new(OCI_MANIFEST, Digest::of(b""), 0);
        let text = serde_json::to_string(&descriptor).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":0}}"#,
                Digest::of(b"")
            )
        );
    }
}
