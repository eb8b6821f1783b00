-- The map's SQL, one named query per block: "-- name: <name>" then a line saying why.
-- Optional filters are written "(%(x)s IS NULL OR ...)": these queries are sent unprepared, so
-- PostgreSQL plans each with its actual values and folds the unused filters away.

-- name: lock_services
-- The rows a batch's sightings claim, locked in service_id order (so concurrent batches
-- cannot deadlock) until the batch commits: who owns each, since when, the job claim it was
-- written under, and whether it has gone stale (PROTOCOL.md section 7). NO KEY UPDATE: the
-- job-to-service links may still take their key-share locks.
SELECT service_id, node_id, last_seen, discovery_metadata -> 'claim' AS claim,
       last_seen < now() - %(freshness_window)s::interval AS stale
FROM discovered_services
WHERE service_id = ANY (%(service_ids)s::text[])
ORDER BY service_id
FOR NO KEY UPDATE

-- name: insert_services
-- New services, which no row held when the batch locked its rows. One another transaction
-- inserted since is left alone (not returned): the batch settles it again, locked.
INSERT INTO discovered_services
    (service_id, node_id, node_class, endpoint, capabilities, discovery_metadata, last_seen)
SELECT service_id, node_id, node_class, endpoint, capabilities::jsonb, metadata::jsonb, seen_at
FROM unnest(
    -- Arrays sent in binary format: text escaping of 100,000 JSON strings costs more than
    -- the whole statement does on the server.
    %(service_ids)b::text[], %(node_ids)b::text[], %(node_classes)b::text[],
    %(endpoints)b::text[], %(capabilities)b::text[], %(metadata)b::text[],
    %(seen_at)b::timestamptz[]
) AS sighting(service_id, node_id, node_class, endpoint, capabilities, metadata, seen_at)
ON CONFLICT (service_id) DO NOTHING
RETURNING service_id

-- name: update_services
-- Rewrite rows the batch holds locked, as the ownership rule settled them (ronin/store/
-- claims.py). first_seen survives a refresh by the same owner; a new owner starts afresh.
UPDATE discovered_services AS s SET
    node_id = sighting.node_id,
    node_class = sighting.node_class,
    endpoint = sighting.endpoint,
    capabilities = sighting.capabilities::jsonb,
    discovery_metadata = CASE
        WHEN s.node_id = sighting.node_id AND s.discovery_metadata ? 'first_seen'
        THEN sighting.metadata::jsonb
            || jsonb_build_object('first_seen', s.discovery_metadata -> 'first_seen')
        ELSE sighting.metadata::jsonb
    END,
    last_seen = sighting.seen_at
FROM unnest(
    %(service_ids)b::text[], %(node_ids)b::text[], %(node_classes)b::text[],
    %(endpoints)b::text[], %(capabilities)b::text[], %(metadata)b::text[],
    %(seen_at)b::timestamptz[]
) AS sighting(service_id, node_id, node_class, endpoint, capabilities, metadata, seen_at)
WHERE s.service_id = sighting.service_id

-- name: get_service
-- One service by its id, in whatever state.
SELECT s.service_id, s.node_id, s.node_class, s.endpoint, s.capabilities, s.discovery_metadata,
       s.last_seen, coalesce(live.state, 'alive') AS state,
       coalesce(live.state_since, s.last_seen) AS state_since, live.last_checked
FROM discovered_services AS s
LEFT JOIN LATERAL (
    -- Its liveness, one primary-key probe; no row reads as alive.
    SELECT l.state, l.state_since, l.last_checked
    FROM service_liveness AS l
    WHERE l.service_id = s.service_id
    OFFSET 0
) AS live ON true
WHERE s.service_id = %(service_id)s

-- name: find_services
-- A keyset page of services, in service_id order, when no capability narrows the search.
-- The (node_class, service_id) and (node_id, service_id) indexes hand rows over in page order.
-- The state filter is checked on each row the walk hands over, by one probe of the liveness
-- table's primary key: the walk stays an ordered index scan (OFFSET 0 keeps the planner from
-- making it a join that reads the liveness table end to end).
SELECT s.service_id, s.node_id, s.node_class, s.endpoint, s.capabilities, s.discovery_metadata,
       s.last_seen, coalesce(live.state, 'alive') AS state,
       coalesce(live.state_since, s.last_seen) AS state_since, live.last_checked
