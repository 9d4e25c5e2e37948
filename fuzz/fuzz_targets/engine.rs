#![no_main]
//! See `statecast::invariants::engine_ops` for what is checked.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| statecast::invariants::engine_ops(data));
