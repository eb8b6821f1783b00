-- 0006: peer links (which node named which as a peer, from which job) and the map's stored
-- layout (where the dashboard draws each node, computed once per node: ronin/store/layout.py).
--
-- Beside the map, never in it: nothing earlier migrations define is altered. Both tables are
-- keyed by node_id and kept in step with the map by the triggers below, as 0004 keeps
-- node_checks: a node that no longer holds any service loses its links and its position.

-- One row per (referrer, peer): the referrer's descriptor named the peer, which the job
-- resolved to that node_id. Re-sightings move last_seen and job_id only (the last job that
-- saw it); first_seen is kept.
CREATE TABLE node_links (
    source_node VARCHAR(255) NOT NULL,
    target_node VARCHAR(255) NOT NULL,
    first_seen TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen TIMESTAMPTZ NOT NULL DEFAULT now(),
    job_id UUID,
    PRIMARY KEY (source_node, target_node),
    CHECK (source_node <> target_node)
) WITH (fillfactor = 70);
-- Who refers to a node (a node's page, and the cleanup of a node that left by either end).
CREATE INDEX idx_node_links_target ON node_links (target_node, source_node);
-- Retention: the links not seen for longest first.
CREATE INDEX idx_node_links_last_seen ON node_links (last_seen);

-- One row per node the dashboard has drawn: its position, placed once and never moved.
-- ``slot``: the slot of its class's sector it took (NULL when it was placed beside a node
-- that referred it), so the next node of that class takes the next free one.
CREATE TABLE node_layout (
    node_id VARCHAR(255) PRIMARY KEY,
    x DOUBLE PRECISION NOT NULL,
    y DOUBLE PRECISION NOT NULL,
    placed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    node_class VARCHAR(100) NOT NULL,
    slot INTEGER
);
CREATE UNIQUE INDEX idx_node_layout_slot ON node_layout (node_class, slot) WHERE slot IS NOT NULL;

-- A node's page reads its services' state changes, newest first: without this, the log of
-- every node's changes would be scanned. Only state changes pay for it.
CREATE INDEX idx_map_changes_node_state ON map_changes (node_id, seq)
    WHERE type = 'service_state';

-- Nodes of node_ids that no longer hold any service: their links (either end) and their
-- position go. Links are locked in key order, as the writers of links lock them, so that a
-- cleanup and a job's batch of links cannot deadlock.
CREATE FUNCTION ronin_node_links_forget(node_ids TEXT[]) RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    left_nodes TEXT[];
BEGIN
    left_nodes := ARRAY(
        SELECT DISTINCT n FROM unnest(node_ids) AS n
        WHERE n IS NOT NULL
          AND NOT EXISTS (SELECT FROM discovered_services AS s WHERE s.node_id = n)
    );
    IF cardinality(left_nodes) = 0 THEN
        RETURN;
    END IF;
    DELETE FROM node_links AS k
    WHERE (k.source_node, k.target_node) IN (
        SELECT e.source_node, e.target_node FROM node_links AS e
        WHERE e.source_node = ANY (left_nodes) OR e.target_node = ANY (left_nodes)
        ORDER BY e.source_node, e.target_node
        FOR UPDATE
    );
    DELETE FROM node_layout AS p WHERE p.node_id = ANY (left_nodes);
END
$$;

CREATE FUNCTION ronin_links_deleted() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ronin_node_links_forget(ARRAY(SELECT DISTINCT node_id FROM old_rows));
    RETURN NULL;
END
$$;

CREATE FUNCTION ronin_links_moved() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ronin_node_links_forget(ARRAY[OLD.node_id]::text[]);
    RETURN NULL;
END
$$;

-- Deletes once per statement (a prune of 100,000 services is one call); an update only when
-- a service changed nodes (a re-sighting costs the WHEN test, nothing more).
CREATE TRIGGER trg_service_links_delete
    AFTER DELETE ON discovered_services
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ronin_links_deleted();

CREATE TRIGGER trg_service_links_update
    AFTER UPDATE ON discovered_services
    FOR EACH ROW
    WHEN (OLD.node_id IS DISTINCT FROM NEW.node_id)
    EXECUTE FUNCTION ronin_links_moved();
