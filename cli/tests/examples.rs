//! The example programs as jobs: each at a small size on 1, 2 and 4 ranks
//! over shm and tcp under `hpcomm run`, validating its result against its
//! own serial computation. (`cargo test` builds the examples first.)

use std::path::{Path, PathBuf};
use std::process::Command;

fn example(name: &str) -> PathBuf {
    let hpcomm = PathBuf::from(env!("CARGO_BIN_EXE_hpcomm"));
    hpcomm.parent().expect("the target directory").join("examples").join(name)
}

/// Runs `name` with `args` as a job of `ranks` on `transport`; its stdout.
fn job(name: &str, ranks: usize, transport: &str, args: &[&str]) -> String {
    job_in(&std::env::current_dir().expect("a working directory"), name, ranks, transport, args)
}

/// [`job`], started in `dir`.
fn job_in(dir: &Path, name: &str, ranks: usize, transport: &str, args: &[&str]) -> String {
    let exe = example(name);
    assert!(exe.exists(), "{} is not built", exe.display());
    let out = Command::new(env!("CARGO_BIN_EXE_hpcomm"))
        .current_dir(dir)
        .args(["run", "-n", &ranks.to_string(), "--transport", transport, "--timeout", "120", "--"])
        .arg(&exe)
        .args(args)
        .output()
        .expect("hpcomm run");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} on {ranks} ranks over {transport}: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn weather_validates_on_1_2_and_4_ranks_over_shm_and_tcp() {
    for transport in ["shm", "tcp"] {
        for ranks in [1, 2, 4] {
            let args = ["--size", "small", "--steps", "60", "--image", "none", "--validate"];
            let out = job("weather", ranks, transport, &args);
            assert!(out.contains("bit for bit the single-rank field"), "{out}");
            assert!(out.contains(&format!("weather: {ranks} ranks")), "{out}");
            assert!(out.contains(&format!("over {transport}")), "{out}");
        }
    }
}

#[test]
fn weather_writes_its_images() {
    let dir = std::env::temp_dir().join(format!("hpcomm-weather-{}", std::process::id()));
    let image = dir.join("field.png");
    let image = image.to_str().expect("a UTF-8 path");
    let out = job(
        "weather",
        2,
        "shm",
        &["--size", "small", "--steps", "20", "--image", image, "--image-every", "10"],
    );
    assert!(out.contains("wrote"), "{out}");
    for file in ["field.png", "field-10.png"] {
        let bytes = std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(&bytes[1..4], b"PNG", "{file}");
        // The 128² field drawn at 4 pixels per cell, with its axes and a
        // colour scale beside it (the IHDR chunk's width and height).
        let side = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
        let (width, height) = (side(16), side(20));
        assert!(width > 512 + 40 && height > 512 + 10, "{file}: {width}×{height}");
        assert!(width > height, "{file}: no room for the colour scale: {width}×{height}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cg_validates_on_1_2_and_4_ranks_over_shm_and_tcp() {
    for transport in ["shm", "tcp"] {
        for ranks in [1, 2, 4] {
            let out =
                job("cg", ranks, transport, &["--size", "small", "--reproducible", "--validate"]);
            assert!(out.contains("the same iterations"), "{out}");
            assert!(out.contains("bit for bit"), "{out}");
            assert!(out.contains(&format!("cg: {ranks} ranks over {transport}")), "{out}");
        }
    }
}

#[test]
fn genomics_validates_on_1_2_and_4_ranks_over_shm_and_tcp() {
    let input = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/genomics/data/small.fastq");
    for transport in ["shm", "tcp"] {
        for ranks in [1, 2, 4] {
            let args = ["--input", input, "--batch", "2000", "--plot", "none", "--validate"];
            let out = job("genomics", ranks, transport, &args);
            assert!(out.contains("every count equals the serial count"), "{out}");
            assert!(
                out.contains(&format!("genomics: {ranks} ranks over {transport}, 250 records")),
                "{out}"
            );
        }
    }
}

/// Started from another directory with no `--input`, the program still
/// finds its bundled reads (and writes its plot where it was asked to).
#[test]
fn genomics_finds_its_bundled_reads_from_any_directory() {
    let dir = std::env::temp_dir().join(format!("hpcomm-genomics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let out = job_in(&dir, "genomics", 2, "shm", &["--plot", "spectrum.png"]);
    assert!(out.contains("genomics: 2 ranks over shm, 250 records"), "{out}");
    let png = std::fs::read(dir.join("spectrum.png")).expect("the plot");
    assert_eq!(&png[1..4], b"PNG");
    let _ = std::fs::remove_dir_all(&dir);
}
