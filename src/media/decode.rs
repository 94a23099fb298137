//! Streaming, bounded-memory audio decoding on top of Symphonia.
//!
//! [`Decoder`] yields one packet's worth of planar `f32` audio per [`Decoder::next_chunk`]
//! call, so memory use does not depend on the file length. Undecodable packets are skipped and
//! counted; a long run of them ([`MAX_CONSECUTIVE_DECODE_ERRORS`]) rejects the stream. Every
//! call into Symphonia is wrapped in `catch_unwind` so a decoder bug surfaces as
//! [`Error::Unsupported`] instead of taking the process down.
//!
//! Samples use the usual full scale of ±1.0. Lossy decoders can overshoot slightly; such
//! overs are kept (clamped to ±[`MAX_SAMPLE_ABS`]) so a later gain stage can recover them
//! rather than hard-clipping here. Non-finite samples (from corrupt float PCM) become 0.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use symphonia::core::codecs::audio::{AudioCodecParameters, AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, SeekMode, SeekTo, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;

pub(crate) use super::guard;
use super::{
    Error, MAX_CONSECUTIVE_DECODE_ERRORS, MAX_DURATION_S, SizedSource, check_duration, check_format, check_pcm_size,
};

/// Symphonia's codecs plus Opus (libopus, through its symphonia adapter).
pub(crate) fn codecs() -> &'static symphonia::core::codecs::registry::CodecRegistry {
    static REGISTRY: std::sync::OnceLock<symphonia::core::codecs::registry::CodecRegistry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut r = symphonia::core::codecs::registry::CodecRegistry::new();
        symphonia::default::register_enabled_codecs(&mut r);
        r.register_audio_decoder::<symphonia_adapter_libopus::OpusDecoder>();
        r
    })
}

/// Largest absolute sample value passed through (+6 dBFS).
pub const MAX_SAMPLE_ABS: f32 = 2.0;

/// One decoded packet of planar audio.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// One `Vec` per channel, all of equal length.
    pub samples: Vec<Vec<f32>>,
    /// Index (in frames) of the first frame of this chunk within the decoded stream.
    pub first_frame: u64,
}

impl Chunk {
    /// Number of frames (samples per channel) in the chunk.
    pub fn frames(&self) -> usize {
        self.samples.first().map_or(0, Vec::len)
    }
}

/// Static facts about the opened stream, gathered while opening it.
#[derive(Debug, Clone)]
pub(crate) struct StreamInfo {
    pub codec: String,
    pub container: String,
    pub params: AudioCodecParameters,
    pub declared_frames: Option<u64>,
    pub byte_len: Option<u64>,
}

/// A streaming decoder for the default audio track of a file or reader.
pub struct Decoder {
    format: Option<Box<dyn FormatReader>>,
    decoder: Box<dyn AudioDecoder>,
    track_id: u32,
    sample_rate: u32,
    channels: u16,
    hint_ext: Option<String>,
    pub(crate) info: StreamInfo,
    decode_errors: u64,
    consecutive_errors: u32,
    frames_out: u64,
    bytes_in: u64,
    max_frames: u64,
    finished: bool,
    failed: bool,
}

impl Decoder {
    /// Opens the file at `path` (its extension is used as a probe hint).
    pub fn open(path: &Path) -> Result<Self, Error> {
        let file = std::fs::File::open(path)?;
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        Self::from_source(Box::new(file), ext, false)
    }

    /// Opens any seekable reader; `ext_hint` is an optional file extension such as `"mp3"`.
    pub fn from_reader<R>(mut reader: R, ext_hint: Option<&str>) -> Result<Self, Error>
    where
        R: Read + Seek + Send + Sync + 'static,
    {
        let len = reader.seek(SeekFrom::End(0))?;
        reader.seek(SeekFrom::Start(0))?;
        let src = Box::new(SizedSource { inner: reader, len: Some(len) });
        Self::from_source(src, ext_hint.map(str::to_ascii_lowercase), false)
    }

