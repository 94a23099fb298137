//! Audio media handling for Lectern: probing, streaming decode, resampling, loudness
//! measurement and peak limiting ([`probe`], [`decode`], [`resample`], [`loudness`], [`limiter`]);
//! AAC-LC encoding, CMAF fMP4, HLS playlists and the per-rendition writer ([`aac`], [`fmp4`],
//! [`hls`], [`ladder`]); waveform peaks ([`waveform`]). Pure: no actors, no journal, no storage.
//!
//! Everything here is pure Rust (Symphonia for demux/decode, rubato for resampling) and is
//! written to be safe on untrusted uploads: every entry point returns a typed [`Error`] instead
//! of panicking, memory stays bounded regardless of the input length, and hostile headers
//! (absurd sample rates, channel counts, sizes or durations) are rejected with
//! [`Error::Limit`].
//!
//! Error handling follows Symphonia's own split between a bad packet (skip it and count it),
//! an unsupported stream (reject the file) and a denial-of-service guard (reject the file
//! with a distinct code), plus genuine I/O failures which are the only retryable kind.

pub mod aac;
pub mod decode;
pub mod fmp4;
pub mod hls;
pub mod ladder;
pub mod limiter;
pub mod loudness;
pub mod pkg_error;
pub mod probe;
pub mod resample;
pub mod waveform;

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod reference_tests;

use std::any::Any;
use std::io::{self, Read, Seek, SeekFrom};
use std::panic::{AssertUnwindSafe, catch_unwind};

use symphonia::core::io::MediaSource;

/// Largest channel count accepted from any input.
pub const MAX_CHANNELS: u16 = 8;
/// Lowest sample rate accepted from any input, in Hz.
pub const MIN_SAMPLE_RATE: u32 = 8_000;
/// Highest sample rate accepted from any input, in Hz.
pub const MAX_SAMPLE_RATE: u32 = 192_000;
/// Longest accepted duration, in seconds (12 hours).
pub const MAX_DURATION_S: f64 = 12.0 * 3600.0;
/// Message used when a stream ends before its headers or data are complete.
pub(crate) const TRUNCATED: &str = "truncated or empty stream";
/// Number of consecutive undecodable packets after which a stream is rejected.
pub const MAX_CONSECUTIVE_DECODE_ERRORS: u32 = 1000;

/// Errors produced by the media module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system level I/O failure (the only transient kind).
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// A single packet could not be decoded; callers normally skip it and count it.
    #[error("decode error: {0}")]
    Decode(String),
    /// The container or codec is unsupported or the stream is malformed: reject the file.
    #[error("unsupported audio: {0}")]
    Unsupported(String),
    /// The input exceeds a sanity limit (size, rate, channels, duration): reject the file.
    #[error("limit exceeded: {0}")]
    Limit(String),
    /// The input contains no decodable audio.
    #[error("no audio track")]
    NoAudio,
    /// The decoder itself failed (a caught panic): a fault of ours, not of the file, so never
    /// reported as the uploader's mistake. Retried like any fault (the step's code is `panic`).
    #[error("decoder panicked: {0}")]
    Panic(String),
}

impl Error {
    /// A stable, machine-readable code for API responses and metrics.
    ///
    /// A [`Error::Decode`] that escapes to a caller means the file could not be decoded, so it
    /// shares the `unsupported_audio` code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Io(_) => "io",
            Error::Decode(_) | Error::Unsupported(_) => "unsupported_audio",
            Error::Limit(_) => "limit_exceeded",
            Error::NoAudio => "no_audio",
            Error::Panic(_) => "panic",
        }
    }

    /// Whether retrying the same operation could succeed: genuine I/O failures, and a decoder
    /// panic (ours, not the file's; a panic that repeats makes the job dead after its retries).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Io(_) | Error::Panic(_))
    }

    /// Converts a Symphonia error raised while opening/probing a stream (the file is rejected).
    pub(crate) fn from_symphonia_open(err: symphonia::core::errors::Error) -> Self {
        use symphonia::core::errors::Error as S;
        match err {
            S::IoError(e) => Self::from_stream_io(e),
            S::DecodeError(msg) => Error::Unsupported(format!("malformed stream: {msg}")),
            S::Unsupported(msg) => Error::Unsupported(msg.to_string()),
            S::LimitError(msg) => Error::Limit(msg.to_string()),
            S::SeekError(_) => Error::Unsupported("stream is not seekable".into()),
            S::ResetRequired => Error::Unsupported("stream requires a decoder reset".into()),
            other => Error::Unsupported(other.to_string()),
        }
    }

    /// Maps an I/O error raised *inside* a media stream. End-of-file and invalid-data errors
    /// mean the file is truncated or corrupt, which is permanent, not transient.
    pub(crate) fn from_stream_io(err: io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::UnexpectedEof => Error::Unsupported(TRUNCATED.into()),
            io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => {
                Error::Unsupported(format!("invalid stream data: {err}"))
            }
            io::ErrorKind::OutOfMemory => Error::Limit("out of memory while reading stream".into()),
            _ => Error::Io(err),
        }
    }

    /// Converts a caught panic payload into [`Error::Panic`].
    pub(crate) fn from_panic(payload: Box<dyn Any + Send>) -> Self {
        let msg = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "unknown panic".to_string()
        };
        Error::Panic(msg)
    }
}

