//! The journal conformance suite: every backend runs these same tests.
//!
//! A backend's test module calls [`journal_conformance_tests!`](crate::journal_conformance_tests)
//! with a factory `|dir: &Path| -> impl Journal` that opens a journal stored under `dir`; opening the
//! same `dir` twice must give the same data (the reopen test checks durability across handles).

use serde_json::json;

use super::*;

const T0: Millis = 1_767_225_600_000; // 2026-01-01

/// `probe → (transcode ∥ (transcribe → embed)) → notify`, the ingest shape.
pub fn ingest_steps() -> Vec<StepSpec> {
    let s = |name: &str, deps: &[&str]| StepSpec {
        name: name.into(),
        stage: name.into(),
        deps: deps.iter().map(|d| d.to_string()).collect(),
    };
    vec![
        s("probe", &[]),
        s("transcode", &["probe"]),
        s("transcribe", &["probe"]),
        s("embed", &["transcribe"]),
        s("notify", &["transcode", "embed"]),
    ]
}

pub fn new_job(tenant: &str) -> NewJob {
    NewJob {
        tenant: tenant.into(),
        media_id: None,
        kind: "ingest".into(),
        params: json!({"n": 1}),
        batch: None,
        idempotency_key: None,
        steps: ingest_steps(),
        new_media: None,
    }
}

const ALL: &[&str] = &["probe", "transcode", "transcribe", "embed", "notify"];

fn ready(j: &dyn Journal, queue: &str, now: Millis) -> Vec<ReadyStep> {
    j.ready_steps(queue, ALL, now, 100).unwrap()
}

fn claim_one(j: &dyn Journal, job: &str, step: &str, now: Millis) -> ClaimedStep {
    let q = j.job(job).unwrap().unwrap().queue;
    let r = ready(j, &q, now).into_iter().find(|r| r.job_id == job && r.step == step).expect("step is ready");
    j.claim(&[r], "node-a", now).unwrap().pop().unwrap().expect("claimed")
}

fn succeed(j: &dyn Journal, c: &ClaimedStep, now: Millis) -> Finished {
    let out = Outcome::Succeeded {
        output_ref: Some(format!("{}/{}", c.attempt.job_id, c.attempt.step)),
        sha256: Some("00".repeat(32)),
        output: Some(json!({"ok": true})),
    };
    j.finish(&[(c.attempt.clone(), out)], now).unwrap()[0]
}

fn state_of(j: &dyn Journal, job: &str, step: &str) -> StepState {
    j.job(job).unwrap().unwrap().step(step).unwrap().state
}

pub fn enqueue_creates_roots_queued_rest_pending(j: &dyn Journal) {
    let e = j.enqueue(new_job(DEFAULT_TENANT), T0).unwrap();
    assert!(!e.existing);
    let job = e.job;
    assert!(job.id.starts_with("job_"));
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.queue, "tenant:default");
    let states: Vec<_> = job.steps.iter().map(|s| (s.name.as_str(), s.state)).collect();
    assert_eq!(states[0], ("probe", StepState::Queued));
    assert!(states[1..].iter().all(|(_, s)| *s == StepState::Pending));
    assert_eq!(j.events(&job.id).unwrap()[0].kind, "enqueued");
    assert_eq!(j.job("job_nope").unwrap(), None);
}

pub fn enqueue_rejects_bad_dags_and_unknown_tenants(j: &dyn Journal) {
    let mut bad = new_job(DEFAULT_TENANT);
    bad.steps[0].deps = vec!["notify".into()];
    assert!(matches!(j.enqueue(bad, T0), Err(Error::Invalid(_))));
    assert!(matches!(j.enqueue(new_job("ten_missing"), T0), Err(Error::NotFound { .. })));
    assert!(j.jobs(&JobFilter::default()).unwrap().is_empty(), "nothing half-written");
    let default = j.tenant(DEFAULT_TENANT).unwrap().expect("the default tenant exists from the start");
    assert!(default.created_at > 1_700_000_000_000, "the default tenant has a real creation time: {default:?}");
}

pub fn idempotency_key_returns_same_job_for_24h(j: &dyn Journal) {
    let mut nj = new_job(DEFAULT_TENANT);
    nj.idempotency_key = Some("upload-1".into());
    let a = j.enqueue(nj.clone(), T0).unwrap();
    let b = j.enqueue(nj.clone(), T0 + 3_600_000).unwrap();
    assert!(b.existing);
    assert_eq!(a.job.id, b.job.id);
    let other = j.create_tenant("other", T0).unwrap();
    let mut theirs = nj.clone();
    theirs.tenant = other.id;
    assert!(!j.enqueue(theirs, T0).unwrap().existing, "keys are per tenant");
    let c = j.enqueue(nj, T0 + 25 * 3_600_000).unwrap();
    assert!(!c.existing, "a key expires after 24 h");
    assert_ne!(c.job.id, a.job.id);
}