    /// Opens a source. `partial` means the source is only the head of a larger file, so
    /// size-consistency checks are skipped.
    pub(crate) fn from_source(
        source: Box<dyn MediaSource>,
        hint_ext: Option<String>,
        partial: bool,
    ) -> Result<Self, Error> {
        let byte_len = source.byte_len();
        if byte_len == Some(0) {
            return Err(Error::Unsupported("empty file".into()));
        }
        let mss = MediaSourceStream::new(source, Default::default());
        let mut hint = Hint::new();
        if let Some(ext) = &hint_ext {
            hint.with_extension(ext);
        }
        let probe = symphonia::default::get_probe();
        let format = guard(|| probe.probe(&hint, mss, FormatOptions::default(), MetadataOptions::default()))?
            .map_err(Error::from_symphonia_open)?;
        Self::from_format(format, hint_ext, byte_len, partial)
    }

    fn from_format(
        format: Box<dyn FormatReader>,
        hint_ext: Option<String>,
        byte_len: Option<u64>,
        partial: bool,
    ) -> Result<Self, Error> {
        let track = format.default_track(TrackType::Audio).ok_or(Error::NoAudio)?;
        let params = track.codec_params.as_ref().and_then(|p| p.audio()).ok_or(Error::NoAudio)?.clone();
        let track_id = track.id;
        let declared_frames = track.num_frames.or_else(|| {
            let (tb, dur) = (track.time_base?, track.duration?);
            let secs = tb.calc_duration(dur)?.as_secs_f64();
            Some((secs * f64::from(params.sample_rate?)).round() as u64)
        });
        let registry = codecs();
        let codec = registry
            .get_audio_decoder(params.codec)
            .map(|d| d.codec.info.short_name.to_string())
            .ok_or_else(|| Error::Unsupported(format!("unsupported codec {}", params.codec)))?;
        let container = format.format_info().short_name.to_string();
        let decoder = guard(|| registry.make_audio_decoder(&params, &AudioDecoderOptions::default()))?
            .map_err(Error::from_symphonia_open)?;

        let sample_rate = params.sample_rate.ok_or_else(|| Error::Unsupported("unknown sample rate".into()))?;
        let ch_count = params.channels.as_ref().map_or(0, |c| c.count());
        let channels = u16::try_from(ch_count).unwrap_or(u16::MAX);
        check_format(sample_rate, channels)?;
        if let Some(frames) = declared_frames {
            check_duration(frames as f64 / f64::from(sample_rate))?;
            if !partial {
                check_pcm_size(&params, frames, channels, byte_len)?;
            }
        }
        let info = StreamInfo { codec, container, params, declared_frames, byte_len };
        Ok(Decoder {
            format: Some(format),
            decoder,
            track_id,
            sample_rate,
            channels,
            hint_ext,
            info,
            decode_errors: 0,
            consecutive_errors: 0,
            frames_out: 0,
            bytes_in: 0,
            max_frames: ((MAX_DURATION_S + 1.0) * f64::from(sample_rate)) as u64,
            finished: false,
            failed: false,
        })
    }

    /// Sample rate of the decoded audio, in Hz.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Number of channels in every [`Chunk`].
    pub fn channels(&self) -> u16 {
        self.channels
    }

