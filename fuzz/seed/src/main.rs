//! Writes small, valid seed inputs for every fuzz target into `CORPUS_DIR/<target>/`
//! (default `fuzz/corpus`), built in code with `imagefs::sample` so the seeds are
//! deterministic and nothing binary is checked in. Run by `fuzz/seed.sh`.

use std::fs;
use std::path::{Path, PathBuf};

use imagefs::testing::layer::{self, DiscardSink};
use imagefs::testing::sample::{
    self, Built, Compression, ImageBuilder, IndexBuilder, LayerSpec, ManifestFormat, Platform,
};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Layer descriptions covering every entry kind, name encoding and whiteout form,
/// plus a few hostile ones, so the fuzzer starts from every branch of the indexer.
const LAYERS: &[&str] = &[
    "dir /etc 0755; file /etc/os-release 0644 \"ID=seed\\n\"; symlink /bin/sh busybox",
    "file /bin/busybox 0755 @text:300; hardlink /bin/ls /bin/busybox",
    "fifo /run/fifo 0600; chardev /dev/null 0666 1 3; blockdev /dev/sda 0660 8 0",
    "whiteout /etc/os-release; opaque /var",
    "file /etc/os-release 0644 \"x\"; xattr /etc/os-release user.note \"hello\"",
    "file /a/very/long/directory/name/that/does/not/fit/in/the/hundred/byte/ustar/name/field/at/all/file.txt 0644 \"x\" names=gnu",
    "file /a/very/long/directory/name/that/does/not/fit/in/the/hundred/byte/ustar/name/field/at/all/file.txt 0644 \"x\" names=pax",
    "file /x 4755 \"s\" uid=1000 gid=1000 mtime=0",
    "file ../../escape 0644 \"x\" raw; file /abs 0644 \"y\" raw",
    "symlink /evil /etc; file /evil/passwd 0644 \"x\"",
    "hardlink /h /missing",
    "file /d 0644 \"f\"; dir /d 0755; symlink /s /d; dir /s 0755",
    "file \"/.wh..wh..opq\" 0644 @empty raw; file /.wh.. 0644 @empty raw",
];

fn write(dir: &Path, name: &str, data: &[u8]) -> Result<()> {
    fs::create_dir_all(dir)?;
    fs::write(dir.join(name), data)?;
    Ok(())
}

fn layer_seeds(dir: &Path) -> Result<()> {
    for (position, text) in LAYERS.iter().enumerate() {
        let spec = LayerSpec::parse(text)?;
        let tar = spec.to_tar()?;
        write(dir, &format!("layer-{position:02}.tar"), &tar)?;
        if position < 2 {
            for (compression, suffix) in [(Compression::Gzip, "gz"), (Compression::Zstd, "zst")] {
                let built = spec.build(compression)?;
                write(
                    dir,
                    &format!("layer-{position:02}.tar.{suffix}"),
                    &built.blob.data,
                )?;
            }
            let unterminated = spec.clone().without_end_of_archive().to_tar()?;
            write(
                dir,
                &format!("layer-{position:02}-no-eof.tar"),
                &unterminated,
            )?;
        }
        // The index file form, for the from_bytes half of the target.
        let index = layer::index_layer(&tar[..], &mut DiscardSink)?;
        write(dir, &format!("index-{position:02}.bin"), &index.to_bytes())?;
    }
    Ok(())
}

fn sample_images() -> Result<Vec<Built>> {
    let spec = LayerSpec::parse("dir /etc 0755; file /etc/hostname 0644 \"seed\\n\"")?;
    let oci = ImageBuilder::new()
        .layer(&spec, Compression::Gzip)
        .env("PATH=/bin")
        .cmd(&["/bin/sh"])
        .build()?;
    let docker = ImageBuilder::new()
        .format(ManifestFormat::Docker)
        .config("linux", "arm64", Some("v8"))
        .layer(&spec, Compression::None)
        .build()?;
    let index = IndexBuilder::new()
        .manifest_with_platform(oci.clone(), Some(Platform::parse("linux/amd64")?))
        .manifest_with_platform(docker.clone(), Some(Platform::parse("linux/arm64/v8")?))
        .attestations(true)
        .build()?;
    Ok(vec![oci.into(), docker.into(), index.into()])
}

