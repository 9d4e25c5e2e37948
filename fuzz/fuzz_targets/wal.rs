#![no_main]
//! See `statecast::invariants::change_log` for what is checked.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| statecast::invariants::change_log(data));
