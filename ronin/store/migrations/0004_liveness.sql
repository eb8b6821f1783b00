-- 0004: a live map (PROTOCOL.md section 8): each service's state, and each node's check.
--
-- Beside the seed table, never in it: discovered_services keeps its columns, and its
-- last_seen keeps its meaning (the last time the service was seen or verified). The triggers
-- below keep both new tables in step with the map, so rows written by hand are covered too
-- (node_checks through node_check_requests, applied by the next claim). State changes are
-- UPDATEs of service_liveness, and map changes statements on discovered_services: triggers
-- there are where the change feed (section 9) can log in the same transaction.

-- One row per service: where it is in the state machine (ronin/store/liveness_rules.py).
-- Rewritten at every check of its node, so nothing but the key is indexed except the
-- retention index, whose column changes only with the state (a check that keeps the state
-- stays a HOT update).
CREATE TABLE service_liveness (
    service_id VARCHAR(255) PRIMARY KEY,
    state TEXT NOT NULL DEFAULT 'alive'
        CHECK (state IN ('alive', 'suspect', 'gone', 'unverified')),
    state_since TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_checked TIMESTAMPTZ,
    -- Failed checks of its node in a row; 0 after any answer.
    misses INTEGER NOT NULL DEFAULT 0
) WITH (fillfactor = 70);
-- Retention: the oldest gone services first, without reading the live ones.
CREATE INDEX idx_service_liveness_gone ON service_liveness (state_since) WHERE state = 'gone';

