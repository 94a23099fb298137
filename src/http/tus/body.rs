//! A PATCH's body and what follows it: appending to the `.part` file (fsynced, also when the body
//! stops early), the sniff of its head, and turning a complete upload into media + job.

use std::io::Write;

use actix_web::http::StatusCode;
use actix_web::web;
use futures_util::StreamExt;

use super::super::intake::{self, BodyLimits, HEAD_BYTES, TimedBody};
use super::super::{ApiError, State, Upload, accept_upload};
use super::store::{Info, OpenUploads, UploadLock, save};
use super::{dir, io_err, tus_err};

/// How a PATCH body ended.
pub(super) enum BodyEnd {
    /// All of it arrived (or the client closed the stream cleanly).
    Complete,
    /// Stopped early: the answer for this PATCH (what arrived is kept).
    Stopped(ApiError),
}

/// Appends the body to the `.part` file from `offset`, fsyncing before it returns. Stops when the
/// body stalls, the client goes away, or another PATCH wants the upload; what arrived is kept.
pub(super) async fn append(
    state: &State,
    lock: &UploadLock,
    payload: web::Payload,
    data: &std::path::Path,
    offset: u64,
    length: u64,
) -> Result<(u64, BodyEnd), ApiError> {
    let limits = BodyLimits::from_config(&state.app.config.upload);
    let mut body = TimedBody::new(payload, limits);
    let stalled = body.stalled();
    let mut file = std::fs::OpenOptions::new().append(true).open(data).map_err(io_err)?;
    let (mut written, mut buf, mut end) = (offset, Vec::new(), BodyEnd::Complete);
    loop {
        let next = tokio::select! {
            next = body.next() => next,
            () = lock.wanted() => {
                end = BodyEnd::Stopped(tus_err(StatusCode::CONFLICT, "upload_taken_over",
                    "another PATCH of this upload took over; what arrived was kept").close());
                break;
            }
        };
        let chunk = match next {
            None => break,
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => {
                end = BodyEnd::Stopped(intake::body_error(stalled.get(), &limits, e));
                break;
            }
        };
        if written + buf.len() as u64 + chunk.len() as u64 > length {
            end = BodyEnd::Stopped(
                tus_err(StatusCode::BAD_REQUEST, "beyond_length", "more bytes than Upload-Length").close(),
            );
            break;
        }
        buf.extend_from_slice(&chunk);
        if buf.len() >= 1 << 20 {
            let out = std::mem::take(&mut buf);
            let (f, r) = web::block(move || {
                let r = file.write_all(&out).map(|_| out.len());
                (file, r)
            })
            .await?;
            file = f;
            written += r.map_err(io_err)? as u64;
        }
    }
    let (_, r) = web::block(move || {
        let r = file.write_all(&buf).and_then(|_| file.sync_all()).map(|_| buf.len());
        (file, r)
    })
    .await?;
    written += r.map_err(io_err)? as u64;
    Ok((written, end))
}

/// Reads the head of the `.part` file and sniffs it; a refused file is removed with its sidecar.
pub(super) async fn sniff_upload(
    state: &State,
    info: &mut Info,
    data: &std::path::Path,
    side: &std::path::Path,
) -> Result<(), ApiError> {
    let path = data.to_path_buf();
    let head = web::block(move || -> std::io::Result<Vec<u8>> {
        let mut h = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(std::fs::File::open(path)?, HEAD_BYTES as u64), &mut h)?;
        Ok(h)
    })
    .await?
    .map_err(io_err)?;
    match intake::sniff_head(head).await {
        Ok(complete) => {
            info.sniffed = true;
            info.validate = !complete;
            let (s, i) = (side.to_path_buf(), info.clone());
            web::block(move || save(&s, &i)).await?.map_err(io_err)
        }
        Err(e) if e.status == StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            remove(state, info, data, side);
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// Forgets an upload: its files and its place in the caps.
pub(super) fn remove(state: &State, info: &Info, data: &std::path::Path, side: &std::path::Path) {
    let _ = std::fs::remove_file(data);
    let _ = std::fs::remove_file(side);
    OpenUploads::with(&dir(state), state.app.clock.now_ms(), |o| o.close(&info.id));
}

/// Turns a complete upload into media + ingest job (idempotent on the upload id).
pub(super) async fn finish(
    state: &web::Data<State>,
    info: &mut Info,
    data: &std::path::Path,
) -> Result<(String, String), ApiError> {
    if let (Some(m), Some(j)) = (&info.media_id, &info.job_id) {
        return Ok((m.clone(), j.clone()));
    }
    let meta = serde_json::json!({
        "upload": {"bytes": info.length, "via": "tus", "upload_id": info.id,
                   "filename": info.metadata.get("filename"), "content_type": info.metadata.get("filetype")},
        "callback_url": info.metadata.get("callback_url").filter(|u| !u.is_empty()),
        "playback_policy": info.metadata.get("playback_policy").map(String::as_str).unwrap_or("public"),
    });
    let up = Upload {
        tenant: info.tenant.clone(),
        idempotency_key: Some(format!("tus:{}", info.id)),
        staged: data.to_path_buf(),
        keep_staged: true,
        title: info.metadata.get("title").cloned(),
        meta,
    };
    let e = accept_upload(state, up).await?;
    let media = e.job.media_id.clone().unwrap_or_default();
    info.media_id = Some(media.clone());
    info.job_id = Some(e.job.id.clone());
    tracing::info!(upload.id = %info.id, media.id = %media, job.id = %e.job.id, "tus upload complete");
    Ok((media, e.job.id))
}
