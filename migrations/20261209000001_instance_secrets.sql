-- A model server listens on its node's network, where anyone could reach it around
-- Atelier's access control. Each instance gets a random secret: the agent hands it to
-- the model server, and the server sends it with every invocation it routes there.
-- Instances started before this migration keep '' (no secret) until replaced.
ALTER TABLE endpoint_instances ADD COLUMN secret TEXT NOT NULL DEFAULT '';
