//! The core's response path over the seed corpus of the `core_response` fuzz target
//! (`src/core/fuzzing.rs`: every source × branch kind × code/method, with and without extra
//! Vias) and the inputs kept under `tests/fixtures/fuzz-core-response/` (from the fuzz
//! runs' corpus, and any that ever failed): no
//! panic, and no forged (our branch prefix, wrong MAC) or spoofed (live branch, wrong
//! source) response makes the core send anything.

use std::path::Path;

use sipfront::core::fuzzing::{fuzz_response, seeds};

#[test]
fn seed_corpus_passes() {
    let seeds = seeds();
    assert!(seeds.len() >= 288, "{}", seeds.len());
    for s in &seeds {
        fuzz_response(s);
    }
}

#[test]
fn kept_inputs_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz-core-response");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("the kept inputs") {
        let path = e.expect("entry").path();
        fuzz_response(&std::fs::read(&path).expect("readable"));
        n += 1;
    }
    assert!(n > 0, "no inputs in {}", dir.display());
}

/// Writes the seeds to `fuzz/corpus/core_response/` (the fuzz target's starting corpus).
#[test]
#[ignore = "writes files; run by hand before fuzzing (see fuzz/README.md)"]
fn write_seed_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/core_response");
    std::fs::create_dir_all(&dir).expect("corpus directory");
    for (i, s) in seeds().iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:03}")), s).expect("write a seed");
    }
}
