#![no_main]
//! See `statecast::invariants::json_body` for what is checked.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| statecast::invariants::json_body(data));
