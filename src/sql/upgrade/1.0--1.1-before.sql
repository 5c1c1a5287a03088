-- delq 1.0 -> 1.1, the part only an upgrade runs, before the body (every
-- src/sql/*.sql but the header, the same text a fresh install runs).
-- Here go the statements that the body cannot make idempotent: dropping an
-- object that 1.1 removed or whose signature or columns changed (so that
-- the body's CREATE OR REPLACE can create it anew).  docs/upgrading.md.

\echo Use "ALTER EXTENSION delq UPDATE TO '1.1'" to load this file. \quit


-- 1.1 adds the delivery state 'not_held' (10_tables.sql puts the check back).
ALTER TABLE delq.delivery DROP CONSTRAINT IF EXISTS delivery_state_check;
