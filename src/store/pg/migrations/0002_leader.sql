-- agentvine's board in PostgreSQL, schema version 2: which server leads (see `lead.rs`).
--
-- The server holding the advisory lock "vinelead" writes here the URL the other servers of
-- this database reach it at, and the process id of the session that holds the lock. A row
-- whose session no longer holds the lock (the server stopped, or lost its connection) names
-- no leader: readers join it with `pg_locks`. Nothing here is part of the board: a row lost
-- or wrong only makes servers commit their own changes, as they would without a leader.
CREATE TABLE leader (
    id    smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    url   text NOT NULL,
    pid   integer NOT NULL,
    since timestamptz NOT NULL DEFAULT now()
);
