//! Whisper's token-level decoding rules, without any model: the special token ids, the logit
//! filters of greedy decoding (suppression and the timestamp grammar), the repetition guard, and
//! the cutting of a decoded token sequence into timed [`Segment`]s.
//!
//! The rules are those of OpenAI Whisper's `SuppressTokens`, `SuppressBlank` and
//! `ApplyTimestampRules` (and of `benches/asr/reference.py`), see [`LogitRules::apply`].

use serde::{Deserialize, Serialize};

/// Seconds per timestamp token step (`<|0.00|>`, `<|0.02|>`, …).
pub const SECONDS_PER_TIMESTAMP: f64 = 0.02;
/// Most tokens sampled per window (half the text context), as Whisper does.
pub const MAX_NEW_TOKENS: usize = 224;
/// The first timestamp must be at most this many steps (1.00 s) into the window.
pub const MAX_INITIAL_TIMESTAMP: u32 = 50;
/// A repetition guard trips when the text tokens end with a block of at most this many tokens…
const LOOP_MAX_PERIOD: usize = 48;
/// …repeated at least this many times in a row…
const LOOP_MIN_REPEATS: usize = 3;
/// …and the repeated run is at least this long (so "no, no, no" is not a loop).
const LOOP_MIN_TOKENS: usize = 24;

/// A piece of transcript with times relative to the start of its window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Start, in seconds from the window start.
    pub start_s: f64,
    /// End, in seconds from the window start (≥ `start_s`).
    pub end_s: f64,
    /// The text, trimmed, never empty.
    pub text: String,
}

/// The special token ids of one Whisper vocabulary (they differ between English-only and
/// multilingual models, so they are read from the tokenizer, never hard-coded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialTokens {
    /// `<|endoftext|>`: ends the transcript. Every id below it is text.
    pub eot: u32,
    /// `<|startoftranscript|>`.
    pub sot: u32,
    /// `<|notimestamps|>`: the last special id; the timestamps follow it.
    pub no_timestamps: u32,
    /// `<|0.00|>`, the first timestamp (`no_timestamps + 1`).
    pub timestamp_begin: u32,
    /// `[<|en|>, <|transcribe|>]` for multilingual models, empty for English-only ones.
    pub task: Vec<u32>,
}

impl SpecialTokens {
    /// The prompt that starts every window.
    pub fn prompt(&self, timestamps: bool) -> Vec<i64> {
        let mut prompt = vec![i64::from(self.sot)];
        prompt.extend(self.task.iter().map(|&t| i64::from(t)));
        if !timestamps {
            prompt.push(i64::from(self.no_timestamps));
        }
        prompt
    }

    /// Whether `id` is a timestamp token.
    pub fn is_timestamp(&self, id: u32) -> bool {
        id >= self.timestamp_begin
    }

    /// The time of timestamp token `id`, in seconds from the window start.
    pub fn seconds(&self, id: u32) -> f64 {
        f64::from(id.saturating_sub(self.timestamp_begin)) * SECONDS_PER_TIMESTAMP
    }
}

/// The logit filters of greedy decoding for one model.
#[derive(Debug, Clone)]
pub struct LogitRules {
    /// The special ids.
    pub tokens: SpecialTokens,
    /// Suppressed at every step (`config.json` `suppress_ids`: non-speech symbols and specials).
    pub suppress: Vec<u32>,
    /// Also suppressed at the first sampled token (`suppress_ids_begin`: blank and EOT).
    pub suppress_begin: Vec<u32>,
}

