//! Arbitrary strings as references and digests: no panic, and whatever parses
//! prints back to a string that parses to the same value.
#![no_main]

use imagefs::{Digest, Reference};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(reference) = Reference::parse(text) {
        let printed = reference.to_string();
        let again = Reference::parse(&printed).expect("a printed reference parses");
        assert_eq!(again, reference, "{text:?} -> {printed:?}");
    }
    if let Ok(Some(reference)) = Reference::parse_docker_style(text, "local") {
        let printed = reference.to_string();
        let again = Reference::parse(&printed).expect("a printed reference parses");
        assert_eq!(again, reference, "{text:?} -> {printed:?}");
    }
    if let Ok(digest) = Digest::parse(text) {
        assert_eq!(digest.to_string(), text, "digests have one spelling");
    }
});