/// Runs `f`, converting a panic into [`Error::Panic`].
pub(crate) fn guard<T>(f: impl FnOnce() -> T) -> Result<T, Error> {
    catch_unwind(AssertUnwindSafe(f)).map_err(Error::from_panic)
}

/// Wraps any `Read + Seek` as a seekable Symphonia [`MediaSource`] of known length.
pub(crate) struct SizedSource<R> {
    pub(crate) inner: R,
    pub(crate) len: Option<u64>,
}

impl<R: Read> Read for SizedSource<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<R: Seek> Seek for SizedSource<R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

impl<R: Read + Seek + Send + Sync> MediaSource for SizedSource<R> {
    fn is_seekable(&self) -> bool {
        true
    }
    fn byte_len(&self) -> Option<u64> {
        self.len
    }
}

/// Validates a stream's basic parameters against the module limits.
pub(crate) fn check_format(sample_rate: u32, channels: u16) -> Result<(), Error> {
    if channels == 0 {
        return Err(Error::Unsupported("stream declares zero channels".into()));
    }
    if channels > MAX_CHANNELS {
        return Err(Error::Limit(format!("{channels} channels exceeds the maximum of {MAX_CHANNELS}")));
    }
    if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&sample_rate) {
        return Err(Error::Limit(format!(
            "sample rate {sample_rate} hz outside {MIN_SAMPLE_RATE}..={MAX_SAMPLE_RATE} hz"
        )));
    }
    Ok(())
}

/// Validates a (declared or measured) duration against [`MAX_DURATION_S`].
pub(crate) fn check_duration(duration_s: f64) -> Result<(), Error> {
    if !duration_s.is_finite() || duration_s > MAX_DURATION_S {
        return Err(Error::Limit(format!("duration {duration_s:.0} s exceeds the maximum of {MAX_DURATION_S:.0} s")));
    }
    Ok(())
}

/// For uncompressed PCM, rejects headers whose declared data size is far beyond the file size.
pub(crate) fn check_pcm_size(
    params: &symphonia::core::codecs::audio::AudioCodecParameters,
    frames: u64,
    channels: u16,
    len: Option<u64>,
) -> Result<(), Error> {
    use symphonia::core::codecs::audio::well_known::{CODEC_ID_PCM_MULAW, CODEC_ID_PCM_S32LE};
    let Some(len) = len else { return Ok(()) };
    if !(CODEC_ID_PCM_S32LE..=CODEC_ID_PCM_MULAW).contains(&params.codec) {
        return Ok(());
    }
    let bits = params.bits_per_coded_sample.or(params.bits_per_sample).unwrap_or(8).max(8);
    let declared = u128::from(frames) * u128::from(channels) * u128::from(bits.div_ceil(8));
    if declared > u128::from(len) + 64 * 1024 {
        return Err(Error::Limit(format!("declared audio data of {declared} bytes exceeds the {len} byte file")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_transience() {
        let io = Error::Io(io::Error::new(io::ErrorKind::PermissionDenied, "denied"));
        assert_eq!(io.code(), "io");
        assert!(io.is_transient());
        assert_eq!(Error::Decode("x".into()).code(), "unsupported_audio");
        assert_eq!(Error::Unsupported("x".into()).code(), "unsupported_audio");
        assert_eq!(Error::Limit("x".into()).code(), "limit_exceeded");
        assert_eq!(Error::NoAudio.code(), "no_audio");
        assert!(!Error::NoAudio.is_transient());
        assert!(!Error::Limit("x".into()).is_transient());
    }

    #[test]
    fn messages_are_lowercase_without_period() {
        let errs = [
            Error::Unsupported("bad".into()),
            Error::Limit("big".into()),
            Error::NoAudio,
            Error::Decode("oops".into()),
        ];
        for e in errs {
            let m = e.to_string();
            assert_eq!(m, m.to_lowercase());
            assert!(!m.ends_with('.'));
        }
    }

    #[test]
    fn eof_inside_stream_is_not_transient() {
        let e = Error::from_stream_io(io::Error::new(io::ErrorKind::UnexpectedEof, "eof"));
        assert_eq!(e.code(), "unsupported_audio");
        assert!(!e.is_transient());
    }

    #[test]
    fn limits() {
        assert!(check_format(44_100, 2).is_ok());
        assert_eq!(check_format(44_100, 0).unwrap_err().code(), "unsupported_audio");
        assert_eq!(check_format(44_100, 9).unwrap_err().code(), "limit_exceeded");
        assert_eq!(check_format(1, 2).unwrap_err().code(), "limit_exceeded");
        assert_eq!(check_format(384_000, 2).unwrap_err().code(), "limit_exceeded");
        assert!(check_duration(3600.0).is_ok());
        assert!(check_duration(13.0 * 3600.0).is_err());
        assert!(check_duration(f64::NAN).is_err());
    }

    #[test]
    fn panic_payload_is_mapped() {
        let r = std::panic::catch_unwind(|| panic!("boom"));
        let e = Error::from_panic(r.unwrap_err());
        assert_eq!(e.to_string(), "decoder panicked: boom");
        assert_eq!((e.code(), e.is_transient()), ("panic", true), "a decoder panic is ours, not the file's");
    }
}
