//! The reader against plain decompression, over layers built in the test: text and
//! incompressible data, one and many gzip members (pigz and `cat`), stored and tiny
//! blocks; tar entries (a file over many spans, a hard link, a sparse file); bad
//! bytes in a span and in the index.

use std::io::{Read, Write};
use std::ops::Range;
use std::process::{Command, Stdio};

use crate::digest::{DiffId, Digest};
use crate::layer::{extract_entry, index_layer, DiscardSink, EntryKind};

use super::*;

/// Deterministic noise: text-like (words of a small vocabulary, about 3:1 under
/// gzip) or incompressible bytes.
fn noise(seed: u64, len: usize, text: bool) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let words: Vec<String> = (0..500)
        .map(|i| format!("w{}{}", i * 7919 % 1000, ["", "s", "ed", "ing"][i % 4]))
        .collect();
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        if text {
            let word = &words[(next() % words.len() as u64) as usize];
            out.extend_from_slice(word.as_bytes());
            out.push(if next() % 12 == 0 { b'\n' } else { b' ' });
        } else {
            out.extend_from_slice(&next().to_le_bytes());
        }
    }
    out.truncate(len);
    out
}

fn gzip(data: &[u8], level: u32) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// Gzip with a sync flush every `every` bytes: many tiny blocks, each followed by
/// an empty stored block.
fn gzip_tiny_blocks(data: &[u8], every: usize) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for piece in data.chunks(every) {
        encoder.write_all(piece).unwrap();
        encoder.flush().unwrap();
    }
    encoder.finish().unwrap()
}

fn pigz(data: &[u8], args: &[&str]) -> Vec<u8> {
    let mut child = Command::new("pigz")
        .args(args)
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("pigz is installed (Debian package pigz)");
    let mut stdin = child.stdin.take().unwrap();
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    writer.join().unwrap().unwrap();
    assert!(child.wait().unwrap().success());
    out
}