    /// Number of packets skipped so far because they could not be decoded.
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }

    /// Frames emitted so far since the last open/rewind.
    pub fn frames_decoded(&self) -> u64 {
        self.frames_out
    }

    /// Frame count declared by the container, if any.
    pub fn declared_frames(&self) -> Option<u64> {
        self.info.declared_frames
    }

    /// Compressed bytes of this track's packets read so far.
    pub(crate) fn packet_bytes(&self) -> u64 {
        self.bytes_in
    }

    pub(crate) fn format_mut(&mut self) -> Option<&mut Box<dyn FormatReader>> {
        self.format.as_mut()
    }

    /// Restarts decoding from the beginning (for a second pass) by re-probing the same source.
    pub fn rewind(&mut self) -> Result<(), Error> {
        let format = self.format.take().ok_or_else(|| Error::Unsupported("decoder is in a failed state".into()))?;
        let mut mss = guard(|| format.into_inner())?;
        mss.seek(SeekFrom::Start(0)).map_err(Error::from_stream_io)?;
        let (rate, ch, len) = (self.sample_rate, self.channels, self.info.byte_len);
        let fresh = Self::from_source(Box::new(SizedSource { inner: mss, len }), self.hint_ext.take(), false)?;
        if fresh.sample_rate != rate || fresh.channels != ch {
            return Err(Error::Unsupported("stream changed between passes".into()));
        }
        *self = fresh;
        Ok(())
    }

    /// Jumps to about `secs` seconds into the stream (a coarse seek: the container's index or a
    /// byte estimate; the position may land somewhat before or after). Decoding continues from
    /// there; `frames_decoded` keeps counting emitted frames. An error leaves the decoder usable
    /// only through [`Decoder::rewind`].
    pub fn seek_coarse(&mut self, secs: f64) -> Result<(), Error> {
        let format = self.format.as_mut().ok_or_else(|| Error::Unsupported("decoder is in a failed state".into()))?;
        let whole = secs.max(0.0).floor();
        let time = symphonia::core::units::Time::try_new(whole as i64, ((secs.max(0.0) - whole) * 1e9) as u32)
            .ok_or_else(|| Error::Unsupported(format!("cannot seek to {secs} s")))?;
        let to = SeekTo::Time { time, track_id: Some(self.track_id) };
        guard(|| format.seek(SeekMode::Coarse, to))?
            .map_err(|e| Error::Unsupported(format!("seek to {secs:.1} s failed: {e}")))?;
        let decoder = &mut self.decoder;
        guard(|| decoder.reset())?;
        self.finished = false;
        self.consecutive_errors = 0;
        Ok(())
    }

    /// Decodes the next packet. Returns `Ok(None)` at the end of the stream.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>, Error> {
        if self.failed {
            return Err(Error::Unsupported("decoder is in a failed state".into()));
        }
        let result = self.next_chunk_inner();
        if matches!(&result, Err(e) if !matches!(e, Error::Io(_))) {
            self.failed = true;
        }
        result
    }

    fn next_chunk_inner(&mut self) -> Result<Option<Chunk>, Error> {
        while !self.finished {
            let Some(format) = self.format.as_mut() else { break };
            let packet = match guard(|| format.next_packet())? {
                Ok(Some(p)) => p,
                Ok(None) | Err(SymError::ResetRequired) => break,
                // A truncated file: the stream simply ends here.
                Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(SymError::DecodeError(msg)) => {
                    self.count_error(msg)?;
                    continue;
                }
                Err(SymError::IoError(e)) => return Err(Error::from_stream_io(e)),
                Err(e) => return Err(Error::from_symphonia_open(e)),
            };
            if packet.track_id != self.track_id {
                continue;
            }
            self.bytes_in += packet.data.len() as u64;
            let (expected_ch, expected_rate) = (usize::from(self.channels), self.sample_rate);
            let decoder = &mut self.decoder;
            let decoded = guard(|| match decoder.decode(&packet) {
                Ok(buf) if buf.frames() == 0 => Ok(None),
                Ok(buf) if buf.num_planes() != expected_ch || buf.spec().rate() != expected_rate => {
                    Err(SymError::DecodeError("audio format changed mid-stream"))
                }
                Ok(buf) => {
                    let mut planes: Vec<Vec<f32>> = Vec::with_capacity(expected_ch);
                    buf.copy_to_vecs_planar::<f32>(&mut planes);
                    Ok(Some(planes))
                }
                Err(e) => Err(e),
            })?;
            match decoded {
                Ok(None) => self.consecutive_errors = 0,
                Ok(Some(mut planes)) => {
                    self.consecutive_errors = 0;
                    sanitize(&mut planes);
                    let first_frame = self.frames_out;
                    self.frames_out += planes[0].len() as u64;
                    if self.frames_out > self.max_frames {
                        return Err(Error::Limit(format!("decoded audio exceeds {MAX_DURATION_S:.0} s")));
                    }
                    return Ok(Some(Chunk { samples: planes, first_frame }));
                }
                Err(SymError::DecodeError(msg)) => self.count_error(msg)?,
                Err(SymError::IoError(e)) => self.count_error(&e.to_string())?,
                Err(e) => return Err(Error::from_symphonia_open(e)),
            }
        }
        self.finished = true;
        Ok(None)
    }

    fn count_error(&mut self, msg: &str) -> Result<(), Error> {
        self.decode_errors += 1;
        self.consecutive_errors += 1;
        if self.consecutive_errors > MAX_CONSECUTIVE_DECODE_ERRORS {
            return Err(Error::Unsupported(format!(
                "more than {MAX_CONSECUTIVE_DECODE_ERRORS} consecutive undecodable packets (last: {msg})"
            )));
        }
        Ok(())
    }
}

