//! Fast, hostile-input-safe inspection of audio files.
//!
//! [`probe`] / [`probe_reader`] open a complete file, validate it against the module limits,
//! decode its first packets to prove the audio is real, and report duration, format and tags.
//! [`sniff`] works on just the first bytes of an upload so a bad file can be refused before the
//! rest of it is stored.
//!
//! Duration comes from the container's declared frame count when present, otherwise from a
//! bounded decode-count. For lossy codecs a declared duration wildly larger than the bytes on
//! disk can carry (less than 1/16 of the bit rate observed on the first packets) is reported
//! as a truncated file.

use std::io::{Cursor, Read, Seek};
use std::path::Path;

use serde::Serialize;
use symphonia::core::meta::{MetadataRevision, RawValue, StandardTag, Tag};

use super::decode::{Decoder, guard};
use super::{Error, TRUNCATED, check_duration};

/// At most this many bytes of an upload's head are examined by [`sniff`].
pub const SNIFF_MAX_BYTES: usize = 1024 * 1024;
/// Audio decoded by [`probe`] to validate a stream and estimate its bit rate, in seconds.
const VALIDATE_SECONDS: f64 = 2.0;
/// Longest tag value kept, in characters.
const MAX_TAG_CHARS: usize = 1024;

/// Textual tags of interest.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Tags {
    /// Track title.
    pub title: Option<String>,
    /// Track artist (falls back to album artist).
    pub artist: Option<String>,
    /// Album title.
    pub album: Option<String>,
    /// Recording or release date/year, as written in the file.
    pub date: Option<String>,
}

/// Everything known about a probed file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeInfo {
    /// Duration in seconds.
    pub duration_s: f64,
    /// Codec short name, e.g. `"mp3"`, `"aac"`, `"flac"`, `"pcm_s16le"`.
    pub codec: String,
    /// Container short name, e.g. `"wave"`, `"isomp4"`, `"ogg"`.
    pub container: String,
    /// Sample rate in Hz.
    pub sample_rate: u32,
    /// Channel count.
    pub channels: u16,
    /// Bits per sample for PCM and lossless codecs.
    pub bits_per_sample: Option<u32>,
    /// Bit rate in bits/s: exact for PCM, the file's average otherwise.
    pub bit_rate: Option<u64>,
    /// Title/artist/album/date tags.
    pub tags: Tags,
    /// Whether an embedded picture (cover art) is present.
    pub has_cover_art: bool,
}

/// Result of [`sniff`]ing the head of an upload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SniffInfo {
    /// Container short name (from Symphonia, or from magic bytes when `complete` is false).
    pub container: String,
    /// Codec short name if the head was enough to open the stream.
    pub codec: Option<String>,
    /// Sample rate if known from the head.
    pub sample_rate: Option<u32>,
    /// Channel count if known from the head.
    pub channels: Option<u16>,
    /// True when the stream's headers could be fully parsed from the head alone.
    pub complete: bool,
}

/// Probes the file at `path`.
pub fn probe(path: &Path) -> Result<ProbeInfo, Error> {
    probe_decoder(Decoder::open(path)?)
}

/// Proves the file at `path` is real audio: opens it (seeking to the container's index wherever
/// it lies, e.g. an MP4 `moov` atom written at the end) and decodes up to a second of it. Cheap
/// whatever the file's length: nothing beyond the index and the first packets is read.
pub fn validate(path: &Path) -> Result<(), Error> {
    let mut dec = Decoder::open(path)?;
    let want = u64::from(dec.sample_rate());
    while dec.frames_decoded() < want {
        if dec.next_chunk()?.is_none() {
            break;
        }
    }
    if dec.frames_decoded() == 0 {
        return Err(if dec.decode_errors() > 0 {
            Error::Unsupported("no decodable audio packets".into())
        } else {
            Error::NoAudio
        });
    }
    Ok(())
}

/// Probes any seekable reader; `ext_hint` is an optional file extension such as `"mp3"`.
pub fn probe_reader<R>(reader: R, ext_hint: Option<&str>) -> Result<ProbeInfo, Error>
where
    R: Read + Seek + Send + Sync + 'static,
{
    probe_decoder(Decoder::from_reader(reader, ext_hint)?)
}