fn gunzip(blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(blob)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Builds the index of `blob` the way import does (through the builder's Read),
/// checking that the builder's output is the plain decompression.
fn build(blob: &[u8]) -> (GzipIndex, Vec<u8>) {
    let mut builder = GzipIndexBuilder::new(blob).unwrap();
    let mut plain = Vec::new();
    builder.read_to_end(&mut plain).unwrap();
    assert!(plain == gunzip(blob), "builder output differs from flate2");
    let built = builder.finish().unwrap();
    assert_eq!(built.compressed_size, blob.len() as u64);
    assert_eq!(built.uncompressed_size, plain.len() as u64);
    let index = GzipIndex::new(Digest::of(blob), DiffId(Digest::of(&plain)), built).unwrap();
    (index, plain)
}

/// Reads `range` through the index and compares it with the plain stream.
fn check(index: &GzipIndex, blob: &[u8], plain: &[u8], range: Range<u64>, what: &str) {
    let got = index
        .read(&blob, range.clone())
        .unwrap_or_else(|e| panic!("{what}: {range:?}: {e}"));
    assert!(
        got == plain[range.start as usize..range.end as usize],
        "{what}: {range:?} differs"
    );
}

/// Every checkpoint boundary (just before, at, just after), a range inside one
/// span, across many spans, the first and last bytes, the whole stream.
fn check_all(index: &GzipIndex, blob: &[u8], plain: &[u8], what: &str) {
    let size = plain.len() as u64;
    let mut ranges: Vec<Range<u64>> = vec![
        0..1,
        0..size,
        size - 1..size,
        size.saturating_sub(5000)..size,
    ];
    for checkpoint in index.checkpoints() {
        let at = checkpoint.uncompressed_offset;
        for range in [
            at.saturating_sub(1)..at + 1,
            at..at + 1,
            at..(at + 4096).min(size),
        ] {
            if range.start < range.end && range.end <= size {
                ranges.push(range);
            }
        }
    }
    if let Some(span) = index.span(index.span_count() / 2) {
        let inside = span.uncompressed.start + 100..span.uncompressed.end.saturating_sub(100);
        if inside.start < inside.end {
            ranges.push(inside);
        }
    }
    ranges.push(size / 7..size - size / 5);
    for range in ranges {
        check(index, blob, plain, range, what);
    }
}

#[test]
fn reads_match_plain_decompression() {
    for (what, data, level) in [
        ("text, gzip -6", noise(1, 9 << 20, true), 6),
        ("text, gzip -1", noise(2, 5 << 20, true), 1),
        ("text, gzip -9", noise(3, 5 << 20, true), 9),
        ("incompressible", noise(4, 5 << 20, false), 6),
        ("stored blocks only (gzip -0)", noise(5, 4 << 20, true), 0),
        ("zeros", vec![0u8; 16 << 20], 6),
        ("small", b"hello world\n".to_vec(), 6),
    ] {
        let blob = gzip(&data, level);
        let (index, plain) = build(&blob);
        assert!(plain == data);
        // zlib-rs's level 1 (zlib-ng's "quick" strategy) writes one block per
        // few MiB: a checkpoint needs a block boundary, so its spans are longer.
        if data.len() > 3 << 20 && level != 1 {
            assert!(
                index.span_count() >= 3,
                "{what}: {} spans",
                index.span_count()
            );
        }
        check_all(&index, &blob, &plain, what);
    }
}

#[test]
fn spans_are_about_a_mebibyte_and_the_index_small() {
    for (what, data) in [
        ("text", noise(6, 16 << 20, true)),
        ("incompressible", noise(7, 16 << 20, false)),
    ] {
        let blob = gzip(&data, 6);
        let (index, _) = build(&blob);
        for position in 1..index.span_count() {
            let span = index.span(position - 1).unwrap();
            let len = span.uncompressed.end - span.uncompressed.start;
            assert!(len >= SPAN_TARGET, "{what}: span {position} is {len} bytes");
            assert!(
                len < SPAN_TARGET + (512 << 10),
                "{what}: span {position} is {len} bytes"
            );
        }
        let size = index.to_bytes().len() as f64 / blob.len() as f64;
        assert!(
            size < 0.04,
            "{what}: index is {:.2}% of the layer",
            size * 100.0
        );
    }
}

#[test]
fn tiny_and_stored_blocks() {
    let data = noise(8, 3 << 20, true);
    for every in [100, 4096, 70_000] {
        let blob = gzip_tiny_blocks(&data, every);
        let (index, plain) = build(&blob);
        check_all(
            &index,
            &blob,
            &plain,
            &format!("sync flush every {every} bytes"),
        );
    }
    // A checkpoint inside a byte: the spans on either side share it.
    let blob = gzip(&data, 6);
    let (index, _) = build(&blob);
    assert!(
        index.checkpoints().iter().any(|c| c.bits > 0),
        "no checkpoint inside a byte in {} spans",
        index.span_count()
    );
}

#[test]
fn multi_member_layers_from_pigz_and_cat() {
    let a = noise(9, 3 << 20, true);
    let b = noise(10, (2 << 20) + 12345, false);
    let c = noise(11, 20_000, true); // a member smaller than the member gap
    let d = noise(12, 2 << 20, true);
    // pigz: one member, independent 128 KiB blocks with empty stored blocks between.
    let single = pigz(&a, &[]);
    let (index, plain) = build(&single);
    check_all(&index, &single, &plain, "pigz");
    let independent = pigz(&a, &["-i", "-b", "64"]);
    let (index, plain) = build(&independent);
    check_all(&index, &independent, &plain, "pigz -i -b 64");
    // cat a.gz b.gz ...: members of every size, starts inside spans and at them.
    let mut blob = pigz(&a, &[]);
    blob.extend_from_slice(&gzip(&b, 6));
    blob.extend_from_slice(&gzip(&c, 6));
    blob.extend_from_slice(&pigz(&d, &["-1"]));
    blob.extend_from_slice(&gzip(b"", 6)); // an empty member at the end
    let (index, plain) = build(&blob);
    let mut expected = a.clone();
    expected.extend_from_slice(&b);
    expected.extend_from_slice(&c);
    expected.extend_from_slice(&d);
    assert!(plain == expected);
    // Member starts: at a.len() (a new member after > 64 KiB), and the one of `d`.
    let starts: Vec<u64> = index
        .checkpoints()
        .iter()
        .filter(|c| c.window.is_empty())
        .map(|c| c.uncompressed_offset)
        .collect();
    assert!(
        starts.contains(&0) && starts.contains(&(a.len() as u64)),
        "{starts:?}"
    );
    check_all(&index, &blob, &plain, "cat of four members");
    // Ranges across member boundaries, including the small member inside a span.
    let ab = a.len() as u64;
    let bc = ab + b.len() as u64;
    let cd = bc + c.len() as u64;
    for range in [
        ab - 10..ab + 10,
        bc - 5000..cd + 5000,
        bc..cd,
        ab - 1..plain.len() as u64,
    ] {
        check(&index, &blob, &plain, range, "across members");
    }
}

#[test]
fn builder_refuses_what_flate2_refuses() {
    let data = noise(13, 300_000, true);
    let blob = gzip(&data, 6);
    let read_all = |bytes: &[u8]| -> std::io::Result<Vec<u8>> {
        let mut builder = GzipIndexBuilder::new(bytes).unwrap();
        let mut out = Vec::new();
        builder.read_to_end(&mut out)?;
        Ok(out)
    };
    let flate2_all = |bytes: &[u8]| -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes).read_to_end(&mut out)?;
        Ok(out)
    };
    let mut trailing = blob.clone();
    trailing.extend_from_slice(b"trailing garbage");
    let mut zeros = blob.clone();
    zeros.extend_from_slice(&[0u8; 512]);
    let mut bad_crc = blob.clone();
    let at = bad_crc.len() - 6;
    bad_crc[at] ^= 1;
    for (what, bytes) in [
        ("truncated", &blob[..blob.len() / 2]),
        ("truncated trailer", &blob[..blob.len() - 3]),
        ("trailing garbage", &trailing[..]),
        ("trailing zeros", &zeros[..]),
        ("bad crc", &bad_crc[..]),
        ("not gzip", &b"not a gzip stream at all"[..]),
        ("header only", &blob[..10]),
    ] {
        assert!(read_all(bytes).is_err(), "{what}: accepted");
        assert!(flate2_all(bytes).is_err(), "{what}: flate2 accepts it");
    }
    assert!(read_all(b"").is_err(), "empty input accepted");
}