-- One row per node: when its descriptor is checked next, by whom, at which address. Claimed
-- with FOR UPDATE SKIP LOCKED in next_check_at order, which is also when a claimer's lease
-- lapses (a claim moves next_check_at to the lease's end): one index range scan finds both
-- the due nodes and the ones a dead worker held. A node whose every service is gone is
-- parked at 'infinity' until it is sighted again.
CREATE TABLE node_checks (
    node_id VARCHAR(255) PRIMARY KEY,
    -- The descriptor URL that last answered (first: the one the node was found at).
    descriptor_url TEXT NOT NULL,
    next_check_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_holder TEXT,
    lease_expires_at TIMESTAMPTZ,
    -- Bumped by every claim: a result carries the round it was claimed in, and one whose
    -- round has moved on (or whose lease lapsed) is stale and ignored.
    round BIGINT NOT NULL DEFAULT 0,
    last_answered_at TIMESTAMPTZ
) WITH (fillfactor = 70);
CREATE INDEX idx_node_checks_due ON node_checks (next_check_at);

-- Where a service's node serves its descriptor: the URL the sighting fetched, or else the
-- well-known path on its endpoint's origin (ws -> http, wss -> https).
CREATE FUNCTION ronin_descriptor_url(metadata JSONB, endpoint TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(
        CASE WHEN jsonb_typeof(metadata -> 'descriptor_url') = 'string'
             THEN metadata ->> 'descriptor_url' END,
        regexp_replace(substring(endpoint FROM '^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]+'),
                       '^[Ww][Ss]([Ss]?)://', 'http\1://') || '/.well-known/kos-node',
        endpoint
    )
$$;

-- Services that were there before this migration: alive, their nodes due over the next
-- minute (spread, so a large map is not re-checked in one burst).
INSERT INTO service_liveness (service_id, state, state_since)
SELECT service_id, 'alive', now() FROM discovered_services;

INSERT INTO node_checks (node_id, descriptor_url, next_check_at)
SELECT DISTINCT ON (node_id) node_id, ronin_descriptor_url(discovery_metadata, endpoint),
       now() + random() * interval '1 minute'
FROM discovered_services
ORDER BY node_id, last_seen DESC;

-- What sightings ask of node_checks: a new node, a new address, a parked node to wake.
-- Appended by the triggers and applied by the next claim (``drain_node_requests``), so a
-- map write never waits for a node_checks row: concurrent upserts touch the same nodes in
-- any order, and writing node_checks from their triggers deadlocked them.
CREATE TABLE node_check_requests (
    request_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    node_id VARCHAR(255) NOT NULL,
    descriptor_url TEXT NOT NULL
);

-- Sighted services: alive (a new one gets its row, one that was not alive is alive again);
-- their nodes' check rows requested unless they are already as this sighting says. Shared
-- by the insert and the update triggers. It waits for no lock a map write does not already
-- hold, except a liveness row a check is recording (and that statement waits for nothing).
CREATE FUNCTION ronin_liveness_sighted(sighted_ids TEXT[]) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE service_liveness
    SET state = 'alive', state_since = now(), misses = 0
    WHERE service_id = ANY (sighted_ids) AND state <> 'alive';
    INSERT INTO service_liveness (service_id, state, state_since)
    SELECT id, 'alive', now() FROM unnest(sighted_ids) AS id
    WHERE NOT EXISTS (SELECT FROM service_liveness AS l WHERE l.service_id = id)
    ON CONFLICT (service_id) DO NOTHING;
    INSERT INTO node_check_requests (node_id, descriptor_url)
    SELECT wanted.node_id, wanted.descriptor_url
    FROM (
        SELECT DISTINCT ON (s.node_id) s.node_id,
               ronin_descriptor_url(s.discovery_metadata, s.endpoint) AS descriptor_url
        FROM discovered_services AS s
        WHERE s.service_id = ANY (sighted_ids)
        ORDER BY s.node_id, s.last_seen DESC
    ) AS wanted
    WHERE NOT EXISTS (
        SELECT FROM node_checks AS c
        WHERE c.node_id = wanted.node_id
          AND c.descriptor_url = wanted.descriptor_url
          AND c.next_check_at <> 'infinity'
    );
END
$$;

-- Nodes of node_ids that no longer hold any service: their check rows go, locked in node_id
-- order (as every writer of several node_checks rows locks them) so that none deadlocks.
CREATE FUNCTION ronin_node_checks_forget(node_ids TEXT[]) RETURNS VOID
LANGUAGE sql AS $$
    DELETE FROM node_checks AS c
    WHERE c.node_id IN (
        SELECT e.node_id FROM node_checks AS e
        WHERE e.node_id = ANY (node_ids)
          AND NOT EXISTS (SELECT FROM discovered_services AS s WHERE s.node_id = e.node_id)
        ORDER BY e.node_id
        FOR UPDATE
    )
$$;

CREATE FUNCTION ronin_liveness_inserted() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ronin_liveness_sighted(ARRAY(SELECT service_id FROM new_rows));
    RETURN NULL;
END
$$;

-- An update is a sighting when anything but last_seen changed (a check rewrites only
-- last_seen, and must not count as one); a service that changed nodes may leave its old
-- node without services.
CREATE FUNCTION ronin_liveness_updated() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ronin_liveness_sighted(ARRAY(
        SELECT n.service_id
        FROM new_rows AS n JOIN old_rows AS o ON o.service_id = n.service_id
        WHERE (n.node_id, n.node_class, n.endpoint, n.capabilities, n.discovery_metadata)
              IS DISTINCT FROM
              (o.node_id, o.node_class, o.endpoint, o.capabilities, o.discovery_metadata)
    ));
    PERFORM ronin_node_checks_forget(ARRAY(
        SELECT o.node_id
        FROM old_rows AS o LEFT JOIN new_rows AS n ON n.service_id = o.service_id
        WHERE n.node_id IS DISTINCT FROM o.node_id
    ));
    RETURN NULL;
END
$$;

CREATE FUNCTION ronin_liveness_deleted() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM service_liveness AS l USING old_rows
    WHERE l.service_id = old_rows.service_id;
    PERFORM ronin_node_checks_forget(ARRAY(SELECT DISTINCT node_id FROM old_rows));
    RETURN NULL;
END
$$;

-- Once per statement, as the capability triggers: a batch of 2,000 sightings costs a few
-- set-based statements, and a re-sighting of an alive service on a known node writes nothing.
CREATE TRIGGER trg_service_liveness_insert
    AFTER INSERT ON discovered_services
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ronin_liveness_inserted();

CREATE TRIGGER trg_service_liveness_update
    AFTER UPDATE ON discovered_services
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ronin_liveness_updated();

CREATE TRIGGER trg_service_liveness_delete
    AFTER DELETE ON discovered_services
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ronin_liveness_deleted();
