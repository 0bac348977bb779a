//! Image configs: the fields imagefs relies on (strict) and a summary for `inspect`
//! (lenient: unknown fields are ignored, null lists are empty).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::manifest::{kind, opt_str, string_map};
use super::{parse_json_capped, ImageError};
use crate::digest::{DiffId, Digest};

/// An image config (OCI or Docker; they share the fields we use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageConfig {
    /// Operating system.
    pub os: String,
    /// CPU architecture.
    pub architecture: String,
    /// CPU variant.
    pub variant: Option<String>,
    /// Creation time as written (RFC 3339), not parsed.
    pub created: Option<String>,
    /// The uncompressed digest of each layer, base first.
    pub diff_ids: Vec<DiffId>,
    /// What `inspect` shows.
    pub summary: ConfigSummary,
}

/// The run-time settings of an image config, for display.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigSummary {
    /// `Env`.
    pub env: Vec<String>,
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: Option<String>,
    /// `User`.
    pub user: Option<String>,
    /// `ExposedPorts` keys, e.g. `80/tcp`.
    pub exposed_ports: Vec<String>,
    /// `Labels`.
    pub labels: BTreeMap<String, String>,
    /// Number of `history` entries.
    pub history_count: usize,
}

const WHAT: &str = "image config";

/// Parses an image config. `os`, `architecture` and `rootfs` (type `layers`, valid
/// sha256 `diff_ids`) are required; everything else is optional.
pub fn parse_config(bytes: &[u8]) -> Result<ImageConfig, ImageError> {
    let value = parse_json_capped(WHAT, bytes)?;
    let Value::Object(object) = &value else {
        return Err(ImageError::invalid(
            WHAT,
            "(document)",
            "expected a JSON object",
        ));
    };
    let required = |key: &str| -> Result<String, ImageError> {
        opt_str(object, WHAT, "", key)?.ok_or_else(|| ImageError::invalid(WHAT, key, "missing"))
    };
    let os = required("os")?;
    let architecture = required("architecture")?;
    let rootfs = match object.get("rootfs") {
        Some(Value::Object(rootfs)) => rootfs,
        Some(other) => {
            return Err(ImageError::invalid(
                WHAT,
                "rootfs",
                format!("expected an object, found {}", kind(other)),
            ))
        }
        None => return Err(ImageError::invalid(WHAT, "rootfs", "missing")),
    };
    match opt_str(rootfs, WHAT, "rootfs", "type")?.as_deref() {
        Some("layers") => {}
        Some(other) => {
            return Err(ImageError::invalid(
                WHAT,
                "rootfs.type",
                format!("must be \"layers\", found {other:?}"),
            ))
        }
        None => return Err(ImageError::invalid(WHAT, "rootfs.type", "missing")),
    }
    let diff_ids = match rootfs.get("diff_ids") {
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(position, item)| {
                let field = format!("rootfs.diff_ids[{position}]");
                match item {
                    Value::String(text) => Digest::parse(text)
                        .map(DiffId)
                        .map_err(|error| ImageError::invalid(WHAT, field, error.to_string())),
                    other => Err(ImageError::invalid(
                        WHAT,
                        field,
                        format!("expected a string, found {}", kind(other)),
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()?,
        // An image without layers may write null.
        None | Some(Value::Null) => Vec::new(),
        Some(other) => {
            return Err(ImageError::invalid(
                WHAT,
                "rootfs.diff_ids",
                format!("expected an array, found {}", kind(other)),
            ))
        }
    };
    let summary = match object.get("config") {
        Some(Value::Object(config)) => summary_from(config)?,
        None | Some(Value::Null) => ConfigSummary::default(),
        Some(other) => {
            return Err(ImageError::invalid(
                WHAT,
                "config",
                format!("expected an object, found {}", kind(other)),
            ))
        }
    };
    let history_count = match object.get("history") {
        Some(Value::Array(items)) => items.len(),
        _ => 0,
    };
    Ok(ImageConfig {
        os,
        architecture,
        variant: opt_str(object, WHAT, "", "variant")?.filter(|variant| !variant.is_empty()),
        created: opt_str(object, WHAT, "", "created")?,
        diff_ids,
        summary: ConfigSummary {
            history_count,
            ..summary
        },
    })
}

fn string_list(config: &Map<String, Value>, key: &str) -> Result<Vec<String>, ImageError> {
    let field = format!("config.{key}");
    match config.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        // Docker accepts a shell-form string here in Dockerfiles; configs should hold
        // arrays, but a string is shown as one element rather than refused.
        Some(Value::String(text)) => Ok(vec![text.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(position, item)| match item {
                Value::String(text) => Ok(text.clone()),
                other => Err(ImageError::invalid(
                    WHAT,
                    format!("{field}[{position}]"),
                    format!("expected a string, found {}", kind(other)),
                )),
            })
            .collect(),
        Some(other) => Err(ImageError::invalid(
            WHAT,
            field,
            format!("expected an array of strings, found {}", kind(other)),
        )),
    }
}

fn summary_from(config: &Map<String, Value>) -> Result<ConfigSummary, ImageError> {
    let exposed_ports = match config.get("ExposedPorts") {
        Some(Value::Object(ports)) => ports.keys().cloned().collect(),
        _ => Vec::new(),
    };
    Ok(ConfigSummary {
        env: string_list(config, "Env")?,
        entrypoint: string_list(config, "Entrypoint")?,
        cmd: string_list(config, "Cmd")?,
        working_dir: opt_str(config, WHAT, "config", "WorkingDir")?.filter(|dir| !dir.is_empty()),
        user: opt_str(config, WHAT, "config", "User")?.filter(|user| !user.is_empty()),
        exposed_ports,
        labels: string_map(config.get("Labels"), WHAT, "config.Labels")?,
        history_count: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with(rootfs: &str) -> String {
        format!(
            r#"{{"created":"2024-01-01T00:00:00Z","architecture":"arm64","variant":"v8","os":"linux",
              "config":{{"Env":["PATH=/bin"],"Entrypoint":null,"Cmd":["/bin/sh"],"WorkingDir":"/app",
                         "User":"","ExposedPorts":{{"80/tcp":{{}}}},"Labels":{{"k":"v"}},"Unknown":1}},
              "rootfs":{rootfs},"history":[{{}},{{}}],"future_field":true}}"#
        )
    }

    #[test]
    fn parses_a_config() {
        let diff = Digest::of(b"layer");
        let config = parse_config(
            config_with(&format!(r#"{{"type":"layers","diff_ids":["{diff}"]}}"#)).as_bytes(),
        )
        .unwrap();
        assert_eq!(config.os, "linux");
        assert_eq!(config.architecture, "arm64");
        assert_eq!(config.variant.as_deref(), Some("v8"));
        assert_eq!(config.diff_ids, vec![DiffId(diff)]);
        assert_eq!(config.summary.env, vec!["PATH=/bin"]);
        assert!(config.summary.entrypoint.is_empty());
        assert_eq!(config.summary.cmd, vec!["/bin/sh"]);
        assert_eq!(config.summary.working_dir.as_deref(), Some("/app"));
        assert_eq!(config.summary.user, None);
        assert_eq!(config.summary.exposed_ports, vec!["80/tcp"]);
        assert_eq!(
            config.summary.labels.get("k").map(String::as_str),
            Some("v")
        );
        assert_eq!(config.summary.history_count, 2);
    }

    #[test]
    fn refusals() {
        let good_rootfs = format!(r#"{{"type":"layers","diff_ids":["{}"]}}"#, Digest::of(b""));
        let table: Vec<(String, &str)> = vec![
            ("{".into(), "malformed JSON"),
            (
                config_with(r#"{"type":"layers","diff_ids":["sha256:abc"]}"#),
                "rootfs.diff_ids[0]",
            ),
            (
                config_with(r#"{"type":"layers","diff_ids":[5]}"#),
                "rootfs.diff_ids[0]",
            ),
            (
                config_with(r#"{"type":"other","diff_ids":[]}"#),
                "must be \"layers\"",
            ),
            (config_with(r#"{"diff_ids":[]}"#), "rootfs.type: missing"),
            (config_with("[]"), "rootfs: expected an object"),
            (
                config_with(&good_rootfs).replace(r#""os":"linux","#, ""),
                "os: missing",
            ),
            (
                config_with(&good_rootfs)
                    .replace(r#""architecture":"arm64""#, r#""architecture":7"#),
                "architecture: expected a string",
            ),
            (
                config_with(&good_rootfs).replace(r#""Cmd":["/bin/sh"]"#, r#""Cmd":[1]"#),
                "config.Cmd[0]",
            ),
            (
                r#"{"os":"linux","architecture":"amd64"}"#.into(),
                "rootfs: missing",
            ),
        ];
        for (text, expected) in table {
            let error = parse_config(text.as_bytes())
                .expect_err(expected)
                .to_string();
            assert!(error.contains(expected), "{error:?} lacks {expected:?}");
        }
    }
}
