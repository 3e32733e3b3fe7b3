-- Endpoints: variants serving approved model versions on compute nodes, their
-- instances, lifecycle events and per-minute invocation metrics.

CREATE TABLE endpoints (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    -- Creating, InService, Updating, Failed
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    -- The configuration being deployed (its variants carry this number) ...
    generation BIGINT NOT NULL,
    -- ... and the one traffic goes to; NULL until a configuration first became healthy.
    -- An update moves traffic only once every instance of the new one is healthy.
    active_generation BIGINT,
    -- Data capture: the share of invocations (0-100) whose request and response are
    -- kept, up to a budget; once it is used, capture pauses (serving goes on).
    capture_percent BIGINT NOT NULL DEFAULT 0,
    capture_budget_mb BIGINT NOT NULL DEFAULT 1024,
    capture_paused TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE endpoint_variants (
    id TEXT PRIMARY KEY,
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    generation BIGINT NOT NULL,
    name TEXT NOT NULL,
    model_version_id TEXT NOT NULL REFERENCES model_versions(id),
    instance_count BIGINT NOT NULL,
    weight DOUBLE PRECISION NOT NULL,
    cpus BIGINT NOT NULL,
    memory_mb BIGINT NOT NULL,
    gpus BIGINT NOT NULL,
    UNIQUE (endpoint_id, generation, name)
);

CREATE TABLE endpoint_instances (
    id TEXT PRIMARY KEY,
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    variant_id TEXT NOT NULL REFERENCES endpoint_variants(id) ON DELETE CASCADE,
    -- NULL until placed
    node_id TEXT REFERENCES nodes(id) ON DELETE SET NULL,
    cpus BIGINT NOT NULL,
    memory_mb BIGINT NOT NULL,
    gpu_indices TEXT NOT NULL DEFAULT '[]',
    -- Pending, Starting, InService, Failed, Stopped
    state TEXT NOT NULL,
    -- Where the server sends invocations, once InService.
    url TEXT,
    message TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX endpoint_instances_node ON endpoint_instances (node_id, state);
CREATE INDEX endpoint_instances_endpoint ON endpoint_instances (endpoint_id, state);

CREATE TABLE endpoint_events (
    id TEXT PRIMARY KEY,
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    at_ms BIGINT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX endpoint_events_endpoint ON endpoint_events (endpoint_id, at_ms);

-- Per endpoint, variant and minute (seconds since the epoch, a multiple of 60). Each
-- server replica adds its counts; the instance count is a gauge the reconciler sets.
CREATE TABLE endpoint_metrics (
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    variant TEXT NOT NULL,
    minute BIGINT NOT NULL,
    invocations BIGINT NOT NULL DEFAULT 0,
    errors_4xx BIGINT NOT NULL DEFAULT 0,
    errors_5xx BIGINT NOT NULL DEFAULT 0,
    instances BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (endpoint_id, variant, minute)
);

-- Latency histograms for the same minutes: `kind` is model or overhead, `bucket` a
-- log-scale bucket of microseconds (see atelier_core::endpoints::metrics).
CREATE TABLE endpoint_latency (
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    variant TEXT NOT NULL,
    minute BIGINT NOT NULL,
    kind TEXT NOT NULL,
    bucket BIGINT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (endpoint_id, variant, minute, kind, bucket)
);

-- Captured invocations: JSON Lines files in the artifact store, one per flush, named
-- by endpoint and hour (capture/<endpoint>/<yyyy>/<mm>/<dd>/<hh>/<id>.jsonl).
CREATE TABLE endpoint_captures (
    id TEXT PRIMARY KEY,
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    artifact_id TEXT NOT NULL,
    -- seconds since the epoch: the hour the records fall in, their first and last
    hour BIGINT NOT NULL,
    first_at BIGINT NOT NULL,
    last_at BIGINT NOT NULL,
    records BIGINT NOT NULL,
    bytes BIGINT NOT NULL
);
CREATE INDEX endpoint_captures_endpoint ON endpoint_captures (endpoint_id, hour);

-- Model Monitor: per endpoint, a baseline profiled from the served version's training
-- data (JSON of atelier_protocol::monitor::Baseline), constraints and a schedule.
CREATE TABLE monitor_schedules (
    endpoint_id TEXT PRIMARY KEY REFERENCES endpoints(id) ON DELETE CASCADE,
    -- hourly, daily or manual
    frequency TEXT NOT NULL,
    thresholds TEXT NOT NULL,
    baseline TEXT NOT NULL,
    constraints TEXT NOT NULL,
    model_group TEXT NOT NULL,
    model_version BIGINT NOT NULL,
    last_run_at BIGINT,
    next_run_at BIGINT,
    created_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE monitor_runs (
    id TEXT PRIMARY KEY,
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    started_at BIGINT NOT NULL,
    window_from BIGINT NOT NULL,
    window_to BIGINT NOT NULL,
    -- Completed, NoData or Failed
    status TEXT NOT NULL,
    message TEXT NOT NULL,
    row_count BIGINT NOT NULL,
    drifted BIGINT NOT NULL,
    violations BIGINT NOT NULL,
    -- JSON of atelier_protocol::monitor::Report ('' without one)
    report TEXT NOT NULL
);
CREATE INDEX monitor_runs_endpoint ON monitor_runs (endpoint_id, started_at);

-- Alarms: a threshold on a per-minute metric or on the monitor's drift, in alarm after
-- `periods` consecutive breaching periods (minutes, or monitor runs).
CREATE TABLE endpoint_alarms (
    id TEXT PRIMARY KEY,
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    metric TEXT NOT NULL,
    -- gt, ge, lt, le
    comparison TEXT NOT NULL,
    threshold DOUBLE PRECISION NOT NULL,
    periods BIGINT NOT NULL,
    -- Open a retraining job from the served version's training job on going into alarm.
    retrain BIGINT NOT NULL,
    -- OK, ALARM, INSUFFICIENT_DATA
    state TEXT NOT NULL,
    reason TEXT NOT NULL,
    -- Consecutive breaching periods so far, and the last period evaluated.
    breaching BIGINT NOT NULL,
    last_period BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (endpoint_id, name)
);

CREATE TABLE endpoint_alarm_history (
    id TEXT PRIMARY KEY,
    alarm_id TEXT NOT NULL REFERENCES endpoint_alarms(id) ON DELETE CASCADE,
    at_ms BIGINT NOT NULL,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX endpoint_alarm_history_alarm ON endpoint_alarm_history (alarm_id, at_ms);

-- A model group's deployment rule: deploy each newly approved version to this
-- endpoint (by name), acting as the user who set the rule.
ALTER TABLE model_groups ADD COLUMN deploy_endpoint TEXT;
ALTER TABLE model_groups ADD COLUMN deploy_rule_by TEXT;