#[test]
fn a_corrupt_span_is_an_error_not_garbage() {
    let data = noise(14, 6 << 20, true);
    let blob = gzip(&data, 6);
    let (index, plain) = build(&blob);
    let span = index.span(3).unwrap();
    let mut damaged = blob.clone();
    damaged[(span.compressed.start + span.compressed.end) as usize / 2] ^= 0x40;
    let inside = span.uncompressed.start + 10..span.uncompressed.start + 20;
    match index.read(&damaged, inside) {
        Err(ZranError::SpanDigest { span: 3, .. }) => {}
        other => panic!("expected a span digest error, got {other:?}"),
    }
    // Spans before it still read; a read across it fails as a whole.
    check(
        &index,
        &damaged,
        &plain,
        0..span.uncompressed.start,
        "before the damage",
    );
    assert!(index.read(&damaged, 0..plain.len() as u64).is_err());
    // A source that returns fewer bytes than asked is an error too.
    let short = &blob[..blob.len() - 100];
    assert!(index.read(&short, 0..plain.len() as u64).is_err());
}

#[test]
fn encoding_round_trips_and_refuses_bad_bytes() {
    let data = noise(15, 4 << 20, true);
    let blob = gzip(&data, 6);
    let (index, _) = build(&blob);
    let bytes = index.to_bytes();
    assert_eq!(GzipIndex::from_bytes(&bytes).unwrap(), index);
    // Every truncation, and a flipped bit in every byte of the header and the
    // first records, is refused (the checksum catches what parsing would not).
    for len in (0..bytes.len()).step_by(97).chain([bytes.len() - 1]) {
        assert!(
            GzipIndex::from_bytes(&bytes[..len]).is_err(),
            "truncated to {len}"
        );
    }
    for at in (0..bytes.len()).step_by(13) {
        let mut bad = bytes.clone();
        bad[at] ^= 0x10;
        assert!(GzipIndex::from_bytes(&bad).is_err(), "flipped byte {at}");
    }
}

