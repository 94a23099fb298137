//! Streaming AAC-LC encoder on top of `fdk-aac` (raw access units, no ADTS).
//!
//! Input is planar `f32` in `[-1, 1]`, one `Vec` per channel, in chunks of any length.
//! Samples are converted to interleaved `i16` (rounded, clipped) and fed to fdk-aac one
//! 1024-sample frame at a time, so memory stays bounded by one frame whatever the input
//! length.
//!
//! # Priming and padding
//!
//! fdk-aac delays its output by [`AacEncoder::encoder_delay`] samples (2048 for AAC-LC,
//! i.e. two whole access units): decoding access unit `k` yields the samples that were at
//! input position `k * 1024 - delay`. fdk-aac produces exactly one access unit per 1024
//! input samples and has no flush call, so [`AacEncoder::finish`] feeds silence until the
//! access unit containing the last real sample has come out.
//!
//! Priming is removed by **dropping** the leading access units that decode to nothing
//! but priming (`delay / 1024` of them), so the first emitted [`AacFrame`] has `pts == 0`
//! and decodes to the first real input sample, in every player, without relying on
//! edit-list support (ffmpeg 5.1 only shifts timestamps for an `elst` in fragmented MP4;
//! it still outputs the priming samples). If the delay is not a multiple of 1024 the
//! remainder is reported by [`AacEncoder::residual_priming`] and must be signalled with
//! an edit list ([`super::fmp4::init_segment_with_priming`]); for AAC-LC it is 0.
//!
//! Trade-off: the second dropped unit also carried the first half of the MDCT overlap
//! for the first real frame, so the first 1024 samples (21.3 ms) decode as a fade-in
//! with some aliasing instead of exactly (a 0.5-amplitude sine starting at sample 0 is
//! off by up to 0.55 there, and by < 0.003 from sample 1024 on). Recordings normally
//! start with silence or room tone, where this is inaudible.

use fdk_aac::enc::{AudioObjectType, BitRate, ChannelMode, Encoder, EncoderParams, Transport};

use super::pkg_error::PackError;

/// Samples per channel in one AAC-LC access unit.
pub const FRAME_SAMPLES: usize = 1024;

/// One encoded AAC access unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AacFrame {
    /// Raw AAC access unit (no ADTS header).
    pub data: Vec<u8>,
    /// Presentation time of the first decoded sample, in samples; 0 is the first real
    /// input sample.
    pub pts: u64,
    /// Samples per channel this frame decodes to (always [`FRAME_SAMPLES`]).
    pub duration: u32,
}

/// Streaming AAC-LC encoder producing raw access units with priming removed.
pub struct AacEncoder {
    enc: Encoder,
    channels: usize,
    sample_rate: u32,
    asc: Vec<u8>,
    delay: u32,
    /// Interleaved frame being filled (`FRAME_SAMPLES * channels`).
    frame: Vec<i16>,
    /// Samples per channel currently in `frame`.
    fill: usize,
    /// Scratch buffer for one encoded access unit.
    out: Vec<u8>,
    /// Real samples per channel pushed so far.
    samples_in: u64,
    /// Access units produced by fdk-aac so far, including dropped ones.
    units_out: u64,
    /// Leading access units to drop (pure priming).
    skip_units: u64,
    finished: bool,
}

impl std::fmt::Debug for AacEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AacEncoder")
            .field("channels", &self.channels)
            .field("sample_rate", &self.sample_rate)
            .field("delay", &self.delay)
            .field("samples_in", &self.samples_in)
            .finish_non_exhaustive()
    }
}

