#![no_main]
//! See `statecast::invariants::frame_stream` for what is checked.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| statecast::invariants::frame_stream(data));
