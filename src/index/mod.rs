//! The search index: transcript chunks with their embeddings, lexical (SQLite FTS5, BM25) and
//! vector (exact scan) retrieval, and hybrid ranking by reciprocal rank fusion.
//!
//! Storage is one SQLite file in the data dir (`index.sqlite`, WAL): a `chunks` table (tenant,
//! media, times, text, the f32 vector and an int8 copy) and an external-content FTS5 table kept in
//! step by triggers. Replacing a media's chunks is one transaction, and the in-memory vectors of
//! that media are swapped under a write lock after it commits, so a search sees either the old
//! chunks or the new ones, never a mixture.
//!
//! Vector search scans int8 vectors held in memory per tenant (388 bytes per chunk: 384 int8 plus
//! a scale), keeps the best `k × RESCORE_FACTOR` candidates and rescores them exactly with the f32
//! vectors read back from SQLite. Tenants are separate maps, so a search can only ever see its own
//! tenant's chunks.

use std::collections::{BinaryHeap, HashMap};
use std::path::Path;
use std::sync::{Mutex, RwLock};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

/// Dimensions of every stored vector (all-MiniLM-L6-v2).
pub const DIM: usize = 384;
/// Candidates kept from the int8 scan per requested result, for exact rescoring.
const RESCORE_FACTOR: usize = 4;
/// The `k` of reciprocal rank fusion (Cormack et al. 2009).
const RRF_K: f64 = 60.0;

/// Errors of the index.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("index database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("vector has {got} dimensions, expected {DIM}")]
    Dimensions { got: usize },
    #[error("the index lock is poisoned")]
    Poisoned,
}

pub type Result<T> = std::result::Result<T, Error>;

/// How results are retrieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Reciprocal rank fusion of vector and lexical results.
    #[default]
    Hybrid,
    Vector,
    Lexical,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "hybrid" => Ok(Self::Hybrid),
            "vector" => Ok(Self::Vector),
            "lexical" => Ok(Self::Lexical),
            other => Err(format!("unknown mode {other:?} (hybrid, vector or lexical)")),
        }
    }
}

/// One chunk to store: a time window of a transcript.
#[derive(Debug, Clone, PartialEq)]
pub struct NewChunk {
    pub start_s: f64,
    pub end_s: f64,
    pub text: String,
    /// L2-normalised embedding of `text`, [`DIM`] long.
    pub vector: Vec<f32>,
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    pub media_id: String,
    pub title: Option<String>,
    pub start_s: f64,
    pub end_s: f64,
    pub text: String,
    /// Cosine similarity (vector), BM25 relevance (lexical, higher is better) or fused RRF score.
    pub score: f64,
}

/// A search request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Query<'a> {
    pub tenant: &'a str,
    pub text: &'a str,
    /// The query's embedding; needed by the vector and hybrid modes.
    pub vector: Option<&'a [f32]>,
    pub k: usize,
    pub mode: Mode,
    pub media_id: Option<&'a str>,
}

/// In-memory int8 vectors of one media.
#[derive(Debug, Default)]
struct MediaVectors {
    ids: Vec<i64>,
    scales: Vec<f32>,
    q: Vec<i8>,
}

/// The search index (see the module docs).
pub struct Index {
    db: Mutex<Connection>,
    /// tenant → media → vectors, loaded on first use (so CLI commands that never search, such
    /// as `jobs list`, do not read every vector at start-up).
    mem: std::sync::OnceLock<RwLock<Vectors>>,
    loading: Mutex<()>,
}

type Vectors = HashMap<String, HashMap<String, MediaVectors>>;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    media_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    start_s REAL NOT NULL,
    end_s REAL NOT NULL,
    text TEXT NOT NULL,
    title TEXT,
    model TEXT NOT NULL,
    vector BLOB NOT NULL,
    qvector BLOB NOT NULL,
    qscale REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_media ON chunks(media_id, seq);
CREATE INDEX IF NOT EXISTS chunks_tenant ON chunks(tenant);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(text, content='chunks', content_rowid='id',
    tokenize='porter unicode61');
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
";

