-- The live map's SQL (PROTOCOL.md section 8): claiming node checks, recording what they found,
-- retention. Time is %(now)s when a caller (a test) gives it, else the server's clock.

-- name: drain_node_requests
-- Apply what sightings asked of node_checks (migration 0004's node_check_requests), oldest
-- first, the latest address per node winning: a new node is due at once, a known one takes
-- the new address, a parked one wakes. Rows are taken SKIP LOCKED, so claimers drain side by
-- side, and written in node_id order, as every writer of several node rows does.
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
), taken AS (
    DELETE FROM node_check_requests AS q
    WHERE q.request_id IN (
        SELECT request_id FROM node_check_requests
        ORDER BY request_id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    )
    RETURNING q.request_id, q.node_id, q.descriptor_url
)
INSERT INTO node_checks (node_id, descriptor_url, next_check_at)
SELECT latest.node_id, latest.descriptor_url, clock.now
FROM (
    SELECT DISTINCT ON (node_id) node_id, descriptor_url
    FROM taken
    ORDER BY node_id, request_id DESC
) AS latest, clock
WHERE EXISTS (SELECT FROM discovered_services AS s WHERE s.node_id = latest.node_id)
ORDER BY latest.node_id
ON CONFLICT (node_id) DO UPDATE SET
    descriptor_url = excluded.descriptor_url,
    next_check_at = CASE WHEN node_checks.next_check_at = 'infinity'
                         THEN excluded.next_check_at ELSE node_checks.next_check_at END

-- name: claim_node_checks
-- Up to %(batch)s due nodes, oldest due first, none another claimer holds (SKIP LOCKED): each
-- gets a new round and a lease, and its next_check_at moves to the lease's end, so a node
-- whose claimer died is due again when the lease lapses. A due node whose every service is
-- gone is parked at 'infinity' instead (a sighting wakes it) and not returned. confirming:
-- the check retries a failure to confirm a death (some service of the node is suspect).
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
), due AS (
    SELECT c.ctid AS row_id, c.node_id
    FROM node_checks AS c, clock
    WHERE c.next_check_at <= clock.now
    ORDER BY c.next_check_at
    LIMIT %(batch)s
    FOR UPDATE OF c SKIP LOCKED
), live AS (
    SELECT due.row_id, due.node_id, EXISTS (
        SELECT FROM discovered_services AS s
        JOIN service_liveness AS l ON l.service_id = s.service_id
        WHERE s.node_id = due.node_id AND l.state <> 'gone'
    ) AS live
    FROM due
), claimed AS (
    UPDATE node_checks AS c SET
        round = c.round + 1,
        lease_holder = CASE WHEN live.live THEN %(worker_id)s::text END,
        lease_expires_at = CASE WHEN live.live THEN clock.now + %(lease)s::interval END,
        next_check_at = CASE WHEN live.live THEN clock.now + %(lease)s::interval
                             ELSE 'infinity' END
    FROM live, clock
    -- By the rows' addresses, which their locks keep still: a TID scan whatever the plan.
    WHERE c.ctid = ANY (ARRAY(SELECT row_id FROM live))
      AND c.ctid = live.row_id
    RETURNING c.node_id, c.descriptor_url, c.round, live.live
)
SELECT claimed.node_id, claimed.descriptor_url, claimed.round,
       array_agg(s.service_id ORDER BY s.service_id) AS service_ids,
       coalesce(bool_or(l.state = 'suspect'), false) AS confirming
FROM claimed
JOIN discovered_services AS s ON s.node_id = claimed.node_id
LEFT JOIN service_liveness AS l ON l.service_id = s.service_id
WHERE claimed.live
GROUP BY claimed.node_id, claimed.descriptor_url, claimed.round
ORDER BY claimed.node_id

