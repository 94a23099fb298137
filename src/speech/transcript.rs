//! Transcripts: the stored form and the three served formats.
//!
//! - JSON in the Podcasting 2.0 transcript format (`podcast:transcript type="application/json"`):
//!   `{"version": "1.0.0", "segments": [{"startTime": 0.0, "endTime": 4.2, "body": "..."}]}`.
//! - WebVTT (`text/vtt`), usable as an HLS subtitle rendition or a `<track>`.
//! - SubRip (`application/x-subrip`).

use serde::{Deserialize, Serialize};

/// One timed piece of text, in seconds from the start of the media.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimedText {
    #[serde(rename = "startTime")]
    pub start_s: f64,
    #[serde(rename = "endTime")]
    pub end_s: f64,
    pub body: String,
}

/// A whole transcript, serialised as the podcast-namespace JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    pub version: String,
    pub segments: Vec<TimedText>,
}

impl Transcript {
    /// A transcript of `segments`, which are sorted by start time.
    pub fn new(mut segments: Vec<TimedText>) -> Self {
        segments.retain(|s| !s.body.trim().is_empty());
        segments.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
        Self { version: "1.0.0".into(), segments }
    }

    /// The WebVTT rendering.
    pub fn to_vtt(&self) -> String {
        let mut s = String::from("WEBVTT\n\n");
        for (i, seg) in self.segments.iter().enumerate() {
            s.push_str(&format!(
                "{}\n{} --> {}\n{}\n\n",
                i + 1,
                clock(seg.start_s, '.'),
                clock(seg.end_s.max(seg.start_s), '.'),
                vtt_text(&seg.body)
            ));
        }
        s
    }

    /// The SubRip rendering.
    pub fn to_srt(&self) -> String {
        let mut s = String::new();
        for (i, seg) in self.segments.iter().enumerate() {
            s.push_str(&format!(
                "{}\n{} --> {}\n{}\n\n",
                i + 1,
                clock(seg.start_s, ','),
                clock(seg.end_s.max(seg.start_s), ','),
                one_block(&seg.body)
            ));
        }
        s
    }

    /// The full text, segments joined by spaces.
    pub fn text(&self) -> String {
        self.segments.iter().map(|s| s.body.trim()).collect::<Vec<_>>().join(" ")
    }
}

/// `HH:MM:SS.mmm` (or with `,` for SubRip), rounded to the millisecond.
fn clock(secs: f64, sep: char) -> String {
    let ms = (secs.max(0.0) * 1000.0).round() as u64;
    format!("{:02}:{:02}:{:02}{sep}{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
}

/// Cue text can't contain a blank line (it ends the cue).
fn one_block(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("\n")
}

/// WebVTT cue text: `&`, `<` and `>` escaped, and no `-->` or blank lines.
fn vtt_text(text: &str) -> String {
    one_block(text).replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Transcript {
        Transcript::new(vec![
            TimedText { start_s: 3661.5, end_s: 3663.25, body: "Second <b> & --> more".into() },
            TimedText { start_s: 0.0, end_s: 2.0004, body: " First line.\n\nStill first. ".into() },
            TimedText { start_s: 5.0, end_s: 6.0, body: "   ".into() },
        ])
    }

    #[test]
    fn formats() {
        let t = t();
        assert_eq!(t.segments.len(), 2, "blank segments are dropped, the rest sorted");
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["version"], "1.0.0");
        assert_eq!(json["segments"][0]["startTime"], 0.0);
        assert_eq!(json["segments"][1]["endTime"], 3663.25);
        assert_eq!(
            t.to_vtt(),
            "WEBVTT\n\n1\n00:00:00.000 --> 00:00:02.000\nFirst line.\nStill first.\n\n\
             2\n01:01:01.500 --> 01:01:03.250\nSecond &lt;b&gt; &amp; --&gt; more\n\n"
        );
        assert!(
            t.to_srt().starts_with("1\n00:00:00,000 --> 00:00:02,000\nFirst line.\nStill first.\n\n2\n01:01:01,500")
        );
        assert_eq!(t.text(), "First line.\n\nStill first. Second <b> & --> more");
        let back: Transcript = serde_json::from_value(json).unwrap();
        assert_eq!(back, t);
    }
}
