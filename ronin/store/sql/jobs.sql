-- The job queue's SQL. Every write a worker makes names the job *and* its lease token, and
-- changes nothing unless the row still holds that token and the lease has not expired: a
-- worker that lost its lease cannot overwrite the attempt that replaced it.

-- name: lock_idempotency_key
-- Serialise submissions that carry the same idempotency key, for this transaction.
SELECT pg_advisory_xact_lock(hashtextextended(%(idempotency_key)s, 7))

-- name: job_by_idempotency_key
-- The job an earlier submission with this key created, if any.
SELECT * FROM discovery_jobs_with_state WHERE idempotency_key = %(idempotency_key)s

-- name: insert_job
-- A new pending job and its queue state, read back as discovery_jobs_with_state shows it,
-- and a wake-up for idle workers (sent at commit): a submission is one round trip.
WITH job AS (
    INSERT INTO discovery_jobs (status, params)
    VALUES ('pending', %(params)s)
    RETURNING job_id, status, params, created_at, completed_at
), state AS (
    INSERT INTO discovery_job_state (job_id, max_attempts, idempotency_key, schedule_id)
    SELECT job_id, %(max_attempts)s, %(idempotency_key)s, %(schedule_id)s FROM job
    RETURNING *
    -- (the trigger that gives hand-inserted jobs a state row finds this one and stands back)
)
SELECT j.job_id, j.status, j.params, j.created_at, j.completed_at,
       s.attempts, s.max_attempts, s.run_after, s.worker_id, s.lease_expires_at,
       s.cancel_requested, s.progress, s.progress_message, s.error, s.result,
       s.idempotency_key, s.schedule_id, s.started_at, s.updated_at
FROM job AS j
JOIN state AS s ON s.job_id = j.job_id
CROSS JOIN LATERAL (SELECT pg_notify('ronin_jobs', j.job_id::text)) AS wake_up

-- name: insert_new_jobs
-- Many pending jobs without idempotency keys, in one statement: as many as %(params)s (a JSON
-- array) holds, and one wake-up for idle workers. What comes back is each new job's id, in the
-- order given, and the statement's time, which is every new row's created_at, run_after and
-- updated_at (their default, now()); the rest of a new job is its columns' defaults, which
-- Job.pending writes out (tests/integration/test_jobs_queue.py holds the two to the rows read
-- back). Reading each job back as discovery_jobs_with_state shows it (two joins, 19 columns
-- to decode) cost 0.1 ms of a 16-job statement and 4 us of the API's CPU a job. The ids are
-- made here (gen_random_uuid: a random v4, built in since PostgreSQL 13), not by the caller:
-- uuid4() and its dumping cost a grouped submission 3.5 us of the API's CPU. The keyed
-- statement below does the same with a window and a join on the keys more: its plan alone
-- costs 0.3 ms, which every grouped submission would pay.
WITH given AS MATERIALIZED (  -- once: every id is made one time and read three
    SELECT gen_random_uuid() AS job_id, element.params, element.position
    FROM jsonb_array_elements(%(params)s::jsonb) WITH ORDINALITY AS element(params, position)
), job AS (
    INSERT INTO discovery_jobs (job_id, status, params)
    SELECT job_id, 'pending', params FROM given
    RETURNING job_id
), state AS (  -- (runs though nothing reads it, as every data-modifying WITH does)
    INSERT INTO discovery_job_state (job_id, max_attempts)
    SELECT job_id, %(max_attempts)s FROM given
    -- (the trigger that gives hand-inserted jobs a state row finds these and stands back)
)
SELECT g.job_id, now() AS created_at
FROM given AS g
CROSS JOIN (  -- once per statement, not per job
    SELECT count(*) FROM (SELECT pg_notify('ronin_jobs', job_id::text) FROM job LIMIT 1) AS n
) AS wake_up
ORDER BY g.position