fn probe_decoder(mut dec: Decoder) -> Result<ProbeInfo, Error> {
    let (tags, has_cover_art) =
        dec.format_mut().map(|f| guard(|| read_tags(f.metadata()))).transpose()?.unwrap_or_default();
    let rate = dec.sample_rate();
    let validate_frames = (VALIDATE_SECONDS * f64::from(rate)) as u64;
    let mut ended = false;
    while dec.frames_decoded() < validate_frames {
        if dec.next_chunk()?.is_none() {
            ended = true;
            break;
        }
    }
    let info = dec.info.clone();
    let sampled = dec.frames_decoded();
    if sampled == 0 {
        return Err(if dec.decode_errors() > 0 || info.declared_frames.is_some_and(|f| f > 0) {
            Error::Unsupported("no decodable audio packets".into())
        } else {
            Error::NoAudio
        });
    }
    let frames = match info.declared_frames {
        // Everything was decoded while validating: the real length is known exactly.
        Some(declared) if ended => {
            let tolerance = u64::from(rate); // one second
            if declared > sampled.saturating_mul(2) && declared - sampled > tolerance {
                return Err(Error::Unsupported(format!(
                    "file is truncated: {sampled} of {declared} declared frames are present"
                )));
            }
            sampled
        }
        Some(declared) if declared > 0 => {
            if is_lossy(&info.codec) {
                check_truncation(declared, sampled, dec.packet_bytes(), info.byte_len)?;
            }
            declared
        }
        _ => {
            // No usable declared length: count by decoding (bounded by the decoder's limit).
            while dec.next_chunk()?.is_some() {}
            dec.frames_decoded()
        }
    };
    let duration_s = frames as f64 / f64::from(rate);
    check_duration(duration_s)?;
    let channels = dec.channels();
    let pcm_bits = info.params.bits_per_coded_sample.or(info.params.bits_per_sample);
    let bit_rate = if info.codec.starts_with("pcm") {
        pcm_bits.map(|b| u64::from(rate) * u64::from(channels) * u64::from(b))
    } else {
        info.byte_len.filter(|_| duration_s > 0.0).map(|len| (len as f64 * 8.0 / duration_s).round() as u64)
    };
    Ok(ProbeInfo {
        duration_s,
        codec: info.codec,
        container: info.container,
        sample_rate: rate,
        channels,
        bits_per_sample: info.params.bits_per_sample,
        bit_rate,
        tags,
        has_cover_art,
    })
}

fn is_lossy(codec: &str) -> bool {
    matches!(codec, "mp1" | "mp2" | "mp3" | "aac" | "vorbis" | "opus")
}

/// Rejects a lossy stream whose declared length needs far more bytes than the file holds.
fn check_truncation(declared: u64, sampled: u64, sampled_bytes: u64, byte_len: Option<u64>) -> Result<(), Error> {
    let Some(len) = byte_len else { return Ok(()) };
    let expected = declared as f64 * sampled_bytes as f64 / sampled as f64;
    if (len as f64) < expected / 16.0 && expected - len as f64 > 16_384.0 {
        return Err(Error::Unsupported(format!(
            "file is truncated: {len} bytes on disk but about {expected:.0} needed for the declared duration"
        )));
    }
    Ok(())
}

/// Collects title/artist/album/date and cover-art presence from every metadata revision.
fn read_tags(mut md: symphonia::core::meta::Metadata<'_>) -> (Tags, bool) {
    let mut tags = Tags::default();
    let mut cover = false;
    let mut visit = |rev: &MetadataRevision| {
        let containers = std::iter::once(&rev.media).chain(rev.per_track.iter().map(|t| &t.metadata));
        for c in containers {
            cover |= !c.visuals.is_empty();
            c.tags.iter().for_each(|t| apply_tag(&mut tags, t));
        }
    };
    if let Some(rev) = md.current() {
        visit(rev);
    }
    while md.pop().is_some() {
        if let Some(rev) = md.current() {
            visit(rev);
        }
    }
    (tags, cover)
}

fn apply_tag(tags: &mut Tags, tag: &Tag) {
    let (slot, value) = match &tag.std {
        Some(StandardTag::TrackTitle(v)) => (&mut tags.title, v.to_string()),
        Some(StandardTag::Artist(v)) => (&mut tags.artist, v.to_string()),
        Some(StandardTag::AlbumArtist(v)) => (&mut tags.artist, v.to_string()),
        Some(StandardTag::Album(v)) => (&mut tags.album, v.to_string()),
        Some(StandardTag::RecordingDate(v) | StandardTag::ReleaseDate(v) | StandardTag::OriginalReleaseDate(v)) => {
            (&mut tags.date, v.to_string())
        }
        Some(StandardTag::RecordingYear(y) | StandardTag::ReleaseYear(y)) => (&mut tags.date, y.to_string()),
        _ => {
            let key = tag.raw.key.to_ascii_lowercase();
            let slot = match key.as_str() {
                "title" | "©nam" => &mut tags.title,
                "artist" | "©art" => &mut tags.artist,
                "album" | "©alb" => &mut tags.album,
                "date" | "year" | "©day" => &mut tags.date,
                _ => return,
            };
            match &tag.raw.value {
                RawValue::String(s) => (slot, s.to_string()),
                RawValue::StringList(l) => (slot, l.join("; ")),
                _ => return,
            }
        }
    };
    let value: String = value.trim().chars().filter(|c| !c.is_control()).take(MAX_TAG_CHARS).collect();
    if slot.is_none() && !value.is_empty() {
        *slot = Some(value);
    }
}

