//! Arbitrary bytes as a layer blob: sniffed decompression, then the tar indexer,
//! then the per-layer tree and the merged tree (alone and over itself), then the
//! index file round trip. The same bytes are also fed to `LayerIndex::from_bytes`,
//! which must refuse garbage without panicking.
#![no_main]

use std::io::Read;

use imagefs::testing::layer::{self, DiscardSink, LayerIndex};
use libfuzzer_sys::fuzz_target;

/// Caps what a tiny compressed input may expand to, so a bomb costs time, not memory.
const MAX_UNCOMPRESSED: u64 = 64 * 1024 * 1024;

fuzz_target!(|data: &[u8]| {
    if let Ok((_, stream)) = layer::open_layer_stream_sniffed(data) {
        if let Ok(index) = layer::index_layer(stream.take(MAX_UNCOMPRESSED), &mut DiscardSink) {
            let _ = layer::layer_tree(&index, 0);
            let _ = layer::merge_layers(&[&index]);
            let _ = layer::merge_layers(&[&index, &index]);
            let bytes = index.to_bytes();
            let back = LayerIndex::from_bytes(&bytes).expect("an index we wrote reads back");
            assert_eq!(back, index, "index file round trip changed the index");
        }
    }
    if let Ok(index) = LayerIndex::from_bytes(data) {
        // Whatever from_bytes accepts must be safe to build trees from.
        let _ = layer::layer_tree(&index, 0);
        let _ = layer::merge_layers(&[&index]);
    }
});