-- name: lock_idempotency_keys
-- Serialise submissions that carry any of these idempotency keys, for this transaction; in
-- one order (the keys sorted), so two batches sharing keys cannot deadlock.
SELECT count(pg_advisory_xact_lock(hashtextextended(key, 7)))
FROM (SELECT DISTINCT key FROM unnest(%(idempotency_keys)s::text[]) AS k(key)
      WHERE key IS NOT NULL ORDER BY key) AS sorted

-- name: insert_jobs
-- Many pending jobs in one statement, each read back as discovery_jobs_with_state shows it, in
-- the order given (%(params)s a JSON array, %(idempotency_keys)s as many keys or nulls): an
-- item whose key an earlier job has gets that job; of the items sharing a new key, the first
-- is inserted and the others get its job. One wake-up for idle workers, whatever the number.
WITH item AS MATERIALIZED (
    SELECT gen_random_uuid() AS job_id, given.params, given.idempotency_key, given.ord
    FROM ROWS FROM (
        jsonb_array_elements(%(params)s::jsonb), unnest(%(idempotency_keys)s::text[])
    ) WITH ORDINALITY AS given(params, idempotency_key, ord)
), earlier AS (
    SELECT * FROM discovery_jobs_with_state
    WHERE idempotency_key = ANY (%(idempotency_keys)s::text[])
), resolved AS (
    SELECT item.ord, item.params, item.idempotency_key, item.job_id AS own_id,
           CASE WHEN item.idempotency_key IS NULL THEN item.job_id
                ELSE coalesce(earlier.job_id, first_value(item.job_id) OVER (
                    PARTITION BY item.idempotency_key ORDER BY item.ord))
           END AS job_id
    FROM item
    LEFT JOIN earlier ON earlier.idempotency_key = item.idempotency_key
), job AS (
    INSERT INTO discovery_jobs (job_id, status, params)
    SELECT job_id, 'pending', params FROM resolved WHERE job_id = own_id ORDER BY ord
    RETURNING job_id, status, params, created_at, completed_at
), state AS (
    INSERT INTO discovery_job_state (job_id, max_attempts, idempotency_key)
    SELECT job_id, %(max_attempts)s, idempotency_key FROM resolved WHERE job_id = own_id
    RETURNING *
    -- (the trigger that gives hand-inserted jobs a state row finds these and stands back)
), answer AS (
    SELECT j.job_id, j.status, j.params, j.created_at, j.completed_at,
           s.attempts, s.max_attempts, s.run_after, s.worker_id, s.lease_expires_at,
           s.cancel_requested, s.progress, s.progress_message, s.error, s.result,
           s.idempotency_key, s.schedule_id, s.started_at, s.updated_at
    FROM job AS j
    JOIN state AS s ON s.job_id = j.job_id
    UNION ALL
    SELECT * FROM earlier
)
SELECT resolved.job_id <> resolved.own_id AS replayed, answer.*
FROM resolved
JOIN answer ON answer.job_id = resolved.job_id
CROSS JOIN (  -- the first new job's id, once (a rescan repeats it: one notification still)
    SELECT count(*) FROM (SELECT pg_notify('ronin_jobs', job_id::text) FROM job LIMIT 1) AS n
) AS wake_up
ORDER BY resolved.ord

-- name: count_pending_jobs
-- The pending jobs, counted up to %(limit)s only (the partial index on pending jobs, no more
-- of it than that): back-pressure needs to know whether the queue is over its cap, not by how
-- much.
SELECT count(*) FROM (SELECT FROM discovery_jobs WHERE status = 'pending' LIMIT %(limit)s) AS p