impl AacEncoder {
    /// Creates an AAC-LC (never HE-AAC) constant-bit-rate encoder.
    ///
    /// `channels` must be 1 or 2; `bitrate_bps` is the CBR target in bits per second.
    pub fn new(sample_rate: u32, channels: u16, bitrate_bps: u32) -> Result<Self, PackError> {
        if !(1..=2).contains(&channels) {
            return Err(PackError::Config(format!("unsupported channel count {channels}")));
        }
        const RATES: [u32; 12] = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000];
        if !RATES.contains(&sample_rate) {
            return Err(PackError::Config(format!("unsupported sample rate {sample_rate}")));
        }
        if !(8_000..=576_000).contains(&bitrate_bps) {
            return Err(PackError::Config(format!("unsupported bit rate {bitrate_bps}")));
        }
        let enc = Encoder::new(EncoderParams {
            bit_rate: BitRate::Cbr(bitrate_bps),
            sample_rate,
            transport: Transport::Raw,
            channels: if channels == 1 { ChannelMode::Mono } else { ChannelMode::Stereo },
            audio_object_type: AudioObjectType::Mpeg4LowComplexity,
        })
        .map_err(|e| PackError::Encoder(e.to_string().to_lowercase()))?;
        let info = enc.info().map_err(|e| PackError::Encoder(e.to_string().to_lowercase()))?;
        if info.frameLength as usize != FRAME_SAMPLES {
            return Err(PackError::Encoder(format!("unexpected frame length {}", info.frameLength)));
        }
        let asc = info.confBuf[..(info.confSize as usize).min(info.confBuf.len())].to_vec();
        let channels = usize::from(channels);
        Ok(Self {
            enc,
            channels,
            sample_rate,
            asc,
            delay: info.nDelay,
            frame: vec![0; FRAME_SAMPLES * channels],
            fill: 0,
            out: vec![0; (info.maxOutBufBytes as usize).max(768 * channels)],
            samples_in: 0,
            units_out: 0,
            skip_units: u64::from(info.nDelay) / FRAME_SAMPLES as u64,
            finished: false,
        })
    }

    /// The AudioSpecificConfig to put in the `esds` box (2 bytes for AAC-LC).
    pub fn audio_specific_config(&self) -> Vec<u8> {
        self.asc.clone()
    }

    /// Encoder delay (priming) in samples per channel as reported by fdk-aac.
    pub fn encoder_delay(&self) -> u32 {
        self.delay
    }

    /// Priming samples still present at the start of the first emitted frame after whole
    /// priming frames were dropped (`encoder_delay() % 1024`; 0 for AAC-LC).
    pub fn residual_priming(&self) -> u32 {
        self.delay - (self.skip_units * FRAME_SAMPLES as u64) as u32
    }

    /// Sample rate in Hz.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Number of channels (1 or 2).
    pub fn channels(&self) -> u16 {
        self.channels as u16
    }

    /// Real (non-padding) samples per channel pushed so far.
    pub fn samples_in(&self) -> u64 {
        self.samples_in
    }

    /// Encodes a planar chunk (`planar.len()` must equal the channel count and every
    /// channel must have the same length). Returns the frames completed by this chunk,
    /// possibly none.
    pub fn push(&mut self, planar: &[Vec<f32>]) -> Result<Vec<AacFrame>, PackError> {
        if self.finished {
            return Err(PackError::Finished);
        }
        if planar.len() != self.channels {
            return Err(PackError::ChannelMismatch { expected: self.channels, got: planar.len() });
        }
        let len = planar[0].len();
        if planar.iter().any(|c| c.len() != len) {
            return Err(PackError::RaggedChannels);
        }
        let mut frames = Vec::with_capacity((self.fill + len) / FRAME_SAMPLES);
        let mut pos = 0;
        while pos < len {
            let take = (FRAME_SAMPLES - self.fill).min(len - pos);
            for (c, chan) in planar.iter().enumerate() {
                for (i, &s) in chan[pos..pos + take].iter().enumerate() {
                    self.frame[(self.fill + i) * self.channels + c] = to_i16(s);
                }
            }
            self.fill += take;
            pos += take;
            if self.fill == FRAME_SAMPLES {
                self.encode_frame(&mut frames)?;
            }
        }
        self.samples_in += len as u64;
        Ok(frames)
    }

    /// Pads with silence until every real sample has been emitted and returns the
    /// remaining frames. The encoder cannot be used afterwards.
    pub fn finish(&mut self) -> Result<Vec<AacFrame>, PackError> {
        if self.finished {
            return Err(PackError::Finished);
        }
        self.finished = true;
        // The access unit holding input sample `n` is `(n + delay) / 1024`.
        let needed = (self.samples_in + u64::from(self.delay)).div_ceil(FRAME_SAMPLES as u64);
        let mut frames = Vec::new();
        // fdk-aac emits one unit per full input frame; bound the loop in case it ever lags.
        let mut budget = needed.saturating_sub(self.units_out) + 8;
        while self.units_out < needed {
            if budget == 0 {
                return Err(PackError::Encoder("encoder did not drain".into()));
            }
            budget -= 1;
            self.frame[self.fill * self.channels..].fill(0);
            self.fill = FRAME_SAMPLES;
            self.encode_frame(&mut frames)?;
        }
        Ok(frames)
    }

    /// Encodes the full `frame` buffer, appending any access unit produced to `frames`.
    fn encode_frame(&mut self, frames: &mut Vec<AacFrame>) -> Result<(), PackError> {
        let mut offset = 0;
        while offset < self.frame.len() {
            let info = self
                .enc
                .encode(&self.frame[offset..], &mut self.out)
                .map_err(|e| PackError::Encoder(e.to_string().to_lowercase()))?;
            if info.input_consumed == 0 && info.output_size == 0 {
                return Err(PackError::Encoder("encoder made no progress".into()));
            }
            offset += info.input_consumed;
            if info.output_size > 0 {
                let unit = self.units_out;
                self.units_out += 1;
                if unit >= self.skip_units {
                    frames.push(AacFrame {
                        data: self.out[..info.output_size].to_vec(),
                        pts: (unit - self.skip_units) * FRAME_SAMPLES as u64,
                        duration: FRAME_SAMPLES as u32,
                    });
                }
            }
        }
        self.fill = 0;
        Ok(())
    }
}