pub fn claim_is_exclusive_and_counts_attempts(j: &dyn Journal) {
    let job = j.enqueue(new_job(DEFAULT_TENANT), T0).unwrap().job;
    let r = ready(j, "tenant:default", T0);
    assert_eq!(r.len(), 1);
    let first = j.claim(&r, "node-a", T0 + 1).unwrap();
    let c = first[0].as_ref().expect("first claim wins");
    assert_eq!(c.attempt.attempt, 1);
    assert_eq!(c.budget_used, 1);
    assert_eq!(c.params, json!({"n": 1}));
    assert_eq!(j.claim(&r, "node-b", T0 + 2).unwrap(), vec![None], "second claim loses");
    let job = j.job(&job.id).unwrap().unwrap();
    assert_eq!(job.state, JobState::Running);
    let probe = job.step("probe").unwrap();
    assert_eq!((probe.state, probe.attempts), (StepState::Running, 1));
    assert_eq!(probe.lease_owner.as_deref(), Some("node-a"));
    assert!(ready(j, "tenant:default", T0 + 3).is_empty());
}

pub fn success_promotes_dependants_and_memoizes(j: &dyn Journal) {
    let id = j.enqueue(new_job(DEFAULT_TENANT), T0).unwrap().job.id;
    let c = claim_one(j, &id, "probe", T0);
    assert_eq!(succeed(j, &c, T0 + 10), Finished::Recorded(JobState::Queued));
    let names: Vec<_> = ready(j, "tenant:default", T0 + 10).into_iter().map(|r| r.step).collect();
    assert_eq!(names, ["transcode", "transcribe"], "parallel branches both ready");
    assert_eq!(succeed(j, &c, T0 + 11), Finished::Stale, "a finished attempt cannot finish twice");
    let t = claim_one(j, &id, "transcribe", T0 + 20);
    assert_eq!(t.deps, vec![("probe".into(), Some(format!("{id}/probe")), Some(json!({"ok": true})))]);
    succeed(j, &t, T0 + 30);
    let e = claim_one(j, &id, "embed", T0 + 40);
    succeed(j, &e, T0 + 50);
    assert_eq!(state_of(j, &id, "notify"), StepState::Pending, "notify waits for transcode too");
    let tc = claim_one(j, &id, "transcode", T0 + 60);
    succeed(j, &tc, T0 + 70);
    let n = claim_one(j, &id, "notify", T0 + 80);
    assert_eq!(succeed(j, &n, T0 + 90), Finished::Recorded(JobState::Succeeded));
    let job = j.job(&id).unwrap().unwrap();
    assert_eq!(job.finished_at, Some(T0 + 90));
    assert!(job.steps.iter().all(|s| s.attempts == 1 && s.state == StepState::Succeeded));
    assert_eq!(job.step("probe").unwrap().output_ref.as_deref(), Some(format!("{id}/probe").as_str()));
    assert!(ready(j, "tenant:default", T0 + 100).is_empty(), "succeeded steps never run again");
    assert_eq!(j.events(&id).unwrap().last().unwrap().kind, "completed");
}

pub fn failure_with_retry_waits_for_backoff(j: &dyn Journal) {
    let id = j.enqueue(new_job(DEFAULT_TENANT), T0).unwrap().job.id;
    let c = claim_one(j, &id, "probe", T0);
    let err = ErrorInfo::new("timeout", "it took too long");
    let f =
        j.finish(&[(c.attempt.clone(), Outcome::Failed { error: err.clone(), retry_at: Some(T0 + 5_000) })], T0 + 1);
    assert_eq!(f.unwrap(), vec![Finished::Recorded(JobState::Failed)]);
    let step = j.job(&id).unwrap().unwrap().step("probe").unwrap().clone();
    assert_eq!((step.state, step.retry_at, step.error), (StepState::Failed, Some(T0 + 5_000), Some(err)));
    assert!(ready(j, "tenant:default", T0 + 4_999).is_empty(), "not before the backoff elapsed");
    assert_eq!(j.next_retry_at().unwrap(), Some(T0 + 5_000));
    assert_eq!(j.active_queues(T0 + 4_999).unwrap(), Vec::<String>::new());
    let c2 = claim_one(j, &id, "probe", T0 + 5_000);
    assert_eq!((c2.attempt.attempt, c2.budget_used), (2, 2));
}

pub fn final_failure_makes_job_dead_and_retry_resumes_tail(j: &dyn Journal) {
    let id = j.enqueue(new_job(DEFAULT_TENANT), T0).unwrap().job.id;
    let p = claim_one(j, &id, "probe", T0);
    succeed(j, &p, T0 + 1);
    let tc = claim_one(j, &id, "transcode", T0 + 2);
    let tr = claim_one(j, &id, "transcribe", T0 + 2);
    let err = ErrorInfo::new("unsupported_audio", "cannot decode");
    let f = j.finish(&[(tc.attempt.clone(), Outcome::Failed { error: err, retry_at: None })], T0 + 3).unwrap();
    assert_eq!(f, vec![Finished::Recorded(JobState::Dead)]);
    assert!(ready(j, "tenant:default", T0 + 4).is_empty(), "a dead job dispatches nothing");
    // The parallel branch still running may finish; its result is kept but nothing is promoted.
    assert_eq!(succeed(j, &tr, T0 + 5), Finished::Recorded(JobState::Dead));
    assert_eq!(state_of(j, &id, "embed"), StepState::Skipped, "a step the dead job never ran shows skipped");
    let job = j.retry_job(&id, T0 + 10).unwrap();
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.finished_at, None);
    let mut names: Vec<_> = ready(j, "tenant:default", T0 + 10).into_iter().map(|r| r.step).collect();
    names.sort();
    assert_eq!(names, ["embed", "transcode"], "only the failed tail runs again");
    let tc2 = claim_one(j, &id, "transcode", T0 + 11);
    assert_eq!((tc2.attempt.attempt, tc2.budget_used), (2, 1), "same step, fresh budget");
    let kinds: Vec<_> = j.events(&id).unwrap().into_iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&"dead".to_string()) && kinds.contains(&"retried".to_string()), "{kinds:?}");
    assert!(matches!(j.retry_job(&id, T0 + 12), Err(Error::Conflict(_))), "a running job is not retried");
}

