--
-- security_guard: delq.guard() runs no code of the table's owner or of
-- the role that writes the row (issue 9, critical).  Before 1.1, guard()
-- was SECURITY DEFINER and turned the whole row into jsonb, which calls the
-- user-defined cast of any column type: that cast then ran as the
-- extension's owner, a superuser.  Both attack paths of the review are
-- replayed here; each ends by checking that the attacker is no superuser.
-- See docs/security.md, "delq.guard()".
--
\set SHOW_CONTEXT never
\set VERBOSITY terse
\i sql/include/setup.sql

CREATE ROLE sec60_op LOGIN;
GRANT delq_operator TO sec60_op;
CREATE ROLE sec60_owner LOGIN;
CREATE SCHEMA sec60 AUTHORIZATION sec60_owner;

-- an erased subject for the guard to find
SELECT delq.submit('erased.sec60@example.com', 'sec60') IS NOT NULL AS submitted;
UPDATE delq.pending SET status = 'completed', completed_at = now() WHERE source = 'sec60';

--
-- Path 1: a delq_operator, everything in pg_temp: an enum type, a cast from
-- it to json whose function makes the caller a superuser, a temp table with
-- such a column, guarded.
--
-- (temporary schemas have numbered names: messages as SQLSTATEs only)
\set VERBOSITY sqlstate
SET SESSION AUTHORIZATION sec60_op;
CREATE TYPE pg_temp.mood AS ENUM ('calm');
CREATE FUNCTION pg_temp.mood_json(pg_temp.mood) RETURNS json
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER ROLE %I SUPERUSER', session_user);
    RETURN '"calm"';
END
$$;
CREATE CAST (pg_temp.mood AS json) WITH FUNCTION pg_temp.mood_json(pg_temp.mood);
CREATE TEMP TABLE people (email text, m pg_temp.mood);
CREATE TRIGGER people_guard BEFORE INSERT OR UPDATE ON pg_temp.people
    FOR EACH ROW EXECUTE FUNCTION delq.guard('email', 'warn');
INSERT INTO pg_temp.people VALUES ('someone.sec60@example.com', 'calm');
INSERT INTO pg_temp.people VALUES ('erased.sec60@example.com', 'calm');
UPDATE pg_temp.people SET m = 'calm';
-- the guarded column itself of such a type: refused, the cast never runs
CREATE TEMP TABLE moods (m pg_temp.mood);
CREATE TRIGGER moods_guard BEFORE INSERT ON pg_temp.moods
    FOR EACH ROW EXECUTE FUNCTION delq.guard('m', 'warn');
INSERT INTO pg_temp.moods VALUES ('calm');
RESET SESSION AUTHORIZATION;
\set VERBOSITY terse
SELECT rolsuper AS operator_became_superuser FROM pg_roles WHERE rolname = 'sec60_op';
ALTER ROLE sec60_op NOSUPERUSER;

--
-- Path 2: the owner of an application table that a superuser guarded
-- (docs/privacy.md), with no delq role at all, adds a column of such a type.
--
SET SESSION AUTHORIZATION sec60_owner;
CREATE TABLE sec60.users (id int, email text);
RESET SESSION AUTHORIZATION;
CREATE TRIGGER users_guard BEFORE INSERT OR UPDATE ON sec60.users
    FOR EACH ROW EXECUTE FUNCTION delq.guard('email', 'refuse');
SET SESSION AUTHORIZATION sec60_owner;
CREATE TYPE sec60.mood AS ENUM ('calm');
CREATE FUNCTION sec60.mood_json(sec60.mood) RETURNS json
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER ROLE %I SUPERUSER', session_user);
    RETURN '"calm"';
END
$$;
CREATE CAST (sec60.mood AS json) WITH FUNCTION sec60.mood_json(sec60.mood);
ALTER TABLE sec60.users ADD COLUMN m sec60.mood DEFAULT 'calm';
INSERT INTO sec60.users (id, email) VALUES (1, 'someone.sec60@example.com');
INSERT INTO sec60.users (id, email) VALUES (2, 'erased.sec60@example.com');
UPDATE sec60.users SET m = 'calm';
UPDATE sec60.users SET email = 'erased.sec60@example.com';
SELECT id, email FROM sec60.users ORDER BY id;
RESET SESSION AUTHORIZATION;
SELECT rolsuper AS owner_became_superuser FROM pg_roles WHERE rolname = 'sec60_owner';
ALTER ROLE sec60_owner NOSUPERUSER;

--
-- Only built-in text types are read: varchar and char(n) work (char's
-- padding is not part of the value, as in a cast to text), a domain or an
-- extension type (citext) is refused with a hint.
--
CREATE TABLE sec60.kinds (v varchar(64), c char(40), d text);
CREATE DOMAIN sec60.email AS text;
CREATE TABLE sec60.domains (e sec60.email);
CREATE TRIGGER v_guard BEFORE INSERT ON sec60.kinds FOR EACH ROW EXECUTE FUNCTION delq.guard('v');
CREATE TRIGGER c_guard BEFORE INSERT ON sec60.kinds FOR EACH ROW EXECUTE FUNCTION delq.guard('c');
CREATE TRIGGER e_guard BEFORE INSERT ON sec60.domains FOR EACH ROW EXECUTE FUNCTION delq.guard('e');
INSERT INTO sec60.kinds (v) VALUES ('erased.sec60@example.com');
INSERT INTO sec60.kinds (c) VALUES ('erased.sec60@example.com');
INSERT INTO sec60.kinds (v, c) VALUES ('other.sec60@example.com', 'other.sec60@example.com');
INSERT INTO sec60.domains VALUES ('x');
-- a dropped column of that name is no column
ALTER TABLE sec60.kinds DROP COLUMN d;
CREATE TRIGGER d_guard BEFORE INSERT ON sec60.kinds FOR EACH ROW EXECUTE FUNCTION delq.guard('d');
INSERT INTO sec60.kinds (v) VALUES ('x');

-- guard() runs as the caller; only the lookup is SECURITY DEFINER, and it
-- is granted to nobody.
SELECT p.oid::regprocedure, p.prosecdef, p.proconfig
  FROM pg_proc p
 WHERE p.pronamespace = 'delq'::regnamespace AND p.proname IN ('guard', '_guard_erased')
 ORDER BY 1::text;
SELECT has_function_privilege('sec60_op', 'delq._guard_erased(text, text)', 'EXECUTE') AS op_may_call_lookup;

DISCARD TEMP;
DROP SCHEMA sec60 CASCADE;
DROP OWNED BY sec60_op, sec60_owner;
DROP ROLE sec60_op, sec60_owner;