FROM discovered_services AS s
LEFT JOIN LATERAL (
    -- Its liveness, one primary-key probe; no row reads as alive.
    SELECT l.state, l.state_since, l.last_checked
    FROM service_liveness AS l
    WHERE l.service_id = s.service_id
    OFFSET 0
) AS live ON true
WHERE (%(node_class)s::text IS NULL OR s.node_class = %(node_class)s::text)
  AND (%(node_id)s::text IS NULL OR s.node_id = %(node_id)s::text)
  AND (%(seen_since)s::timestamptz IS NULL OR s.last_seen >= %(seen_since)s::timestamptz)
  AND (%(after)s::text IS NULL OR s.service_id > %(after)s::text)
  AND coalesce(live.state, 'alive') = ANY (%(states)s::text[])
ORDER BY s.service_id
LIMIT %(limit)s

-- name: find_services_by_capability
-- A keyset page of services holding capabilities. Each "driver" capability is walked in
-- service_id order through service_capabilities, every filter applied inside the walk so it
-- stops after one page; the walks are merged and the first page of their union is kept.
-- An all-of search has one driver (its rarest capability) and checks the others with one
-- index probe each; an any-of search has one driver per capability. No GIN scan here: it
-- would fetch and sort every holder of a common capability before the first row.
-- The walks hand over service_ids (and liveness) only: the wide rows are fetched for the
-- page kept, not for every walk's page (an any-of search of 3 fetched 300 rows for 100).
SELECT s.service_id, s.node_id, s.node_class, s.endpoint, s.capabilities,
       s.discovery_metadata, s.last_seen, page.state,
       coalesce(page.state_since, s.last_seen) AS state_since, page.last_checked
FROM (
    SELECT DISTINCT ON (hit.service_id) hit.*
    FROM unnest(%(drivers)s::text[]) AS driver(capability)
    CROSS JOIN LATERAL (
        SELECT sc.service_id, coalesce(live.state, 'alive') AS state, live.state_since,
               live.last_checked
        FROM service_capabilities AS sc
        LEFT JOIN LATERAL (
            -- Its liveness, one primary-key probe per candidate, in walk order; no row reads
            -- as alive. OFFSET 0 keeps the planner from making it a join that reads the
            -- liveness table end to end.
            SELECT l.state, l.state_since, l.last_checked
            FROM service_liveness AS l
            WHERE l.service_id = sc.service_id
            OFFSET 0
        ) AS live ON true
        WHERE sc.capability = driver.capability
          AND (%(node_class)s::text IS NULL OR sc.node_class = %(node_class)s::text)
          AND (%(after)s::text IS NULL OR sc.service_id > %(after)s::text)
          AND (
              cardinality(%(also_required)s::text[]) = 0
              OR (
                  SELECT count(*) FROM service_capabilities AS held
                  WHERE held.service_id = sc.service_id
                    AND held.capability = ANY (%(also_required)s::text[])
              ) = cardinality(%(also_required)s::text[])
          )
          -- Filters on the service row itself: one primary-key probe, only when asked
          -- (OFFSET 0: a probe per candidate, never a hash of every row seen since).
          AND ((%(node_id)s::text IS NULL AND %(seen_since)s::timestamptz IS NULL) OR EXISTS (
              SELECT FROM discovered_services AS candidate
              WHERE candidate.service_id = sc.service_id
                AND (%(node_id)s::text IS NULL OR candidate.node_id = %(node_id)s::text)
                AND (%(seen_since)s::timestamptz IS NULL
                     OR candidate.last_seen >= %(seen_since)s::timestamptz)
              OFFSET 0
          ))
          AND coalesce(live.state, 'alive') = ANY (%(states)s::text[])
        ORDER BY sc.service_id
        LIMIT %(limit)s
    ) AS hit
    ORDER BY hit.service_id
    LIMIT %(limit)s
) AS page
CROSS JOIN LATERAL (
    -- The page's rows, one primary-key probe each (OFFSET 0: never a join over the table).
    SELECT d.* FROM discovered_services AS d WHERE d.service_id = page.service_id OFFSET 0
) AS s
ORDER BY page.service_id