-- name: record_checks
-- A batch of check results in one statement. Only a result whose lease still holds (same
-- holder, same round, not lapsed) counts: a stale one changes nothing. Its node is due again
-- after the interval (answered, or failed under the guard) or the retry delay; each of its
-- services moves as the rules table (ronin/store/liveness_rules.py) says for its state, event
-- (listed, absent or failed), the guard, and whether it has been suspect for the whole
-- confirmation period; a listed service's last_seen becomes now. The rule is joined on the
-- row being updated (l), so a state a concurrent sighting just wrote is the one it applies to.
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
), result AS (
    SELECT *
    FROM unnest(%(node_ids)s::text[], %(rounds)s::bigint[], %(answered)s::boolean[],
                %(urls)s::text[]) AS r(node_id, round, answered, url)
), current AS (
    -- The nodes whose lease the results still hold, locked in node_id order; one another
    -- statement holds is skipped (its result is lost, its lease lapses, it is checked again),
    -- so recording never waits for a lock and cannot deadlock.
    SELECT c.ctid AS row_id, c.node_id, r.answered, r.url
    FROM node_checks AS c
    JOIN result AS r ON r.node_id = c.node_id
    CROSS JOIN clock
    WHERE c.node_id = ANY (%(node_ids)s::text[])  -- the primary key, whatever the estimates
      AND c.round = r.round
      AND c.lease_holder = %(worker_id)s::text
      AND c.lease_expires_at > clock.now
    ORDER BY c.node_id
    FOR NO KEY UPDATE OF c SKIP LOCKED
), accepted AS (
    UPDATE node_checks AS c SET
        lease_holder = NULL,
        lease_expires_at = NULL,
        -- A failure is retried sooner to confirm a death; under the guard it is not: Ronin
        -- suspects itself and slows down, instead of probing a partition five times as often.
        next_check_at = clock.now + CASE WHEN r.answered OR %(guarded)s::boolean
                                         THEN %(interval)s::interval
                                         ELSE %(retry)s::interval END,
        descriptor_url = coalesce(r.url, c.descriptor_url),
        last_answered_at = CASE WHEN r.answered THEN clock.now ELSE c.last_answered_at END
    FROM current AS r, clock
    WHERE c.ctid = ANY (ARRAY(SELECT row_id FROM current))
      AND c.ctid = r.row_id
    RETURNING c.node_id, r.answered
), listed AS (
    SELECT *
    FROM unnest(%(listed_nodes)s::text[], %(listed_services)s::text[])
        AS listed(node_id, service_id)
), held AS (
    SELECT *
    FROM unnest(%(held_nodes)s::text[], %(held_services)s::text[]) AS held(node_id, service_id)
), checked AS (
    -- The services the claim handed over that the node still holds: one sighted since the
    -- claim is not judged by a fetch that may have come before it.
    SELECT s.service_id, l.state AS from_state,
           CASE WHEN NOT a.answered THEN 'failed'
                WHEN EXISTS (
                    SELECT FROM listed
                    WHERE listed.node_id = a.node_id AND listed.service_id = s.service_id
                ) THEN 'listed'
                ELSE 'absent'
           END AS event
    FROM accepted AS a
    JOIN held AS h ON h.node_id = a.node_id
    JOIN discovered_services AS s ON s.service_id = h.service_id AND s.node_id = a.node_id
    JOIN service_liveness AS l ON l.service_id = s.service_id
    -- A service a sighting or a removal holds right now is left to it.
    FOR NO KEY UPDATE OF s, l SKIP LOCKED
), rules AS (
    SELECT *
    FROM unnest(%(rule_states)s::text[], %(rule_events)s::text[], %(rule_guarded)s::boolean[],
                %(rule_confirmed)s::boolean[], %(rule_next)s::text[])
        AS rule(state, event, guarded, confirmed, next)
), moved AS (
    UPDATE service_liveness AS l SET
        state = rule.next,
        state_since = CASE WHEN rule.next <> l.state THEN clock.now ELSE l.state_since END,
        last_checked = clock.now,
        misses = CASE WHEN checked.event = 'failed' THEN l.misses + 1 ELSE 0 END
    FROM checked, clock, rules AS rule
    WHERE l.service_id = checked.service_id
      AND rule.state = l.state
      AND rule.event = checked.event
      AND rule.guarded = %(guarded)s::boolean
      AND rule.confirmed = (l.state_since <= clock.now - %(confirm)s::interval)
    RETURNING l.service_id, checked.from_state, l.state AS to_state
), seen AS (
    UPDATE discovered_services AS s SET last_seen = clock.now
    FROM checked, clock
    WHERE s.service_id = checked.service_id
      AND checked.event = 'listed'
      AND s.last_seen < clock.now
    RETURNING s.service_id
)
SELECT (SELECT count(*) FROM accepted) AS accepted,
       (SELECT count(*) FROM seen) AS seen,
       coalesce((
           SELECT jsonb_agg(jsonb_build_array(from_state, to_state, n))
           FROM (
               SELECT from_state, to_state, count(*) AS n
               FROM moved
               WHERE from_state <> to_state
               GROUP BY from_state, to_state
           ) AS changes
       ), '[]'::jsonb) AS transitions,
       -- The nodes whose current result answered: the ones whose descriptor may update the map.
       ARRAY(SELECT node_id FROM accepted WHERE answered) AS answered_nodes,
       -- The services this batch made gone, with the state each left.
       coalesce((
           SELECT jsonb_agg(jsonb_build_array(service_id, from_state) ORDER BY service_id)
           FROM moved
           WHERE to_state = 'gone' AND from_state <> 'gone'
       ), '[]'::jsonb) AS gone

-- name: prune_gone
-- Up to %(batch)s services gone since before the cutoff, oldest first, removed from the map
-- (their liveness rows and emptied node checks go with them, by trigger). A row a sighting
-- holds locked right now is skipped: it is being seen again.
WITH doomed AS (
    SELECT s.service_id
    FROM service_liveness AS l
    JOIN discovered_services AS s ON s.service_id = l.service_id
    WHERE l.state = 'gone' AND l.state_since < %(cutoff)s::timestamptz
    ORDER BY l.state_since
    LIMIT %(batch)s
    FOR UPDATE OF s SKIP LOCKED
)
DELETE FROM discovered_services AS s
USING doomed
WHERE s.service_id = doomed.service_id

-- name: count_by_state
-- Services per state (a scan of the narrow liveness table: for /metrics and operators).
SELECT state, count(*) FROM service_liveness GROUP BY state

-- name: liveness_of
-- The liveness of some services, by id.
SELECT service_id, state, state_since, last_checked, misses
FROM service_liveness
WHERE service_id = ANY (%(service_ids)s::text[])
ORDER BY service_id

-- name: node_check_of
-- One node's check row, by id; a parked node (every service gone) has no next_check_at.
SELECT node_id, descriptor_url, next_check_at = 'infinity' AS parked,
       CASE WHEN next_check_at <> 'infinity' THEN next_check_at END AS next_check_at,
       lease_holder, lease_expires_at, round, last_answered_at
FROM node_checks
WHERE node_id = %(node_id)s

-- name: map_rows_of
-- The map's rows of %(service_ids)s, as a re-check compares them with a node's descriptor.
SELECT service_id, node_id, node_class, endpoint, capabilities, discovery_metadata, last_seen
FROM discovered_services
WHERE service_id = ANY (%(service_ids)s::text[])
