//! What every upload path (`POST /v1/media`, tus) shares before an upload is accepted:
//!
//! - [`TimedBody`]: a request body with an idle timeout and a minimum rate (`upload.idle-timeout`,
//!   `upload.min-rate`), so a stalled or trickling client loses its slot (408) instead of holding
//!   it for ever;
//! - [`Space`]: admission against free disk (`data.min-free-bytes`, 507 + `Retry-After`), counting
//!   the bytes uploads in flight have announced;
//! - [`sniff_head`] / [`validate_stored`]: the verdict on a file's head, and on the whole stored
//!   file when the head could not tell (an M4A whose `moov` sits at the end);
//! - [`clean_text`]: titles and URLs are bounded and free of control characters;
//! - [`storage_error`]: a full disk is 507 on every path, other I/O failures 503.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::error::PayloadError;
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use super::ApiError;
use crate::media::probe::{SNIFF_MAX_BYTES, SniffInfo, sniff};

/// Longest accepted text field (title, callback URL), in bytes.
pub const MAX_TEXT_FIELD: usize = 2048;
/// How long a client told to come back after a full disk should wait.
const DISK_RETRY_AFTER_S: u32 = 60;

/// Why a body was cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// Nothing arrived for `upload.idle-timeout`.
    Idle,
    /// Less than `upload.min-rate` arrived over a window.
    TooSlow,
}

impl Stall {
    /// The 408 a cut-off body answers (its connection is closed).
    pub fn error(self, limits: &BodyLimits) -> ApiError {
        let message = match self {
            Stall::Idle => format!("no upload data for {} s; resume or retry", limits.idle.as_secs()),
            Stall::TooSlow => {
                format!("the upload is slower than {} bytes/s; resume or retry on a better link", limits.min_rate)
            }
        };
        let code = if self == Stall::Idle { "upload_timeout" } else { "upload_too_slow" };
        ApiError::new(StatusCode::REQUEST_TIMEOUT, code, message).close()
    }
}

/// The body timing rules, from `[upload]`.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub idle: Duration,
    /// Bytes per second, averaged over each `idle` window; 0: none.
    pub min_rate: u64,
}

impl BodyLimits {
    pub fn from_config(u: &crate::config::UploadOptions) -> Self {
        Self { idle: u.idle_timeout, min_rate: u.min_rate }
    }
}

/// A request body that ends with an error when the client stalls: nothing for `idle`, or less
/// than `min_rate` bytes/s over a window of `idle`. Which of the two happened is left in
/// [`TimedBody::stalled`] (the error itself must be a [`PayloadError`] for multipart's sake).
pub struct TimedBody<S> {
    inner: S,
    limits: BodyLimits,
    sleep: Pin<Box<Sleep>>,
    window_start: Instant,
    window_bytes: u64,
    stalled: Rc<Cell<Option<Stall>>>,
}

impl<S> TimedBody<S> {
    pub fn new(inner: S, limits: BodyLimits) -> Self {
        let now = Instant::now();
        Self {
            inner,
            limits,
            sleep: Box::pin(tokio::time::sleep_until(now + limits.idle)),
            window_start: now,
            window_bytes: 0,
            stalled: Rc::default(),
        }
    }

    /// Whether (and why) the body was cut off; shared, so it can be read after the stream moved.
    pub fn stalled(&self) -> Rc<Cell<Option<Stall>>> {
        self.stalled.clone()
    }

    fn cut(&mut self, why: Stall) -> Poll<Option<Result<Bytes, PayloadError>>> {
        self.stalled.set(Some(why));
        Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "upload stalled")))))
    }

    /// Counts `n` bytes; false when the window just closed below the minimum rate.
    fn account(&mut self, n: usize, now: Instant) -> bool {
        self.window_bytes += n as u64;
        let elapsed = now.duration_since(self.window_start);
        if elapsed < self.limits.idle {
            return true;
        }
        let needed = (self.limits.min_rate as f64 * elapsed.as_secs_f64()) as u64;
        let ok = self.window_bytes >= needed;
        self.window_start = now;
        self.window_bytes = 0;
        ok
    }
}

