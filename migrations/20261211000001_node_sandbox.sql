-- How each node's agent contains users' code, as it reported at registration: a line
-- such as "bubblewrap, a uid per sandbox, cgroup v1 limits, node network", or
-- "unsandboxed" (the node page warns). '' for agents from before sandboxes, which did
-- not contain users' code at all.
ALTER TABLE nodes ADD COLUMN sandbox TEXT NOT NULL DEFAULT '';
-- The address its first registration gave for its model servers and kernel gateways:
-- URLs an agent reports elsewhere are refused, so no secret is sent off the node.
ALTER TABLE nodes ADD COLUMN advertise_host TEXT NOT NULL DEFAULT '';
-- What the first registration reported, which an agent with the node's token may not
-- exceed later (it may report less: a failed GPU). NULL until the first registration.
ALTER TABLE nodes ADD COLUMN approved_cpus BIGINT;
ALTER TABLE nodes ADD COLUMN approved_memory_mb BIGINT;
ALTER TABLE nodes ADD COLUMN approved_gpus TEXT;