-- name: capability_frequencies
-- The planner's statistics of service_capabilities.capability: each common capability with
-- the estimated number of services holding it. Cached by the map to pick the rarest
-- capability of an all-of search without a query per search.
SELECT mcv.value, round(mcv.freq * greatest(cls.reltuples, 0))::bigint AS holders
FROM pg_stats AS st
CROSS JOIN LATERAL unnest(st.most_common_vals::text::text[], st.most_common_freqs)
    AS mcv(value, freq)
JOIN pg_class AS cls ON cls.oid = 'service_capabilities'::regclass
WHERE st.schemaname = current_schema()
  AND st.tablename = 'service_capabilities'
  AND st.attname = 'capability'

-- name: capability_holders_sampled
-- How many services hold each capability, counted up to a small bound: what tells rare
-- from rarer when the statistics do not know them.
SELECT wanted.capability, (
    SELECT count(*) FROM (
        SELECT FROM service_capabilities AS sc
        WHERE sc.capability = wanted.capability
        LIMIT %(bound)s
    ) AS sample
) AS holders
FROM unnest(%(capabilities)s::text[]) AS wanted(capability)

-- name: summary_by_class
-- Services, nodes and the latest sighting per node class (a full scan: for operators only).
SELECT node_class, count(*) AS services, count(DISTINCT node_id) AS nodes,
       max(last_seen) AS last_seen
FROM discovered_services
GROUP BY node_class
ORDER BY services DESC, node_class

-- name: prune_services
-- Forget services not seen since the cutoff; their capability rows go with them (trigger).
DELETE FROM discovered_services
WHERE last_seen < %(cutoff)s

-- name: nodes_page
-- A keyset page of nodes in node_id order, each with all its services. The nodes are picked
-- from the (node_id, service_id) index first, so a page reads only its own nodes' rows.
-- A node shows the services in the states asked for (by default all but gone), and a node
-- with none of those is left out: the state of each is one liveness primary-key probe.
WITH page AS (
    SELECT DISTINCT s.node_id
    FROM discovered_services AS s
    LEFT JOIN LATERAL (
        -- Its liveness, one primary-key probe; no row reads as alive.
        SELECT l.state, l.state_since, l.last_checked
        FROM service_liveness AS l
        WHERE l.service_id = s.service_id
        OFFSET 0
    ) AS live ON true
    WHERE (%(after)s::text IS NULL OR s.node_id > %(after)s::text)
      AND (%(node_class)s::text IS NULL OR s.node_class = %(node_class)s::text)
      AND coalesce(live.state, 'alive') = ANY (%(states)s::text[])
    ORDER BY s.node_id
    LIMIT %(limit)s
)
SELECT s.service_id, s.node_id, s.node_class, s.endpoint, s.capabilities,
       s.discovery_metadata, s.last_seen, coalesce(live.state, 'alive') AS state,
       coalesce(live.state_since, s.last_seen) AS state_since, live.last_checked
FROM discovered_services AS s
JOIN page ON page.node_id = s.node_id
LEFT JOIN LATERAL (
    -- Its liveness, one primary-key probe; no row reads as alive.
    SELECT l.state, l.state_since, l.last_checked
    FROM service_liveness AS l
    WHERE l.service_id = s.service_id
    OFFSET 0
) AS live ON true
WHERE (%(node_class)s::text IS NULL OR s.node_class = %(node_class)s::text)
  AND coalesce(live.state, 'alive') = ANY (%(states)s::text[])
ORDER BY s.node_id, s.service_id

-- name: count_services
-- Every service in the map, for /metrics.
SELECT count(*) FROM discovered_services

-- name: count_services_by_state
-- Services per state, for /metrics and ``ronin map summary``: the states other than alive
-- from the narrow liveness table, alive the rest of the map (so a service without a liveness
-- row counts as alive, as map queries read it).
WITH others AS (
    SELECT state, count(*) AS services
    FROM service_liveness
    WHERE state <> 'alive'
    GROUP BY state
)
SELECT state, services FROM others
UNION ALL
SELECT 'alive', (SELECT count(*) FROM discovered_services)
    - coalesce((SELECT sum(services) FROM others), 0)