impl<S: Stream<Item = Result<Bytes, PayloadError>> + Unpin> Stream for TimedBody<S> {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.stalled.get().is_some() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(bytes))) => {
                let now = Instant::now();
                let deadline = now + self.limits.idle;
                self.sleep.as_mut().reset(deadline);
                if !self.account(bytes.len(), now) {
                    return self.cut(Stall::TooSlow);
                }
                Poll::Ready(Some(Ok(bytes)))
            }
            Poll::Ready(other) => Poll::Ready(other),
            Poll::Pending => match self.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => self.cut(Stall::Idle),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// The answer for a body that ended in an error: 408 when we cut it off, else the client went
/// away or sent a broken body (nobody may be listening; the answer is for the log).
pub fn body_error(stalled: Option<Stall>, limits: &BodyLimits, e: impl std::fmt::Display) -> ApiError {
    match stalled {
        Some(why) => why.error(limits),
        None => {
            ApiError::new(StatusCode::BAD_REQUEST, "incomplete_body", format!("the upload body broke off: {e}")).close()
        }
    }
}

/// Free-disk admission for uploads: refuses (507 + `Retry-After`) an upload that would leave less
/// than `data.min-free-bytes` free, counting what uploads in flight announced they will still write.
#[derive(Debug)]
pub struct Space {
    dir: std::path::PathBuf,
    floor: u64,
    reserved: AtomicU64,
}

/// Bytes an admitted upload announced; given back when it ends.
pub struct Reservation {
    space: Arc<Space>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.space.reserved.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl Space {
    pub fn new(dir: std::path::PathBuf, floor: u64) -> Self {
        Self { dir, floor, reserved: AtomicU64::new(0) }
    }

    /// Free bytes on the data dir's filesystem (None if it cannot be read).
    pub fn free(&self) -> Option<u64> {
        free_bytes(&self.dir)
    }

    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Admits an upload that will write `bytes` more (0 when unknown: then only the floor counts).
    pub fn admit(self: &Arc<Self>, bytes: u64) -> Result<Reservation, ApiError> {
        let free = self.free().unwrap_or(u64::MAX);
        let reserved = self.reserved.fetch_add(bytes, Ordering::Relaxed);
        let reservation = Reservation { space: self.clone(), bytes };
        if free.saturating_sub(reserved).saturating_sub(bytes) < self.floor {
            return Err(disk_full());
        }
        Ok(reservation)
    }

    /// Checks again while a body of unknown length streams in.
    pub fn still_room(&self) -> Result<(), ApiError> {
        match self.free() {
            Some(f) if f < self.floor => Err(disk_full()),
            _ => Ok(()),
        }
    }
}

pub use crate::storage::free_bytes;

fn disk_full() -> ApiError {
    ApiError::new(
        StatusCode::INSUFFICIENT_STORAGE,
        "insufficient_storage",
        "the server is low on disk space; retry later",
    )
    .retry_after(DISK_RETRY_AFTER_S)
}

/// A storage failure while receiving: a full disk is 507, anything else 503; both say when to retry.
pub fn storage_error(e: &std::io::Error) -> ApiError {
    tracing::error!(error = %e, "upload storage failed");
    if e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) {
        return disk_full();
    }
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", "the upload could not be stored; retry later")
        .retry_after(30)
}

/// The verdict on an upload's head. `Ok(true)`: the stream's headers parsed; `Ok(false)`: the
/// container is recognised but its index lies beyond the head, so the stored file must pass
/// [`validate_stored`] before it is accepted.
pub async fn sniff_head(head: Vec<u8>) -> Result<bool, ApiError> {
    let verdict = actix_web::web::block(move || sniff(&head)).await?;
    verdict.map(|s: SniffInfo| s.complete).map_err(media_verdict)
}

/// Decodes the first second of a stored upload (a full open: the container may seek to an index
/// at the end of the file; nothing is read whole into memory).
pub async fn validate_stored(path: std::path::PathBuf) -> Result<(), ApiError> {
    actix_web::web::block(move || crate::media::probe::validate(&path)).await?.map_err(media_verdict)
}

/// A media error at upload time: the file's fault (415) unless it was ours (a decoder panic: 500;
/// an I/O failure: 503).
fn media_verdict(e: crate::media::Error) -> ApiError {
    match e {
        crate::media::Error::Panic(msg) => {
            tracing::error!(panic = %msg, "the decoder panicked while inspecting an upload");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "inspection_failed",
                "the server failed while inspecting the upload (not a fault of the file); retry later",
            )
        }
        crate::media::Error::Io(e) => storage_error(&e),
        e => ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, e.code(), format!("not a supported audio file: {e}")),
    }
}

