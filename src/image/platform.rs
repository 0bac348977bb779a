//! The platform type (of index entries, configs and the store's index edges) and
//! the names of the `platforms/` entries of an index in the mount (SPEC section 3).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// A platform, as in an index entry or a config, and as the store records it on an
/// index edge (there as JSON; rows written before this type was shared spell
/// `os_version`, which is still read).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// CPU architecture, e.g. `amd64`.
    pub architecture: String,
    /// CPU variant, e.g. `v8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// OS version (Windows images).
    #[serde(
        rename = "os.version",
        alias = "os_version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
}

/// `<os>-<arch>[-<variant>]`, with anything but `[A-Za-z0-9._-]` turned into `_` so
/// the result is always one safe path component.
pub fn platform_dir_name(platform: &Platform) -> String {
    let mut name = format!(
        "{}-{}",
        sanitize(&platform.os),
        sanitize(&platform.architecture)
    );
    if let Some(variant) = platform
        .variant
        .as_deref()
        .filter(|variant| !variant.is_empty())
    {
        name.push('-');
        name.push_str(&sanitize(variant));
    }
    name
}

fn sanitize(part: &str) -> String {
    if part.is_empty() {
        return "unknown".to_string();
    }
    part.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One unique, stable name per index child, in the children's order. A child
/// without a platform is `unknown-unknown`. Children that share a name each get
/// `-<first 12 hex of their digest>`; should that still collide (the same digest
/// listed twice), later ones get `-2`, `-3`, ... by position.
pub fn unique_platform_names(children: &[(Digest, Option<Platform>)]) -> Vec<String> {
    let base: Vec<String> = children
        .iter()
        .map(|(_, platform)| {
            platform
                .as_ref()
                .map_or_else(|| "unknown-unknown".to_string(), platform_dir_name)
        })
        .collect();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for name in &base {
        *counts.entry(name.as_str()).or_default() += 1;
    }
    let suffixed: Vec<String> = base
        .iter()
        .zip(children)
        .map(|(name, (digest, _))| {
            if counts.get(name.as_str()).copied().unwrap_or_default() > 1 {
                format!("{name}-{}", digest.short(12))
            } else {
                name.clone()
            }
        })
        .collect();
    let mut taken: HashMap<String, usize> = HashMap::new();
    suffixed
        .into_iter()
        .map(|name| {
            let seen = taken.entry(name.clone()).or_default();
            *seen += 1;
            if *seen == 1 {
                name
            } else {
                format!("{name}-{seen}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.into(),
            architecture: architecture.into(),
            variant: variant.map(Into::into),
            os_version: None,
        }
    }

    #[test]
    fn platform_json_reads_both_spellings_of_os_version() {
        let oci: Platform =
            serde_json::from_str(r#"{"os":"windows","architecture":"amd64","os.version":"10"}"#)
                .unwrap();
        let old: Platform =
            serde_json::from_str(r#"{"os":"windows","architecture":"amd64","os_version":"10"}"#)
                .unwrap();
        assert_eq!(oci, old);
        assert_eq!(oci.os_version.as_deref(), Some("10"));
        let text = serde_json::to_string(&oci).unwrap();
        assert_eq!(serde_json::from_str::<Platform>(&text).unwrap(), oci);
        let bare: Platform =
            serde_json::from_str(r#"{"os":"linux","architecture":"arm"}"#).unwrap();
        assert_eq!(bare, platform("linux", "arm", None));
    }

    #[test]
    fn platform_names_are_unique_and_order_independent() {
        let n = |byte: u8| Digest::of(&[byte]);
        let children = vec![
            (n(1), Some(platform("linux", "amd64", None))),
            (n(2), Some(platform("linux", "arm64", Some("v8")))),
            (n(3), Some(platform("unknown", "unknown", None))),
            (n(4), None),
            (n(5), Some(platform("linux", "a/b", Some("")))),
        ];
        let names = unique_platform_names(&children);
        assert_eq!(names[0], "linux-amd64");
        assert_eq!(names[1], "linux-arm64-v8");
        assert_eq!(names[2], format!("unknown-unknown-{}", n(3).short(12)));
        assert_eq!(names[3], format!("unknown-unknown-{}", n(4).short(12)));
        assert_eq!(names[4], "linux-a_b");
        let mut reversed = children.clone();
        reversed.reverse();
        let mut again = unique_platform_names(&reversed);
        again.reverse();
        assert_eq!(names, again);
        let twice = vec![(n(1), None), (n(1), None)];
        let names = unique_platform_names(&twice);
        assert_ne!(names[0], names[1]);
    }

    #[test]
    fn dir_names() {
        let table = [
            (platform("linux", "amd64", None), "linux-amd64"),
            (platform("linux", "arm", Some("v7")), "linux-arm-v7"),
            (platform("linux", "arm64", Some("")), "linux-arm64"),
            (platform("unknown", "unknown", None), "unknown-unknown"),
            (platform("li/nux", "../x", Some("a b")), "li_nux-.._x-a_b"),
            (platform("", "", None), "unknown-unknown"),
        ];
        for (platform, expected) in table {
            assert_eq!(platform_dir_name(&platform), expected);
        }
    }

    #[test]
    fn duplicates_get_digest_suffixes() {
        let (a, b, c, d) = (
            Digest::of(b"a"),
            Digest::of(b"b"),
            Digest::of(b"c"),
            Digest::of(b"d"),
        );
        let children = vec![
            (a, Some(platform("linux", "amd64", None))),
            (b, Some(platform("linux", "arm64", Some("v8")))),
            (c, Some(platform("unknown", "unknown", None))),
            (d, None),
        ];
        let names = unique_platform_names(&children);
        assert_eq!(
            names,
            vec![
                "linux-amd64".to_string(),
                "linux-arm64-v8".to_string(),
                format!("unknown-unknown-{}", c.short(12)),
                format!("unknown-unknown-{}", d.short(12)),
            ]
        );
        // The same digest twice still yields distinct names.
        let twice = unique_platform_names(&[(a, None), (a, None)]);
        assert_eq!(
            twice,
            vec![
                format!("unknown-unknown-{}", a.short(12)),
                format!("unknown-unknown-{}-2", a.short(12))
            ]
        );
    }
}