-- name: claim_jobs
-- Claim up to %(batch)s jobs in one statement: running jobs whose lease expired (their worker
-- died) first, then pending jobs whose backoff is over, oldest first. SKIP LOCKED lets any
-- number of workers claim at once without waiting on each other; the partial index on pending
-- jobs keeps this fast however many finished jobs pile up. With %(job_id)s, only that job
-- (`ronin discover --wait` running its own job).
WITH expired AS (
    -- Running jobs are few (at most every worker's slots); each one's lease is one lookup.
    SELECT j.job_id
    FROM discovery_jobs AS j
    WHERE j.status = 'running'
      AND (%(job_id)s::uuid IS NULL OR j.job_id = %(job_id)s::uuid)
      AND (SELECT s.lease_expires_at FROM discovery_job_state AS s
           WHERE s.job_id = j.job_id) < now()
    LIMIT %(batch)s
    FOR UPDATE OF j SKIP LOCKED
), pending AS (
    -- Oldest first from the partial index, one primary-key lookup per candidate for its
    -- backoff, stopping at the batch: never a join over every job's state.
    SELECT j.job_id
    FROM discovery_jobs AS j
    WHERE j.status = 'pending'
      AND (%(job_id)s::uuid IS NULL OR j.job_id = %(job_id)s::uuid)
      AND (SELECT s.run_after FROM discovery_job_state AS s WHERE s.job_id = j.job_id) <= now()
    ORDER BY j.created_at
    LIMIT %(batch)s
    FOR UPDATE OF j SKIP LOCKED
), chosen AS (
    SELECT job_id, true AS rescued FROM expired
    UNION ALL
    SELECT job_id, false FROM pending
    LIMIT %(batch)s
), started AS (
    UPDATE discovery_jobs AS j SET status = 'running'
    FROM chosen
    WHERE j.job_id = chosen.job_id AND NOT chosen.rescued
), lost AS (
    UPDATE discovery_job_attempts AS a
    SET outcome = 'lost', ended_at = now(),
        error = '{"code": "LEASE_EXPIRED", "message": "the worker stopped renewing its lease"}'
    FROM chosen
    WHERE a.job_id = chosen.job_id AND chosen.rescued AND a.outcome = 'running'
), leased AS (
    UPDATE discovery_job_state AS s
    SET attempts = s.attempts + 1,
        worker_id = %(worker_id)s,
        lease_token = gen_random_uuid(),
        lease_expires_at = now() + %(lease)s::interval,
        started_at = coalesce(s.started_at, now()),
        updated_at = now()
    FROM chosen
    WHERE s.job_id = chosen.job_id
    RETURNING s.job_id, s.lease_token, s.attempts, s.max_attempts, s.checkpoint,
              s.cancel_requested, s.lease_expires_at
), attempt AS (
    INSERT INTO discovery_job_attempts (lease_token, job_id, attempt, worker_id)
    SELECT lease_token, job_id, attempts, %(worker_id)s FROM leased
)
SELECT leased.job_id, j.params, leased.lease_token, leased.attempts, leased.max_attempts,
       leased.checkpoint, leased.cancel_requested, leased.lease_expires_at
FROM leased
JOIN discovery_jobs AS j ON j.job_id = leased.job_id

-- name: renew_lease
-- Heartbeat: extend the lease if still held; tells the worker whether to stop for a cancel.
UPDATE discovery_job_state
SET lease_expires_at = now() + %(lease)s::interval, updated_at = now()
WHERE job_id = %(job_id)s AND lease_token = %(lease_token)s AND lease_expires_at > now()
RETURNING cancel_requested, lease_expires_at

-- name: record_progress
-- Progress and checkpoint of a running job, published to followers (LISTEN ronin_job_events).
WITH updated AS (
    UPDATE discovery_job_state
    SET progress = %(progress)s,
        progress_message = %(message)s,
        checkpoint = coalesce(%(checkpoint)s::jsonb, checkpoint),
        updated_at = now()
    WHERE job_id = %(job_id)s AND lease_token = %(lease_token)s AND lease_expires_at > now()
    RETURNING job_id, progress, progress_message
)
SELECT pg_notify('ronin_job_events', json_build_object(
    'job_id', job_id, 'status', 'running', 'progress', progress, 'message', progress_message
)::text)
FROM updated

-- name: link_services
-- Remember what the job found or refreshed (first outcome wins across attempts).
INSERT INTO discovery_job_services (job_id, service_id, outcome)
SELECT %(job_id)s, found.service_id, found.outcome
FROM unnest(%(service_ids)s::text[], %(outcomes)s::text[]) AS found(service_id, outcome)
WHERE EXISTS (
    SELECT FROM discovery_job_state
    WHERE job_id = %(job_id)s AND lease_token = %(lease_token)s AND lease_expires_at > now()
)
ON CONFLICT (job_id, service_id) DO NOTHING

-- name: finish_jobs
-- End a batch of jobs, each completed or failed, exactly once: completed_at is set with the
-- final status, and each result gets the counts of the services its job found. One
-- statement and one commit for every job a worker finished in the last few milliseconds.
WITH input AS (
    SELECT *
    FROM unnest(
        %(job_ids)s::uuid[], %(lease_tokens)s::uuid[], %(statuses)s::text[],
        %(results)s::jsonb[], %(errors)s::jsonb[]
    ) AS finished(job_id, lease_token, status, result, error)
), owned AS (
    UPDATE discovery_job_state AS s
    SET lease_token = NULL, lease_expires_at = NULL, worker_id = NULL,
        progress = CASE WHEN input.status = 'completed' THEN 100 ELSE s.progress END,
        error = input.error,
        result = input.result || jsonb_build_object('services', (
            SELECT jsonb_build_object(
                'new', count(*) FILTER (WHERE link.outcome = 'new'),
                'refreshed', count(*) FILTER (WHERE link.outcome = 'refreshed')
            )
            FROM discovery_job_services AS link
            WHERE link.job_id = s.job_id
        )),
        updated_at = now()
    FROM input
    WHERE s.job_id = input.job_id
      AND s.lease_token = input.lease_token
      AND s.lease_expires_at > now()
    RETURNING s.job_id, input.lease_token, input.status, input.error
), attempt AS (
    UPDATE discovery_job_attempts AS a
    SET outcome = owned.status, ended_at = now(), error = owned.error
    FROM owned
    WHERE a.lease_token = owned.lease_token
), finished AS (
    UPDATE discovery_jobs AS j
    SET status = owned.status, completed_at = now()
    FROM owned
    WHERE j.job_id = owned.job_id
    RETURNING j.job_id, owned.status
)
SELECT job_id, pg_notify('ronin_job_events', json_build_object(
    'job_id', job_id, 'status', status
)::text)
FROM finished

-- name: requeue_job
-- Put a running job back in the queue: after a transient failure (outcome retry, after a
-- backoff, the attempt spent) or at shutdown (outcome released, at once, the attempt given
-- back).
WITH owned AS (
    UPDATE discovery_job_state
    SET lease_token = NULL, lease_expires_at = NULL, worker_id = NULL,
        run_after = now() + %(delay)s::interval,
        attempts = CASE WHEN %(outcome)s = 'released' THEN attempts - 1 ELSE attempts END,
        updated_at = now()
    WHERE job_id = %(job_id)s AND lease_token = %(lease_token)s AND lease_expires_at > now()
    RETURNING job_id
), attempt AS (
    UPDATE discovery_job_attempts
    SET outcome = %(outcome)s, ended_at = now(), error = %(error)s
    WHERE lease_token = %(lease_token)s AND EXISTS (SELECT FROM owned)
)
UPDATE discovery_jobs AS j
SET status = 'pending'
FROM owned
WHERE j.job_id = owned.job_id
RETURNING j.job_id

-- name: lock_job
-- A job's status, locked for a cancel.
SELECT j.status FROM discovery_jobs AS j WHERE j.job_id = %(job_id)s FOR UPDATE

-- name: cancel_pending_job
-- A pending job ends at once, failed with CANCELLED; nothing retries it.
WITH state AS (
    UPDATE discovery_job_state
    SET cancel_requested = true, error = %(error)s, updated_at = now()
    WHERE job_id = %(job_id)s
)
UPDATE discovery_jobs SET status = 'failed', completed_at = now()
WHERE job_id = %(job_id)s AND status = 'pending'
RETURNING pg_notify('ronin_job_events', json_build_object(
    'job_id', job_id, 'status', 'failed'
)::text)

-- name: request_cancel
-- Ask the worker running a job to stop: a notification now, the heartbeat's answer otherwise.
UPDATE discovery_job_state SET cancel_requested = true, updated_at = now()
WHERE job_id = %(job_id)s
RETURNING pg_notify('ronin_job_cancel', job_id::text)

-- name: get_job
-- One job with its queue state.
SELECT * FROM discovery_jobs_with_state WHERE job_id = %(job_id)s

-- name: job_ids_in_range
-- The ids of jobs between two ids, in order: the jobs whose id starts with a prefix an
-- operator typed (the prefix padded with 0s, then with fs). A walk of the primary key.
SELECT job_id FROM discovery_jobs
WHERE job_id BETWEEN %(low)s AND %(high)s
ORDER BY job_id
LIMIT %(limit)s

-- name: list_jobs
-- A keyset page of jobs, newest first, optionally of one status.
SELECT * FROM discovery_jobs_with_state
WHERE (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(before_created_at)s::timestamptz IS NULL
       OR (created_at, job_id) < (%(before_created_at)s::timestamptz, %(before_job_id)s::uuid))
ORDER BY created_at DESC, job_id DESC
LIMIT %(limit)s

-- name: job_attempts
-- Every attempt of a job, in order.
SELECT attempt, worker_id, started_at, ended_at, outcome, error
FROM discovery_job_attempts
WHERE job_id = %(job_id)s
ORDER BY started_at, attempt

-- name: job_service_ids
-- What a job found or refreshed.
SELECT service_id, outcome FROM discovery_job_services
WHERE job_id = %(job_id)s
ORDER BY service_id

-- name: prune_jobs
-- Forget finished jobs older than the cutoff, with their state, attempts and result links.
DELETE FROM discovery_jobs
WHERE completed_at < %(cutoff)s AND status IN ('completed', 'failed')

-- name: insert_schedule
-- A recurring discovery; its first job is due at once. A name already taken adds nothing.
INSERT INTO discovery_schedules (name, params, interval_s, next_run_at)
VALUES (%(name)s, %(params)s, %(interval_s)s, now())
ON CONFLICT (name) DO NOTHING
RETURNING schedule_id, name, params, interval_s, next_run_at, enabled, created_at

-- name: list_schedules
-- Every recurring discovery.
SELECT schedule_id, name, params, interval_s, next_run_at, enabled, created_at
FROM discovery_schedules
ORDER BY name

-- name: delete_schedule
-- Remove a recurring discovery by name or id; its past jobs stay.
DELETE FROM discovery_schedules
WHERE name = %(ref)s OR schedule_id::text = %(ref)s
RETURNING schedule_id

-- name: due_schedules
-- Schedules whose period has come, locked so that exactly one worker creates their job.
SELECT schedule_id, params, interval_s, next_run_at
FROM discovery_schedules
WHERE enabled AND next_run_at <= now()
ORDER BY next_run_at
LIMIT 100
FOR UPDATE SKIP LOCKED

-- name: advance_schedule
-- The schedule's next period, skipping periods missed while no worker ran.
UPDATE discovery_schedules
SET next_run_at = next_run_at + make_interval(secs => interval_s * (
    floor(extract(epoch FROM now() - next_run_at) / interval_s) + 1
))
WHERE schedule_id = %(schedule_id)s

-- name: job_services_page
-- A keyset page of what a job found, as the map holds it now (a service pruned since is
-- left out), walking the link table's primary key in service_id order.
SELECT s.service_id, s.node_id, s.node_class, s.endpoint, s.capabilities,
       s.discovery_metadata, s.last_seen, l.outcome
FROM discovery_job_services AS l
JOIN discovered_services AS s ON s.service_id = l.service_id
WHERE l.job_id = %(job_id)s
  AND (%(after)s::text IS NULL OR l.service_id > %(after)s::text)
ORDER BY l.service_id
LIMIT %(limit)s

-- name: count_jobs_by_status
-- Jobs per status, for /metrics; retention keeps the table small enough to count.
SELECT status, count(*) FROM discovery_jobs GROUP BY status