pub fn cancel_stops_dispatch_and_running_steps_end_cancelled(j: &dyn Journal) {
    let id = j.enqueue(new_job(DEFAULT_TENANT), T0).unwrap().job.id;
    let p = claim_one(j, &id, "probe", T0);
    let job = j.cancel_job(&id, T0 + 1).unwrap();
    assert_eq!(job.state, JobState::Cancelled);
    assert!(job.steps[1..].iter().all(|s| s.state == StepState::Cancelled));
    assert_eq!(j.cancelled_jobs(&[id.as_str(), "job_other"]).unwrap(), vec![id.clone()]);
    let f = j.finish(&[(p.attempt.clone(), Outcome::Cancelled)], T0 + 2).unwrap();
    assert_eq!(f, vec![Finished::Recorded(JobState::Cancelled)]);
    assert!(ready(j, "tenant:default", T0 + 3).is_empty());
    assert!(matches!(j.cancel_job(&id, T0 + 4), Err(Error::Conflict(_))));
    assert!(matches!(j.cancel_job("job_missing", T0), Err(Error::NotFound { .. })));
    // A cancelled job can be resumed.
    j.retry_job(&id, T0 + 5).unwrap();
    assert_eq!(ready(j, "tenant:default", T0 + 5)[0].step, "probe");
}

pub fn transient_failure_of_a_cancelled_job_is_not_retried(j: &dyn Journal) {
    let id = j.enqueue(new_job(DEFAULT_TENANT), T0).unwrap().job.id;
    let p = claim_one(j, &id, "probe", T0);
    j.cancel_job(&id, T0 + 1).unwrap();
    let err = ErrorInfo::new("io", "disk hiccup");
    j.finish(&[(p.attempt, Outcome::Failed { error: err, retry_at: Some(T0 + 2) })], T0 + 1).unwrap();
    assert!(ready(j, "tenant:default", T0 + 10).is_empty());
    assert_eq!(j.job(&id).unwrap().unwrap().state, JobState::Cancelled);
}

pub fn queues_are_fifo_and_separate(j: &dyn Journal) {
    let b = j.create_tenant("bob", T0).unwrap();
    let a1 = j.enqueue(new_job(DEFAULT_TENANT), T0).unwrap().job.id;
    let a2 = j.enqueue(new_job(DEFAULT_TENANT), T0).unwrap().job.id;
    let b1 = j.enqueue(new_job(&b.id), T0).unwrap().job.id;
    let mut batch = new_job(DEFAULT_TENANT);
    batch.batch = Some("bat_1".into());
    let x1 = j.enqueue(batch, T0).unwrap().job;
    assert_eq!(x1.queue, "batch:bat_1");
    let mut qs = j.active_queues(T0).unwrap();
    qs.sort();
    assert_eq!(qs, vec!["batch:bat_1".to_string(), "tenant:default".into(), format!("tenant:{}", b.id)]);
    let ids: Vec<_> = ready(j, "tenant:default", T0).into_iter().map(|r| r.job_id).collect();
    assert_eq!(ids, [a1, a2], "FIFO within a queue");
    assert_eq!(ready(j, &format!("tenant:{}", b.id), T0)[0].job_id, b1);
    assert_eq!(j.ready_steps("tenant:default", &["embed"], T0, 10).unwrap(), vec![], "stage filter");
    assert_eq!(j.ready_steps("tenant:default", ALL, T0, 1).unwrap().len(), 1, "limit");
}

