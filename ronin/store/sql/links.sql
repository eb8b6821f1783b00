-- Peer links and the stored layout (migration 0006), and the graph the dashboard draws.

-- name: record_links
-- A job's batch of links in one statement: new ones inserted, known ones re-sighted
-- (last_seen and job_id move, first_seen stays). Rows are written in key order, so two jobs
-- writing overlapping batches lock them in the same order and cannot deadlock; a link whose
-- end holds no service (its services lost their claims, or it was removed meanwhile) is left
-- out, as the cleanup trigger would remove it.
INSERT INTO node_links AS k (source_node, target_node, first_seen, last_seen, job_id)
SELECT link.source_node, link.target_node, now(), now(), %(job_id)s::uuid
FROM unnest(%(sources)s::text[], %(targets)s::text[]) AS link(source_node, target_node)
WHERE link.source_node <> link.target_node
  AND EXISTS (SELECT FROM discovered_services AS s WHERE s.node_id = link.source_node)
  AND EXISTS (SELECT FROM discovered_services AS s WHERE s.node_id = link.target_node)
ORDER BY link.source_node, link.target_node
ON CONFLICT (source_node, target_node) DO UPDATE
SET last_seen = greatest(k.last_seen, excluded.last_seen), job_id = excluded.job_id

-- name: graph_nodes
-- Every node of the map (or of %(ids)s), one row each: its class (its latest service's),
-- its best state (0 alive, 1 suspect, 2 unverified, 3 gone; no liveness row reads as alive),
-- how many services it holds, the union of their capabilities and its stored position
-- (NULL: not placed yet). One pass over the map, hash-joined with the narrow liveness and
-- layout tables, and aggregated twice (the capabilities apart: one row per capability held).
-- The filters apply to the node, so a capability filter is all-of over its capabilities.
WITH services AS (
    SELECT s.service_id, s.node_id, s.node_class, s.last_seen, s.capabilities,
           CASE coalesce(l.state, 'alive')
               WHEN 'alive' THEN 0 WHEN 'suspect' THEN 1 WHEN 'unverified' THEN 2 ELSE 3
           END AS best
    FROM discovered_services AS s
    LEFT JOIN service_liveness AS l ON l.service_id = s.service_id
    WHERE (%(ids)s::text[] IS NULL OR s.node_id = ANY (%(ids)s::text[]))
), per_node AS (
    SELECT node_id, (array_agg(node_class ORDER BY last_seen DESC, service_id))[1] AS node_class,
           min(best) AS best, count(*) AS services
    FROM services
    GROUP BY node_id
), held AS (
    SELECT s.node_id, array_agg(DISTINCT held.capability ORDER BY held.capability) AS capabilities
    FROM services AS s
    CROSS JOIN LATERAL jsonb_array_elements_text(
        CASE WHEN jsonb_typeof(s.capabilities) = 'array' THEN s.capabilities ELSE '[]' END
    ) AS held(capability)
    GROUP BY s.node_id
)
SELECT n.node_id, n.node_class, n.best, n.services,
       coalesce(h.capabilities, '{}') AS capabilities, p.x, p.y
FROM per_node AS n
LEFT JOIN held AS h ON h.node_id = n.node_id
LEFT JOIN node_layout AS p ON p.node_id = n.node_id
WHERE (%(node_class)s::text IS NULL OR n.node_class = %(node_class)s::text)
  AND (%(best)s::int[] IS NULL OR n.best = ANY (%(best)s::int[]))
  AND coalesce(h.capabilities, '{}') @> %(capabilities)s::text[]
ORDER BY n.node_id

-- name: graph_links
-- Every link, for the graph (the caller keeps those between the nodes it returns), its
-- times already in the feed's format (UTC, milliseconds, Z): formatting 40,000 datetimes
-- in Python costs more than the whole query.
SELECT source_node, target_node,
       to_char(first_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
       to_char(last_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
       job_id::text
FROM node_links

-- name: links_touching
-- The links with one end among the nodes asked for (both directions have an index), for a
-- page adding those nodes live; times formatted as graph_links formats them.
SELECT source_node, target_node,
       to_char(first_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
       to_char(last_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
       job_id::text
FROM node_links
WHERE source_node = ANY (%(ids)s::text[]) OR target_node = ANY (%(ids)s::text[])

-- name: links_of
-- A node's links both ways: who named it (direction 'in') and whom it named ('out').
SELECT 'in' AS direction, source_node AS node_id, first_seen, last_seen, job_id
FROM node_links WHERE target_node = %(node_id)s
UNION ALL
SELECT 'out', target_node, first_seen, last_seen, job_id
FROM node_links WHERE source_node = %(node_id)s
ORDER BY 1, 2

-- name: node_history
-- A node's services' state changes, newest first (idx_map_changes_node_state).
SELECT seq, at, service_id, from_state, to_state
FROM map_changes
WHERE node_id = %(node_id)s AND type = 'service_state' AND seq IS NOT NULL
ORDER BY seq DESC
LIMIT %(limit)s

-- name: lock_layout
-- Placement is serialised (a transaction-scoped advisory lock, key: the bytes of "RLay"):
-- two requests that first see the same new nodes place them once, in one order.
SELECT pg_advisory_xact_lock(1380729209)

-- name: layout_of
-- The stored positions of some nodes.
SELECT node_id, x, y, slot FROM node_layout WHERE node_id = ANY (%(ids)s::text[])

-- name: taken_slots
-- The slots of the classes' sectors already taken.
SELECT node_class, slot FROM node_layout
WHERE node_class = ANY (%(classes)s::text[]) AND slot IS NOT NULL

-- name: placed_referrers
-- The referrers of some nodes that already have a position, with it.
SELECT k.target_node, k.source_node, p.x, p.y, p.slot
FROM node_links AS k
JOIN node_layout AS p ON p.node_id = k.source_node
WHERE k.target_node = ANY (%(ids)s::text[])

-- name: referrers_of
-- Who referred some nodes (placed or not): what orders a batch of new nodes.
SELECT target_node, source_node FROM node_links WHERE target_node = ANY (%(ids)s::text[])

-- name: insert_layout
-- New positions, in one statement; a node another request placed first keeps its own.
INSERT INTO node_layout (node_id, x, y, node_class, slot)
SELECT node_id, x, y, node_class, slot
FROM unnest(%(ids)s::text[], %(xs)s::float8[], %(ys)s::float8[], %(classes)s::text[],
            %(slots)s::int[]) AS placed(node_id, x, y, node_class, slot)
ORDER BY node_id
ON CONFLICT DO NOTHING

-- name: prune_links
-- Links not seen since the cutoff (their nodes may still be in the map).
DELETE FROM node_links WHERE last_seen < %(cutoff)s
