//! CMAF fragmented-MP4 writer for a single AAC-LC audio track.
//!
//! [`init_segment`] builds the CMAF header (`ftyp` + `moov`, with `mvex` announcing
//! fragments) and [`media_segment`] builds one CMAF fragment (`styp` + `moof` + `mdat`).
//! Every box is produced with `mp4-atom`'s typed structs; nothing is hand-encoded (the
//! `moov` containers are assembled with mp4-atom's `encode_atom` only to get the
//! conventional child order, see `write_moov`).
//!
//! Layout of the header:
//! `ftyp(iso6; iso6 cmfc mp41) moov{ mvhd trak{ tkhd [edts/elst] mdia{ mdhd hdlr(soun)
//! minf{ smhd dinf/dref/url stbl{ stsd/mp4a/esds stts stsc stsz stco } } } } mvex/trex }`.
//!
//! Layout of a fragment:
//! `styp(msdh; msdh cmfs) moof{ mfhd traf{ tfhd(default-base-is-moof) tfdt(v1) trun } } mdat`.
//! `trun.data_offset` is measured from the first byte of `moof` to the first payload
//! byte of `mdat`, as required by `default-base-is-moof`.

use mp4_atom::{
    Atom, Audio, BufMut, Codec, Dinf, Dref, Encode, Esds, FourCC, Ftyp, Hdlr, Mdat, Mdhd, Mdia, Mfhd, Minf, Moof, Moov,
    Mp4a, Mvex, Mvhd, Smhd, Stbl, Stco, Stsc, Stsd, Stsz, Stts, Styp, Tfdt, Tfhd, Tkhd, Traf, Trak, Trex, Trun,
    TrunEntry, Url, esds,
};

use super::aac::AacFrame;

/// Track id of the single audio track.
pub const TRACK_ID: u32 = 1;

/// MPEG-4 Audio `objectTypeIndication` (ISO/IEC 14496-1 table 5).
const OTI_MPEG4_AUDIO: u8 = 0x40;
/// `streamType` of an audio elementary stream.
const STREAM_TYPE_AUDIO: u8 = 0x05;

/// Bit rates advertised in the `esds` `DecoderConfigDescriptor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EsdsBitrate {
    /// Average bit rate in bits per second (0 = unknown / variable).
    pub avg_bps: u32,
    /// Peak bit rate over any one-second window, in bits per second.
    pub max_bps: u32,
}

impl EsdsBitrate {
    /// Both fields set to the configured constant bit rate.
    pub fn cbr(bps: u32) -> Self {
        Self { avg_bps: bps, max_bps: bps }
    }
}

fn encode_to(out: &mut Vec<u8>, atom: &impl Encode) {
    // Encoding into a Vec only fails for boxes over 4 GiB, which audio headers and
    // 6-second fragments can never reach.
    atom.encode(out).expect("mp4 box larger than 4 GiB");
}

/// Builds the CMAF header (`init.mp4`) for one AAC track.
///
/// * `timescale` – media and movie timescale; use the sample rate so one AAC frame
///   lasts exactly 1024 ticks.
/// * `asc` – the AudioSpecificConfig as produced by the encoder; copied verbatim into `esds`.
/// * `bitrate` – the values advertised in `esds` (informative only).
///
/// No edit list is written: [`super::aac::AacEncoder`] removes the encoder priming itself,
/// so media time 0 is the first real sample (see [`init_segment_with_priming`] otherwise).
///
/// Infallible in practice: mp4-atom can only fail here for a box over 4 GiB (panics).
pub fn init_segment(timescale: u32, channels: u16, sample_rate: u32, asc: &[u8], bitrate: EsdsBitrate) -> Vec<u8> {
    init_segment_with_priming(timescale, channels, sample_rate, asc, bitrate, 0)
}

