-- Labeling jobs: a dataset's items (those present when the job was created) handed
-- out to the labelers of one or more work teams, each item to `workers_per_item`
-- different workers; their annotations consolidated into the job's output.
CREATE TABLE labeling_jobs (
    id                   TEXT PRIMARY KEY,
    name                 TEXT NOT NULL UNIQUE,
    dataset_id           TEXT NOT NULL REFERENCES datasets (id),
    -- image_classification, image_multi_label, bounding_box, text_classification,
    -- text_multi_label, named_entity
    task_type            TEXT NOT NULL,
    -- The key of the label in the output manifest (Ground Truth's LabelAttributeName).
    label_attribute      TEXT NOT NULL,
    -- JSON list of {"name": ..., "hotkey": ...}
    categories           TEXT NOT NULL,
    -- Markdown shown beside every task.
    instructions         TEXT NOT NULL,
    workers_per_item     BIGINT NOT NULL,
    task_time_limit_secs BIGINT NOT NULL,
    -- Share (0-0.5) of the tasks a labeler gets that are gold items.
    gold_share           DOUBLE PRECISION NOT NULL,
    -- Items consolidated with a confidence below this go to the review queue; NULL:
    -- no review stage.
    review_below         DOUBLE PRECISION,
    -- InProgress, Reviewing, Completed, Stopped
    status               TEXT NOT NULL,
    -- Items to label (gold items excluded) and how many still need annotations.
    item_count           BIGINT NOT NULL,
    remaining            BIGINT NOT NULL,
    created_by           TEXT NOT NULL,
    created_at           BIGINT NOT NULL,
    completed_at         BIGINT,
    -- When the annotations were consolidated into results (NULL: not yet; a job whose
    -- labeling is over but has no results is consolidated again on its next read).
    consolidated_at      BIGINT
);

-- The work teams (groups, by name) whose members label the job.
CREATE TABLE labeling_job_teams (
    job_id TEXT NOT NULL REFERENCES labeling_jobs (id) ON DELETE CASCADE,
    team   TEXT NOT NULL,
    PRIMARY KEY (job_id, team)
);

-- One row per dataset item of a job: how many annotations it has and how many workers
-- hold it now, and after consolidation its label.
CREATE TABLE labeling_items (
    job_id      TEXT NOT NULL REFERENCES labeling_jobs (id) ON DELETE CASCADE,
    item_seq    BIGINT NOT NULL,
    -- Gold items: the known answer (JSON, as a task's answer); never in the output.
    gold        TEXT,
    done        BIGINT NOT NULL,
    held        BIGINT NOT NULL,
    -- 1 while done + held < workers_per_item (the item can be handed out).
    open        BIGINT NOT NULL,
    -- The consolidated (or reviewed) answer, JSON, and its confidence.
    result      TEXT,
    confidence  DOUBLE PRECISION,
    -- NULL, pending (in the review queue), confirmed or corrected
    review      TEXT,
    reviewed_by TEXT,
    reviewed_at BIGINT,
    PRIMARY KEY (job_id, item_seq)
);
CREATE INDEX labeling_items_queue ON labeling_items (job_id, open, item_seq);

-- A task: one item given to one worker. `held` until the worker submits or skips it or
-- the time limit passes (expired holds are deleted, so the item can go to someone
-- else); a worker gets an item at most once.
CREATE TABLE labeling_tasks (
    id          TEXT PRIMARY KEY,
    job_id      TEXT NOT NULL REFERENCES labeling_jobs (id) ON DELETE CASCADE,
    item_seq    BIGINT NOT NULL,
    worker_id   TEXT NOT NULL,
    worker      TEXT NOT NULL,
    -- held, submitted, skipped
    status      TEXT NOT NULL,
    -- 1 for a gold item
    gold        BIGINT NOT NULL,
    answer      TEXT,
    leased_at   BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    finished_at BIGINT,
    -- Time the labeler spent, as the labeling page measured it.
    duration_ms BIGINT,
    UNIQUE (job_id, item_seq, worker_id)
);
CREATE INDEX labeling_tasks_worker ON labeling_tasks (job_id, worker_id, status);
CREATE INDEX labeling_tasks_expiry ON labeling_tasks (job_id, status, expires_at);
