-- Search over message text (GET /api/rooms/{roomId}/search, docs/protocol.md §3): a trigram index
-- (pg_trgm) answers "text contains q, case-insensitively" (ILIKE '%q%') without reading a room's
-- every row, and ranks by word_similarity. pg_trgm ships with PostgreSQL (Debian's server package,
-- RDS) and is a trusted extension: the owner of the database may create it.
-- Building the index reads the whole table once; on a large existing table run this migration in
-- a quiet hour (it holds a lock that blocks writes while it builds).

CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX IF NOT EXISTS messages_text_trgm_idx ON messages USING gin (message_text gin_trgm_ops);
