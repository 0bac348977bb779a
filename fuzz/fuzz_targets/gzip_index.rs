//! The seekable index of gzip layers. The first byte picks what the rest is:
//! - even: an encoded index. `GzipIndex::from_bytes` must refuse garbage without
//!   panicking; what it accepts re-encodes to the same bytes, and reads through it
//!   over a fixed small blob either fail or return bytes, never panic or hang.
//! - odd: a gzip blob. The checkpointing decoder must refuse what flate2 refuses
//!   and otherwise produce flate2's bytes (expansion capped); its index then reads
//!   every range the same as plain decompression.
#![no_main]

use std::io::Read;
use std::sync::OnceLock;

use imagefs::testing::layer::zran::{entry_data, GzipIndex, GzipIndexBuilder};
use imagefs::testing::layer::{self, DiscardSink};
use imagefs::{DiffId, Digest};
use libfuzzer_sys::fuzz_target;

/// Caps what a tiny compressed input may expand to, so a bomb costs time, not memory.
const MAX_UNCOMPRESSED: u64 = 16 * 1024 * 1024;

/// A valid gzip blob for the indexes of the first half to read from.
fn fixed_blob() -> &'static Vec<u8> {
    static BLOB: OnceLock<Vec<u8>> = OnceLock::new();
    BLOB.get_or_init(|| {
        let spec = imagefs::testing::sample::LayerSpec::parse(
            "file /a 0644 @text:3000000; file /b 0644 \"b\"; hardlink /c /a",
        )
        .expect("a valid layer description");
        spec.build(imagefs::testing::sample::Compression::Gzip)
            .expect("the sample layer builds")
            .blob
            .data
    })
}

fn probe_ranges(size: u64, seed: &[u8]) -> Vec<std::ops::Range<u64>> {
    let mut ranges = vec![0..size.min(1), size.saturating_sub(1)..size];
    for pair in seed.chunks(4).take(4) {
        let mut word = [0u8; 4];
        word[..pair.len()].copy_from_slice(pair);
        let at = u64::from(u32::from_le_bytes(word)) % size.max(1);
        ranges.push(at..(at + 70_000).min(size));
    }
    ranges.retain(|r| r.start < r.end);
    ranges
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let Ok(index) = GzipIndex::from_bytes(rest) else {
            return;
        };
        assert_eq!(index.to_bytes(), rest, "an accepted index re-encodes differently");
        let blob = fixed_blob();
        for range in probe_ranges(index.uncompressed_size(), rest) {
            let _ = index.read(blob, range);
        }
        return;
    }
    let mut builder = match GzipIndexBuilder::new(rest) {
        Ok(builder) => builder,
        Err(_) => return,
    };
    let mut plain = Vec::new();
    let ours = (&mut builder).take(MAX_UNCOMPRESSED).read_to_end(&mut plain);
    let mut reference = Vec::new();
    let theirs = flate2::read::MultiGzDecoder::new(rest)
        .take(MAX_UNCOMPRESSED)
        .read_to_end(&mut reference);
    match (&ours, &theirs) {
        (Ok(_), Ok(_)) => assert!(plain == reference, "output differs from flate2"),
        (Err(_), Err(_)) => return,
        // Past the cap the two may stop in different places; below it they agree.
        _ if plain.len() as u64 >= MAX_UNCOMPRESSED => return,
        _ => panic!("decoder and flate2 disagree: ours {ours:?}, flate2 {theirs:?}"),
    }
    let Ok(built) = builder.finish() else {
        return; // stopped at the cap
    };
    let index = GzipIndex::new(Digest::of(rest), DiffId(Digest::of(&plain)), built)
        .expect("a built index is valid");
    let back = GzipIndex::from_bytes(&index.to_bytes()).expect("an index we wrote reads back");
    assert_eq!(back, index);
    for range in probe_ranges(plain.len() as u64, rest) {
        let got = index.read(&rest, range.clone()).expect("reads through a built index");
        assert!(got == plain[range.start as usize..range.end as usize], "{range:?} differs");
    }
    if let Ok(tar) = layer::index_layer(&plain[..], &mut DiscardSink) {
        for entry in 0..tar.entries.len().min(8) {
            if let Ok(pieces) = entry_data(&tar, entry, 0..u64::MAX) {
                for piece in pieces {
                    if let layer::zran::DataPiece::Stream(range) = piece {
                        let _ = index.read(&rest, range);
                    }
                }
            }
        }
    }
});