/// Checks the first bytes of an upload. Returns `Ok` when the head looks like a supported,
/// sane audio stream: fully parsed when possible (`complete`), else recognised by magic bytes —
/// either because the head ended inside the headers, or because the container keeps its index
/// further on (an MP4 `moov` or a Matroska `Cues`/`Tracks` beyond the head), which only the whole
/// file can settle ([`validate`]). A head of [`SNIFF_MAX_BYTES`] or more is taken to be partial.
pub fn sniff(head: &[u8]) -> Result<SniffInfo, Error> {
    if head.is_empty() {
        return Err(Error::Unsupported("empty file".into()));
    }
    let partial = head.len() >= SNIFF_MAX_BYTES;
    let head = &head[..head.len().min(SNIFF_MAX_BYTES)];
    let recognised = |container: &str| SniffInfo {
        container: container.into(),
        codec: None,
        sample_rate: None,
        channels: None,
        complete: false,
    };
    match Decoder::from_source(Box::new(Cursor::new(head.to_vec())), None, true) {
        Ok(dec) => Ok(SniffInfo {
            container: dec.info.container.clone(),
            codec: Some(dec.info.codec.clone()),
            sample_rate: Some(dec.sample_rate()),
            channels: Some(dec.channels()),
            complete: true,
        }),
        Err(Error::Unsupported(msg)) if msg == TRUNCATED => {
            magic(head).map(recognised).ok_or_else(|| Error::Unsupported("unrecognised file format".into()))
        }
        Err(Error::Unsupported(_) | Error::NoAudio) if partial && matches!(magic(head), Some("isomp4" | "mkv")) => {
            Ok(recognised(magic(head).unwrap_or_default()))
        }
        Err(e) => Err(e),
    }
}

/// Recognises supported containers by their leading bytes.
fn magic(h: &[u8]) -> Option<&'static str> {
    let at = |off: usize, m: &[u8]| h.get(off..off + m.len()) == Some(m);
    if at(0, b"RIFF") && at(8, b"WAVE") {
        Some("wave")
    } else if at(0, b"FORM") && (at(8, b"AIFF") || at(8, b"AIFC")) {
        Some("aiff")
    } else if at(0, b"fLaC") {
        Some("flac")
    } else if at(0, b"OggS") {
        Some("ogg")
    } else if at(4, b"ftyp") || (at(4, b"moov") || at(4, b"mdat") || at(4, b"wide") || at(4, b"free")) {
        Some("isomp4")
    } else if at(0, &[0x1A, 0x45, 0xDF, 0xA3]) {
        Some("mkv")
    } else if at(0, b"ID3") {
        Some("mpa")
    } else if let [0xFF, b1, b2, ..] = *h {
        let (layer, bitrate, srate) = ((b1 >> 1) & 3, b2 >> 4, (b2 >> 2) & 3);
        let valid_mpa = b1 & 0xE0 == 0xE0 && layer != 0 && (1..15).contains(&bitrate) && srate != 3;
        let adts = b1 & 0xF6 == 0xF0;
        if valid_mpa {
            Some("mpa")
        } else if adts {
            Some("adts")
        } else {
            None
        }
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(rate: u32, channels: u16, frames: usize) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut cur = Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut cur, spec).unwrap();
        for i in 0..frames * usize::from(channels) {
            w.write_sample(((i % 100) as i16 - 50) * 100).unwrap();
        }
        w.finalize().unwrap();
        cur.into_inner()
    }

    #[test]
    fn probes_wav_and_serializes() {
        let info = probe_reader(Cursor::new(wav(22_050, 2, 44_100)), Some("wav")).unwrap();
        assert_eq!((info.sample_rate, info.channels, info.bits_per_sample), (22_050, 2, Some(16)));
        assert!((info.duration_s - 2.0).abs() < 1e-9);
        assert_eq!(info.bit_rate, Some(22_050 * 2 * 16));
        assert_eq!(info.container, "wave");
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["tags"]["title"], serde_json::Value::Null);
    }

    #[test]
    fn header_only_wav_is_no_audio() {
        let e = probe_reader(Cursor::new(wav(44_100, 1, 0)), Some("wav")).unwrap_err();
        assert_eq!(e.code(), "no_audio", "{e}");
    }

    #[test]
    fn sniff_head_of_wav() {
        let bytes = wav(48_000, 1, 48_000);
        let s = sniff(&bytes[..4096]).unwrap();
        assert_eq!((s.sample_rate, s.channels, s.complete), (Some(48_000), Some(1), true));
        assert!(sniff(b"").is_err());
        assert_eq!(sniff(b"<html><body>nope</body></html>").unwrap_err().code(), "unsupported_audio");
    }

    #[test]
    fn magic_bytes() {
        assert_eq!(magic(b"fLaC\0\0\0\x22"), Some("flac"));
        assert_eq!(magic(b"\0\0\0\x20ftypM4A "), Some("isomp4"));
        assert_eq!(magic(&[0xFF, 0xFB, 0x90, 0x64]), Some("mpa"));
        assert_eq!(magic(&[0xFF, 0xF1, 0x50, 0x80]), Some("adts"));
        assert_eq!(magic(b"hello"), None);
    }
}
