-- Notebooks. `content` is the notebook as nbformat 4 JSON (outputs sanitized);
-- `version` counts saves: a save names the version it edited and is refused when
-- someone saved in between, so two editors never silently overwrite each other.
CREATE TABLE notebooks (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    owner_id TEXT NOT NULL REFERENCES users(id),
    content TEXT NOT NULL,
    cells BIGINT NOT NULL,
    version BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX notebooks_owner ON notebooks (owner_id);

-- Who else may open (reader) or edit and run (editor) a notebook; policies decide
-- what each role allows through the atelier:NotebookRole condition key.
CREATE TABLE notebook_shares (
    notebook_id TEXT NOT NULL REFERENCES notebooks(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users(id),
    role TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (notebook_id, user_id)
);
CREATE INDEX notebook_shares_user ON notebook_shares (user_id);

-- Earlier contents: automatic snapshots (`auto`), named checkpoints (`checkpoint`),
-- and the content a restore replaced (`before-restore`).
CREATE TABLE notebook_revisions (
    id TEXT PRIMARY KEY,
    notebook_id TEXT NOT NULL REFERENCES notebooks(id) ON DELETE CASCADE,
    version BIGINT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    content TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX notebook_revisions_notebook ON notebook_revisions (notebook_id, created_at);

-- Jupyter kernels: one per user and notebook at most, placed on a compute node whose
-- agent runs it. States: pending (placed, the agent has not reported it yet),
-- starting, idle, busy, dead (its process ended; it can be restarted), stopped.
CREATE TABLE kernels (
    id TEXT PRIMARY KEY,
    notebook_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    username TEXT NOT NULL,
    node_id TEXT NOT NULL,
    cpus BIGINT NOT NULL,
    memory_mb BIGINT NOT NULL,
    gpus BIGINT NOT NULL,
    gpu_indices TEXT NOT NULL,
    state TEXT NOT NULL,
    url TEXT,
    secret TEXT NOT NULL,
    message TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_activity_at BIGINT NOT NULL,
    stopped_at BIGINT
);
CREATE INDEX kernels_notebook ON kernels (notebook_id, user_id);
CREATE INDEX kernels_node ON kernels (node_id, state);
