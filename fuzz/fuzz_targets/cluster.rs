#![no_main]
//! See `statecast::invariants::cluster_message` for what is checked.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| statecast::invariants::cluster_message(data));