/// Symmetric int8 quantisation of one vector: `x ≈ q * scale`.
fn quantize(v: &[f32]) -> (Vec<i8>, f32) {
    let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    if max == 0.0 {
        return (vec![0; v.len()], 0.0);
    }
    let scale = max / 127.0;
    (v.iter().map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8).collect(), scale)
}

fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    // i16 products summed in i32 lanes: the compiler vectorises this loop.
    a.iter().zip(b).map(|(&x, &y)| i32::from(i16::from(x) * i16::from(y))).sum()
}

fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn from_blob(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// A candidate in a bounded min-heap by score.
#[derive(PartialEq)]
struct Scored(f32, i64);
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    // Reversed: the heap's top is the worst candidate kept.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.0.total_cmp(&self.0).then(other.1.cmp(&self.1))
    }
}

/// English function words: they match nearly every chunk, add nothing to BM25's ranking and
/// make the match set (which FTS5 scores in full) as large as the index.
const STOPWORDS: &[&str] = &[
    "a", "about", "above", "after", "again", "all", "am", "an", "and", "any", "are", "as", "at", "be", "because",
    "been", "before", "being", "between", "both", "but", "by", "can", "could", "did", "do", "does", "doing", "down",
    "during", "each", "few", "for", "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers",
    "him", "his", "how", "i", "if", "in", "into", "is", "it", "its", "just", "me", "more", "most", "my", "no", "nor",
    "not", "of", "off", "on", "once", "only", "or", "other", "our", "out", "over", "own", "same", "she", "should",
    "so", "some", "such", "than", "that", "the", "their", "them", "then", "there", "these", "they", "this", "those",
    "through", "to", "too", "under", "until", "up", "very", "was", "we", "were", "what", "when", "where", "which",
    "while", "who", "whom", "why", "will", "with", "would", "you", "your",
];

/// The FTS5 query of free text before frequent terms are left out (see `lexical`): every word
/// quoted (so no query syntax leaks through), stopwords dropped (unless nothing else is left),
/// joined with OR; BM25 ranks chunks matching more (and rarer) words first.
#[cfg(test)]
fn fts_query(text: &str) -> Option<String> {
    let terms = fts_terms(text);
    (!terms.is_empty()).then(|| terms.join(" OR "))
}

/// The quoted FTS5 terms of free text: stopwords dropped unless nothing else is left.
fn fts_terms(text: &str) -> Vec<String> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .map(|w| w.trim_matches('\'').to_lowercase())
        .filter(|w| !w.is_empty())
        .collect();
    let content: Vec<&String> = words.iter().filter(|w| !STOPWORDS.contains(&w.as_str())).collect();
    let chosen: Vec<&String> = if content.is_empty() { words.iter().collect() } else { content };
    chosen.iter().map(|w| format!("\"{w}\"")).collect()
}

/// A query term matching more chunks than this is left out of the lexical query (the rarest term
/// is always kept): BM25 gives such a term little weight, and scoring every chunk it matches is
/// what made lexical search cost seconds at a million chunks.
const FREQUENT_TERM_CHUNKS: i64 = 2000;

impl Index {
    /// Opens (creating) the index file; every tenant's vectors are loaded into memory on first use.
    pub fn open(path: &Path) -> Result<Self> {
        let db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.busy_timeout(std::time::Duration::from_secs(10))?;
        db.execute_batch(SCHEMA)?;
        Ok(Self { db: Mutex::new(db), mem: std::sync::OnceLock::new(), loading: Mutex::new(()) })
    }

    /// The in-memory vectors, read from SQLite the first time.
    fn mem(&self) -> Result<&RwLock<Vectors>> {
        if let Some(m) = self.mem.get() {
            return Ok(m);
        }
        let _loading = self.loading.lock().map_err(|_| Error::Poisoned)?;
        if let Some(m) = self.mem.get() {
            return Ok(m);
        }
        let mut mem = Vectors::new();
        {
            let db = self.db.lock().map_err(|_| Error::Poisoned)?;
            let mut stmt =
                db.prepare("SELECT id, tenant, media_id, qvector, qscale FROM chunks ORDER BY media_id, seq")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let (id, tenant, media): (i64, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
                let q: Vec<u8> = r.get(3)?;
                let m = mem.entry(tenant).or_default().entry(media).or_default();
                m.ids.push(id);
                m.scales.push(r.get(4)?);
                m.q.extend(q.iter().map(|&b| b as i8));
            }
        }
        Ok(self.mem.get_or_init(|| RwLock::new(mem)))
    }