pub fn pause_hides_stage_and_tenant_without_losing_work(j: &dyn Journal) {
    let b = j.create_tenant("bob", T0).unwrap();
    j.enqueue(new_job(DEFAULT_TENANT), T0).unwrap();
    j.enqueue(new_job(&b.id), T0).unwrap();
    j.set_paused(&PauseScope::Stage("probe".into()), true, T0).unwrap();
    j.set_paused(&PauseScope::Stage("probe".into()), true, T0).unwrap(); // idempotent
    assert!(j.active_queues(T0).unwrap().is_empty());
    assert!(!j.has_ready("probe", T0).unwrap());
    assert_eq!(j.pauses().unwrap(), vec![PauseScope::Stage("probe".into())]);
    j.set_paused(&PauseScope::Stage("probe".into()), false, T0).unwrap();
    j.set_paused(&PauseScope::Tenant(b.id.clone()), true, T0).unwrap();
    assert_eq!(j.active_queues(T0).unwrap(), vec!["tenant:default".to_string()]);
    assert!(ready(j, &format!("tenant:{}", b.id), T0).is_empty());
    j.set_paused(&PauseScope::Tenant(b.id.clone()), false, T0).unwrap();
    assert_eq!(j.active_queues(T0).unwrap().len(), 2, "resumed work is all there");
    assert!(j.has_ready("probe", T0).unwrap());

    // A batch's queue pauses on its own; the tenant's live queue keeps going.
    let mut batch = new_job(DEFAULT_TENANT);
    batch.batch = Some("rp".into());
    let x = j.enqueue(batch, T0).unwrap().job;
    let step = ready(j, "batch:rp", T0).remove(0);
    j.set_paused(&PauseScope::Queue("batch:rp".into()), true, T0).unwrap();
    assert!(j.pauses().unwrap().contains(&PauseScope::Queue("batch:rp".into())));
    assert!(!j.active_queues(T0).unwrap().contains(&"batch:rp".to_string()));
    assert!(ready(j, "batch:rp", T0).is_empty());
    assert_eq!(j.claim(&[step], "n1", T0).unwrap(), vec![None], "a paused queue's step cannot be claimed");
    assert_eq!(ready(j, "tenant:default", T0).len(), 1);
    j.set_paused(&PauseScope::Queue("batch:rp".into()), false, T0).unwrap();
    assert_eq!(ready(j, "batch:rp", T0)[0].job_id, x.id);
}

pub fn reclaim_takes_back_dead_owners_work(j: &dyn Journal) {
    let a = j.enqueue(new_job(DEFAULT_TENANT), T0).unwrap().job.id;
    let b = j.enqueue(new_job(DEFAULT_TENANT), T0).unwrap().job.id;
    let ca = claim_one(j, &a, "probe", T0);
    let cb = claim_one(j, &b, "probe", T0);
    j.heartbeat(std::slice::from_ref(&cb.attempt), "node-a", T0 + 50_000).unwrap();
    // Staleness is judged by the last heartbeat, not by when the attempt started.
    let stale = j.reclaim(&ReclaimScope::StaleSince { before: T0 + 30_000 }, T0 + 60_000, &|_, _| Some(T0 + 60_000));
    let stale = stale.unwrap();
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].attempt, ca.attempt);
    assert_eq!(state_of(j, &a, "probe"), StepState::Failed);
    let all = j.reclaim(&ReclaimScope::AllBut { owner: "node-new".into() }, T0 + 61_000, &|_, _| None).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].job_state, JobState::Dead, "budget spent: dead");
    let err = j.job(&b).unwrap().unwrap().step("probe").unwrap().error.clone().unwrap();
    assert_eq!(err.code, "interrupted");
    assert!(j.events(&b).unwrap().iter().any(|e| e.kind == "interrupted"));
    let again = claim_one(j, &a, "probe", T0 + 60_000);
    assert_eq!(again.attempt.attempt, 2);
    assert!(j.reclaim(&ReclaimScope::AllBut { owner: "node-a".into() }, T0, &|_, _| None).unwrap().is_empty());
    assert_eq!(j.finish(&[(ca.attempt, Outcome::Cancelled)], T0).unwrap(), vec![Finished::Stale], "old lease is void");
}

pub fn release_requeues_without_charging_the_budget(j: &dyn Journal) {
    let id = j.enqueue(new_job(DEFAULT_TENANT), T0).unwrap().job.id;
    let c = claim_one(j, &id, "probe", T0);
    assert_eq!(
        j.release(std::slice::from_ref(&c.attempt), T0 + 1).unwrap(),
        vec![Finished::Recorded(JobState::Queued)]
    );
    let step = j.job(&id).unwrap().unwrap().step("probe").unwrap().clone();
    assert_eq!((step.state, step.attempts, step.budget_used), (StepState::Queued, 1, 0));
    assert!(j.events(&id).unwrap().iter().any(|e| e.kind == "released"));
    assert_eq!(j.release(&[c.attempt], T0 + 2).unwrap(), vec![Finished::Stale], "released once");
    let again = claim_one(j, &id, "probe", T0 + 3);
    assert_eq!((again.attempt.attempt, again.budget_used), (2, 1));
    j.cancel_job(&id, T0 + 4).unwrap();
    let f = j.release(&[again.attempt], T0 + 5).unwrap();
    assert_eq!(f, vec![Finished::Recorded(JobState::Cancelled)], "a cancelled job's step ends cancelled");
    assert_eq!(j.job(&id).unwrap().unwrap().step("probe").unwrap().state, StepState::Cancelled);
}

