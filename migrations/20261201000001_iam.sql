-- Access control: groups, policies (versioned), attachments, API-token inline
-- policies, and the audit log. Administrators become holders of the built-in
-- AdministratorAccess policy, which replaces the is_admin flag.

CREATE TABLE groups (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE group_members (
    group_id TEXT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    user_id  TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    added_at BIGINT NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user_id ON group_members (user_id);

-- Built-in policies have a row (builtin = 1, default_version 0) but their document
-- lives in code; customer-managed ones keep every version in policy_versions.
CREATE TABLE policies (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    description     TEXT NOT NULL,
    builtin         BIGINT NOT NULL DEFAULT 0,
    default_version BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE policy_versions (
    policy_id  TEXT NOT NULL REFERENCES policies (id) ON DELETE CASCADE,
    version    BIGINT NOT NULL,
    document   TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (policy_id, version)
);

-- No cascade from policies: a policy can only be deleted once it is detached.
CREATE TABLE user_policies (
    user_id   TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    policy_id TEXT NOT NULL REFERENCES policies (id),
    PRIMARY KEY (user_id, policy_id)
);
CREATE INDEX user_policies_policy_id ON user_policies (policy_id);

CREATE TABLE group_policies (
    group_id  TEXT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    policy_id TEXT NOT NULL REFERENCES policies (id),
    PRIMARY KEY (group_id, policy_id)
);
CREATE INDEX group_policies_policy_id ON group_policies (policy_id);

-- Bumped by every change to groups, memberships, policies or attachments, so every
-- server replica knows when its compiled policies are stale.
CREATE TABLE iam_state (
    id         BIGINT PRIMARY KEY,
    generation BIGINT NOT NULL
);
INSERT INTO iam_state (id, generation) VALUES (1, 0);

INSERT INTO policies (id, name, description, builtin, default_version, created_at, updated_at)
VALUES ('builtin:AdministratorAccess', 'AdministratorAccess', 'Every action on every resource.', 1, 0, 0, 0);
INSERT INTO user_policies (user_id, policy_id)
SELECT id, 'builtin:AdministratorAccess' FROM users WHERE is_admin = 1;
ALTER TABLE users DROP COLUMN is_admin;

-- An API token may carry an inline policy that narrows what it can do.
ALTER TABLE api_tokens ADD COLUMN policy TEXT;

-- Append-only: the application only ever inserts. Ids are UUIDv7, so they sort by time.
CREATE TABLE audit_events (
    id           TEXT PRIMARY KEY,
    occurred_at  BIGINT NOT NULL,
    principal    TEXT NOT NULL,
    action       TEXT NOT NULL,
    resource     TEXT NOT NULL,
    decision     TEXT NOT NULL,
    status       BIGINT,
    source_ip    TEXT,
    request_id   TEXT,
    summary      TEXT NOT NULL
);
CREATE INDEX audit_events_occurred_at ON audit_events (occurred_at);
CREATE INDEX audit_events_principal ON audit_events (principal, id);
CREATE INDEX audit_events_action ON audit_events (action, id);
