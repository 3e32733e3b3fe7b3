-- The compute plane: compute nodes (and the tokens their agents use), artifacts, and
-- training jobs with their transitions, logs and metric series.

-- A compute node. The row exists from the moment an admin issues its token
-- (status 'Pending' until its agent first registers); the token secret is stored
-- only as a SHA-256 hash.
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,
    token_prefix TEXT NOT NULL,
    -- Pending, Ready, Lost, Deregistered
    status TEXT NOT NULL,
    hostname TEXT NOT NULL DEFAULT '',
    os TEXT NOT NULL DEFAULT '',
    cpus BIGINT NOT NULL DEFAULT 0,
    memory_mb BIGINT NOT NULL DEFAULT 0,
    disk_free_mb BIGINT NOT NULL DEFAULT 0,
    -- JSON: [{"index", "uuid", "model", "memory_mb"}]
    gpus TEXT NOT NULL DEFAULT '[]',
    -- JSON object of label -> value
    labels TEXT NOT NULL DEFAULT '{}',
    agent_version TEXT NOT NULL DEFAULT '',
    -- JSON: the latest utilization sample
    usage TEXT NOT NULL DEFAULT '{}',
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    registered_at BIGINT,
    last_heartbeat_at BIGINT
);

-- Utilization history for the node charts (pruned after a day).
CREATE TABLE node_samples (
    node_id TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    ts BIGINT NOT NULL,
    cpu_pct DOUBLE PRECISION NOT NULL,
    memory_used_mb BIGINT NOT NULL,
    -- JSON: [{"index", "utilization_pct", "memory_used_mb"}]
    gpus TEXT NOT NULL,
    PRIMARY KEY (node_id, ts)
);

CREATE TABLE artifacts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    -- upload, model, output, checkpoint
    kind TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    job_id TEXT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX artifacts_job ON artifacts (job_id);

CREATE TABLE training_jobs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    -- JSON: atelier_protocol::JobSpec
    spec TEXT NOT NULL,
    -- Pending, Starting, Downloading, Training, Uploading, Completed, Failed, Stopped
    state TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    priority BIGINT NOT NULL,
    cpus BIGINT NOT NULL,
    memory_mb BIGINT NOT NULL,
    gpus BIGINT NOT NULL,
    -- JSON object: node labels the job needs (copied from the spec for the scheduler)
    labels TEXT NOT NULL DEFAULT '{}',
    created_by TEXT NOT NULL,
    -- milliseconds: the queue is FIFO within a priority
    created_at BIGINT NOT NULL,
    -- the lease: which node runs which attempt, until when (seconds)
    node_id TEXT REFERENCES nodes(id),
    gpu_indices TEXT NOT NULL DEFAULT '[]',
    attempt BIGINT NOT NULL DEFAULT 0,
    lease_expires_at BIGINT,
    -- seconds: when the current attempt entered Training (max runtime counts from it)
    training_started_at BIGINT,
    ended_at BIGINT,
    stop_requested_at BIGINT,
    stop_reason TEXT,
    checkpoint_artifact TEXT,
    log_seq BIGINT NOT NULL DEFAULT 0
);
-- The queue's order: priority first (highest), then FIFO.
CREATE INDEX training_jobs_queue ON training_jobs (state, priority DESC, created_at, id);
CREATE INDEX training_jobs_node ON training_jobs (node_id, state);

-- Every state transition, with who caused it.
CREATE TABLE training_job_events (
    job_id TEXT NOT NULL REFERENCES training_jobs(id) ON DELETE CASCADE,
    ts_ms BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    state TEXT NOT NULL,
    message TEXT NOT NULL,
    node_id TEXT
);
CREATE INDEX training_job_events_job ON training_job_events (job_id, ts_ms);

CREATE TABLE training_job_logs (
    job_id TEXT NOT NULL REFERENCES training_jobs(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    ts_ms BIGINT NOT NULL,
    stream TEXT NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);

CREATE TABLE training_job_metrics (
    job_id TEXT NOT NULL REFERENCES training_jobs(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    seq BIGINT NOT NULL,
    ts_ms BIGINT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (job_id, name, seq)
);