/// Like [`init_segment`], but when `priming > 0` also writes an `edts/elst` with a single
/// edit starting at media time `priming` (ticks) and lasting "until the end of all
/// fragments" (`segment_duration = 0`), so compliant players hide the first `priming`
/// ticks of decoded audio.
pub fn init_segment_with_priming(
    timescale: u32,
    channels: u16,
    sample_rate: u32,
    asc: &[u8],
    bitrate: EsdsBitrate,
    priming: u32,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    let ftyp = Ftyp {
        major_brand: FourCC::new(b"iso6"),
        minor_version: 0,
        compatible_brands: vec![FourCC::new(b"iso6"), FourCC::new(b"cmfc"), FourCC::new(b"mp41")],
    };
    encode_to(&mut out, &ftyp);

    let edts = (priming > 0).then(|| mp4_atom::Edts {
        elst: Some(mp4_atom::Elst {
            entries: vec![mp4_atom::ElstEntry {
                segment_duration: 0,
                media_time: Some(u64::from(priming)),
                media_rate: 1.into(),
            }],
        }),
    });

    let moov = Moov {
        mvhd: Mvhd {
            timescale,
            duration: 0,
            rate: 1.into(),
            volume: 1.into(),
            next_track_id: TRACK_ID + 1,
            ..Default::default()
        },
        mvex: Some(Mvex {
            mehd: None,
            trex: vec![Trex {
                track_id: TRACK_ID,
                default_sample_description_index: 1,
                default_sample_duration: 1024,
                default_sample_size: 0,
                default_sample_flags: 0,
            }],
        }),
        trak: vec![Trak {
            tkhd: Tkhd {
                track_id: TRACK_ID,
                enabled: true,
                in_movie: true,
                alternate_group: 1,
                volume: 1.into(),
                ..Default::default()
            },
            edts,
            mdia: Mdia {
                mdhd: Mdhd { timescale, language: "und".into(), ..Default::default() },
                hdlr: Hdlr { handler: FourCC::new(b"soun"), name: "SoundHandler".into() },
                minf: Minf {
                    smhd: Some(Smhd::default()),
                    dinf: Dinf { dref: Dref { entries: vec![Url::default().into()] } },
                    stbl: Stbl {
                        stsd: Stsd { codecs: vec![Codec::Mp4a(mp4a_entry(channels, sample_rate, asc, bitrate))] },
                        stts: Stts::default(),
                        stsc: Stsc::default(),
                        stsz: Stsz::default(),
                        stco: Some(Stco::default()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            },
            ..Default::default()
        }],
        ..Default::default()
    };
    write_moov(&mut out, &moov).expect("mp4 box larger than 4 GiB");
    out
}

/// Encodes `moov` with its children in the order ISO/IEC 14496-12 recommends
/// (`mvhd trak mvex`, `tkhd edts mdia`, `smhd dinf stbl`). `Moov::encode` would emit
/// `mvex` before `trak` and `smhd` after `stbl`; legal, but unusual enough to be worth
/// avoiding for strict players. Containers are written with mp4-atom's `encode_atom`,
/// every leaf box with its typed struct.
fn write_moov(out: &mut Vec<u8>, moov: &Moov) -> mp4_atom::Result<()> {
    out.encode_atom(Moov::KIND, |b| {
        moov.mvhd.encode(b)?;
        for trak in &moov.trak {
            b.encode_atom(Trak::KIND, |b| {
                trak.tkhd.encode(b)?;
                trak.edts.encode(b)?;
                b.encode_atom(Mdia::KIND, |b| {
                    let mdia = &trak.mdia;
                    mdia.mdhd.encode(b)?;
                    mdia.hdlr.encode(b)?;
                    b.encode_atom(Minf::KIND, |b| {
                        mdia.minf.smhd.encode(b)?;
                        mdia.minf.dinf.encode(b)?;
                        mdia.minf.stbl.encode(b)
                    })
                })
            })?;
        }
        moov.mvex.encode(b)
    })
}

/// The `mp4a` sample entry with its `esds` (ES_Descriptor → DecoderConfigDescriptor →
/// DecoderSpecificInfo = AudioSpecificConfig).
fn mp4a_entry(channels: u16, sample_rate: u32, asc: &[u8], bitrate: EsdsBitrate) -> Mp4a {
    // The sample-entry rate is 16.16 fixed point; rates above 65535 Hz are written as 0,
    // which is what ISO/IEC 14496-12 prescribes (the ASC is authoritative).
    let entry_rate = u16::try_from(sample_rate).unwrap_or(0);
    let (profile, freq_index, chan_conf) = parse_asc(asc);
    Mp4a {
        audio: Audio {
            data_reference_index: 1,
            channel_count: channels,
            sample_size: 16,
            sample_rate: entry_rate.into(),
        },
        esds: Esds {
            es_desc: esds::EsDescriptor {
                es_id: TRACK_ID as u16,
                dec_config: esds::DecoderConfig {
                    object_type_indication: OTI_MPEG4_AUDIO,
                    stream_type: STREAM_TYPE_AUDIO,
                    up_stream: 0,
                    // 6144 bits per channel is the AAC decoder input buffer size.
                    buffer_size_db: mp4_atom::u24::try_from(768 * u32::from(channels.max(1))).unwrap_or_default(),
                    max_bitrate: bitrate.max_bps,
                    avg_bitrate: bitrate.avg_bps,
                    dec_specific: Some(esds::DecoderSpecific { profile, freq_index, chan_conf, raw: asc.to_vec() }),
                },
                sl_config: esds::SLConfig::default(),
                ..Default::default()
            },
        },
        btrt: None,
        taic: None,
    }
}

/// Reads `audioObjectType`, `samplingFrequencyIndex` and `channelConfiguration` from a
/// two-byte-or-longer AudioSpecificConfig (no escape handling; only used to fill the
/// informative fields of `DecoderSpecific`, the raw bytes are what is written).
fn parse_asc(asc: &[u8]) -> (u8, u8, u8) {
    match asc {
        [a, b, ..] => (a >> 3, ((a & 0x07) << 1) | (b >> 7), (b >> 3) & 0x0F),
        _ => (0, 0, 0),
    }
}

/// Builds one CMAF fragment: `styp`, `moof` (sequence `sequence`, decode time
/// `base_decode_time` in timescale ticks) and an `mdat` holding `frames` back to back.
///
/// Each frame becomes one sample with its own size and duration in `trun`.
/// Panics only if the fragment exceeds 2 GiB (a 6 s audio segment is ~100 kB).
pub fn media_segment(sequence: u32, base_decode_time: u64, frames: &[AacFrame]) -> Vec<u8> {
    let payload_len: usize = frames.iter().map(|f| f.data.len()).sum();
    let mut out = Vec::with_capacity(payload_len + 64 + 8 * frames.len());

    let styp = Styp {
        major_brand: FourCC::new(b"msdh"),
        minor_version: 0,
        compatible_brands: vec![FourCC::new(b"msdh"), FourCC::new(b"cmfs")],
    };
    encode_to(&mut out, &styp);

    let entries: Vec<TrunEntry> = frames
        .iter()
        .map(|f| TrunEntry {
            duration: Some(f.duration),
            size: Some(u32::try_from(f.data.len()).expect("aac frame larger than 4 GiB")),
            flags: None,
            cts: None,
        })
        .collect();
    let mut moof = Moof {
        mfhd: Mfhd { sequence_number: sequence },
        traf: vec![Traf {
            tfhd: Tfhd { track_id: TRACK_ID, default_base_is_moof: true, ..Default::default() },
            tfdt: Some(Tfdt { base_media_decode_time: base_decode_time }),
            trun: vec![Trun { data_offset: Some(0), samples: entries.into() }],
            ..Default::default()
        }],
    };

    // First pass sizes the moof; the data offset field has a fixed width so the
    // second pass produces a box of identical size.
    let mut moof_bytes = Vec::with_capacity(128 + 8 * frames.len());
    encode_to(&mut moof_bytes, &moof);
    let data_offset = i32::try_from(moof_bytes.len() + 8).expect("moof larger than 2 GiB");
    moof.traf[0].trun[0].data_offset = Some(data_offset);
    moof_bytes.clear();
    encode_to(&mut moof_bytes, &moof);
    out.extend_from_slice(&moof_bytes);

    let mut data = Vec::with_capacity(payload_len);
    for f in frames {
        data.extend_from_slice(&f.data);
    }
    encode_to(&mut out, &Mdat { data });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mp4_atom::{Any, Decode};

    const ASC_STEREO_48K: [u8; 2] = [0x11, 0x90];

    fn frames(sizes: &[usize]) -> Vec<AacFrame> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| AacFrame { data: vec![i as u8; n], pts: i as u64 * 1024, duration: 1024 })
            .collect()
    }

    #[test]
    fn init_segment_round_trips_through_mp4_atom() {
        let bytes = init_segment(48_000, 2, 48_000, &ASC_STEREO_48K, EsdsBitrate::cbr(128_000));
        let mut buf = bytes.as_slice();
        let ftyp = Ftyp::decode(&mut buf).unwrap();
        assert_eq!(ftyp.major_brand, FourCC::new(b"iso6"));
        assert!(ftyp.compatible_brands.contains(&FourCC::new(b"cmfc")));
        let moov = Moov::decode(&mut buf).unwrap();
        assert!(buf.is_empty());
        // Conventional child order: mvhd, trak, mvex and smhd, dinf, stbl.
        let pos = |tag: &[u8]| bytes.windows(4).position(|w| w == tag).unwrap();
        assert!(pos(b"mvhd") < pos(b"trak") && pos(b"trak") < pos(b"mvex"));
        assert!(pos(b"smhd") < pos(b"dinf") && pos(b"dinf") < pos(b"stbl"));
        assert_eq!(moov.mvhd.timescale, 48_000);
        let trak = &moov.trak[0];
        assert!(trak.edts.is_none());
        assert_eq!(trak.mdia.hdlr.handler, FourCC::new(b"soun"));
        assert_eq!(trak.mdia.mdhd.timescale, 48_000);
        let Codec::Mp4a(mp4a) = &trak.mdia.minf.stbl.stsd.codecs[0] else { panic!("not mp4a") };
        assert_eq!(mp4a.audio.channel_count, 2);
        let dec = &mp4a.esds.es_desc.dec_config;
        assert_eq!(dec.object_type_indication, 0x40);
        let spec = dec.dec_specific.as_ref().unwrap();
        assert_eq!(spec.raw, ASC_STEREO_48K);
        assert_eq!((spec.profile, spec.freq_index, spec.chan_conf), (2, 3, 2));
        assert_eq!(moov.mvex.unwrap().trex[0].track_id, TRACK_ID);
    }

    #[test]
    fn priming_writes_edit_list() {
        let bytes = init_segment_with_priming(48_000, 1, 48_000, &[0x11, 0x88], EsdsBitrate::cbr(64_000), 2048);
        let mut buf = bytes.as_slice();
        Ftyp::decode(&mut buf).unwrap();
        let moov = Moov::decode(&mut buf).unwrap();
        let elst = moov.trak[0].edts.as_ref().unwrap().elst.as_ref().unwrap();
        assert_eq!(elst.entries[0].media_time, Some(2048));
    }

    #[test]
    fn media_segment_offsets_point_into_mdat() {
        let fr = frames(&[300, 310, 290, 305]);
        let bytes = media_segment(7, 123_456_789_000, &fr);
        let mut buf = bytes.as_slice();
        assert!(matches!(Any::decode(&mut buf).unwrap(), Any::Styp(_)));
        let moof_start = bytes.len() - buf.len();
        let moof = Moof::decode(&mut buf).unwrap();
        let mdat_start = bytes.len() - buf.len();
        let mdat = Mdat::decode(&mut buf).unwrap();
        assert!(buf.is_empty());

        assert_eq!(moof.mfhd.sequence_number, 7);
        let traf = &moof.traf[0];
        assert!(traf.tfhd.default_base_is_moof);
        assert_eq!(traf.tfdt.as_ref().unwrap().base_media_decode_time, 123_456_789_000);
        let trun = &traf.trun[0];
        let off = trun.data_offset.unwrap() as usize;
        assert_eq!(moof_start + off, mdat_start + 8);
        let sizes: Vec<u32> = trun.samples.iter().map(|e| e.size.unwrap()).collect();
        assert_eq!(sizes, vec![300, 310, 290, 305]);
        assert!(trun.samples.iter().all(|e| e.duration == Some(1024)));
        // Sample 2 starts after samples 0 and 1 and carries byte value 2.
        assert_eq!(bytes[moof_start + off + 610], 2);
        assert_eq!(mdat.data.len(), 1205);
    }
}