/// Re-encodes `index` with `change` applied (a well-formed file that lies).
fn lying(index: &GzipIndex, change: impl FnOnce(&mut GzipIndex)) -> Vec<u8> {
    let mut copy = index.clone();
    change(&mut copy);
    copy.to_bytes()
}

#[test]
fn a_lying_index_is_an_error_never_a_panic() {
    let data = noise(16, 5 << 20, true);
    let blob = gzip(&data, 6);
    let (index, plain) = build(&blob);
    let size = plain.len() as u64;
    type Change = Box<dyn Fn(&mut GzipIndex)>;
    let cases: Vec<(&str, Change)> = vec![
        ("no checkpoints", Box::new(|i| i.checkpoints.clear())),
        (
            "first not at zero",
            Box::new(|i| i.checkpoints[0].uncompressed_offset = 5),
        ),
        ("bits above 7", Box::new(|i| i.checkpoints[1].bits = 9)),
        (
            "offsets out of order",
            Box::new(|i| i.checkpoints.swap(1, 2)),
        ),
        (
            "past the blob",
            Box::new(|i| i.checkpoints[2].compressed_offset = u64::MAX / 4),
        ),
        (
            "uncompressed past the end",
            Box::new(|i| i.checkpoints[2].uncompressed_offset = u64::MAX),
        ),
        (
            "shifted offset",
            Box::new(|i| i.checkpoints[2].compressed_offset += 1),
        ),
        (
            "shifted bits",
            Box::new(|i| i.checkpoints[2].bits = (i.checkpoints[2].bits + 3) % 8),
        ),
        (
            "shifted output",
            Box::new(|i| i.checkpoints[2].uncompressed_offset -= 1000),
        ),
        (
            "wrong window",
            Box::new(|i| i.checkpoints[2].window = i.checkpoints[3].window.clone()),
        ),
        (
            "garbage window",
            Box::new(|i| i.checkpoints[2].window = vec![7u8; 100].into()),
        ),
        (
            "no window",
            Box::new(|i| i.checkpoints[2].window = Box::default()),
        ),
        (
            "wrong digest",
            Box::new(|i| i.checkpoints[2].span_sha256[0] ^= 1),
        ),
        ("smaller blob", Box::new(|i| i.compressed_size -= 10)),
        (
            "larger stream",
            Box::new(|i| i.uncompressed_size += 1 << 20),
        ),
    ];
    for (what, change) in cases {
        let bytes = lying(&index, change);
        let Ok(parsed) = GzipIndex::from_bytes(&bytes) else {
            continue; // refused outright: fine
        };
        // Accepted as well-formed: every read fails or returns the right bytes
        // (a lie about windows or offsets may go unnoticed only where it changes
        // nothing read); none panics.
        for range in [
            0..1000,
            size / 3..size / 3 + 100_000,
            size - 10..size,
            0..size,
        ] {
            let range = range.start..range.end.min(parsed.uncompressed_size());
            match parsed.read(&blob, range.clone()) {
                Ok(got) if got == plain[range.start as usize..range.end as usize] => {}
                Ok(_)
                    if what.starts_with("wrong window")
                        || what.starts_with("shifted")
                        || what.starts_with("no window") => {} // wrong bytes, not a panic
                Ok(_) => panic!("{what}: {range:?}: wrong bytes without an error"),
                Err(_) => {}
            }
        }
    }
}

