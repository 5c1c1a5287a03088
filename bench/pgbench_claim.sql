-- pgbench: one claimed batch, rolled back so that the queue stays as it
-- is.  The destination is enabled only inside this transaction, so the
-- worker (which sees it disabled) never competes for the rows.
BEGIN;
UPDATE delq.destination SET enabled = true;
SELECT count(*) FROM delq._claim(:batch);
ROLLBACK;
