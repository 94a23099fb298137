//! Probe and decode of a whole (small) file, as the probe and transcode steps do: open, validate,
//! decode every packet, rewind for a second pass, seek. Bounded: at most 500 chunks per pass.
#![no_main]

use std::io::Cursor;

use lectern::media::Error;
use lectern::media::decode::Decoder;
use lectern::media::probe::probe_reader;

fn no_panic<T>(r: Result<T, Error>) -> Option<T> {
    match r {
        Err(Error::Panic(msg)) => panic!("the decoder panicked: {msg}"),
        other => other.ok(),
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    no_panic(probe_reader(Cursor::new(data.to_vec()), None));
    let Some(mut dec) = no_panic(Decoder::from_reader(Cursor::new(data.to_vec()), None)) else { return };
    for _ in 0..500 {
        match no_panic(dec.next_chunk()) {
            Some(Some(chunk)) => assert!(chunk.samples.iter().flatten().all(|s| s.is_finite() && s.abs() <= 2.0)),
            _ => break,
        }
    }
    if no_panic(dec.rewind()).is_some() {
        no_panic(dec.seek_coarse(0.5));
        for _ in 0..50 {
            if !matches!(no_panic(dec.next_chunk()), Some(Some(_))) {
                break;
            }
        }
    }
});
