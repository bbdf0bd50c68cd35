-- Positions carry their queue's epoch (docs/protocol.md §2.1): a sequence number is now the
-- queue's CreatedTimestamp followed by SQS's number padded to 39 digits (49 digits today, up to
-- 60), so a room's messages stay in order when a queue is made again or the emulator restarts.
-- Rows stored before keep their bare SQS numbers: epoch 0, before every new position.
-- Raising a numeric's precision (same scale) changes no stored value: PostgreSQL rewrites neither
-- the tables nor their indexes, so this is quick on any size of table.

ALTER TABLE messages ALTER COLUMN sequence_number TYPE numeric(60, 0);
ALTER TABLE read_positions ALTER COLUMN sequence_number TYPE numeric(60, 0);