/// Converts one `f32` sample to `i16`, rounding and clipping; NaN becomes 0.
fn to_i16(s: f32) -> i16 {
    (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(len: usize, channels: usize, start: usize) -> Vec<Vec<f32>> {
        (0..channels).map(|_| (start..start + len).map(|i| (i as f32 * 0.05).sin() * 0.5).collect()).collect()
    }

    #[test]
    fn converts_with_clipping() {
        assert_eq!(to_i16(0.0), 0);
        assert_eq!(to_i16(1.0), 32767);
        assert_eq!(to_i16(2.5), 32767);
        assert_eq!(to_i16(-1.0), -32768);
        assert_eq!(to_i16(-7.0), -32768);
        assert_eq!(to_i16(0.5), 16384);
        assert_eq!(to_i16(f32::NAN), 0);
    }

    #[test]
    fn reports_config_and_delay() {
        let enc = AacEncoder::new(48_000, 2, 128_000).unwrap();
        // AOT 2 (LC), frequency index 3 (48 kHz), channel configuration 2.
        assert_eq!(enc.audio_specific_config(), vec![0x11, 0x90]);
        assert_eq!(enc.encoder_delay(), 2048);
        assert_eq!(enc.residual_priming(), 0);
        let mono = AacEncoder::new(48_000, 1, 64_000).unwrap();
        assert_eq!(mono.audio_specific_config(), vec![0x11, 0x88]);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(AacEncoder::new(48_000, 3, 64_000).is_err());
        assert!(AacEncoder::new(47_000, 2, 64_000).is_err());
        let mut enc = AacEncoder::new(48_000, 2, 128_000).unwrap();
        assert!(matches!(enc.push(&tone(10, 1, 0)), Err(PackError::ChannelMismatch { .. })));
        assert!(matches!(enc.push(&[vec![0.0; 3], vec![0.0; 4]]), Err(PackError::RaggedChannels)));
        enc.finish().unwrap();
        assert!(matches!(enc.push(&tone(10, 2, 0)), Err(PackError::Finished)));
        assert!(matches!(enc.finish(), Err(PackError::Finished)));
    }

    #[test]
    fn emits_every_real_sample_with_contiguous_pts() {
        for (total, chunk) in [(0usize, 1usize), (1, 1), (1024, 1000), (48_000, 777), (5000, 5000)] {
            let mut enc = AacEncoder::new(48_000, 1, 64_000).unwrap();
            let mut frames = Vec::new();
            let mut pos = 0;
            while pos < total {
                let n = chunk.min(total - pos);
                frames.extend(enc.push(&tone(n, 1, pos)).unwrap());
                pos += n;
            }
            frames.extend(enc.finish().unwrap());
            assert_eq!(frames.len(), total.div_ceil(FRAME_SAMPLES), "total {total}");
            for (i, f) in frames.iter().enumerate() {
                assert_eq!(f.pts, (i * FRAME_SAMPLES) as u64);
                assert_eq!(f.duration, 1024);
                assert!(!f.data.is_empty());
            }
            assert_eq!(enc.samples_in(), total as u64);
        }
    }

    #[test]
    fn chunking_does_not_change_output() {
        let signal = tone(10_000, 2, 0);
        let encode = |chunks: &[usize]| {
            let mut enc = AacEncoder::new(48_000, 2, 96_000).unwrap();
            let mut out = Vec::new();
            let mut pos = 0;
            for &n in chunks.iter().cycle() {
                if pos >= 10_000 {
                    break;
                }
                let n = n.min(10_000 - pos);
                let part: Vec<Vec<f32>> = signal.iter().map(|c| c[pos..pos + n].to_vec()).collect();
                out.extend(enc.push(&part).unwrap());
                pos += n;
            }
            out.extend(enc.finish().unwrap());
            out
        };
        assert_eq!(encode(&[10_000]), encode(&[1, 17, 1024, 3000, 5]));
    }
}