/// Replaces non-finite samples with silence and bounds overshoots to ±[`MAX_SAMPLE_ABS`].
fn sanitize(planes: &mut [Vec<f32>]) {
    for s in planes.iter_mut().flatten() {
        *s = if s.is_finite() { s.clamp(-MAX_SAMPLE_ABS, MAX_SAMPLE_ABS) } else { 0.0 };
    }
}

/// Averages planar channels into one mono channel.
pub fn downmix_to_mono(planar: &[Vec<f32>]) -> Vec<f32> {
    let Some(first) = planar.first() else { return Vec::new() };
    if planar.len() == 1 {
        return first.clone();
    }
    let frames = planar.iter().map(Vec::len).min().unwrap_or(0);
    let scale = 1.0 / planar.len() as f32;
    (0..frames).map(|i| planar.iter().map(|ch| ch[i]).sum::<f32>() * scale).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn wav_bytes(rate: u32, channels: u16, frames: usize) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut cur = Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut cur, spec).unwrap();
        for i in 0..frames {
            let v = ((i as f32 * 0.05).sin() * 16000.0) as i16;
            for _ in 0..channels {
                w.write_sample(v).unwrap();
            }
        }
        w.finalize().unwrap();
        cur.into_inner()
    }

    #[test]
    fn decodes_wav_from_reader_and_rewinds() {
        let bytes = wav_bytes(16_000, 2, 40_000);
        let mut d = Decoder::from_reader(Cursor::new(bytes), Some("wav")).unwrap();
        assert_eq!((d.sample_rate(), d.channels()), (16_000, 2));
        let mut total = 0;
        let mut max_chunk = 0;
        while let Some(c) = d.next_chunk().unwrap() {
            assert_eq!(c.samples.len(), 2);
            assert_eq!(c.first_frame, total as u64);
            assert!(c.samples.iter().flatten().all(|s| s.abs() <= 1.0));
            max_chunk = max_chunk.max(c.frames());
            total += c.frames();
        }
        assert_eq!(total, 40_000);
        assert!(max_chunk <= 16_384, "chunks must stay packet sized, got {max_chunk}");
        assert!(d.next_chunk().unwrap().is_none());
        d.rewind().unwrap();
        let mut again = 0;
        while let Some(c) = d.next_chunk().unwrap() {
            again += c.frames();
        }
        assert_eq!(again, 40_000);
        assert_eq!(d.decode_errors(), 0);
    }

    #[test]
    fn rejects_empty_and_garbage() {
        let e = Decoder::from_reader(Cursor::new(Vec::new()), None).err().unwrap();
        assert_eq!(e.code(), "unsupported_audio");
        let e = Decoder::from_reader(Cursor::new(b"hello world, not audio\n".repeat(50)), Some("mp3")).err().unwrap();
        assert_eq!(e.code(), "unsupported_audio");
    }

    #[test]
    fn decoder_can_move_to_a_worker_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<Decoder>();
        assert_send::<Chunk>();
    }

    #[test]
    fn downmix() {
        assert_eq!(downmix_to_mono(&[vec![1.0, 0.0], vec![0.0, 1.0]]), vec![0.5, 0.5]);
        assert_eq!(downmix_to_mono(&[vec![0.25]]), vec![0.25]);
        assert!(downmix_to_mono(&[]).is_empty());
    }

    #[test]
    fn sanitize_bounds_values() {
        let mut p = vec![vec![f32::NAN, f32::INFINITY, 5.0, -0.5]];
        sanitize(&mut p);
        assert_eq!(p[0], vec![0.0, 0.0, MAX_SAMPLE_ABS, -0.5]);
    }
}
