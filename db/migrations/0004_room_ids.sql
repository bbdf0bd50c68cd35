-- Rooms are ids, not numbers (docs/protocol.md §1): a room id is 1-64 characters of
-- [A-Za-z0-9_-], stored as text. Existing rows keep their rooms: the integer 7 becomes the id "7",
-- which is the same room on the wire. The analytics views read room_id, and PostgreSQL refuses to
-- change the type of a column a view uses, so the two that do are dropped and made again.
-- On a large table this rewrites messages once (ACCESS EXCLUSIVE for its duration): run it in a
-- quiet window; docs/operations.md has the procedure.

DROP MATERIALIZED VIEW IF EXISTS mv_top_rooms;
DROP MATERIALIZED VIEW IF EXISTS mv_top_users;

ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_room_id_check;
ALTER TABLE messages ALTER COLUMN room_id TYPE text USING room_id::text;
ALTER TABLE messages ADD CONSTRAINT messages_room_id_check
    CHECK (room_id ~ '^[A-Za-z0-9_-]{1,64}$');

ALTER TABLE user_activity ALTER COLUMN room_id TYPE text USING room_id::text;

ALTER TABLE read_positions DROP CONSTRAINT IF EXISTS read_positions_room_id_check;
ALTER TABLE read_positions ALTER COLUMN room_id TYPE text USING room_id::text;
ALTER TABLE read_positions ADD CONSTRAINT read_positions_room_id_check
    CHECK (room_id ~ '^[A-Za-z0-9_-]{1,64}$');

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_top_users AS
    SELECT user_id, max(username) AS username, count(*) AS message_count,
           count(DISTINCT room_id) AS rooms, min(client_timestamp) AS first_activity,
           max(client_timestamp) AS last_activity
    FROM messages GROUP BY user_id;
CREATE UNIQUE INDEX IF NOT EXISTS mv_top_users_pk ON mv_top_users (user_id);
CREATE INDEX IF NOT EXISTS mv_top_users_count_idx ON mv_top_users (message_count DESC, user_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_top_rooms AS
    SELECT room_id, count(*) AS message_count, count(DISTINCT user_id) AS unique_users,
           min(client_timestamp) AS first_activity, max(client_timestamp) AS last_activity
    FROM messages GROUP BY room_id;
CREATE UNIQUE INDEX IF NOT EXISTS mv_top_rooms_pk ON mv_top_rooms (room_id);