pub fn steps_can_record_events(j: &dyn Journal) {
    let id = j.enqueue(new_job(DEFAULT_TENANT), T0).unwrap().job.id;
    let c = claim_one(j, &id, "probe", T0);
    j.record_event(&c.attempt, "media.ready", Some(json!({"master": "m.m3u8"})), T0 + 5).unwrap();
    let e = j.events(&id).unwrap().into_iter().find(|e| e.kind == "media.ready").unwrap();
    assert_eq!((e.step.as_deref(), e.attempt, e.at), (Some("probe"), Some(1), T0 + 5));
    assert_eq!(e.detail, Some(json!({"master": "m.m3u8"})));
    let missing = AttemptRef { job_id: "job_nope".into(), step: "probe".into(), attempt: 1 };
    assert!(matches!(j.record_event(&missing, "x", None, T0), Err(Error::NotFound { .. })));
}

pub fn queue_stats_count_depth_and_age(j: &dyn Journal) {
    let a = j.enqueue(new_job(DEFAULT_TENANT), T0).unwrap().job.id;
    j.enqueue(new_job(DEFAULT_TENANT), T0 + 100).unwrap();
    claim_one(j, &a, "probe", T0 + 200);
    let stats = j.queue_stats(T0 + 300).unwrap();
    assert_eq!(stats.len(), 1);
    let s = &stats[0];
    assert_eq!((s.queue.as_str(), s.stage.as_str(), s.ready, s.running), ("tenant:default", "probe", 1, 1));
    assert_eq!(s.oldest_ready_at, Some(T0 + 100));
}

pub fn listing_filters_and_pages(j: &dyn Journal) {
    let b = j.create_tenant("bob", T0).unwrap();
    assert_eq!(j.tenant("bob").unwrap().unwrap().id, b.id);
    assert_eq!(j.tenant(&b.id).unwrap().unwrap().name, "bob");
    assert!(matches!(j.create_tenant("bob", T0), Err(Error::Conflict(_))));
    assert_eq!(j.tenants().unwrap().len(), 2);
    let ids: Vec<_> = (0..5).map(|_| j.enqueue(new_job(DEFAULT_TENANT), T0).unwrap().job.id).collect();
    j.enqueue(new_job(&b.id), T0).unwrap();
    j.cancel_job(&ids[1], T0).unwrap();
    let all = j.jobs(&JobFilter::default()).unwrap();
    assert_eq!(all.len(), 6);
    assert!(all.windows(2).all(|w| w[0].seq > w[1].seq), "newest first");
    let mine = j.jobs(&JobFilter { tenant: Some(DEFAULT_TENANT.into()), ..Default::default() }).unwrap();
    assert_eq!(mine.len(), 5);
    let cancelled = j.jobs(&JobFilter { state: Some(JobState::Cancelled), ..Default::default() }).unwrap();
    assert_eq!(cancelled.iter().map(|j| j.id.clone()).collect::<Vec<_>>(), vec![ids[1].clone()]);
    let page = j.jobs(&JobFilter { limit: Some(2), before_seq: Some(mine[1].seq), ..Default::default() }).unwrap();
    assert_eq!(page.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), [ids[2].as_str(), ids[1].as_str()]);
    assert_eq!(page[0].steps.len(), 5);
}

pub fn a_media_record_commits_with_its_job(j: &dyn Journal) {
    let mut nj = new_job(DEFAULT_TENANT);
    nj.new_media = Some(NewMedia { id: "med_1".into(), title: Some("Talk".into()), meta: json!({"bytes": 10}) });
    nj.idempotency_key = Some("up-1".into());
    let job = j.enqueue(nj.clone(), T0).unwrap().job;
    assert_eq!(job.media_id.as_deref(), Some("med_1"));
    assert_eq!(j.media("med_1").unwrap().unwrap().meta, json!({"bytes": 10}));
    assert_eq!(j.idempotent_job(DEFAULT_TENANT, "up-1", T0 + 1).unwrap().unwrap().id, job.id);
    assert_eq!(j.idempotent_job(DEFAULT_TENANT, "up-2", T0 + 1).unwrap(), None);
    assert_eq!(j.idempotent_job(DEFAULT_TENANT, "up-1", T0 + 25 * 3_600_000).unwrap(), None);
    assert!(j.enqueue(nj.clone(), T0 + 2).unwrap().existing, "same key: the same job, no second media");
    nj.idempotency_key = None;
    assert!(j.enqueue(nj, T0).is_err(), "a media id is unique");
    assert_eq!(j.jobs(&JobFilter::default()).unwrap().len(), 1, "the failed enqueue left no job behind");
    let by_media = j.jobs(&JobFilter { media_id: Some("med_1".into()), ..Default::default() }).unwrap();
    assert_eq!(by_media.iter().map(|j| j.id.clone()).collect::<Vec<_>>(), vec![job.id.clone()]);
    let listed = j.media_list(DEFAULT_TENANT, 10).unwrap();
    assert_eq!(listed.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["med_1"]);
    assert!(j.media_list("ten_other", 10).unwrap().is_empty());
}

pub fn media_records_and_meta(j: &dyn Journal) {
    let m = j.create_media(DEFAULT_TENANT, Some("Sunday sermon"), T0).unwrap();
    assert!(m.id.starts_with("med_"));
    j.update_media_meta(&m.id, &json!({"duration_s": 3600.5})).unwrap();
    j.update_media_meta(&m.id, &json!({"codec": "mp3"})).unwrap();
    let back = j.media(&m.id).unwrap().unwrap();
    assert_eq!(back.meta, json!({"duration_s": 3600.5, "codec": "mp3"}));
    assert_eq!(back.title.as_deref(), Some("Sunday sermon"));
    assert!(j.create_media("ten_nope", None, T0).is_err());
    assert!(matches!(j.update_media_meta("med_nope", &json!({})), Err(Error::NotFound { .. })));
}

