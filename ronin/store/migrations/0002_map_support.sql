-- 0002: what the map needs beyond the seed to stay fast at a million services.
--
-- Nothing the seed defines is altered; only storage parameters and new objects are added.

-- Re-sightings rewrite last_seen, endpoint and discovery_metadata on every scan, usually of
-- every row of a page at once. Half of each page left free gives every row room for its new
-- version on its own page, so those updates stay HOT (no index is touched, not even the GIN
-- one), which is what keeps a re-scan of a large map cheap; page pruning frees the old
-- versions for the next scan. None of the indexes below covers a column a re-sighting
-- changes, so they do not break HOT either.
ALTER TABLE discovered_services SET (fillfactor = 50);

-- Keyset pages by class and by node walk these in service_id order and stop after one page,
-- instead of sorting every service of a large class.
CREATE INDEX idx_discovered_services_class_service
    ON discovered_services (node_class, service_id);
CREATE INDEX idx_discovered_services_node_service
    ON discovered_services (node_id, service_id);

-- One row per (capability, service): the map's inverted index in B-tree form. The GIN index can
-- say *which* services hold a capability but not hand them over in order, so a first page of a
-- capability held by 10,000 services would fetch and sort all 10,000. Here a page is a short
-- range scan, with or without a class filter. Kept in step by the triggers below, so it holds
-- even for rows written by hand.
CREATE TABLE service_capabilities (
    capability TEXT NOT NULL,
    service_id VARCHAR(255) NOT NULL,
    node_class VARCHAR(100) NOT NULL,
    PRIMARY KEY (capability, service_id)
);
CREATE INDEX idx_service_capabilities_class
    ON service_capabilities (capability, node_class, service_id);
-- Per-capability frequencies for a vocabulary of up to 1,000 capabilities: what picks the
-- rarest capability to drive an all-of search.
ALTER TABLE service_capabilities ALTER COLUMN capability SET STATISTICS 1000;

-- The capability strings of a capabilities value, tolerating anything that is not an array.
CREATE FUNCTION ronin_capability_list(capabilities JSONB) RETURNS TEXT[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(DISTINCT element), '{}')
    FROM jsonb_array_elements_text(
        CASE WHEN jsonb_typeof(capabilities) = 'array' THEN capabilities ELSE '[]' END
    ) AS element
$$;

-- Rows that were there before this migration (a seed schema adopted from the founding document).
INSERT INTO service_capabilities (capability, service_id, node_class)
SELECT cap.name, s.service_id, s.node_class
FROM discovered_services AS s, unnest(ronin_capability_list(s.capabilities)) AS cap(name);

CREATE FUNCTION ronin_capabilities_inserted() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO service_capabilities (capability, service_id, node_class)
    SELECT cap.name, new_rows.service_id, new_rows.node_class
    FROM new_rows, unnest(ronin_capability_list(new_rows.capabilities)) AS cap(name);
    RETURN NULL;
END
$$;

CREATE FUNCTION ronin_capabilities_deleted() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM service_capabilities AS sc
    USING old_rows, unnest(ronin_capability_list(old_rows.capabilities)) AS cap(name)
    WHERE sc.capability = cap.name AND sc.service_id = old_rows.service_id;
    RETURN NULL;
END
$$;

CREATE FUNCTION ronin_capabilities_updated() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM service_capabilities
    WHERE service_id = OLD.service_id
      AND capability = ANY (ronin_capability_list(OLD.capabilities));
    INSERT INTO service_capabilities (capability, service_id, node_class)
    SELECT cap.name, NEW.service_id, NEW.node_class
    FROM unnest(ronin_capability_list(NEW.capabilities)) AS cap(name);
    RETURN NULL;
END
$$;

-- Bulk inserts and deletes are handled once per statement; updates once per changed row,
-- and a re-sighting that changes neither capabilities nor class costs only the WHEN test.
CREATE TRIGGER trg_service_capabilities_insert
    AFTER INSERT ON discovered_services
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ronin_capabilities_inserted();

CREATE TRIGGER trg_service_capabilities_delete
    AFTER DELETE ON discovered_services
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ronin_capabilities_deleted();

CREATE TRIGGER trg_service_capabilities_update
    AFTER UPDATE ON discovered_services
    FOR EACH ROW
    WHEN (OLD.capabilities IS DISTINCT FROM NEW.capabilities
          OR OLD.node_class IS DISTINCT FROM NEW.node_class
          OR OLD.service_id IS DISTINCT FROM NEW.service_id)
    EXECUTE FUNCTION ronin_capabilities_updated();
