//! Raw request bodies through /validate and /mutate (libFuzzer mutates the bytes; the corpus is
//! seeded with every fixture and apiserver payload: see fuzz/seed-corpus.sh).
#![no_main]

#[path = "../harness.rs"]
mod harness;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn harness() -> &'static harness::Harness {
    static H: OnceLock<harness::Harness> = OnceLock::new();
    H.get_or_init(|| {
        harness::Harness::new(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies"))
    })
}

fuzz_target!(|data: &[u8]| {
    if let Err(finding) = harness().check(data) {
        panic!("{finding}");
    }
});
