-- 0001: the seed schema of the founding document (shared/SEED_SCHEMA.sql), exactly.
--
-- One difference in *how*, none in *what*: the seed enables "uuid-ossp" and defaults job_id to
-- uuid_generate_v4(). Servers without that contrib module (the embedded PostgreSQL among them)
-- get gen_random_uuid() instead, which is built in since PostgreSQL 13 and is also a random v4
-- UUID. Where the module exists, the seed's own statements run as written.

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_available_extensions WHERE name = 'uuid-ossp') THEN
        CREATE EXTENSION IF NOT EXISTS "uuid-ossp";
    END IF;
EXCEPTION
    -- Available but not ours to create: fall back like a server without it.
    WHEN insufficient_privilege THEN NULL;
END
$$;

CREATE TABLE discovery_jobs (
    job_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    status VARCHAR(50) NOT NULL,
    params JSONB NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    completed_at TIMESTAMP WITH TIME ZONE
);

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_extension WHERE extname = 'uuid-ossp') THEN
        ALTER TABLE discovery_jobs ALTER COLUMN job_id SET DEFAULT uuid_generate_v4();
    END IF;
END
$$;

CREATE INDEX idx_discovery_jobs_status ON discovery_jobs (status);

CREATE TABLE discovered_services (
    service_id VARCHAR(255) PRIMARY KEY,
    node_id VARCHAR(255) NOT NULL,
    node_class VARCHAR(100) NOT NULL,
    endpoint TEXT NOT NULL,
    capabilities JSONB,
    discovery_metadata JSONB,
    last_seen TIMESTAMP WITH TIME ZONE NOT NULL
);

CREATE INDEX idx_discovered_services_capabilities ON discovered_services USING GIN (capabilities);

CREATE INDEX idx_discovered_services_node_class ON discovered_services (node_class);