pub fn api_keys_and_endpoints(j: &dyn Journal) {
    let creds =
        hooks::TenantCredentials { api_key_hash: Some("ab".repeat(32)), webhook_secret: Some("whsec_c2VjcmV0".into()) };
    j.check_writable().unwrap();
    assert!(!j.any_api_key().unwrap());
    let t = j.create_tenant_with("keyed", &creds, T0).unwrap();
    assert!(j.any_api_key().unwrap());
    assert_eq!(j.tenant_by_key_hash(&"ab".repeat(32)).unwrap().map(|x| x.id), Some(t.id.clone()));
    assert_eq!(j.tenant_by_key_hash(&"cd".repeat(32)).unwrap(), None);
    assert_eq!(j.webhook_secret(&t.id).unwrap().as_deref(), Some("whsec_c2VjcmV0"));
    j.set_webhook_secret_if_unset(&t.id, "whsec_other").unwrap();
    assert_eq!(j.webhook_secret(&t.id).unwrap().as_deref(), Some("whsec_c2VjcmV0"), "never overwritten");
    let ep = |id: &str, tenant: Option<&str>| hooks::Endpoint {
        id: id.into(),
        tenant: tenant.map(String::from),
        url: "https://hooks.example/x".into(),
        events: vec!["job.dead".into()],
        codes: vec![],
        secret: "whsec_ZQ==".into(),
        created_at: T0,
    };
    j.create_endpoint(&ep("whe_a", Some(&t.id))).unwrap();
    j.create_endpoint(&ep("whe_ops", None)).unwrap();
    assert_eq!(j.endpoints(Some(&t.id)).unwrap().len(), 1, "a tenant sees its own");
    assert_eq!(j.endpoints(None).unwrap().len(), 2, "the operator sees all");
    assert!(matches!(j.delete_endpoint("whe_ops", Some(&t.id)), Err(Error::NotFound { .. })), "not the tenant's");
    j.delete_endpoint("whe_a", Some(&t.id)).unwrap();
    assert!(matches!(j.delete_endpoint("whe_a", None), Err(Error::NotFound { .. })));
}

pub fn events_fan_out_to_durable_deliveries(j: &dyn Journal) {
    let creds = hooks::TenantCredentials { api_key_hash: None, webhook_secret: Some("whsec_c2VjcmV0".into()) };
    let t = j.create_tenant_with("hooked", &creds, T0).unwrap();
    let alert = hooks::Endpoint {
        id: "whe_alert".into(),
        tenant: None,
        url: "https://ops.example/alert".into(),
        events: vec![],
        codes: vec!["unsupported_audio".into()],
        secret: "whsec_ZQ==".into(),
        created_at: T0,
    };
    j.create_endpoint(&alert).unwrap();
    let mut job = new_job(&t.id);
    job.params = json!({"callback_url": "https://hooks.example/cb"});
    let id = j.enqueue(job, T0).unwrap().job.id;
    let p = claim_one(j, &id, "probe", T0 + 1);
    j.record_event(&p.attempt, "media.ready", Some(json!({"media_id": "med_x"})), T0 + 2).unwrap();
    j.record_event(&p.attempt, "media.ready", Some(json!({"media_id": "med_x"})), T0 + 3).unwrap();
    let err = ErrorInfo::new("unsupported_audio", "cannot decode");
    j.finish(&[(p.attempt.clone(), Outcome::Failed { error: err, retry_at: None })], T0 + 4).unwrap();
    let mut ds = j.deliveries(&id).unwrap();
    ds.sort_by(|a, b| (&a.event_type, &a.endpoint_id).cmp(&(&b.event_type, &b.endpoint_id)));
    let got: Vec<_> = ds.iter().map(|d| (d.event_type.as_str(), d.endpoint_id.as_deref())).collect();
    assert_eq!(
        got,
        [("job.dead", None), ("job.dead", Some("whe_alert")), ("media.ready", None)],
        "callback hears all (media.ready once), the code-filtered endpoint only the dead job"
    );
    // Claimed: attempt counted and leased; not due again until the lease ends.
    let claimed = j.claim_deliveries(T0 + 5, 10).unwrap();
    assert_eq!(claimed.len(), 3);
    assert!(claimed.iter().all(|d| d.attempt == 1 && d.job_id == id));
    assert!(j.claim_deliveries(T0 + 6, 10).unwrap().is_empty(), "leased");
    let dead = claimed.iter().find(|d| d.event_type == "job.dead" && d.endpoint_id.is_none()).unwrap();
    let body: serde_json::Value = serde_json::from_str(&dead.payload).unwrap();
    assert_eq!(body["type"], "job.dead");
    assert_eq!(body["data"]["error"]["code"], "unsupported_audio");
    let retry =
        hooks::AttemptResult { status: Some(500), latency_ms: 3, error: Some("500".into()), retry_at: Some(T0 + 7) };
    j.record_delivery(dead, &retry, T0 + 6).unwrap();
    let again = j.claim_deliveries(T0 + 8, 10).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id.as_str(), again[0].attempt), (dead.id.as_str(), 2), "same webhook-id, next attempt");
    let ok = hooks::AttemptResult { status: Some(204), latency_ms: 2, error: None, retry_at: None };
    j.record_delivery(&again[0], &ok, T0 + 9).unwrap();
    let d = j.deliveries(&id).unwrap().into_iter().find(|d| d.id == dead.id).unwrap();
    assert_eq!((d.state.as_str(), d.attempts, d.last_status), ("delivered", 2, Some(204)));
    let webhook_events = j.events(&id).unwrap().into_iter().filter(|e| e.kind == "webhook").count();
    assert_eq!(webhook_events, 2, "each attempt is in the timeline");
}

