
-- delq 1.0 -> 1.1, the part only an upgrade runs, after the body: moving
-- rows that 1.0 kept elsewhere into what the body created.  docs/upgrading.md.
