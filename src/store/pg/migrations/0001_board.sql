-- agentvine's board in PostgreSQL, schema version 1.
--
-- Bodies are `json` (not `jsonb`): the text exactly as serde writes it, kept as written (key
-- order, unknown fields, "\u0000" in a string, which jsonb refuses); nothing queries inside
-- them. Every row that changes carries the board version of the commit that changed it, so a
-- server loads only what changed since the version it holds.

-- The one board row: its version (bumped by every commit), the counters, the settings, the
-- progress record and the board clock's last time.
CREATE TABLE board (
    id                 smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    version            bigint NOT NULL DEFAULT 0,
    -- Above every task id the board has used (queue and archive).
    next_id            bigint NOT NULL DEFAULT 1,
    -- The sequence number the next log entry gets.
    next_seq           bigint NOT NULL DEFAULT 1,
    -- The time of the last change, epoch ms: the board clock never runs backwards.
    clock_ms           bigint,
    -- The archive's running totals.
    archived_completed bigint NOT NULL DEFAULT 0,
    archived_cancelled bigint NOT NULL DEFAULT 0,
    settings           json NOT NULL,
    progress           json NOT NULL
);

-- Tasks: the queue (archived = false, in `ord` order) and the archive (archived = true, in
-- the order of `version`, then `ord`).
CREATE TABLE tasks (
    id          bigint PRIMARY KEY,
    ord         bigint NOT NULL,
    status      text NOT NULL,
    archived    boolean NOT NULL DEFAULT false,
    -- When it moved to the archive, epoch ms.
    archived_at bigint,
    version     bigint NOT NULL,
    body        json NOT NULL
);
CREATE INDEX tasks_version ON tasks (version);
CREATE INDEX tasks_queue ON tasks (ord) WHERE NOT archived;

CREATE TABLE workers (
    id      text PRIMARY KEY,
    version bigint NOT NULL,
    body    json NOT NULL
);
CREATE INDEX workers_version ON workers (version);

-- The Claude sessions' records, in the order they were first recorded.
CREATE TABLE sessions (
    id      text PRIMARY KEY,
    ord     bigint NOT NULL,
    version bigint NOT NULL,
    body    json NOT NULL
);
CREATE INDEX sessions_version ON sessions (version);

-- The message log, one row per entry (`seq` is the entry's own, or its line number for the
-- original plan's unnumbered lines).
CREATE TABLE messages (
    seq  bigint PRIMARY KEY,
    kind text NOT NULL,
    task bigint,
    body json NOT NULL
);
CREATE INDEX messages_questions ON messages (seq) WHERE kind IN ('question', 'answer');
CREATE INDEX messages_task ON messages (task, seq) WHERE task IS NOT NULL;

-- Board files by board-relative path: instruction files (and anything an import brings).
CREATE TABLE files (
    path    text PRIMARY KEY,
    version bigint NOT NULL,
    content bytea NOT NULL
);
