//! Structure-aware: the fuzzer's bytes choose a seed review and a series of mutations (wrong
//! types, deletions, huge arrays, deep nesting, other kinds, duplicate keys, bytes that are not
//! UTF-8), so that most inputs stay JSON and reach the policies.
#![no_main]

#[path = "../harness.rs"]
mod harness;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

struct State {
    harness: harness::Harness,
    seeds: Vec<(String, Value)>,
}

fn state() -> &'static State {
    static S: OnceLock<State> = OnceLock::new();
    S.get_or_init(|| {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        State {
            harness: harness::Harness::new(&repo.join("policies")),
            seeds: harness::seeds(&repo),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let state = state();
    let mut tape = harness::Tape::new(data);
    let body = harness::generate(&mut tape, &state.seeds);
    if let Err(finding) = state.harness.check(&body) {
        panic!("{finding}");
    }
});
