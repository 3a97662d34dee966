//! The core's response path: responses to a live INVITE with random branches (the live one,
//! ours with a wrong MAC or a changed field, arbitrary text after our prefix, foreign),
//! sources, codes, methods and extra Vias; a forged or spoofed one must make the core send
//! nothing (see `src/core/fuzzing.rs`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sipfront_fuzz::core::fuzzing::fuzz_response(data);
});