impl LogitRules {
    /// Masks (sets to −∞) the tokens that may not follow `generated` (the tokens sampled so far
    /// in this window, prompt excluded):
    /// - always `suppress`; at the first token also `suppress_begin`;
    /// - without timestamps: every id after EOT;
    /// - with timestamps: every special id between EOT and the first timestamp, and the grammar:
    ///   1. the first token is a timestamp ≤ [`MAX_INITIAL_TIMESTAMP`] (1.00 s);
    ///   2. timestamps come in pairs around each text run: after text and a timestamp (which
    ///      closes a segment) only a timestamp (opening the next) or EOT; after two timestamps in a
    ///      row (or the initial one) only text or EOT;
    ///   3. timestamps never decrease: a segment's closing timestamp is later than its opening
    ///      one, and the next opening one may equal the previous closing one;
    ///   4. if the timestamps together are more probable than the best other token, only a
    ///      timestamp may be picked.
    pub fn apply(&self, logits: &mut [f32], generated: &[u32], timestamps: bool) {
        let tok = &self.tokens;
        let masked: &[u32] = if generated.is_empty() { &self.suppress_begin } else { &[] };
        for &id in self.suppress.iter().chain(masked) {
            mask(logits, id as usize..id as usize + 1);
        }
        let ts = tok.timestamp_begin as usize;
        if !timestamps {
            mask(logits, tok.eot as usize + 1..logits.len());
            return;
        }
        mask(logits, tok.eot as usize + 1..ts);
        let last_ts = generated.last().is_some_and(|&t| tok.is_timestamp(t));
        let penultimate_ts = generated.len() < 2 || tok.is_timestamp(generated[generated.len() - 2]);
        if last_ts {
            if penultimate_ts {
                mask(logits, ts..logits.len());
            } else {
                mask(logits, 0..tok.eot as usize);
            }
        }
        if let Some(&last) = generated.iter().rev().find(|&&t| tok.is_timestamp(t)) {
            let floor = if last_ts && !penultimate_ts { last } else { last + 1 };
            mask(logits, ts..floor as usize);
        }
        if generated.is_empty() {
            mask(logits, 0..ts);
            mask(logits, ts + MAX_INITIAL_TIMESTAMP as usize + 1..logits.len());
        }
        if timestamp_mass_wins(logits, ts) {
            mask(logits, 0..ts);
        }
    }
}

/// Sets `logits[range]` to −∞, clamped to the slice.
fn mask(logits: &mut [f32], range: std::ops::Range<usize>) {
    let end = range.end.min(logits.len());
    if range.start < end {
        logits[range.start..end].fill(f32::NEG_INFINITY);
    }
}

/// Whether `log Σ p(timestamp)` beats `max log p(other)` under the softmax of `logits`.
fn timestamp_mass_wins(logits: &[f32], timestamp_begin: usize) -> bool {
    if timestamp_begin >= logits.len() {
        return false;
    }
    let (text, stamps) = logits.split_at(timestamp_begin);
    let max_text = text.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let max_stamp = stamps.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max_stamp == f32::NEG_INFINITY {
        return false;
    }
    // Both sides share the softmax normaliser: compare log Σ exp(stamps) with max(text).
    let sum: f64 = stamps.iter().map(|&v| f64::from(v - max_stamp).exp()).sum();
    f64::from(max_stamp) + sum.ln() > f64::from(max_text)
}

/// Index of the largest value (the first on ties); `None` if every value is −∞ or NaN.
pub fn argmax(logits: &[f32]) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in logits.iter().enumerate() {
        if v > f32::NEG_INFINITY && best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.and_then(|(i, _)| u32::try_from(i).ok())
}

/// Repetition guard: if the text tokens of `generated` end in a block repeated at least
/// 3 times over at least 24 tokens (a block of at most 48 tokens), returns the length to
/// truncate `generated` to, keeping the first copy of the block and the timestamps right after it.
pub fn loop_cut(generated: &[u32], tokens: &SpecialTokens) -> Option<usize> {
    let text: Vec<u32> = generated.iter().copied().filter(|&t| !tokens.is_timestamp(t)).collect();
    let n = text.len();
    for period in 1..=LOOP_MAX_PERIOD.min(n / LOOP_MIN_REPEATS) {
        let block = &text[n - period..];
        let repeats = text.rchunks_exact(period).take_while(|chunk| *chunk == block).count();
        if repeats >= LOOP_MIN_REPEATS && repeats * period >= LOOP_MIN_TOKENS {
            let keep_text = n - (repeats - 1) * period;
            return Some(position_after_text_tokens(generated, tokens, keep_text));
        }
    }
    None
}

/// Length of the longest prefix of `generated` that holds only `count` text tokens (so the
/// timestamps right after the last kept text token are kept too).
fn position_after_text_tokens(generated: &[u32], tokens: &SpecialTokens, count: usize) -> usize {
    let mut seen = 0;
    for (i, &t) in generated.iter().enumerate() {
        if !tokens.is_timestamp(t) {
            if seen == count {
                return i;
            }
            seen += 1;
        }
    }
    generated.len()
}