/// Generates one `#[test]` per conformance case for a backend.
#[macro_export]
macro_rules! journal_conformance_tests {
    ($factory:expr) => {
        $crate::journal_conformance_tests!(@cases $factory;
            enqueue_creates_roots_queued_rest_pending, enqueue_rejects_bad_dags_and_unknown_tenants,
            idempotency_key_returns_same_job_for_24h, claim_is_exclusive_and_counts_attempts,
            success_promotes_dependants_and_memoizes, failure_with_retry_waits_for_backoff,
            final_failure_makes_job_dead_and_retry_resumes_tail,
            cancel_stops_dispatch_and_running_steps_end_cancelled,
            transient_failure_of_a_cancelled_job_is_not_retried, queues_are_fifo_and_separate,
            pause_hides_stage_and_tenant_without_losing_work, reclaim_takes_back_dead_owners_work,
            release_requeues_without_charging_the_budget, steps_can_record_events,
            queue_stats_count_depth_and_age, listing_filters_and_pages, media_records_and_meta,
            a_media_record_commits_with_its_job, api_keys_and_endpoints, events_fan_out_to_durable_deliveries);

        #[test]
        fn conformance_committed_state_survives_reopen() {
            let dir = tempfile::tempdir().unwrap();
            let id = {
                let j = ($factory)(dir.path());
                let id = $crate::journal::Journal::enqueue(&j, $crate::journal::conformance_tests::new_job("default"), 1)
                    .unwrap().job.id;
                $crate::journal::Journal::set_paused(&j, &$crate::journal::PauseScope::Stage("embed".into()), true, 1)
                    .unwrap();
                id
            };
            let j = ($factory)(dir.path());
            let job = $crate::journal::Journal::job(&j, &id).unwrap().expect("job survives reopen");
            assert_eq!(job.steps.len(), 5);
            assert_eq!($crate::journal::Journal::pauses(&j).unwrap().len(), 1);
        }

        #[test]
        fn conformance_random_operations_keep_invariants() {
            for seed in 0..8 {
                let dir = tempfile::tempdir().unwrap();
                let open = || -> Box<dyn $crate::journal::Journal> { Box::new(($factory)(dir.path())) };
                $crate::journal::conformance_tests::random_ops_keep_invariants(&open, seed, 200);
            }
        }
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let dir = tempfile::tempdir().unwrap();
                let j = ($factory)(dir.path());
                $crate::journal::conformance_tests::$case(&j);
            }
        )*
    };
}

