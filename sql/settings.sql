--
-- settings: the delq.* settings exist with their documented defaults.
--
\set SHOW_CONTEXT never
\set VERBOSITY default
\i sql/include/setup.sql

-- The settings are defined when the library loads (here without
-- shared_preload_libraries).
LOAD 'delq';
SHOW delq.database;
SHOW delq.default_deadline;
SHOW delq.hold_period;
SHOW delq.require_approval;
SHOW delq.retry_base;
SHOW delq.retry_max;
SHOW delq.max_attempts;
SHOW delq.batch_size;
SHOW delq.max_in_flight;
SHOW delq.idle_timeout;
SHOW delq.breaker_threshold;
SHOW delq.breaker_cooldown;
SHOW delq.ca_file;
SHOW delq.worker_role;

-- Every one is documented.
SELECT count(*) > 10 AS many, count(*) FILTER (WHERE coalesce(short_desc, '') = '') AS undocumented
  FROM pg_settings WHERE name LIKE 'delq.%';

-- Units and bounds apply; the prefix is reserved.
SET delq.default_deadline = '90d';
SHOW delq.default_deadline;
SET delq.default_deadline = '1h';
SHOW delq.default_deadline;
SET delq.default_deadline = '30s';
SET delq.default_deadline = '366d';
SET delq.hold_period = '-1';
SET delq.require_approval = 'maybe';
SET delq.no_such_setting = 1;
RESET ALL;
SHOW delq.default_deadline;

-- The SQL functions read the duration settings as intervals.
SET delq.default_deadline = '36h';
SELECT delq._setting_interval('delq.default_deadline');
SET delq.hold_period = '90min';
SELECT delq._setting_interval('delq.hold_period');
RESET ALL;