/// Where decoding stopped early, in seconds from the window start: the sequence ends with a
/// timestamp that opens a segment (two timestamps in a row, then EOT), which is how Whisper says
/// "the rest of the window starts a segment I cannot finish here". `None` when the last segment
/// was closed (the window was transcribed to its end).
pub fn resume_time(generated: &[u32], tokens: &SpecialTokens) -> Option<f64> {
    match generated {
        [.., a, b] if tokens.is_timestamp(*a) && tokens.is_timestamp(*b) => Some(tokens.seconds(*b)),
        _ => None,
    }
}

/// Cuts a token sequence decoded with timestamps into segments: text between an opening and a
/// closing timestamp. Text after the last timestamp (the window ended mid-sentence, or the
/// decoding was cut) starts at that timestamp and ends at `duration_s`. Times are clamped to `[0, duration_s]`; segments whose
/// decoded text is blank are dropped. `decode` turns text ids into a string.
pub fn segments<E>(
    generated: &[u32],
    tokens: &SpecialTokens,
    duration_s: f64,
    mut decode: impl FnMut(&[u32]) -> Result<String, E>,
) -> Result<Vec<Segment>, E> {
    let mut out = Vec::new();
    let mut start: Option<f64> = None;
    let mut last_time = 0.0;
    let mut text: Vec<u32> = Vec::new();
    let mut push = |start: f64, end: f64, ids: &[u32], out: &mut Vec<Segment>| -> Result<(), E> {
        let decoded = decode(ids)?;
        let text = decoded.trim();
        if !text.is_empty() {
            let start_s = start.clamp(0.0, duration_s);
            out.push(Segment { start_s, end_s: end.clamp(start_s, duration_s.max(start_s)), text: text.to_owned() });
        }
        Ok(())
    };
    for &t in generated {
        if !tokens.is_timestamp(t) {
            text.push(t);
            continue;
        }
        let time = tokens.seconds(t);
        last_time = time;
        match start {
            Some(s) if !text.is_empty() => {
                push(s, time, &text, &mut out)?;
                text.clear();
                start = None;
            }
            _ => start = Some(time),
        }
    }
    if !text.is_empty() {
        push(start.unwrap_or(last_time), duration_s, &text, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy vocabulary: text 0..10, EOT 10, SOT 11, specials 12..=13, no-timestamps 14, then
    /// timestamps 15.. (0.00 s, 0.02 s, …), 200 in all.
    fn rules() -> LogitRules {
        LogitRules {
            tokens: SpecialTokens { eot: 10, sot: 11, no_timestamps: 14, timestamp_begin: 15, task: vec![] },
            suppress: vec![3, 11],
            suppress_begin: vec![0, 10],
        }
    }

    fn allowed(logits: &[f32]) -> Vec<usize> {
        logits.iter().enumerate().filter(|(_, v)| **v > f32::NEG_INFINITY).map(|(i, _)| i).collect()
    }

    /// Logits where text token 5 is clearly the favourite (timestamps far less likely).
    fn text_favoured() -> Vec<f32> {
        let mut logits = vec![-20.0; 200];
        logits[5] = 10.0;
        logits
    }

    #[test]
    fn without_timestamps_only_text_and_eot() {
        let rules = rules();
        let mut logits = vec![0.0; 200];
        rules.apply(&mut logits, &[], false);
        assert_eq!(allowed(&logits), vec![1, 2, 4, 5, 6, 7, 8, 9]);
        let mut logits = vec![0.0; 200];
        rules.apply(&mut logits, &[5], false);
        assert_eq!(allowed(&logits), vec![0, 1, 2, 4, 5, 6, 7, 8, 9, 10]);
    }

    #[test]
    fn first_token_is_an_early_timestamp() {
        let mut logits = text_favoured();
        rules().apply(&mut logits, &[], true);
        assert_eq!(allowed(&logits), (15..=65).collect::<Vec<_>>());
    }

    #[test]
    fn after_a_closed_pair_comes_text_or_eot() {
        let rules = rules();
        for generated in [&[15][..], &[15, 5, 40, 40]] {
            let mut logits = text_favoured();
            rules.apply(&mut logits, generated, true);
            assert_eq!(allowed(&logits), vec![0, 1, 2, 4, 5, 6, 7, 8, 9, 10], "{generated:?}");
        }
    }

    #[test]
    fn an_open_pair_closes_with_a_later_or_equal_timestamp_or_ends() {
        let mut logits = text_favoured();
        logits[10] = 10.0; // EOT likely enough that the timestamps' mass does not force one
        rules().apply(&mut logits, &[15, 5, 6, 40], true);
        let mut expected = vec![10];
        expected.extend(40..200);
        assert_eq!(allowed(&logits), expected);
    }

    #[test]
    fn after_text_the_next_timestamp_is_later_than_the_last() {
        let mut logits = vec![0.0; 200];
        logits[5] = 30.0; // text wins over the timestamps' mass
        rules().apply(&mut logits, &[15, 5, 40, 40, 6], true);
        let got = allowed(&logits);
        assert!(got.contains(&41) && !got.contains(&40) && !got.contains(&20), "{got:?}");
        assert!(got.contains(&5) && got.contains(&10));
    }

    #[test]
    fn timestamp_mass_forces_a_timestamp() {
        // 184 timestamps (16..200) at 0.0 outweigh one text token at 3.0 (ln 184 ≈ 5.2 > 3).
        let mut logits = vec![0.0; 200];
        logits[5] = 3.0;
        rules().apply(&mut logits, &[15, 5], true);
        assert!(allowed(&logits).iter().all(|&i| i >= 16));
        assert_eq!(argmax(&logits), Some(16));
    }

    #[test]
    fn argmax_ignores_masked_values() {
        assert_eq!(argmax(&[f32::NEG_INFINITY, 1.0, 3.0, 3.0]), Some(2));
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NAN]), None);
    }

    #[test]
    fn loops_are_cut_to_one_copy() {
        let tokens = rules().tokens;
        let block = [1u32, 2, 4, 5, 6, 7, 8, 9];
        let mut generated = vec![15, 9];
        for i in 0..4 {
            generated.extend_from_slice(&block);
            generated.push(30 + i);
        }
        // text: 9, then the block ×4 (32 tokens, period 8, one timestamp after each copy).
        let cut = loop_cut(&generated, &tokens).expect("a loop");
        assert_eq!(&generated[..cut], &[15, 9, 1, 2, 4, 5, 6, 7, 8, 9, 30]);
        // A short stutter is not a loop.
        assert_eq!(loop_cut(&[15, 5, 5, 5, 5, 6], &tokens), None);
    }

    #[test]
    fn segments_follow_timestamp_pairs() {
        let tokens = rules().tokens;
        // <0.00> 1 2 <1.00><1.00> 4 <2.50> 5 (cut: no closing timestamp)
        let generated = [15, 1, 2, 65, 65, 4, 140, 5];
        let decode = |ids: &[u32]| Ok::<_, ()>(format!(" {ids:?} "));
        let segs = segments(&generated, &tokens, 4.0, decode).unwrap();
        assert_eq!(segs.len(), 3);
        assert_eq!((segs[0].start_s, segs[0].end_s, segs[0].text.as_str()), (0.0, 1.0, "[1, 2]"));
        assert_eq!((segs[1].start_s, segs[1].end_s, segs[1].text.as_str()), (1.0, 2.5, "[4]"));
        assert_eq!((segs[2].start_s, segs[2].end_s, segs[2].text.as_str()), (2.5, 4.0, "[5]"));
        // Times past the audio are clamped; blank text is dropped.
        let segs = segments(&[15, 1, 199], &tokens, 2.0, |_| Ok::<_, ()>(" ".into())).unwrap();
        assert!(segs.is_empty());
        let segs = segments(&[15, 1, 199], &tokens, 2.0, |_| Ok::<_, ()>("a".into())).unwrap();
        assert_eq!((segs[0].start_s, segs[0].end_s), (0.0, 2.0));
    }

    #[test]
    fn resume_after_an_unfinished_window() {
        let tokens = rules().tokens;
        assert_eq!(resume_time(&[15, 1, 65, 65], &tokens), Some(1.0));
        assert_eq!(resume_time(&[15, 1, 65], &tokens), None);
        assert_eq!(resume_time(&[15, 1, 65, 65, 2], &tokens), None);
        assert_eq!(resume_time(&[15], &tokens), None);
    }

    #[test]
    fn prompt_depends_on_mode_and_model() {
        let mut tokens = rules().tokens;
        assert_eq!(tokens.prompt(true), vec![11]);
        assert_eq!(tokens.prompt(false), vec![11, 14]);
        tokens.task = vec![12, 13];
        assert_eq!(tokens.prompt(false), vec![11, 12, 13, 14]);
    }
}
