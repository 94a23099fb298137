//! Waveform peaks in the BBC audiowaveform JSON format (version 2, one channel, 8-bit), computed
//! while audio streams through: memory grows with the number of pixels, not samples.
//!
//! `{"version": 2, "channels": 1, "sample_rate": 48000, "samples_per_pixel": 4800, "bits": 8,
//!   "length": N, "data": [min0, max0, min1, max1, ...]}`

use std::io::Write;

use serde::Serialize;

/// Builds the peaks of a (downmixed) signal, `samples_per_pixel` samples per min/max pair.
#[derive(Debug, Clone)]
pub struct WaveformBuilder {
    sample_rate: u32,
    samples_per_pixel: u32,
    count: u32,
    min: f32,
    max: f32,
    data: Vec<i8>,
}

/// The finished waveform, ready to serialise.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Waveform {
    pub version: u32,
    pub channels: u32,
    pub sample_rate: u32,
    pub samples_per_pixel: u32,
    pub bits: u32,
    pub length: usize,
    pub data: Vec<i8>,
}

fn to_i8(x: f32) -> i8 {
    (x.clamp(-1.0, 1.0) * 127.0).round() as i8
}

impl WaveformBuilder {
    /// `pixels_per_second` sets the resolution (10 gives 36 000 pixels for an hour).
    pub fn new(sample_rate: u32, pixels_per_second: u32) -> Self {
        let samples_per_pixel = (sample_rate / pixels_per_second.max(1)).max(1);
        Self { sample_rate, samples_per_pixel, count: 0, min: f32::MAX, max: f32::MIN, data: Vec::new() }
    }

    /// Adds planar samples; channels are averaged into one.
    pub fn push(&mut self, planar: &[Vec<f32>]) {
        let Some(first) = planar.first() else { return };
        let n = planar.len() as f32;
        for i in 0..first.len() {
            let s = planar.iter().map(|c| c.get(i).copied().unwrap_or(0.0)).sum::<f32>() / n;
            self.min = self.min.min(s);
            self.max = self.max.max(s);
            self.count += 1;
            if self.count == self.samples_per_pixel {
                self.emit();
            }
        }
    }

    fn emit(&mut self) {
        self.data.push(to_i8(self.min));
        self.data.push(to_i8(self.max));
        self.count = 0;
        self.min = f32::MAX;
        self.max = f32::MIN;
    }

    pub fn finish(mut self) -> Waveform {
        if self.count > 0 {
            self.emit();
        }
        Waveform {
            version: 2,
            channels: 1,
            sample_rate: self.sample_rate,
            samples_per_pixel: self.samples_per_pixel,
            bits: 8,
            length: self.data.len() / 2,
            data: self.data,
        }
    }
}

/// Streams the waveform JSON to `out` while audio is pushed, so memory stays the same whatever
/// the duration. Keys are written in the order `version, channels, sample_rate,
/// samples_per_pixel, bits, data, length` (JSON objects are unordered; `length` comes last because
/// it is only known at the end).
pub struct WaveformWriter<W: Write> {
    builder: WaveformBuilder,
    out: W,
    written: usize,
}

impl<W: Write> WaveformWriter<W> {
    /// Writes the header to `out`; see [`WaveformBuilder::new`] for the resolution.
    pub fn new(sample_rate: u32, pixels_per_second: u32, mut out: W) -> std::io::Result<Self> {
        let builder = WaveformBuilder::new(sample_rate, pixels_per_second);
        write!(
            out,
            "{{\"version\":2,\"channels\":1,\"sample_rate\":{},\"samples_per_pixel\":{},\"bits\":8,\"data\":[",
            builder.sample_rate, builder.samples_per_pixel
        )?;
        Ok(Self { builder, out, written: 0 })
    }

    /// Adds planar samples (channels averaged into one) and writes the finished pixels.
    pub fn push(&mut self, planar: &[Vec<f32>]) -> std::io::Result<()> {
        self.builder.push(planar);
        self.drain()
    }

    fn drain(&mut self) -> std::io::Result<()> {
        for v in self.builder.data.drain(..) {
            if self.written > 0 {
                self.out.write_all(b",")?;
            }
            write!(self.out, "{v}")?;
            self.written += 1;
        }
        Ok(())
    }

    /// Writes the last (partial) pixel and the trailer; returns the writer, flushed.
    pub fn finish(mut self) -> std::io::Result<W> {
        if self.builder.count > 0 {
            self.builder.emit();
        }
        self.drain()?;
        write!(self.out, "],\"length\":{}}}", self.written / 2)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_follow_the_signal() {
        let mut w = WaveformBuilder::new(1000, 10); // 100 samples per pixel
        let loud: Vec<f32> = (0..100).map(|i| if i % 2 == 0 { 0.5 } else { -0.5 }).collect();
        let quiet = vec![0.0f32; 100];
        w.push(&[loud.clone(), loud]);
        w.push(&[quiet.clone(), quiet]);
        w.push(&[vec![1.0; 30], vec![1.0; 30]]);
        let wf = w.finish();
        assert_eq!((wf.length, wf.samples_per_pixel, wf.bits, wf.version), (3, 100, 8, 2));
        assert_eq!(wf.data, vec![-64, 64, 0, 0, 127, 127]);
        let json = serde_json::to_value(&wf).unwrap();
        assert_eq!(json["data"].as_array().unwrap().len(), 6);
    }

    #[test]
    fn streamed_json_equals_the_built_waveform() {
        let chunks: Vec<Vec<f32>> =
            (0..7).map(|k| (0..333).map(|i| ((i * (k + 1)) as f32 * 0.01).sin()).collect()).collect();
        let mut b = WaveformBuilder::new(1000, 10);
        let mut w = WaveformWriter::new(1000, 10, Vec::new()).unwrap();
        for c in &chunks {
            b.push(std::slice::from_ref(c));
            w.push(std::slice::from_ref(c)).unwrap();
        }
        let built = serde_json::to_value(b.finish()).unwrap();
        let streamed: serde_json::Value = serde_json::from_slice(&w.finish().unwrap()).unwrap();
        assert_eq!(streamed, built);
        assert_eq!(streamed["length"], 24); // 2331 samples / 100 per pixel, rounded up
        let empty: serde_json::Value =
            serde_json::from_slice(&WaveformWriter::new(1000, 10, Vec::new()).unwrap().finish().unwrap()).unwrap();
        assert_eq!((empty["length"].as_u64(), empty["data"].as_array().map(Vec::len)), (Some(0), Some(0)));
    }
}
