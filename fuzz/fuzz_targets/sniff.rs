//! The upload sniff on the head of a file: any bytes get `Ok` or a typed error, never a panic
//! (a panic the decoder guard caught, `Error::Panic`, counts as a finding).
#![no_main]

use lectern::media::Error;
use lectern::media::probe::sniff;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(Error::Panic(msg)) = sniff(data) {
        panic!("the sniff panicked inside the decoder: {msg}");
    }
});