fn json_seeds(dir: &Path, images: &[Built]) -> Result<()> {
    let mut count = 0;
    for built in images {
        for blob in built.blobs() {
            if blob.media_type.contains("json") {
                write(dir, &format!("{count:02}.json"), &blob.data)?;
                count += 1;
            }
        }
    }
    Ok(())
}

fn archive_seeds(dir: &Path, images: &[Built]) -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let with_mode = |mode: u8, bytes: Vec<u8>| {
        let mut data = vec![mode];
        data.extend(bytes);
        data
    };
    let oci_archive = scratch.path().join("oci.tar");
    sample::write_oci_archive(&oci_archive, &[(Some("seed:1"), &images[0])])?;
    write(dir, "oci-archive", &with_mode(0, fs::read(&oci_archive)?))?;

    let docker_image = images[1].as_image().ok_or("a docker image")?;
    let docker_archive = scratch.path().join("docker.tar");
    sample::write_docker_archive(
        &docker_archive,
        &[(Some("seed:1"), docker_image)],
        Default::default(),
    )?;
    write(
        dir,
        "docker-archive",
        &with_mode(0, fs::read(&docker_archive)?),
    )?;

    let layout = scratch.path().join("layout");
    sample::write_oci_layout(&layout, &[(Some("seed:1"), &images[2])])?;
    write(
        dir,
        "index-json",
        &with_mode(1, fs::read(layout.join("index.json"))?),
    )?;

    // The fuzz target's own docker-archive fixture: manifest.json naming its members.
    let manifest = format!(
        r#"[{{"Config":"{}.json","RepoTags":["fuzz:1"],"Layers":["{}"]}}]"#,
        "0".repeat(64),
        "x/layer.tar"
    );
    write(dir, "manifest-json", &with_mode(2, manifest.into_bytes()))?;
    Ok(())
}

fn reference_seeds(dir: &Path) -> Result<()> {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let texts = [
        "docker.io/library/alpine:3.19".to_string(),
        "localhost:5000/app:1".to_string(),
        format!("dev/myapp@{digest}"),
        "alpine".to_string(),
        "library/alpine:latest".to_string(),
        digest,
        "sha256:../../x".to_string(),
    ];
    for (position, text) in texts.iter().enumerate() {
        write(dir, &format!("{position:02}"), text.as_bytes())?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let root = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "corpus".into()));
    let images = sample_images()?;
    layer_seeds(&root.join("layer_index"))?;
    json_seeds(&root.join("image_json"), &images)?;
    archive_seeds(&root.join("archive"), &images)?;
    reference_seeds(&root.join("reference"))?;
    gzip_index_seeds(&root.join("gzip_index"))?;
    Ok(())
}

/// gzip layers (mode byte 1) and their encoded seekable indexes (mode byte 0).
fn gzip_index_seeds(dir: &Path) -> Result<()> {
    use imagefs::testing::layer::zran::GzipIndexBuilder;
    use imagefs::testing::layer::GzipIndex;
    use std::io::Read;
    for (position, text) in [
        "file /a 0644 @text:3000000; file /b 0644 \"b\"; hardlink /c /a",
        "file /x 0644 @text:2000; symlink /y x",
    ]
    .iter()
    .enumerate()
    {
        let blob = LayerSpec::parse(text)?.build(Compression::Gzip)?.blob.data;
        let mut builder = GzipIndexBuilder::new(&blob[..])?;
        let mut plain = Vec::new();
        builder.read_to_end(&mut plain)?;
        let index = GzipIndex::new(
            imagefs::Digest::of(&blob),
            imagefs::DiffId(imagefs::Digest::of(&plain)),
            builder.finish()?,
        )?;
        let mut seed = vec![1u8];
        seed.extend_from_slice(&blob);
        write(dir, &format!("blob-{position}"), &seed)?;
        let mut seed = vec![0u8];
        seed.extend_from_slice(&index.to_bytes());
        write(dir, &format!("index-{position}"), &seed)?;
    }
    Ok(())
}