/// A tar with a file over many spans, hard links whose target data is in another
/// span, and a sparse file (made by GNU tar).
#[test]
fn tar_entries_read_through_the_index() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let big = noise(17, 6 << 20, true);
    let early = noise(18, 5000, true);
    std::fs::write(root.join("early.txt"), &early).unwrap();
    std::fs::write(root.join("big.txt"), &big).unwrap();
    std::fs::hard_link(root.join("early.txt"), root.join("zz-link-to-early")).unwrap();
    {
        use std::io::{Seek, SeekFrom};
        let mut sparse = std::fs::File::create(root.join("sparse")).unwrap();
        sparse.set_len(5 << 20).unwrap();
        sparse.seek(SeekFrom::Start(1 << 20)).unwrap();
        sparse.write_all(&noise(19, 300_000, true)).unwrap();
        sparse.seek(SeekFrom::Start((5 << 20) - 3)).unwrap();
        sparse.write_all(b"end").unwrap();
    }
    std::fs::write(root.join("after.txt"), noise(20, 2 << 20, false)).unwrap();
    let tar_path = work.path().join("layer.tar");
    let status = Command::new("tar")
        .args(["--format=posix", "--sort=name", "-S", "-cf"])
        .arg(&tar_path)
        .arg("-C")
        .arg(&root)
        .arg(".")
        .status()
        .expect("GNU tar is installed");
    assert!(status.success());
    let tar = std::fs::read(&tar_path).unwrap();
    let blob = gzip(&tar, 6);
    let (index, plain) = build(&blob);
    assert!(plain == tar);
    let layer = index_layer(&plain[..], &mut DiscardSink).unwrap();
    let position = |name: &str| {
        layer
            .entries
            .iter()
            .position(|e| &*e.path == name.as_bytes())
            .unwrap_or_else(|| panic!("{name} not in the layer"))
    };
    let read_entry = |entry: usize, range: Range<u64>| -> Vec<u8> {
        let mut out = Vec::new();
        for piece in entry_data(&layer, entry, range).unwrap() {
            match piece {
                DataPiece::Hole(len) => out.resize(out.len() + len as usize, 0),
                DataPiece::Stream(range) => out.extend(index.read(&blob, range).unwrap()),
            }
        }
        out
    };
    let whole = |entry: usize| {
        let mut out = Vec::new();
        let e = &layer.entries[entry];
        let e = if e.kind == EntryKind::Hardlink {
            &layer.entries[position("early.txt")]
        } else {
            e
        };
        extract_entry(&plain[..], e, &mut out).unwrap();
        out
    };
    // big.txt spans many checkpoints.
    let big_entry = position("big.txt");
    let crate::layer::ContentRef::StreamOffset(offset) = layer.entries[big_entry].content else {
        panic!("no stream offset");
    };
    let spans = index.spans_for(offset..offset + big.len() as u64).unwrap();
    assert!(spans.len() >= 6, "big.txt covers {} spans", spans.len());
    assert!(read_entry(big_entry, 0..u64::MAX) == big);
    assert!(read_entry(big_entry, 1_000_000..3_000_000) == big[1_000_000..3_000_000]);
    // The hard link's data is early.txt's, in the first span; the link is read
    // from there, not from its own position (after big.txt).
    let link = position("zz-link-to-early");
    assert_eq!(layer.entries[link].kind, EntryKind::Hardlink);
    assert!(read_entry(link, 0..u64::MAX) == early);
    assert!(read_entry(link, 100..200) == early[100..200]);
    assert!(whole(link) == early);
    // The sparse file: holes are holes, data comes from the stream.
    let sparse = position("sparse");
    assert!(
        layer.entries[sparse].sparse.is_some(),
        "GNU tar did not store it sparse"
    );
    let expected = whole(sparse);
    assert!(read_entry(sparse, 0..u64::MAX) == expected);
    for range in [
        0..10,
        (1 << 20) - 5..(1 << 20) + 5,
        (1 << 20) + 299_990..(1 << 20) + 300_010,
        (5 << 20) - 10..5 << 20,
    ] {
        assert!(
            read_entry(sparse, range.clone()) == expected[range.start as usize..range.end as usize],
            "sparse {range:?}"
        );
    }
    let pieces = entry_data(&layer, sparse, 0..u64::MAX).unwrap();
    assert!(pieces.iter().any(|p| matches!(p, DataPiece::Hole(_))));
    // Not a file: an error.
    let dir = layer
        .entries
        .iter()
        .position(|e| e.kind == EntryKind::Dir)
        .unwrap();
    assert!(entry_data(&layer, dir, 0..10).is_err());
}

#[test]
fn out_of_range_reads_are_errors() {
    let blob = gzip(&noise(21, 100_000, true), 6);
    let (index, _) = build(&blob);
    assert!(matches!(
        index.read(&blob, 0..100_001),
        Err(ZranError::OutOfRange { .. })
    ));
    assert!(matches!(
        index.read(&blob, Range { start: 5, end: 4 }),
        Err(ZranError::OutOfRange { .. })
    ));
    assert_eq!(index.read(&blob, 7..7).unwrap(), Vec::<u8>::new());
}

