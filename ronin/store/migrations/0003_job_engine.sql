-- 0003: what discovery_jobs needs to be a durable queue, beside it rather than inside it.
--
-- The seed's discovery_jobs keeps its exact columns; everything a queue adds lives in tables
-- keyed by job_id. Status is the only queue field on the seed row (and the only one indexed
-- there), written once per state change; the fields a running job rewrites every few seconds
-- (lease expiry, progress) live in discovery_job_state, which no index covers, so those
-- updates stay HOT.

-- Pending jobs in claim order. Finished jobs are not in it, however many pile up.
CREATE INDEX idx_discovery_jobs_claim ON discovery_jobs (created_at)
    WHERE status = 'pending';
-- (Running jobs, where expired leases are, are found through the seed's status index.)
-- Retention: finished jobs by age.
CREATE INDEX idx_discovery_jobs_finished ON discovery_jobs (completed_at)
    WHERE completed_at IS NOT NULL;

CREATE TABLE discovery_job_state (
    job_id UUID PRIMARY KEY REFERENCES discovery_jobs (job_id) ON DELETE CASCADE,
    -- A pending job may be claimed from then on (retries wait out their backoff).
    run_after TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 5,
    -- The lease: who runs the job, the token every write of theirs must carry, until when.
    worker_id TEXT,
    lease_token UUID,
    lease_expires_at TIMESTAMPTZ,
    cancel_requested BOOLEAN NOT NULL DEFAULT false,
    progress SMALLINT NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    progress_message TEXT NOT NULL DEFAULT '',
    -- Where a running job is, so a job re-claimed after a crash resumes.
    checkpoint JSONB,
    -- The final error ({"code", "message"}) of a failed job, and the result of a finished one.
    error JSONB,
    result JSONB,
    idempotency_key TEXT UNIQUE,
    schedule_id UUID,
    started_at TIMESTAMPTZ,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
) WITH (fillfactor = 50);

-- Every job has its state row, even one inserted by hand as the founding document allows:
-- jobs that exist when this migration runs get one now, later ones from this trigger, so no
-- job is stranded outside the queue.
INSERT INTO discovery_job_state (job_id) SELECT job_id FROM discovery_jobs;

CREATE FUNCTION ronin_job_state_for_new_job() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO discovery_job_state (job_id)
    SELECT job_id FROM new_jobs
    ON CONFLICT (job_id) DO NOTHING;
    RETURN NULL;
END
$$;

CREATE TRIGGER trg_discovery_job_state
    AFTER INSERT ON discovery_jobs
    REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION ronin_job_state_for_new_job();

-- A job with its queue state, as the API and the CLI show it.
CREATE VIEW discovery_jobs_with_state AS
SELECT j.job_id, j.status, j.params, j.created_at, j.completed_at,
       s.attempts, s.max_attempts, s.run_after, s.worker_id, s.lease_expires_at,
       s.cancel_requested, s.progress, s.progress_message, s.error, s.result,
       s.idempotency_key, s.schedule_id, s.started_at, s.updated_at
FROM discovery_jobs AS j
JOIN discovery_job_state AS s ON s.job_id = j.job_id;

-- One row per attempt (per lease): who ran it, how it ended, and why.
CREATE TABLE discovery_job_attempts (
    lease_token UUID PRIMARY KEY,
    job_id UUID NOT NULL REFERENCES discovery_jobs (job_id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    worker_id TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    ended_at TIMESTAMPTZ,
    -- running, completed, failed, retry, released (shutdown), lost (its lease expired)
    outcome TEXT NOT NULL DEFAULT 'running',
    error JSONB
);
CREATE INDEX idx_discovery_job_attempts_job ON discovery_job_attempts (job_id);

-- What a job found or refreshed: "what did job X find" is one query.
CREATE TABLE discovery_job_services (
    job_id UUID NOT NULL REFERENCES discovery_jobs (job_id) ON DELETE CASCADE,
    service_id VARCHAR(255) NOT NULL,
    -- new or refreshed
    outcome TEXT NOT NULL,
    PRIMARY KEY (job_id, service_id)
);
CREATE INDEX idx_discovery_job_services_service ON discovery_job_services (service_id);

-- Recurring discoveries: a job is created once per period, whatever the number of workers.
CREATE TABLE discovery_schedules (
    schedule_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name TEXT NOT NULL UNIQUE,
    params JSONB NOT NULL,
    interval_s INTEGER NOT NULL CHECK (interval_s >= 60),
    next_run_at TIMESTAMPTZ NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT true,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_discovery_schedules_due ON discovery_schedules (next_run_at) WHERE enabled;
