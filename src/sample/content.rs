//! Deterministic file contents for descriptions (`@random:N`, `@text:N`): the same
//! seed gives the same bytes on every run and every machine.
//!
//! Owns: the generators. Must not touch anything else: no I/O, no crate types.

/// A tiny deterministic generator (splitmix64) seeded from bytes (FNV-1a).
struct SplitMix(u64);

impl SplitMix {
    fn from_seed(seed: &[u8]) -> Self {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in seed {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        SplitMix(hash)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// `len` pseudo-random bytes, the same for the same seed on every run.
pub fn random_bytes(seed: &[u8], len: usize) -> Vec<u8> {
    let mut rng = SplitMix::from_seed(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `len` bytes of deterministic English-looking text in lines, for documentation files.
pub fn text_bytes(seed: &[u8], len: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the",
        "image",
        "layer",
        "store",
        "file",
        "system",
        "container",
        "package",
        "license",
        "version",
        "shared",
        "content",
        "digest",
        "build",
        "config",
        "manifest",
        "index",
        "registry",
        "mount",
        "read",
        "only",
        "copy",
        "sample",
        "data",
        "for",
        "with",
        "and",
        "of",
        "is",
        "a",
        "to",
        "in",
        "this",
        "software",
        "provided",
        "without",
        "warranty",
    ];
    let mut rng = SplitMix::from_seed(seed);
    let mut out = Vec::with_capacity(len + 16);
    let mut line_len = 0;
    while out.len() < len {
        let word = WORDS[(rng.next() % WORDS.len() as u64) as usize];
        if line_len + word.len() + 1 > 72 {
            out.push(b'\n');
            line_len = 0;
        } else if line_len > 0 {
            out.push(b' ');
            line_len += 1;
        }
        out.extend_from_slice(word.as_bytes());
        line_len += word.len();
    }
    out.truncate(len);
    if let Some(last) = out.last_mut() {
        *last = b'\n';
    }
    out
}
