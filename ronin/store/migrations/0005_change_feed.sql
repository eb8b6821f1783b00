-- 0005: the change feed (PROTOCOL.md section 9): one row per change to the map, written by
-- triggers in the transaction that makes the change, so rows written by hand are logged too.
--
-- Cursors are commit order. A number taken when a change is written is not: a transaction
-- that took 41 can commit after one that took 42, and a reader already past 42 would never
-- see 41. So a change is written without a cursor (seq NULL), and cursors are given later,
-- to changes already committed, by a sequencing pass (ronin_changes_sequence) that runs
-- under one advisory lock: each pass numbers what has become visible since the last one,
-- after every number the last one gave, and PostgreSQL makes a pass visible before it
-- releases the lock. A reader that has read past cursor 42 can never later find 41.
-- Writers take no lock of the feed's and commit in parallel; within a pass, changes are
-- numbered in the order their transactions reached COMMIT (taken at commit by a deferred
-- trigger) and, within a transaction, in the order it wrote them.

CREATE TABLE map_changes (
    change_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The cursor; NULL until a sequencing pass after the writing transaction committed.
    seq BIGINT,
    -- The writing transaction, to find its commit order (map_change_marks).
    xid XID8 NOT NULL DEFAULT pg_current_xact_id(),
    type TEXT NOT NULL CHECK (type IN
        ('service_added', 'service_changed', 'service_state', 'service_removed')),
    -- When the change committed (from its transaction's mark): cursor order is time order.
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
-- The sequencing pass: committed changes without a cursor (in-flight ones are invisible).
CREATE INDEX idx_map_changes_unstamped ON map_changes (change_id) WHERE seq IS NULL;

-- The one row of the log's bounds: the newest cursor given, and how far the log was pruned
-- (a cursor before that may have lost changes: 410 CURSOR_EXPIRED).
CREATE TABLE map_change_head (
    only_row BOOLEAN PRIMARY KEY DEFAULT true CHECK (only_row),
    last_seq BIGINT NOT NULL DEFAULT 0,
    pruned_through BIGINT NOT NULL DEFAULT 0
);
INSERT INTO map_change_head DEFAULT VALUES;

-- Changes ever written, by type (the metric ronin_changes_written), which pruning must not
-- lower; kept by the sequencing pass.
CREATE TABLE map_change_totals (
    type TEXT PRIMARY KEY,
    total BIGINT NOT NULL DEFAULT 0
);
INSERT INTO map_change_totals (type)
VALUES ('service_added'), ('service_changed'), ('service_state'), ('service_removed');

-- When each transaction that wrote changes reached COMMIT: inserted with its first change,
-- completed by a deferred trigger at its commit, deleted by the pass that numbers its
-- changes. Unlogged: after a crash, changes that lost their mark are numbered first, in the
-- order they were written.
CREATE SEQUENCE map_change_commit_order AS BIGINT;
CREATE UNLOGGED TABLE map_change_marks (
    xid XID8 PRIMARY KEY,
    commit_order BIGINT,
    committed_at TIMESTAMPTZ
);

-- Called by every trigger that wrote changes: mark this transaction, once.
CREATE FUNCTION ronin_changes_mark() RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('ronin.changes_marked', true) IS DISTINCT FROM 'yes' THEN
        INSERT INTO map_change_marks (xid) VALUES (pg_current_xact_id())
        ON CONFLICT DO NOTHING;
        PERFORM set_config('ronin.changes_marked', 'yes', true);
    END IF;
END
$$;

-- At commit: the transaction's place in commit order, and a wake-up for the sequencers
-- (delivered when the commit is done). It takes no lock: writers never wait on each other.
CREATE FUNCTION ronin_changes_committing() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE map_change_marks
    SET commit_order = nextval('map_change_commit_order'), committed_at = clock_timestamp()
    WHERE xid = NEW.xid;
    PERFORM set_config('ronin.changes_marked', '', true);
    PERFORM pg_notify('ronin_changes_pending', '');
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER trg_map_change_marks_commit
    AFTER INSERT ON map_change_marks
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ronin_changes_committing();

-- The sequencing pass: cursors for every committed change without one, after the newest
-- given; the newest cursor it gave (NULL: nothing to number, or, with wait false, another
-- pass holds the lock). Run by each process's change hub when a commit wakes it, by readers
-- before a page, and by housekeeping before pruning; run it in a transaction of its own.
-- Lock key: the bytes of "RChg".
CREATE FUNCTION ronin_changes_sequence(wait BOOLEAN) RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    newest BIGINT;
BEGIN
    IF wait THEN
        PERFORM pg_advisory_xact_lock(1380149351);
    ELSIF NOT pg_try_advisory_xact_lock(1380149351) THEN
        RETURN NULL;
    END IF;
    -- A statement of its own, so its snapshot is taken with the lock held: it sees every
    -- pass before it, and every transaction that committed before it began.
    WITH pending AS (
        SELECT c.change_id, m.committed_at,
               row_number() OVER (ORDER BY m.commit_order NULLS FIRST, c.change_id) AS n
        FROM map_changes AS c
        LEFT JOIN map_change_marks AS m ON m.xid = c.xid
        WHERE c.seq IS NULL
    ), stamped AS (
        UPDATE map_changes AS c
        SET seq = h.last_seq + p.n, at = coalesce(p.committed_at, c.at)
        FROM pending AS p, map_change_head AS h
        WHERE c.change_id = p.change_id
        RETURNING c.seq, c.xid, c.type
    ), counted AS (
        UPDATE map_change_totals AS t SET total = t.total + by_type.n
        FROM (SELECT type, count(*) AS n FROM stamped GROUP BY type) AS by_type
        WHERE t.type = by_type.type
    ), cleared AS (
        DELETE FROM map_change_marks AS m WHERE m.xid IN (SELECT xid FROM stamped)
    )
    SELECT max(seq) INTO newest FROM stamped;
    IF newest IS NOT NULL THEN
        UPDATE map_change_head SET last_seq = newest;
        -- A wake-up, never the truth: readers read the table after the cursor they hold.
        PERFORM pg_notify('ronin_changes', newest::text);
    END IF;
    RETURN newest;
END
$$;

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
