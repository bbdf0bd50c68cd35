-- Read receipts (docs/protocol.md §2.2): how far each member has read each room. Written by the
-- consumer's read-receipt writer with GREATEST, so a position never moves backwards; read by the
-- history API (GET /api/rooms/{id}/messages) per room, most recently updated first.

CREATE TABLE IF NOT EXISTS read_positions (
    room_id         integer        NOT NULL CHECK (room_id > 0),
    user_id         integer        NOT NULL CHECK (user_id BETWEEN 1 AND 100000),
    sequence_number numeric(40, 0) NOT NULL,
    updated_at      timestamptz    NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX IF NOT EXISTS read_positions_room_updated_idx ON read_positions (room_id, updated_at DESC);
-- The history API's "recently seen" list: a room's users by their last activity.
CREATE INDEX IF NOT EXISTS user_activity_room_last_idx ON user_activity (room_id, last_activity DESC);
