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
    // v3: API keys (SHA-256 of the key, never the key), webhook secrets, webhook endpoints and the
    // delivery outbox (rows written in the same transaction as the timeline event they announce).
    r#"
    ALTER TABLE tenants ADD COLUMN api_key_hash TEXT;
    ALTER TABLE tenants ADD COLUMN webhook_secret TEXT;
    CREATE UNIQUE INDEX tenants_key ON tenants(api_key_hash) WHERE api_key_hash IS NOT NULL;

    CREATE TABLE webhook_endpoints (
        id          TEXT PRIMARY KEY,
        tenant      TEXT,            -- NULL: an operator endpoint that hears every tenant
        url         TEXT NOT NULL,
        events      TEXT,            -- JSON array of event types; NULL: all
        codes       TEXT,            -- JSON array of error codes; NULL: any
        secret      TEXT NOT NULL,
        created_at  INTEGER NOT NULL
    );
    CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints(tenant);

    CREATE TABLE deliveries (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        id           TEXT NOT NULL UNIQUE,   -- the `webhook-id`, the same on every attempt
        dedupe       TEXT NOT NULL UNIQUE,   -- job, event occurrence, destination
        tenant       TEXT NOT NULL,
        job_seq      INTEGER NOT NULL REFERENCES jobs(seq),
        endpoint_id  TEXT,                   -- NULL: the upload's callback_url
        url          TEXT NOT NULL,
        secret       TEXT NOT NULL,
        event_type   TEXT NOT NULL,
        payload      TEXT NOT NULL,
        state        TEXT NOT NULL,          -- pending | delivered | exhausted
        attempts     INTEGER NOT NULL DEFAULT 0,
        next_at      INTEGER,
        last_status  INTEGER,
        last_error   TEXT,
        created_at   INTEGER NOT NULL,
        finished_at  INTEGER
    );
    CREATE INDEX deliveries_due ON deliveries(next_at) WHERE state = 'pending';
    CREATE INDEX deliveries_job ON deliveries(job_seq, seq);
    "#,
    // v4: the `default` tenant was created at the epoch (0); give it its real age: its first media,
    // or the moment of this migration for an install that has none yet.
    r#"
    UPDATE tenants
       SET created_at = COALESCE((SELECT MIN(created_at) FROM media WHERE tenant = 'default'),
                                 CAST(strftime('%s', 'now') AS INTEGER) * 1000)
     WHERE id = 'default' AND created_at = 0;
    "#,
];

/// The schema version this binary writes.
pub fn latest() -> i64 {
    MIGRATIONS.len() as i64
}
