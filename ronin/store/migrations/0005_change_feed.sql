-- 0005: the change feed (PROTOCOL.md section 9): one row per change to the map, written by
-- triggers in the transaction that makes the change, so rows written by hand are logged too.
--
-- Cursors are commit order. A row is written with no cursor (seq NULL); at commit, a deferred
-- trigger takes one advisory lock, stamps the transaction's rows with the next values of a
-- sequence and notifies. PostgreSQL makes a transaction visible before it releases its
-- locks, so by the time the next transaction takes a value, every smaller one is visible: a
-- reader that has read past cursor 42 can never later find 41. The price is that commits
-- which change the map queue up for that lock, for as long as a commit takes; transactions
-- that change nothing (a re-sighting that only moves last_seen, a check that keeps the state)
-- never take it.

CREATE SEQUENCE map_change_seq AS BIGINT;

CREATE TABLE map_changes (
    change_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The cursor, from map_change_seq at commit; NULL only inside the writing transaction.
    seq BIGINT,
    type TEXT NOT NULL CHECK (type IN
        ('service_added', 'service_changed', 'service_state', 'service_removed')),
    -- When the change committed (stamped with the cursor): cursor order is time order.
    at TIMESTAMPTZ NOT NULL DEFAULT now(),
    service_id VARCHAR(255) NOT NULL,
    node_id VARCHAR(255) NOT NULL,
    from_state TEXT,
    to_state TEXT,
    -- The service as GET /v1/services shows it, at the change (its last state, for a removal).
    service JSONB NOT NULL
);
-- Readers: the changes after a cursor, in cursor order.
CREATE UNIQUE INDEX idx_map_changes_seq ON map_changes (seq);
-- The commit trigger: the rows of its own transaction (the only ones without a cursor).
CREATE INDEX idx_map_changes_unstamped ON map_changes (change_id) WHERE seq IS NULL;

-- The one row saying how far the log was pruned: a cursor before it may have lost changes.
CREATE TABLE map_change_horizon (
    only_row BOOLEAN PRIMARY KEY DEFAULT true CHECK (only_row),
    pruned_through BIGINT NOT NULL DEFAULT 0
);
INSERT INTO map_change_horizon DEFAULT VALUES;

-- Changes ever written, by type: the metric ronin_changes_written_total, which pruning the
-- log must not lower. Kept by the commit trigger, under its lock.
CREATE TABLE map_change_totals (
    type TEXT PRIMARY KEY,
    total BIGINT NOT NULL DEFAULT 0
);
INSERT INTO map_change_totals (type)
VALUES ('service_added'), ('service_changed'), ('service_state'), ('service_removed');

-- One row per transaction that wrote changes, inserted with its first change and deleted at
-- its commit: its insert queues the one deferred trigger that stamps the transaction's rows
-- (a deferred trigger per change would queue 100,000 events for a large discovery batch).
CREATE UNLOGGED TABLE map_change_marks (xid XID8 PRIMARY KEY);

-- Changes of every type, written by a trigger: make sure this transaction's commit stamps them.
CREATE FUNCTION ronin_changes_mark() RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('ronin.changes_marked', true) IS DISTINCT FROM 'yes' THEN
        INSERT INTO map_change_marks VALUES (pg_current_xact_id()) ON CONFLICT DO NOTHING;
        PERFORM set_config('ronin.changes_marked', 'yes', true);
    END IF;
END
$$;

-- At commit: the next cursors for this transaction's changes, in the order it wrote them.
-- Lock key: the bytes of "RChg".
CREATE FUNCTION ronin_changes_stamp() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
DECLARE
    mine BIGINT;
    first BIGINT;
BEGIN
    PERFORM pg_advisory_xact_lock(1380149351);
    SELECT count(*) INTO mine FROM map_changes WHERE seq IS NULL;
    IF mine > 0 THEN
        -- A block of cursors: only this lock's holder draws from the sequence.
        first := nextval('map_change_seq');
        IF mine > 1 THEN
            PERFORM setval('map_change_seq', first + mine - 1);
        END IF;
        UPDATE map_change_totals AS t SET total = t.total + mine_by_type.n
        FROM (
            SELECT type, count(*) AS n FROM map_changes WHERE seq IS NULL GROUP BY type
        ) AS mine_by_type
        WHERE t.type = mine_by_type.type;
        UPDATE map_changes AS c
        SET seq = first - 1 + numbered.n, at = clock_timestamp()
        FROM (
            SELECT change_id, row_number() OVER (ORDER BY change_id) AS n
            FROM map_changes WHERE seq IS NULL
        ) AS numbered
        WHERE c.change_id = numbered.change_id;
        -- A wake-up, never the truth: readers read the table after the cursor they hold.
        PERFORM pg_notify('ronin_changes', (first + mine - 1)::text);
    END IF;
    DELETE FROM map_change_marks WHERE xid = pg_current_xact_id();
    PERFORM set_config('ronin.changes_marked', '', true);
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER trg_map_change_marks_stamp
    AFTER INSERT ON map_change_marks
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ronin_changes_stamp();

