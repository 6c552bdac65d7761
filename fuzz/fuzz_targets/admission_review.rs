#![no_main]
//! See `signoff_fuzz::admission_review` for what this target feeds and checks.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| signoff_fuzz::admission_review(data));
