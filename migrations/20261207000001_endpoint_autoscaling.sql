-- Autoscaling policies, per endpoint and variant name (a policy outlives configuration
-- changes, as the variant it names does). The autoscaler sets the instance count of
-- the serving configuration's variant of that name.
CREATE TABLE endpoint_autoscaling (
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    variant TEXT NOT NULL,
    min_instances BIGINT NOT NULL,
    max_instances BIGINT NOT NULL,
    -- invocations per instance and minute
    target DOUBLE PRECISION NOT NULL,
    scale_out_cooldown_secs BIGINT NOT NULL,
    scale_in_cooldown_secs BIGINT NOT NULL,
    last_scaled_at BIGINT,
    last_scale_out_at BIGINT,
    updated_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (endpoint_id, variant)
);
