-- The model registry: versions, their approval timeline and votes, aliases, tags,
-- webhooks and their deliveries.

-- How many distinct approvals make a version Approved.
ALTER TABLE model_groups ADD COLUMN required_approvals BIGINT NOT NULL DEFAULT 1;
-- JSON object of tag -> value.
ALTER TABLE model_groups ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';
ALTER TABLE model_groups ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;
-- The number the next version gets: numbers are never reused, even after a delete.
ALTER TABLE model_groups ADD COLUMN next_version BIGINT NOT NULL DEFAULT 1;

CREATE TABLE model_versions (
    id TEXT PRIMARY KEY,
    group_id TEXT NOT NULL REFERENCES model_groups(id) ON DELETE CASCADE,
    version BIGINT NOT NULL,
    -- PendingManualApproval, Approved, Rejected
    status TEXT NOT NULL,
    -- Bumped by every status change: a decision is applied only to the state it saw.
    status_seq BIGINT NOT NULL DEFAULT 0,
    -- Approvals count toward the quorum within one round; a rejected version that is
    -- approved again starts a new round.
    approval_round BIGINT NOT NULL DEFAULT 0,
    artifact_id TEXT NOT NULL REFERENCES artifacts(id),
    -- atelier (a built-in algorithm's model) or archive (a tarball of a model directory)
    format TEXT NOT NULL,
    training_job_id TEXT REFERENCES training_jobs(id),
    -- JSON: hyperparameters and final metrics copied from the training job
    hyperparameters TEXT NOT NULL DEFAULT '{}',
    metrics TEXT NOT NULL DEFAULT '{}',
    -- JSON: {"datasets": [...], "labeling_jobs": [...]}
    lineage TEXT NOT NULL DEFAULT '{}',
    -- JSON: atelier_protocol inference spec (schemas, serving command)
    inference TEXT NOT NULL DEFAULT '{}',
    -- Where the model came from, as given by an MLflow client (free text).
    source TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '{}',
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (group_id, version)
);
CREATE INDEX model_versions_status ON model_versions (status, created_at);
CREATE INDEX model_versions_job ON model_versions (training_job_id);

-- The timeline: registration and every decision, with who, when and why.
CREATE TABLE model_version_events (
    version_id TEXT NOT NULL REFERENCES model_versions(id) ON DELETE CASCADE,
    -- the version's approval round: approvals of one round count together
    round BIGINT NOT NULL,
    ts_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    -- registered, approve, reject
    kind TEXT NOT NULL,
    -- the status after the event
    status TEXT NOT NULL,
    comment TEXT NOT NULL DEFAULT ''
);
CREATE INDEX model_version_events_version ON model_version_events (version_id, ts_ms);
-- One approval per reviewer per round.
CREATE UNIQUE INDEX model_version_events_vote ON model_version_events (version_id, round, actor, kind);

CREATE TABLE model_aliases (
    group_id TEXT NOT NULL REFERENCES model_groups(id) ON DELETE CASCADE,
    alias TEXT NOT NULL,
    version_id TEXT NOT NULL REFERENCES model_versions(id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, alias)
);

-- Webhooks: URLs told about new versions and status changes, for one group or (with
-- no group) for every group.
CREATE TABLE model_webhooks (
    id TEXT PRIMARY KEY,
    group_id TEXT REFERENCES model_groups(id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    -- the HMAC-SHA256 key deliveries are signed with
    secret TEXT NOT NULL,
    -- JSON list: model_version.created, model_version.status_changed
    events TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Each event for each webhook, retried with backoff until delivered or given up.
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    webhook_id TEXT NOT NULL REFERENCES model_webhooks(id) ON DELETE CASCADE,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    -- pending, delivered, failed
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    -- milliseconds
    next_attempt_at BIGINT NOT NULL,
    last_status BIGINT,
    last_error TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    delivered_at BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, created_at);