/// Throughput of the decoder with and without checkpoints against flate2, and of
/// random reads through the index, over the files in `ZRAN_BENCH_FILES`
/// (colon-separated gzip layers). `cargo test --release --lib zran::tests::throughput -- --ignored --nocapture`
#[test]
#[ignore]
fn throughput() {
    /// Thread CPU time: the machine is shared, wall time is noise.
    struct Instant(f64);
    impl Instant {
        fn now() -> Instant {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: a valid timespec out-pointer.
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
            Instant(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
        }
        fn elapsed(&self) -> std::time::Duration {
            std::time::Duration::from_secs_f64(Instant::now().0 - self.0)
        }
    }
    let Ok(files) = std::env::var("ZRAN_BENCH_FILES") else {
        eprintln!("set ZRAN_BENCH_FILES");
        return;
    };
    struct NullSink;
    impl SpanSink for NullSink {
        fn checkpoint(&mut self, _: RawCheckpoint) {}
        fn chunk(&mut self, _: Vec<u8>) {}
    }
    for file in files.split(':') {
        let blob = std::fs::read(file).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let drain = |reader: &mut dyn Read, buf: &mut [u8]| {
            let mut total = 0u64;
            loop {
                let n = reader.read(buf).unwrap();
                if n == 0 {
                    return total;
                }
                total += n as u64;
            }
        };
        let t = Instant::now();
        let size = drain(&mut flate2::read::MultiGzDecoder::new(&blob[..]), &mut buf);
        let flate = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut decoder = CheckpointingDecoder::new(ReadChunks(&blob[..]), NullSink).unwrap();
        drain(&mut decoder, &mut buf);
        let bare = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut builder = GzipIndexBuilder::new(&blob[..]).unwrap();
        drain(&mut builder, &mut buf);
        let built = builder.finish().unwrap();
        let full = t.elapsed().as_secs_f64();
        let index = GzipIndex::new(Digest::of(&blob), DiffId(Digest::of(b"")), built).unwrap();
        let encoded = index.to_bytes().len();
        eprintln!(
            "{file}: {size} bytes out of {}; flate2 {:.0} MB/s; decoder without finisher {:.0} MB/s ({:.3}x); with hashing and window compression inline {:.0} MB/s ({:.3}x); {} spans, index {} bytes = {:.2}% of the blob",
            blob.len(),
            size as f64 / flate / 1e6,
            size as f64 / bare / 1e6,
            bare / flate,
            size as f64 / full / 1e6,
            full / flate,
            index.span_count(),
            encoded,
            encoded as f64 * 100.0 / blob.len() as f64
        );
        for read_size in [4096u64, 1 << 20] {
            let mut state = 12345u64;
            let n = 200;
            let t = Instant::now();
            for _ in 0..n {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let start = (state >> 11) % (size - read_size);
                index.read(&blob, start..start + read_size).unwrap();
            }
            let per = t.elapsed().as_secs_f64() / n as f64;
            eprintln!(
                "  random {read_size}-byte reads: {:.2} ms each; decompressing from the start to the middle would take {:.0} ms",
                per * 1e3,
                flate / 2.0 * 1e3
            );
        }
    }
}

/// The checkpoints do not depend on how the uncompressed stream is read (import
/// reads 1 MiB at a time, the tar indexer of a rebuild a header at a time).
#[test]
fn checkpoints_do_not_depend_on_read_sizes() {
    let data = noise(22, 5 << 20, true);
    let blob = gzip(&data, 6);
    let (reference, _) = build(&blob);
    for read_size in [1usize, 511, 512, 4096, 100_000] {
        let mut builder = GzipIndexBuilder::new(&blob[..]).unwrap();
        let mut buf = vec![0u8; read_size];
        let mut total = 0;
        loop {
            let n = builder.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            total += n;
            if read_size == 1 && total > 3 << 20 {
                buf = vec![0u8; 1 << 20]; // keep the test fast
            }
        }
        let built = builder.finish().unwrap();
        assert_eq!(
            built.checkpoints,
            reference.checkpoints(),
            "read size {read_size}"
        );
    }
}
