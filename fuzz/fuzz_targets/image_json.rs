//! Arbitrary bytes as image JSON: `parse_top` under every kind of descriptor media
//! type hint, `parse_config`, and platform naming of whatever index parses.
#![no_main]

use imagefs::image::{self, Parsed};
use libfuzzer_sys::fuzz_target;

const HINTS: &[Option<&str>] = &[
    None,
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json"),
    Some("application/vnd.docker.distribution.manifest.list.v2+json"),
    Some("application/vnd.docker.distribution.manifest.v1+json"),
    Some("application/octet-stream"),
    Some(""),
];

fuzz_target!(|data: &[u8]| {
    for hint in HINTS {
        if let Ok(Parsed::Index(index)) = image::parse_top(data, *hint) {
            let children: Vec<_> = index
                .manifests
                .iter()
                .map(|child| (child.digest, child.platform.clone()))
                .collect();
            let names = image::unique_platform_names(&children);
            assert_eq!(names.len(), children.len(), "every child gets a name");
            let mut sorted = names.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(
                sorted.len(),
                names.len(),
                "platform names are unique: {names:?}"
            );
        }
    }
    let _ = image::parse_config(data);
});
