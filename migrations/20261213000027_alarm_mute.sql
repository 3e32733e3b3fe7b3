-- A muted alarm is still evaluated and keeps its history, but tells no one: no webhook,
-- no endpoint event, no retraining job, and it does not show as firing. 1 when muted.
ALTER TABLE endpoint_alarms ADD COLUMN muted BIGINT NOT NULL DEFAULT 0;
