-- Analytics materialized views (docs/consumer.md). Each has a unique index so that
-- REFRESH MATERIALIZED VIEW CONCURRENTLY (POST /api/metrics/refresh) never blocks readers.

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_messages_per_second AS
    SELECT date_trunc('second', client_timestamp) AS second, count(*) AS message_count
    FROM messages GROUP BY 1;
CREATE UNIQUE INDEX IF NOT EXISTS mv_messages_per_second_pk ON mv_messages_per_second (second);

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_messages_per_hour AS
    SELECT date_trunc('hour', client_timestamp) AS hour, count(*) AS message_count,
           count(DISTINCT user_id) AS unique_users
    FROM messages GROUP BY 1;
CREATE UNIQUE INDEX IF NOT EXISTS mv_messages_per_hour_pk ON mv_messages_per_hour (hour);

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

-- How many users posted in exactly N rooms.
CREATE MATERIALIZED VIEW IF NOT EXISTS mv_user_participation AS
    SELECT rooms_joined, count(*) AS user_count, sum(message_count) AS message_count
    FROM (SELECT user_id, count(*) AS rooms_joined, sum(message_count) AS message_count
          FROM user_activity GROUP BY user_id) per_user
    GROUP BY rooms_joined;
CREATE UNIQUE INDEX IF NOT EXISTS mv_user_participation_pk ON mv_user_participation (rooms_joined);
