-- The change feed's SQL (PROTOCOL.md section 9; the log itself is migration 0005).

-- name: change_page
-- The changes after a cursor, in cursor order, and the bounds they are read against, in one
-- snapshot: the head (the newest cursor) and how far the log was pruned. At most "scan"
-- cursors are read past the given one, so a filter that matches little costs a bounded scan
-- and the page's cursor still moves on. A page with no change is one row of
-- NULL change columns.
WITH bounds AS (
    SELECT h.last_seq AS head, h.pruned_through FROM map_change_head AS h
)
SELECT b.head, b.pruned_through, c.seq, c.type, c.at, c.service_id, c.node_id,
       c.from_state, c.to_state, c.service
FROM bounds AS b
LEFT JOIN LATERAL (
    SELECT m.seq, m.type, m.at, m.service_id, m.node_id, m.from_state, m.to_state, m.service
    FROM map_changes AS m
    WHERE m.seq > %(since)s
      AND m.seq <= least(b.head, %(since)s + %(scan)s)
      AND (%(node_id)s::text IS NULL OR m.node_id = %(node_id)s::text)
      AND (%(node_class)s::text IS NULL OR m.service ->> 'node_class' = %(node_class)s::text)
      AND (%(capabilities)s::jsonb IS NULL
           OR m.service -> 'capabilities' @> %(capabilities)s::jsonb)
    ORDER BY m.seq
    LIMIT %(limit)s
) AS c ON true
ORDER BY c.seq

-- name: change_head
-- The newest cursor given, and how far the log was pruned.
SELECT last_seq, pruned_through FROM map_change_head

-- name: sequence_changes
-- A sequencing pass (migration 0005): cursors for the changes committed since the last one.
-- Not waiting: skip it if another pass is running (it will have numbered them, or the next
-- one will).
SELECT ronin_changes_sequence(%(wait)s)

-- name: prune_changes
-- The oldest changes, a batch at a time, if older than the cutoff; the horizon moves past
-- them so a cursor from before them is known to have lost changes (410 CURSOR_EXPIRED).
-- Run after a sequencing pass, in the same transaction (its lock keeps passes out of the
-- head row meanwhile).
WITH oldest AS (
    SELECT seq FROM map_changes
    WHERE seq IS NOT NULL
    ORDER BY seq
    LIMIT %(batch)s
), pruned AS (
    DELETE FROM map_changes AS m
    USING oldest
    WHERE m.seq = oldest.seq AND m.at < %(cutoff)s
    RETURNING m.seq
), moved AS (
    UPDATE map_change_head
    SET pruned_through = greatest(pruned_through, (SELECT max(seq) FROM pruned))
    WHERE EXISTS (SELECT FROM pruned)
)
SELECT count(*) FROM pruned

-- name: change_totals
-- Changes ever written, by type (the log's rows may have been pruned since).
SELECT type, total FROM map_change_totals ORDER BY type
