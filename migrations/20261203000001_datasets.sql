-- Datasets: immutable items (images or texts) added in batches. A batch is one upload
-- or manifest import, with what it rejected and why; items are numbered across the
-- dataset in the order they arrived, so pages and labeling queues are stable.
CREATE TABLE datasets (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    -- image or text
    kind        TEXT NOT NULL,
    item_count  BIGINT NOT NULL,
    total_bytes BIGINT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE dataset_batches (
    id          TEXT PRIMARY KEY,
    dataset_id  TEXT NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
    -- 1 for the batch that created the dataset's first items, then 2, 3, ...
    seq         BIGINT NOT NULL,
    -- What was uploaded, e.g. "3 files: a.png, b.png, c.png".
    source      TEXT NOT NULL,
    item_count  BIGINT NOT NULL,
    total_bytes BIGINT NOT NULL,
    -- JSON list of "name: why" for each file or line left out.
    rejected    TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (dataset_id, seq)
);

CREATE TABLE dataset_items (
    id          TEXT PRIMARY KEY,
    dataset_id  TEXT NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
    batch_seq   BIGINT NOT NULL,
    -- Position in the dataset, from 1.
    seq         BIGINT NOT NULL,
    -- The file name, or "file line N" for an item from a line of a file.
    name        TEXT NOT NULL,
    -- Images: the stored bytes. Texts: NULL (the text is inline).
    artifact_id TEXT REFERENCES artifacts (id),
    text        TEXT,
    -- image/png, image/jpeg, image/webp or text/plain
    media_type  TEXT NOT NULL,
    size        BIGINT NOT NULL,
    -- The Ground Truth input manifest's source-ref this item was imported for, if any.
    source_ref  TEXT,
    created_at  BIGINT NOT NULL,
    UNIQUE (dataset_id, seq)
);
