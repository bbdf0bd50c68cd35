-- Messages and per-(user, room) activity (docs/consumer.md). Applied once, in its own transaction, by the
-- consumer's migration runner; IF NOT EXISTS keeps a hand re-run harmless.

CREATE TABLE IF NOT EXISTS messages (
    message_id       uuid        PRIMARY KEY,
    room_id          integer     NOT NULL CHECK (room_id > 0),
    user_id          integer     NOT NULL CHECK (user_id BETWEEN 1 AND 100000),
    username         text        NOT NULL,
    message_text     text        NOT NULL,
    message_type     text        NOT NULL CHECK (message_type IN ('TEXT', 'JOIN', 'LEAVE')),
    server_id        text        NOT NULL,
    client_ip        text        NOT NULL,
    -- SQS FIFO sequence numbers are decimal strings of up to 128 bits: numeric compares them as
    -- numbers (text would put "9" after "10").
    sequence_number  numeric(40, 0),
    client_timestamp timestamptz NOT NULL,
    received_at      timestamptz NOT NULL,   -- the producer's clock; serverTimestamp of the event
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- Core query 1: a room's messages in a time window.
CREATE INDEX IF NOT EXISTS messages_room_time_idx ON messages (room_id, client_timestamp);
-- Core query 2: a user's history (optionally in a window).
CREATE INDEX IF NOT EXISTS messages_user_time_idx ON messages (user_id, client_timestamp);
-- Core query 3: users active in a window (index-only scan on the window).
CREATE INDEX IF NOT EXISTS messages_time_user_idx ON messages (client_timestamp, user_id);
-- Subscriber replay: a room's messages after a sequence number, in order.
CREATE INDEX IF NOT EXISTS messages_room_seq_idx ON messages (room_id, sequence_number);

CREATE TABLE IF NOT EXISTS user_activity (
    user_id        integer     NOT NULL,
    room_id        integer     NOT NULL,
    first_activity timestamptz NOT NULL,
    last_activity  timestamptz NOT NULL,
    message_count  bigint      NOT NULL CHECK (message_count >= 0),
    PRIMARY KEY (user_id, room_id)   -- core query 4: the rooms of a user
);
-- Rooms of a user, most recent first.
CREATE INDEX IF NOT EXISTS user_activity_user_last_idx ON user_activity (user_id, last_activity DESC);
