//! Versioned schema migrations, applied in order inside one transaction each. The version lives in
//! SQLite's `user_version`; a database newer than the binary is refused rather than guessed at.

/// Migration `i` takes the schema from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // v1: tenants, media, jobs, steps, events, idempotency keys, pauses.
    r#"
    CREATE TABLE tenants (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,
        created_at  INTEGER NOT NULL
    );
    INSERT INTO tenants (id, name, created_at) VALUES ('default', 'default', 0);

    CREATE TABLE media (
        id          TEXT PRIMARY KEY,
        tenant      TEXT NOT NULL REFERENCES tenants(id),
        title       TEXT,
        created_at  INTEGER NOT NULL,
        meta        TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX media_tenant ON media(tenant, created_at);

    CREATE TABLE jobs (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        id          TEXT NOT NULL UNIQUE,
        tenant      TEXT NOT NULL REFERENCES tenants(id),
        media_id    TEXT,
        kind        TEXT NOT NULL,
        queue       TEXT NOT NULL,
        batch       TEXT,
        params      TEXT NOT NULL,
        state       TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL,
        finished_at INTEGER
    );
    CREATE INDEX jobs_state ON jobs(state, seq);
    CREATE INDEX jobs_tenant ON jobs(tenant, seq);
    CREATE INDEX jobs_batch ON jobs(batch, seq) WHERE batch IS NOT NULL;

    -- One row per step of a job. `ready_at` is set exactly when the step may be dispatched at or
    -- after that time: a queued step (the time it became ready) or a failed step with a scheduled
    -- retry (the retry time). Queue, tenant and job order are copied in so the ready index can serve
    -- the scheduler without a join.
    CREATE TABLE steps (
        job_seq       INTEGER NOT NULL REFERENCES jobs(seq),
        idx           INTEGER NOT NULL,
        name          TEXT NOT NULL,
        stage         TEXT NOT NULL,
        deps          TEXT NOT NULL,
        queue         TEXT NOT NULL,
        tenant        TEXT NOT NULL,
        state         TEXT NOT NULL,
        attempts      INTEGER NOT NULL DEFAULT 0,
        budget_base   INTEGER NOT NULL DEFAULT 0,
        ready_at      INTEGER,
        started_at    INTEGER,
        finished_at   INTEGER,
        heartbeat_at  INTEGER,
        lease_owner   TEXT,
        output_ref    TEXT,
        output_sha256 TEXT,
        output        TEXT,
        error_code    TEXT,
        error_message TEXT,
        PRIMARY KEY (job_seq, idx)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX steps_name ON steps(job_seq, name);
    CREATE INDEX steps_ready ON steps(queue, stage, job_seq, idx) WHERE ready_at IS NOT NULL;
    CREATE INDEX steps_ready_stage ON steps(stage, ready_at) WHERE ready_at IS NOT NULL;
    CREATE INDEX steps_running ON steps(heartbeat_at) WHERE state = 'running';

    CREATE TABLE events (
        seq           INTEGER PRIMARY KEY AUTOINCREMENT,
        job_seq       INTEGER NOT NULL REFERENCES jobs(seq),
        at            INTEGER NOT NULL,
        step          TEXT,
        attempt       INTEGER,
        kind          TEXT NOT NULL,
        error_code    TEXT,
        error_message TEXT,
        detail        TEXT
    );
    CREATE INDEX events_job ON events(job_seq, seq);

    CREATE TABLE idempotency (
        tenant      TEXT NOT NULL,
        key         TEXT NOT NULL,
        job_id      TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        PRIMARY KEY (tenant, key)
    );

    CREATE TABLE pauses (
        scope  TEXT NOT NULL,
        name   TEXT NOT NULL,
        since  INTEGER NOT NULL,
        PRIMARY KEY (scope, name)
    );
    "#,
    // v2: jobs by media (the media API shows each media's latest job).
    r#"
    CREATE INDEX jobs_media ON jobs(media_id, seq) WHERE media_id IS NOT NULL;
    "#,
];

/// The schema version this binary writes.
pub fn latest() -> i64 {
    MIGRATIONS.len() as i64
}