    /// Replaces every chunk of `media_id` atomically (an empty list removes the media).
    pub fn replace_media(
        &self,
        tenant: &str,
        media_id: &str,
        title: Option<&str>,
        model: &str,
        chunks: &[NewChunk],
    ) -> Result<()> {
        if let Some(c) = chunks.iter().find(|c| c.vector.len() != DIM) {
            return Err(Error::Dimensions { got: c.vector.len() });
        }
        let mut fresh = MediaVectors::default();
        // The write lock is held across the transaction and the swap: a search (which holds the
        // read lock from its first read to its last) sees the media before or after, never between.
        let mut mem = self.mem()?.write().map_err(|_| Error::Poisoned)?;
        {
            let mut db = self.db.lock().map_err(|_| Error::Poisoned)?;
            let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute("DELETE FROM chunks WHERE media_id = ?1", [media_id])?;
            {
                let mut ins = tx.prepare(
                    "INSERT INTO chunks (tenant, media_id, seq, start_s, end_s, text, title, model, vector, qvector, qscale)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )?;
                for (seq, c) in chunks.iter().enumerate() {
                    let (q, scale) = quantize(&c.vector);
                    let qb: Vec<u8> = q.iter().map(|&x| x as u8).collect();
                    ins.execute(params![
                        tenant,
                        media_id,
                        seq as i64,
                        c.start_s,
                        c.end_s,
                        c.text,
                        title,
                        model,
                        to_blob(&c.vector),
                        qb,
                        scale
                    ])?;
                    fresh.ids.push(tx.last_insert_rowid());
                    fresh.scales.push(scale);
                    fresh.q.extend(q);
                }
            }
            tx.commit()?;
        }
        let t = mem.entry(tenant.to_string()).or_default();
        if fresh.ids.is_empty() {
            t.remove(media_id);
        } else {
            t.insert(media_id.to_string(), fresh);
        }
        Ok(())
    }

    /// Chunks stored for a media, and the model that embedded them.
    pub fn media_chunks(&self, media_id: &str) -> Result<(usize, Option<String>)> {
        let db = self.db.lock().map_err(|_| Error::Poisoned)?;
        let n: i64 = db.query_row("SELECT count(*) FROM chunks WHERE media_id = ?1", [media_id], |r| r.get(0))?;
        let model = db
            .query_row("SELECT model FROM chunks WHERE media_id = ?1 LIMIT 1", [media_id], |r| r.get(0))
            .optional()?;
        Ok((n as usize, model))
    }

    /// Total chunks held in memory (all tenants).
    pub fn len(&self) -> usize {
        self.mem()
            .ok()
            .and_then(|m| m.read().ok())
            .map(|m| m.values().flat_map(|t| t.values()).map(|v| v.ids.len()).sum())
            .unwrap_or(0)
    }

    /// True when no chunk is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs a search; results are the tenant's only.
    pub fn search(&self, q: &Query) -> Result<Vec<Hit>> {
        let k = q.k.clamp(1, 100);
        let mem = self.mem()?.read().map_err(|_| Error::Poisoned)?;
        let mem = &*mem;
        let ranked: Vec<(i64, f64)> = match (q.mode, q.vector) {
            (Mode::Lexical, _) | (Mode::Hybrid, None) => self.lexical(q, k)?,
            (Mode::Vector, None) => Vec::new(),
            (Mode::Vector, Some(v)) => self.vector(mem, q, v, k)?,
            (Mode::Hybrid, Some(v)) => {
                // Fuse deeper lists than asked for, so a chunk ranked moderately by both can win.
                let depth = (k * 5).max(50);
                fuse(&[self.vector(mem, q, v, depth)?, self.lexical(q, depth)?], k)
            }
        };
        self.hits(&ranked)
    }

    fn vector(&self, mem: &Vectors, q: &Query, v: &[f32], k: usize) -> Result<Vec<(i64, f64)>> {
        if v.len() != DIM {
            return Err(Error::Dimensions { got: v.len() });
        }
        let (qq, _) = quantize(v);
        let keep = k * RESCORE_FACTOR;
        let mut heap: BinaryHeap<Scored> = BinaryHeap::with_capacity(keep + 1);
        {
            let Some(tenant) = mem.get(q.tenant) else { return Ok(Vec::new()) };
            let media: Box<dyn Iterator<Item = &MediaVectors>> = match q.media_id {
                Some(m) => Box::new(tenant.get(m).into_iter()),
                None => Box::new(tenant.values()),
            };
            for mv in media {
                for (i, (&id, &scale)) in mv.ids.iter().zip(&mv.scales).enumerate() {
                    let s = dot_i8(&mv.q[i * DIM..(i + 1) * DIM], &qq) as f32 * scale;
                    if heap.len() < keep {
                        heap.push(Scored(s, id));
                    } else if heap.peek().is_some_and(|w| s > w.0) {
                        heap.pop();
                        heap.push(Scored(s, id));
                    }
                }
            }
        }
        // Exact rescoring with the stored f32 vectors.
        let db = self.db.lock().map_err(|_| Error::Poisoned)?;
        let mut stmt = db.prepare_cached("SELECT vector FROM chunks WHERE id = ?1")?;
        let mut exact = Vec::with_capacity(heap.len());
        for Scored(_, id) in heap.into_vec() {
            if let Some(blob) = stmt.query_row([id], |r| r.get::<_, Vec<u8>>(0)).optional()? {
                let s: f32 = from_blob(&blob).iter().zip(v).map(|(a, b)| a * b).sum();
                exact.push((id, f64::from(s)));
            }
        }
        exact.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        exact.truncate(k);
        Ok(exact)
    }

    fn lexical(&self, q: &Query, k: usize) -> Result<Vec<(i64, f64)>> {
        let terms = fts_terms(q.text);
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let db = self.db.lock().map_err(|_| Error::Poisoned)?;
        // How many chunks each term matches, counted only up to the cut (cheap: stops early).
        let mut probe =
            db.prepare_cached("SELECT count(*) FROM (SELECT 1 FROM chunks_fts WHERE chunks_fts MATCH ?1 LIMIT ?2)")?;
        let mut counted = Vec::with_capacity(terms.len());
        for t in &terms {
            counted.push((probe.query_row(params![t, FREQUENT_TERM_CHUNKS + 1], |r| r.get::<_, i64>(0))?, t));
        }
        let mut kept: Vec<&String> =
            counted.iter().filter(|(n, _)| *n <= FREQUENT_TERM_CHUNKS).map(|(_, t)| *t).collect();
        if kept.is_empty() {
            kept.extend(counted.iter().min_by_key(|(n, _)| *n).map(|(_, t)| *t));
        }
        let m = kept.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(" OR ");
        let mut stmt = db.prepare_cached(
            "SELECT c.id, bm25(chunks_fts) FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid
             WHERE chunks_fts MATCH ?1 AND c.tenant = ?2 AND (?3 IS NULL OR c.media_id = ?3)
             ORDER BY bm25(chunks_fts), c.id LIMIT ?4",
        )?;
        let rows = stmt.query_map(params![m, q.tenant, q.media_id, k as i64], |r| {
            Ok((r.get::<_, i64>(0)?, -r.get::<_, f64>(1)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn hits(&self, ranked: &[(i64, f64)]) -> Result<Vec<Hit>> {
        let db = self.db.lock().map_err(|_| Error::Poisoned)?;
        let mut stmt = db.prepare_cached("SELECT media_id, title, start_s, end_s, text FROM chunks WHERE id = ?1")?;
        let mut out = Vec::with_capacity(ranked.len());
        for &(id, score) in ranked {
            let hit = stmt
                .query_row([id], |r| {
                    Ok(Hit {
                        media_id: r.get(0)?,
                        title: r.get(1)?,
                        start_s: r.get(2)?,
                        end_s: r.get(3)?,
                        text: r.get(4)?,
                        score,
                    })
                })
                .optional()?;
            out.extend(hit);
        }
        Ok(out)
    }
}

/// Reciprocal rank fusion: `Σ 1 / (RRF_K + rank)` over the lists a chunk appears in.
fn fuse(lists: &[Vec<(i64, f64)>], k: usize) -> Vec<(i64, f64)> {
    let mut score: HashMap<i64, f64> = HashMap::new();
    for list in lists {
        for (rank, &(id, _)) in list.iter().enumerate() {
            *score.entry(id).or_default() += 1.0 / (RRF_K + rank as f64 + 1.0);
        }
    }
    let mut v: Vec<(i64, f64)> = score.into_iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(k);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let v: Vec<f32> = (0..DIM).map(|_| rng.random_range(-1.0..1.0)).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    fn chunk(seed: u64, text: &str, start: f64) -> NewChunk {
        NewChunk { start_s: start, end_s: start + 30.0, text: text.into(), vector: unit(seed) }
    }

    #[test]
    fn vector_lexical_and_hybrid_search_respect_tenants_and_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        let ix = Index::open(&path).unwrap();
        let a = [chunk(1, "forgiveness of debts and grace", 0.0), chunk(2, "the weather at sea", 30.0)];
        ix.replace_media("t1", "m1", Some("Sermon"), "test", &a).unwrap();
        ix.replace_media("t2", "m2", None, "test", &[chunk(1, "forgiveness of debts and grace", 0.0)]).unwrap();
        let q = |tenant, text, vector: Option<&'static [f32]>, mode| Query {
            tenant,
            text,
            vector,
            k: 5,
            mode,
            media_id: None,
        };
        let v1: &'static [f32] = Box::leak(unit(1).into_boxed_slice());
        let hits = ix.search(&q("t1", "", Some(v1), Mode::Vector)).unwrap();
        assert_eq!(hits[0].media_id, "m1");
        assert_eq!((hits[0].start_s, hits[0].title.as_deref()), (0.0, Some("Sermon")));
        assert!((hits[0].score - 1.0).abs() < 1e-4, "{}", hits[0].score);
        assert!(hits.iter().all(|h| h.media_id == "m1"), "tenant t1 sees t2's chunk: {hits:?}");
        let lex = ix.search(&q("t1", "Debts? \"OR\" (grace*", None, Mode::Lexical)).unwrap();
        assert_eq!(lex.len(), 1);
        assert_eq!(lex[0].text, "forgiveness of debts and grace");
        let hy = ix.search(&q("t2", "weather", Some(v1), Mode::Hybrid)).unwrap();
        assert!(hy.iter().all(|h| h.media_id == "m2"), "{hy:?}");
        assert!(ix.search(&q("nobody", "grace", Some(v1), Mode::Hybrid)).unwrap().is_empty());

        // Replacing a media swaps all of its chunks; reopening reloads what was stored.
        ix.replace_media("t1", "m1", Some("Sermon"), "test", &[chunk(3, "sailing ships", 60.0)]).unwrap();
        drop(ix);
        let ix = Index::open(&path).unwrap();
        assert_eq!(ix.len(), 2);
        assert_eq!(ix.media_chunks("m1").unwrap(), (1, Some("test".to_string())));
        assert!(ix.search(&q("t1", "grace", None, Mode::Lexical)).unwrap().is_empty());
        assert_eq!(ix.search(&q("t1", "ships", None, Mode::Lexical)).unwrap()[0].start_s, 60.0);
        let bad = NewChunk { vector: vec![0.0; 3], ..chunk(4, "x", 0.0) };
        assert!(matches!(ix.replace_media("t1", "m9", None, "test", &[bad]), Err(Error::Dimensions { got: 3 })));
    }

    #[test]
    fn int8_scan_with_rescoring_finds_the_exact_top_k() {
        let dir = tempfile::tempdir().unwrap();
        let ix = Index::open(&dir.path().join("i.sqlite")).unwrap();
        let chunks: Vec<NewChunk> = (0..2000).map(|i| chunk(100 + i, "x", i as f64)).collect();
        ix.replace_media("t", "m", None, "test", &chunks).unwrap();
        for probe in 0..20u64 {
            let v = unit(10_000 + probe);
            let mut exact: Vec<(usize, f32)> = chunks
                .iter()
                .enumerate()
                .map(|(i, c)| (i, c.vector.iter().zip(&v).map(|(a, b)| a * b).sum()))
                .collect();
            exact.sort_by(|a, b| b.1.total_cmp(&a.1));
            let want: Vec<f64> = exact[..10].iter().map(|(i, _)| *i as f64).collect();
            let got: Vec<f64> = ix
                .search(&Query { tenant: "t", text: "", vector: Some(&v), k: 10, mode: Mode::Vector, media_id: None })
                .unwrap()
                .iter()
                .map(|h| h.start_s)
                .collect();
            let found = want.iter().filter(|w| got.contains(w)).count();
            assert!(found >= 9, "probe {probe}: recall@10 {found}/10");
        }
    }

    /// A word in most chunks is left out of the lexical query when rarer words are there.
    #[test]
    fn frequent_words_are_left_out_of_lexical_queries() {
        let dir = tempfile::tempdir().unwrap();
        let ix = Index::open(&dir.path().join("i.sqlite")).unwrap();
        let n = FREQUENT_TERM_CHUNKS as u64 + 100;
        let chunks: Vec<NewChunk> =
            (0..n).map(|i| chunk(i, if i % 500 == 7 { "sermon harvest" } else { "sermon words" }, i as f64)).collect();
        ix.replace_media("t", "m", None, "test", &chunks).unwrap();
        let q =
            Query { tenant: "t", text: "sermon harvest", vector: None, k: 100, mode: Mode::Lexical, media_id: None };
        let hits = ix.search(&q).unwrap();
        assert_eq!(hits.len(), 5, "only the chunks with the rare word: {}", hits.len());
        assert!(hits.iter().all(|h| h.text.contains("harvest")));
        // Only frequent words: the rarest of them is used.
        let q = Query { text: "sermon", ..q };
        assert_eq!(ix.search(&q).unwrap().len(), 100);
    }

    #[test]
    fn rrf_rewards_agreement() {
        let fused = fuse(&[vec![(1, 0.9), (2, 0.8), (3, 0.7)], vec![(3, 5.0), (4, 4.0)]], 4);
        assert_eq!(fused[0].0, 3, "{fused:?}");
        assert_eq!(fused.len(), 4);
        assert_eq!(fts_query("  ?! "), None);
        assert_eq!(fts_query("Grace, \"debt\"").unwrap(), "\"grace\" OR \"debt\"");
        assert_eq!(fts_query("where did he talk about the debt").unwrap(), "\"talk\" OR \"debt\"");
        assert_eq!(
            fts_query("to be or not to be").unwrap(),
            "\"to\" OR \"be\" OR \"or\" OR \"not\" OR \"to\" OR \"be\""
        );
    }

    /// While one thread keeps replacing a media's 50 chunks with another version, searches from
    /// another thread only ever see one version whole.
    #[test]
    fn searches_never_see_a_half_replaced_media() {
        let dir = tempfile::tempdir().unwrap();
        let ix = std::sync::Arc::new(Index::open(&dir.path().join("i.sqlite")).unwrap());
        let version = |v: u64| -> Vec<NewChunk> {
            (0..50).map(|i| chunk(v * 1000 + i, &format!("version{v} common words"), i as f64)).collect()
        };
        ix.replace_media("t", "m", None, "test", &version(1)).unwrap();
        let writer = {
            let ix = ix.clone();
            std::thread::spawn(move || {
                for round in 0..40 {
                    ix.replace_media("t", "m", None, "test", &version(1 + round % 2)).unwrap();
                }
            })
        };
        let probe = unit(5);
        let mut seen = 0;
        while !writer.is_finished() || seen == 0 {
            for mode in [Mode::Lexical, Mode::Vector, Mode::Hybrid] {
                let q = Query { tenant: "t", text: "common", vector: Some(&probe), k: 100, mode, media_id: None };
                let hits = ix.search(&q).unwrap();
                let versions: std::collections::HashSet<&str> =
                    hits.iter().map(|h| h.text.split(' ').next().unwrap()).collect();
                assert!(versions.len() == 1 && hits.len() == 50, "{mode:?}: {} hits of {versions:?}", hits.len());
            }
            seen += 1;
        }
        writer.join().unwrap();
    }
}