/// Staging files being written now: the sweeper never removes these.
#[derive(Debug, Default)]
pub struct InFlight(std::sync::Mutex<std::collections::HashSet<std::path::PathBuf>>);

/// One staging file held while its upload runs.
pub struct Held {
    set: Arc<InFlight>,
    path: std::path::PathBuf,
}

impl InFlight {
    pub fn hold(self: &Arc<Self>, path: &std::path::Path) -> Held {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(path.to_path_buf());
        Held { set: self.clone(), path: path.to_path_buf() }
    }

    pub fn contains(&self, path: &std::path::Path) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).contains(path)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.set.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.path);
    }
}

/// How many bytes of a head the sniff looks at.
pub const HEAD_BYTES: usize = SNIFF_MAX_BYTES;

/// A title, callback URL or similar: at most [`MAX_TEXT_FIELD`] bytes, no control characters.
pub fn clean_text(field: &str, value: String) -> Result<String, ApiError> {
    let bad = |why: &str| ApiError::new(StatusCode::BAD_REQUEST, &format!("invalid_{field}"), format!("{field} {why}"));
    if value.len() > MAX_TEXT_FIELD {
        return Err(bad("is longer than 2 KiB"));
    }
    if value.chars().any(char::is_control) {
        return Err(bad("contains control characters (NUL, escape, CR, LF, tab, ...)"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn limits() -> BodyLimits {
        BodyLimits { idle: Duration::from_secs(30), min_rate: 1024 }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_body_is_cut_after_the_idle_timeout() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, PayloadError>>(4);
        let stream = tokio_stream_from(rx);
        let mut body = TimedBody::new(stream, limits());
        let stalled = body.stalled();
        tx.send(Ok(Bytes::from_static(b"abc"))).await.unwrap();
        assert_eq!(body.next().await.unwrap().unwrap(), Bytes::from_static(b"abc"));
        let started = Instant::now();
        assert!(body.next().await.unwrap().is_err(), "silence must end the body");
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert_eq!(stalled.get(), Some(Stall::Idle));
        assert!(body.next().await.is_none());
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_below_the_minimum_rate_is_cut() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, PayloadError>>(4);
        let mut body = TimedBody::new(tokio_stream_from(rx), limits());
        let stalled = body.stalled();
        tokio::spawn(async move {
            // One byte every 100 ms: 10 B/s, far below 1 KiB/s.
            while tx.send(Ok(Bytes::from_static(b"x"))).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let started = Instant::now();
        let mut got = 0;
        while let Some(item) = body.next().await {
            match item {
                Ok(b) => got += b.len(),
                Err(_) => break,
            }
        }
        assert_eq!(stalled.get(), Some(Stall::TooSlow));
        assert!(started.elapsed() <= Duration::from_secs(31), "{:?}", started.elapsed());
        assert!(got < 400, "{got}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_body_passes() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, PayloadError>>(4);
        let mut body = TimedBody::new(tokio_stream_from(rx), limits());
        tokio::spawn(async move {
            for _ in 0..200 {
                tx.send(Ok(Bytes::from(vec![0u8; 2048]))).await.unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let mut got = 0;
        while let Some(item) = body.next().await {
            got += item.unwrap().len();
        }
        assert_eq!(got, 200 * 2048);
        assert_eq!(body.stalled().get(), None);
    }

    fn tokio_stream_from(
        mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, PayloadError>>,
    ) -> impl Stream<Item = Result<Bytes, PayloadError>> + Unpin {
        Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }

    #[test]
    fn text_fields_are_bounded_and_clean() {
        assert_eq!(clean_text("title", "Sunday — grace".into()).unwrap(), "Sunday — grace");
        for bad in ["a\0b", "a\x1b[31m", "line\r\nInjected: 1", "tab\there"] {
            assert_eq!(clean_text("title", bad.into()).unwrap_err().code, "invalid_title", "{bad:?}");
        }
        assert!(clean_text("title", "x".repeat(2049)).is_err());
        assert!(clean_text("title", "é".repeat(1024)).is_ok());
    }
}