-- A service row and its liveness as the map's queries show them (ronin/store/sql/map.sql):
-- no liveness row reads as alive since now.
CREATE FUNCTION ronin_change_service(s discovered_services, l service_liveness) RETURNS JSONB
LANGUAGE sql STABLE AS $$
    SELECT to_jsonb(s) || jsonb_build_object(
        'state', coalesce(l.state, 'alive'),
        'state_since', coalesce(l.state_since, now()),
        'last_checked', l.last_checked
    )
$$;

-- What a sighting rewrites each time without changing the service: how and when this one
-- saw it. A change of anything else in discovery_metadata is a service_changed.
CREATE FUNCTION ronin_change_relevant(metadata JSONB) RETURNS JSONB
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT metadata - ARRAY['first_seen', 'claim', 'job_id', 'response_time_ms']
$$;

CREATE FUNCTION ronin_changes_inserted() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO map_changes (type, service_id, node_id, service)
    SELECT 'service_added', n.service_id, n.node_id, ronin_change_service(n, l)
    FROM new_rows AS n LEFT JOIN service_liveness AS l ON l.service_id = n.service_id
    ORDER BY n.service_id;
    IF FOUND THEN
        PERFORM ronin_changes_mark();
    END IF;
    RETURN NULL;
END
$$;

-- Row by row, but only for the rows the trigger's WHEN picked: a batch of re-sightings that
-- change nothing but last_seen (and the sighting's own bookkeeping) never calls it.
CREATE FUNCTION ronin_changes_updated() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO map_changes (type, service_id, node_id, service)
    SELECT 'service_changed', NEW.service_id, NEW.node_id, ronin_change_service(NEW, l)
    FROM (SELECT) AS one
    LEFT JOIN service_liveness AS l ON l.service_id = NEW.service_id;
    PERFORM ronin_changes_mark();
    RETURN NULL;
END
$$;

CREATE FUNCTION ronin_changes_deleted() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO map_changes (type, service_id, node_id, service)
    SELECT 'service_removed', o.service_id, o.node_id, ronin_change_service(o, l)
    FROM old_rows AS o LEFT JOIN service_liveness AS l ON l.service_id = o.service_id
    ORDER BY o.service_id;
    IF FOUND THEN
        PERFORM ronin_changes_mark();
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION ronin_changes_state() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO map_changes (type, service_id, node_id, from_state, to_state, service)
    SELECT 'service_state', s.service_id, s.node_id, OLD.state, NEW.state,
           ronin_change_service(s, NEW)
    FROM discovered_services AS s
    WHERE s.service_id = NEW.service_id;
    IF FOUND THEN
        PERFORM ronin_changes_mark();
    END IF;
    RETURN NULL;
END
$$;

-- Named so that they fire before the liveness triggers of 0004 (triggers of one event fire in
-- name order): a removal still finds the service's liveness row, and a sighting that revives
-- a gone service logs its service_changed before the service_state its liveness trigger makes.
CREATE TRIGGER trg_service_changes_insert
    AFTER INSERT ON discovered_services
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ronin_changes_inserted();

CREATE TRIGGER trg_service_changes_update
    AFTER UPDATE ON discovered_services
    FOR EACH ROW
    WHEN ((OLD.node_id, OLD.node_class, OLD.endpoint, OLD.capabilities,
           ronin_change_relevant(OLD.discovery_metadata))
          IS DISTINCT FROM
          (NEW.node_id, NEW.node_class, NEW.endpoint, NEW.capabilities,
           ronin_change_relevant(NEW.discovery_metadata)))
    EXECUTE FUNCTION ronin_changes_updated();

CREATE TRIGGER trg_service_changes_delete
    AFTER DELETE ON discovered_services
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ronin_changes_deleted();

CREATE TRIGGER trg_service_changes_state
    AFTER UPDATE OF state ON service_liveness
    FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION ronin_changes_state();
