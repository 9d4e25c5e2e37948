#![no_main]
//! See `statecast::invariants::query_text` for what is checked.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| statecast::invariants::query_text(data));
