//! `bench-tools zran-read`: random reads of a gzip layer's uncompressed stream
//! through imagefs's seekable index (the `.zran` file import saved), from the
//! local blob, against decompressing from the start of the layer to the same
//! place (what a reader without the index must do).

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::time::Instant;

use imagefs::testing::layer::GzipIndex;

use crate::Rng;

/// `zran-read INDEX BLOB SIZE COUNT PEER_COUNT`: prints two lines of samples (ns
/// per read): `index <ns>...` (COUNT reads of SIZE bytes at random offsets through
/// the index) and `start <ns>...` (PEER_COUNT of the same reads by decompressing
/// from the start with flate2).
pub fn zran_read(args: &[String]) -> io::Result<()> {
    let [index_path, blob_path, size, count, peer_count] = args else {
        return Err(io::Error::other(
            "usage: zran-read INDEX BLOB SIZE COUNT PEER_COUNT",
        ));
    };
    let number = |text: &String| -> io::Result<u64> {
        text.parse().map_err(|_| io::Error::other(format!("not a number: {text}")))
    };
    let (size, count, peer_count) = (number(size)?, number(count)?, number(peer_count)?);
    let index = GzipIndex::read_from(index_path.as_ref()).map_err(io::Error::other)?;
    let blob = File::open(blob_path)?;
    let total = index.uncompressed_size();
    if total <= size {
        return Err(io::Error::other("layer smaller than one read"));
    }
    let mut rng = Rng::new(0x5eed);
    let offsets: Vec<u64> = (0..count).map(|_| rng.below(total - size)).collect();
    let mut samples = Vec::new();
    for &start in &offsets {
        let t = Instant::now();
        let data = index.read(&blob, start..start + size).map_err(io::Error::other)?;
        samples.push(t.elapsed().as_nanos());
        if data.len() as u64 != size {
            return Err(io::Error::other("short read through the index"));
        }
    }
    println!("index {}", join(&samples));
    let mut samples = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    for &start in offsets.iter().take(peer_count as usize) {
        let t = Instant::now();
        let file = File::open(blob_path)?;
        let mut decoder =
            flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 20, file))
                .take(start + size);
        while decoder.read(&mut buf)? > 0 {}
        samples.push(t.elapsed().as_nanos());
    }
    println!("start {}", join(&samples));
    Ok(())
}

fn join(samples: &[u128]) -> String {
    samples.iter().map(u128::to_string).collect::<Vec<_>>().join(" ")
}
