//! The job API in-process (actix test service over a real SQLite journal): shapes, pagination,
//! actions, and JSON errors for every failure path.

use std::sync::Arc;

use actix_web::{App as WebApp, http::StatusCode, test, web};
use lectern::app::{App, EnqueueRequest};
use lectern::clock::SystemClock;
use lectern::config::Config;
use lectern::engine::{JobKind, Registry, StepContext, StepError, StepOutput};
use lectern::http::{State, configure};
use lectern::journal::SqliteJournal;
use lectern::metrics::Metrics;
use serde_json::Value;

fn app(dir: &std::path::Path) -> App {
    let journal = Arc::new(SqliteJournal::open(&dir.join("journal.db")).unwrap());
    let registry = Registry::new()
        .kind(JobKind::new("two", &[("a", "s", &[]), ("b", "s", &["a"])]))
        .executor("s", |_: &StepContext| -> Result<StepOutput, StepError> { Ok(StepOutput::default()) });
    App::with(journal, Arc::new(SystemClock), Config::default(), registry)
}

macro_rules! service {
    ($app:expr) => {
        test::init_service(
            WebApp::new()
                .app_data(web::Data::new(State::new(
                    $app.clone(),
                    Arc::new(Metrics::new()),
                    Arc::new(lectern::storage::LocalFs::new("/nonexistent")),
                )))
                .configure(configure),
        )
        .await
    };
}

async fn call(
    svc: &impl actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
    req: test::TestRequest,
) -> (StatusCode, Value) {
    let resp = test::call_service(svc, req.to_request()).await;
    let status = resp.status();
    let body = test::read_body(resp).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn assert_error(status: StatusCode, body: &Value, want_status: StatusCode, code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

#[actix_web::test]
async fn jobs_are_listed_newest_first_in_pages() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    let ids: Vec<String> = (0..5)
        .map(|_| app.enqueue(EnqueueRequest { kind: "two".into(), ..Default::default() }).unwrap().job.id)
        .collect();
    let svc = service!(app);
    let mut seen = Vec::new();
    let mut uri = "/v1/jobs?limit=2".to_string();
    loop {
        let (status, body) = call(&svc, test::TestRequest::get().uri(&uri)).await;
        assert_eq!(status, StatusCode::OK);
        for j in body["jobs"].as_array().unwrap() {
            seen.push(j["id"].as_str().unwrap().to_string());
            assert_eq!(j["state"], "queued");
            assert_eq!(j["steps"][0]["name"], "a");
            assert_eq!(j["steps"][1]["state"], "pending");
            assert!(j["created_at"].as_str().unwrap().ends_with('Z'));
        }
        match body["next_cursor"].as_i64() {
            Some(c) => uri = format!("/v1/jobs?limit=2&cursor={c}"),
            None => break,
        }
    }
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(seen, expected);
    let (_, body) = call(&svc, test::TestRequest::get().uri("/v1/jobs?state=cancelled")).await;
    assert_eq!(body["jobs"], serde_json::json!([]));
}

#[actix_web::test]
async fn a_job_is_shown_cancelled_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    let id = app.enqueue(EnqueueRequest { kind: "two".into(), ..Default::default() }).unwrap().job.id;
    let svc = service!(app);
    let (status, job) = call(&svc, test::TestRequest::get().uri(&format!("/v1/jobs/{id}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (job["id"].as_str(), job["kind"].as_str(), job["tenant"].as_str()),
        (Some(id.as_str()), Some("two"), Some("default"))
    );
    assert_eq!(job["events"][0]["kind"], "enqueued");
    assert_eq!(job["finished_at"], Value::Null);

    let (status, job) = call(&svc, test::TestRequest::post().uri(&format!("/v1/jobs/{id}/cancel"))).await;
    assert_eq!((status, job["state"].as_str()), (StatusCode::ACCEPTED, Some("cancelled")));
    let (status, body) = call(&svc, test::TestRequest::post().uri(&format!("/v1/jobs/{id}/cancel"))).await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");

    let (status, job) = call(&svc, test::TestRequest::post().uri(&format!("/v1/jobs/{id}/retry"))).await;
    assert_eq!((status, job["state"].as_str()), (StatusCode::ACCEPTED, Some("queued")));
    let (status, body) = call(&svc, test::TestRequest::post().uri(&format!("/v1/jobs/{id}/retry"))).await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");
}

#[actix_web::test]
async fn every_failure_is_a_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    let svc = service!(app);
    for (req, status, code) in [
        (test::TestRequest::get().uri("/v1/jobs/job_missing"), StatusCode::NOT_FOUND, "not_found"),
        (test::TestRequest::post().uri("/v1/jobs/job_missing/retry"), StatusCode::NOT_FOUND, "not_found"),
        (test::TestRequest::post().uri("/v1/jobs/job_missing/cancel"), StatusCode::NOT_FOUND, "not_found"),
        (test::TestRequest::get().uri("/v1/jobs/..%2F..%2Fetc%2Fpasswd"), StatusCode::NOT_FOUND, "not_found"),
        (test::TestRequest::get().uri("/v1/jobs?state=bogus"), StatusCode::BAD_REQUEST, "invalid_query"),
        (test::TestRequest::get().uri("/v1/jobs?limit=many"), StatusCode::BAD_REQUEST, "invalid_query"),
        (test::TestRequest::get().uri("/v1/jobs?sneaky=1"), StatusCode::BAD_REQUEST, "invalid_query"),
        (test::TestRequest::get().uri("/v1/nothing-here"), StatusCode::NOT_FOUND, "not_found"),
        (test::TestRequest::delete().uri("/v1/jobs"), StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        (test::TestRequest::get().uri("/readyz"), StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
    ] {
        let (got, body) = call(&svc, req).await;
        assert_error(got, &body, status, code);
    }
    let resp = test::call_service(&svc, test::TestRequest::get().uri("/metrics").to_request()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get("content-type").unwrap().to_str().unwrap().starts_with("text/plain"));
    let (status, body) = call(&svc, test::TestRequest::get().uri("/healthz")).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ok")));
}