/// A seeded random walk over the journal's operations, reopening it now and then (a crash between
/// transactions), checking after every operation the invariants the engine relies on.
pub fn random_ops_keep_invariants(open: &dyn Fn() -> Box<dyn Journal>, seed: u64, ops: usize) {
    use rand::{Rng, SeedableRng, seq::IndexedRandom};
    use std::collections::{HashMap, HashSet};

    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut j = open();
    let b = j.create_tenant("b", T0).unwrap().id;
    let mut now = T0;
    let mut ids: Vec<String> = Vec::new();
    let mut succeeded: HashSet<(String, String)> = HashSet::new();
    let mut attempts: HashMap<(String, String), u32> = HashMap::new();
    for op in 0..ops {
        let ctx = format!("seed {seed}, op {op}");
        let all_ready = |j: &dyn Journal, now| -> Vec<ReadyStep> {
            let qs = j.active_queues(now).unwrap();
            qs.iter().flat_map(|q| j.ready_steps(q, ALL, now, 1000).unwrap()).collect()
        };
        match rng.random_range(0..100) {
            0..15 => {
                let tenant = if rng.random_bool(0.5) { DEFAULT_TENANT.to_string() } else { b.clone() };
                ids.push(j.enqueue(new_job(&tenant), now).unwrap().job.id);
            }
            15..40 => {
                let ready = all_ready(j.as_ref(), now);
                let pick: Vec<ReadyStep> = ready.choose_multiple(&mut rng, 2).cloned().collect();
                j.claim(&pick, "node", now).unwrap();
            }
            40..70 => {
                let running: Vec<(String, StepRecord)> = ids
                    .iter()
                    .flat_map(|id| {
                        let job = j.job(id).unwrap().unwrap();
                        job.steps.into_iter().filter(|s| s.state == StepState::Running).map(move |s| (id.clone(), s))
                    })
                    .collect();
                if let Some((id, s)) = running.choose(&mut rng) {
                    let a = AttemptRef { job_id: id.clone(), step: s.name.clone(), attempt: s.attempts };
                    let outcome = match rng.random_range(0..10) {
                        0..6 => Outcome::Succeeded { output_ref: None, sha256: None, output: None },
                        6..8 => Outcome::Failed {
                            error: ErrorInfo::new("flaky", "again"),
                            retry_at: Some(now + rng.random_range(0..3_000)),
                        },
                        8 => Outcome::Failed { error: ErrorInfo::new("fatal", "no"), retry_at: None },
                        _ => Outcome::Cancelled,
                    };
                    j.finish(&[(a, outcome)], now).unwrap();
                }
            }
            70..76 => {
                if let Some(id) = ids.choose(&mut rng) {
                    let _ = j.cancel_job(id, now);
                }
            }
            76..84 => {
                if let Some(id) = ids.choose(&mut rng) {
                    let _ = j.retry_job(id, now);
                }
            }
            84..86 => {
                let running: Vec<AttemptRef> = ids
                    .iter()
                    .flat_map(|id| {
                        let job = j.job(id).unwrap().unwrap();
                        job.steps.into_iter().filter(|s| s.state == StepState::Running).map(move |s| AttemptRef {
                            job_id: id.clone(),
                            step: s.name,
                            attempt: s.attempts,
                        })
                    })
                    .collect();
                j.release(&running, now).unwrap();
            }
            86..88 => {
                let budget = rng.random_range(1..4);
                let decide = move |_: &str, used: u32| (used < budget).then_some(now);
                j.reclaim(&ReclaimScope::AllBut { owner: "new".into() }, now, &decide).unwrap();
            }
            88..92 => {
                let paused = rng.random_bool(0.5);
                j.set_paused(&PauseScope::Stage(ALL.choose(&mut rng).unwrap().to_string()), paused, now).unwrap();
            }
            92..97 => now += rng.random_range(0..2_000),
            _ => {
                let before: Vec<JobRecord> = ids.iter().map(|id| j.job(id).unwrap().unwrap()).collect();
                drop(j);
                j = open();
                let after: Vec<JobRecord> = ids.iter().map(|id| j.job(id).unwrap().unwrap()).collect();
                assert_eq!(before, after, "{ctx}: state changed across reopen");
            }
        }

        // ---- invariants ----
        let ready: HashSet<(String, String)> =
            all_ready(j.as_ref(), now).into_iter().map(|r| (r.job_id, r.step)).collect();
        let pauses = j.pauses().unwrap();
        for id in &ids {
            let job = j.job(id).unwrap().unwrap();
            let done = |n: &str| job.step(n).is_some_and(|s| s.state == StepState::Succeeded);
            for s in &job.steps {
                let key = (id.clone(), s.name.clone());
                if succeeded.contains(&key) {
                    assert_eq!(s.state, StepState::Succeeded, "{ctx}: {key:?} lost its success");
                }
                if s.state == StepState::Succeeded {
                    succeeded.insert(key.clone());
                }
                let prev = attempts.insert(key.clone(), s.attempts).unwrap_or(0);
                assert!(s.attempts >= prev, "{ctx}: {key:?} attempts went backwards");
                let dispatchable = !job.state.is_terminal()
                    && !pauses.contains(&PauseScope::Stage(s.stage.clone()))
                    && (s.state == StepState::Queued
                        || (s.state == StepState::Failed && s.retry_at.is_some_and(|t| t <= now)));
                assert_eq!(ready.contains(&key), dispatchable, "{ctx}: {key:?} ({s:?}) in job {:?}", job.state);
                if s.state == StepState::Running {
                    assert!(s.deps.iter().all(|d| done(d)), "{ctx}: {key:?} runs before its dependencies");
                }
                if !job.state.is_terminal() && s.state == StepState::Pending {
                    assert!(!s.deps.iter().all(|d| done(d)), "{ctx}: {key:?} was not promoted");
                }
                if matches!(job.state, JobState::Dead | JobState::Cancelled | JobState::Succeeded) {
                    assert!(s.retry_at.is_none(), "{ctx}: {key:?} has a retry in an ended job");
                }
            }
            let any = |st: StepState| job.steps.iter().any(|s| s.state == st);
            let expected = if job.steps.iter().all(|s| s.state == StepState::Succeeded) {
                Some(JobState::Succeeded)
            } else if job.state.is_terminal() {
                None // dead or cancelled stick until a retry
            } else if any(StepState::Running) {
                Some(JobState::Running)
            } else if job.steps.iter().any(|s| s.state == StepState::Failed && s.retry_at.is_some()) {
                Some(JobState::Failed)
            } else {
                Some(JobState::Queued)
            };
            if let Some(e) = expected {
                assert_eq!(job.state, e, "{ctx}: job {id} state does not follow from its steps: {:?}", job.steps);
            }
            assert_eq!(job.finished_at.is_some(), job.state.is_terminal(), "{ctx}: finished_at of {id}");
        }
    }
}
