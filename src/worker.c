/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The delq background worker: a launcher that waits for the database,
 *	  and the forwarding worker that runs in it.
 *
 * The launcher is registered at preload, connects to no database and
 * polls quietly until delq.database exists; then it starts the forwarding
 * worker, and the HTTP worker when delq.http_listen is set (src/ingress.c),
 * as dynamic background workers and restarts each if it stops.  This
 * keeps a missing database (e.g. the regression database, created after
 * start-up) from producing a FATAL error every few seconds.
 *
 * The forwarding worker waits, just as quietly, for CREATE EXTENSION delq
 * at this library's version (one log line while a database waits for
 * ALTER EXTENSION delq UPDATE, src/version.c);
 * requeues what a previous worker left 'sending'; then loops: record
 * outcomes, claim due deliveries, send, wait.  No transaction is open while
 * it waits for HTTP.  Both processes start only when recovery has finished,
 * so a standby begins forwarding when it is promoted.
 *
 * src/worker.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "forward.h"
#include "settings.h"
#include "sqldest.h"
#include "store.h"
#include "upkeep.h"
#include "version.h"
#include "wake.h"
#include "worker.h"

/* How often the launcher and the worker look for a database / extension. */
#define DELQ_LOOK_INTERVAL_MS	2000
/*
 * Launcher's pause before restarting a worker that stopped: doubled, up to
 * a minute, while workers keep stopping soon after they start.
 */
#define DELQ_RESTART_DELAY_MS	1000
#define DELQ_RESTART_DELAY_MAX_MS	60000
#define DELQ_STABLE_RUN_MS		30000
/* Pause before claiming work that fell due during the previous claim. */
#define DELQ_DUE_AGAIN_MS		10
/*
 * Least time between a turn and a claim that a commit woke: under a
 * stream of submits, one claim then serves the commits of the last 2 ms
 * instead of each commit costing a turn of its own (at 2,500 submits/s
 * those turns took half a core).  An idle worker claims at once.
 */
#define DELQ_WAKE_GATHER_MS		2
/* A wait at least this long with nothing in flight counts as idle. */
#define DELQ_IDLE_STATS_MS		1000

/* at start: open requests whose deliveries a restore lost (84_consistency.sql) */
static DelqStatement lost_stmt =
{"SELECT delq._requests_without_deliveries()", 0, {InvalidOid}};

PGDLLEXPORT void delq_launcher_main(Datum arg);
PGDLLEXPORT void delq_worker_main(Datum arg);

/* The workers the launcher keeps running, one of each (DelqWorkerKind). */
typedef struct DelqWorkerKindInfo
{
	const char *function;
	const char *name;
} DelqWorkerKindInfo;

static const DelqWorkerKindInfo worker_kinds[DELQ_WORKER_KINDS] = {
	[DELQ_WORKER_FORWARDING] = {"delq_worker_main", "delq worker"},
	[DELQ_WORKER_HTTP] = {"delq_ingress_main", "delq http"},
};

/*
 * A slot per kind: a worker takes its kind's slot at start (false: another
 * worker holds it) and frees it at exit; the launcher starts no worker
 * while its slot is taken, so a restarted launcher does not start a second
 * worker beside the one its predecessor started.
 */
typedef struct DelqWorkerSlots
{
	slock_t		mutex;
	pid_t		pid[DELQ_WORKER_KINDS]; /* the worker holding it, or 0 */
} DelqWorkerSlots;

static DelqWorkerSlots *worker_slots = NULL;

Size
delq_worker_shmem_size(void)
{
	return MAXALIGN(sizeof(DelqWorkerSlots));
}

/* Called with AddinShmemInitLock held (src/delq.c). */
void
delq_worker_shmem_startup(void)
{
	bool		found;

	worker_slots = ShmemInitStruct("delq worker slots", sizeof(DelqWorkerSlots),
								   &found);
	if (!found)
	{
		SpinLockInit(&worker_slots->mutex);
		memset(worker_slots->pid, 0, sizeof(worker_slots->pid));
	}
}

static void
release_worker_slot(int code, Datum arg)
{
	DelqWorkerKind kind = DatumGetInt32(arg);

	SpinLockAcquire(&worker_slots->mutex);
	if (worker_slots->pid[kind] == MyProcPid)
		worker_slots->pid[kind] = 0;
	SpinLockRelease(&worker_slots->mutex);
}

/*
 * Take the slot of kind for this process, or log that another worker of
 * that kind runs and exit without being restarted.
 */
void
delq_worker_take_slot(DelqWorkerKind kind)
{
	bool		taken;

	if (worker_slots == NULL)
		return;
	SpinLockAcquire(&worker_slots->mutex);
	taken = (worker_slots->pid[kind] == 0);
	if (taken)
		worker_slots->pid[kind] = MyProcPid;
	SpinLockRelease(&worker_slots->mutex);
	if (!taken)
	{
		ereport(LOG,
				(errmsg("%s not started: another %s is running",
						worker_kinds[kind].name, worker_kinds[kind].name)));
		proc_exit(0);
	}
	on_shmem_exit(release_worker_slot, Int32GetDatum(kind));
}

static bool
worker_slot_taken(DelqWorkerKind kind)
{
	pid_t		pid;

	if (worker_slots == NULL)
		return false;
	SpinLockAcquire(&worker_slots->mutex);
	pid = worker_slots->pid[kind];
	SpinLockRelease(&worker_slots->mutex);
	return pid != 0;
}

void
delq_worker_register(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "delq");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "delq_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "delq launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "delq launcher");
	RegisterBackgroundWorker(&worker);
}

/* Milliseconds from now until t, at least 0. */
static long
ms_until(TimestampTz t)
{
	long		secs;
	int			usecs;

	TimestampDifference(GetCurrentTimestamp(), t, &secs, &usecs);
	return secs * 1000 + usecs / 1000;
}

/* Sleep on the latch; reload the configuration if asked to. */
static void
wait_a_while(long timeout_ms)
{
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 timeout_ms, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
}

static void
setup_signals(void)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
}

/*
 * Whether a database exists.  Without a database of its own the launcher
 * can read shared catalogs only by heap scan (no relcache for indexes).
 */
static bool
database_exists(const char *name)
{
	bool		exists = false;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;

	StartTransactionCommand();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (!exists && (tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
		exists = strcmp(NameStr(((Form_pg_database) GETSTRUCT(tup))->datname), name) == 0;
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return exists;
}

static BackgroundWorkerHandle *
start_worker(DelqWorkerKind kind)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "delq");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "%s", worker_kinds[kind].function);
	snprintf(worker.bgw_name, BGW_MAXLEN, "%s", worker_kinds[kind].name);
	snprintf(worker.bgw_type, BGW_MAXLEN, "%s", worker_kinds[kind].name);
	worker.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
	{
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("delq could not start its %s", worker_kinds[kind].name),
				 errhint("Raise max_worker_processes.")));
		return NULL;
	}
	return handle;
}

/* What the launcher knows of one kind of worker. */
typedef struct DelqKept
{
	BackgroundWorkerHandle *handle; /* NULL: not running */
	TimestampTz started;
	TimestampTz not_before;		/* no restart before this */
	long		delay;			/* the pause after the next stop */
} DelqKept;

/*
 * Keep one worker of a kind running: note that it stopped (and pause
 * before restarting it, doubling the pause while workers stop soon after
 * they start), start it when the pause is over and the database exists.
 * *database is looked up at most once a turn (-1: not yet).  Lowers
 * *timeout (-1: none) to when this kind wants a look again.
 */
static void
keep_running(DelqKept *k, DelqWorkerKind kind, int *database, long *timeout)
{
	TimestampTz now = GetCurrentTimestamp();
	long		wait;
	pid_t		pid;

	if (k->handle != NULL &&
		GetBackgroundWorkerPid(k->handle, &pid) == BGWH_STOPPED)
	{
		pfree(k->handle);
		k->handle = NULL;
		if (TimestampDifferenceExceeds(k->started, now, DELQ_STABLE_RUN_MS))
			k->delay = DELQ_RESTART_DELAY_MS;
		k->not_before = TimestampTzPlusMilliseconds(now, k->delay);
		k->delay = Min(k->delay * 2, DELQ_RESTART_DELAY_MAX_MS);
	}
	if (k->handle != NULL)
		return;					/* bgw_notify_pid sets our latch at its stop */

	wait = DELQ_LOOK_INTERVAL_MS;
	if (now < k->not_before)
		wait = Max(ms_until(k->not_before), 1);
	/* a worker started by a previous launcher may still run */
	else if (!worker_slot_taken(kind))
	{
		if (*database < 0)
			*database = database_exists(delq_database);
		if (*database)
		{
			k->handle = start_worker(kind);
			k->started = now;
			if (k->handle != NULL)
				return;
		}
	}
	*timeout = (*timeout < 0) ? wait : Min(*timeout, wait);
}

/*
 * The launcher: wait for delq.database, keep one worker of each kind
 * wanted running in it (the HTTP worker only with delq.http_listen set, a
 * postmaster setting).
 */
void
delq_launcher_main(Datum arg)
{
	DelqKept	kept[DELQ_WORKER_KINDS];
	int			nkinds = (delq_http_listen[0] != '\0') ? DELQ_WORKER_KINDS : 1;

	setup_signals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	memset(kept, 0, sizeof(kept));
	for (int i = 0; i < DELQ_WORKER_KINDS; i++)
		kept[i].delay = DELQ_RESTART_DELAY_MS;

	for (;;)
	{
		int			database = -1;
		long		timeout = -1;

		for (int i = 0; i < nkinds; i++)
			keep_running(&kept[i], (DelqWorkerKind) i, &database, &timeout);
		wait_a_while(timeout);
	}
}

/*
 * Short transactions of the worker.  pg_stat_activity shows what it does.
 */
static void
begin_step(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

static void
end_step(void)
{
	PopActiveSnapshot();
	CommitTransactionCommand();

	/*
	 * A background worker flushes its statistics itself: without this,
	 * autovacuum never hears of the rows the worker updates.  At most once a
	 * second (not forced).
	 */
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * Wait, quietly, for CREATE EXTENSION delq, and until the extension is at
 * this library's version: after a new package and a restart, a database
 * still at the previous version waits for ALTER EXTENSION delq UPDATE,
 * saying so once, and forwarding (or serving) then resumes without a
 * restart (docs/upgrading.md).  Requests submitted meanwhile queue up.
 * who names the worker in the log; what it does, in the hint.
 */
void
delq_wait_for_schema(const char *who, const char *what)
{
	bool		said = false;

	for (;;)
	{
		char	   *version;
		bool		ready;

		StartTransactionCommand();
		version = delq_extension_version();
		ready = version != NULL && strcmp(version, DELQ_VERSION) == 0;
		if (version != NULL && !ready && !said)
		{
			ereport(LOG,
					(errmsg("%s waiting: extension \"delq\" in database \"%s\" is at version %s, this library needs %s",
							who, delq_database, version, DELQ_VERSION),
					 errhint("Run ALTER EXTENSION delq UPDATE in database \"%s\"; %s resumes by itself.",
							 delq_database, what)));
			said = true;
		}
		CommitTransactionCommand();
		if (ready)
			break;
		wait_a_while(DELQ_LOOK_INTERVAL_MS);
	}
	if (said)
		ereport(LOG,
				(errmsg("%s: extension \"delq\" in database \"%s\" is now at version %s",
						who, delq_database, DELQ_VERSION)));
}

static void
withdraw_latch(int code, Datum arg)
{
	delq_wake_set_worker_latch(NULL);
}

/*
 * Bring next_look forward to when the next retry, hold or breaker probe
 * falls due.  delq._next_due() leaves out work that cannot be claimed now
 * (a destination at its concurrency cap, behind an open breaker, disabled),
 * which a finishing transfer or a commit brings back, so a time already
 * past means work that fell due after this turn's claim: look again soon.
 */
static TimestampTz
sooner_look(TimestampTz next_look)
{
	TimestampTz due;
	TimestampTz soon = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												   DELQ_DUE_AGAIN_MS);

	if (!delq_store_next_due(&due))
		return next_look;
	return Min(next_look, Max(due, soon));
}

/*
 * One turn's database work, in one short transaction: record what came
 * back; when a look is due, release held requests that fell due and
 * requeue expired leases; run the upkeep when its time came; claim what
 * is due.  The claim commits with it, before anything claimed is sent.
 * Returns whether to claim again at once (the batch was full).
 */
static bool
database_turn(DelqForwarder *fw, bool claim_now, TimestampTz *next_look,
			  TimestampTz *next_upkeep, bool *sql_due)
{
	int			room = Min(delq_max_in_flight - fw->running, delq_batch_size);
	TimestampTz now;

	/*
	 * SQL destinations are looked for when a commit woke us or a look is due
	 * (a retry of theirs falls due through delq._next_due), not after every
	 * batch of HTTP answers.
	 */
	bool		look_sql = claim_now;

	begin_step("delq: forwarding");
	delq_store_replan_if_resized();
	if (fw->ndone > 0)
	{
		delq_forwarder_record(fw);
		claim_now = true;		/* capacity came free */
	}
	now = GetCurrentTimestamp();
	if (now >= *next_look)
	{
		delq_store_release_held(delq_batch_size);
		delq_store_requeue_stale(false);
		/* at the latest, look again after the idle timeout */
		*next_look = TimestampTzPlusMilliseconds(now, delq_idle_timeout_ms);
		claim_now = true;
		look_sql = true;
	}
	if (now >= *next_upkeep)
		*next_upkeep = delq_upkeep_round();
	/* a full batch: more may be due right now */
	if (claim_now && room > 0)
		claim_now = (delq_forwarder_claim(fw, room) == room);
	if (!claim_now)
		*next_look = sooner_look(*next_look);
	*sql_due = look_sql && delq_sql_due();
	end_step();
	return claim_now;
}

/*
 * SQL destinations (src/sqldest.c): each due delivery in a transaction of
 * its own, in which its function's work and its outcome commit together.
 * At most a batch per turn, so that HTTP answers are not kept waiting.
 * Returns whether the batch was full (more may be due).
 */
static bool
sql_turn(void)
{
	for (int i = 0; i < delq_batch_size; i++)
	{
		int			n;

		begin_step("delq: SQL destination");
		n = delq_sql_run_one();
		end_step();
		if (n == 0)
			return false;
		CHECK_FOR_INTERRUPTS();
	}
	return true;
}

static void
forwarding_loop(DelqForwarder *fw)
{
	TimestampTz next_look = 0;	/* held requests, leases and claims: now */
	TimestampTz next_upkeep = 0;	/* the privacy upkeep: now */
	TimestampTz last_turn = 0;
	bool		claim_now = true;

	for (;;)
	{
		long		timeout;
		TimestampTz now;
		bool		sql_due = false;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		now = GetCurrentTimestamp();
		if (fw->ndone > 0 || claim_now || now >= next_look || now >= next_upkeep)
		{
			claim_now = database_turn(fw, claim_now, &next_look, &next_upkeep,
									  &sql_due);
			last_turn = now;
		}
		if (sql_due && sql_turn())
			claim_now = true;

		/* outcomes never sent (a template's render error) wait too */
		if ((claim_now && fw->running < delq_max_in_flight) || fw->ndone > 0)
			timeout = 0;
		else
			timeout = Max(ms_until(Min(next_look, next_upkeep)), 0);

		/* going idle: statistics still held back (end_step) go out now */
		if (fw->running == 0 && timeout >= DELQ_IDLE_STATS_MS)
			pgstat_report_stat(true);

		if (delq_forwarder_wait(fw, timeout))
		{
			/* woken by a commit: gather the commits of the next moment */
			long		gather = ms_until(TimestampTzPlusMilliseconds(last_turn,
																	  DELQ_WAKE_GATHER_MS));

			if (gather > 0 && fw->ndone == 0)
				(void) delq_forwarder_wait(fw, gather);
			claim_now = true;
		}
	}
}

/*
 * The forwarding worker.
 */
void
delq_worker_main(Datum arg)
{
	DelqForwarder *fw;

	setup_signals();
	delq_worker_take_slot(DELQ_WORKER_FORWARDING);

	BackgroundWorkerInitializeConnection(delq_database,
										 delq_worker_role[0] ? delq_worker_role : NULL,
										 0);
	pgstat_report_appname("delq worker");

	/*
	 * The worker runs as a superuser (or the extension's owner): no ALTER
	 * DATABASE or ALTER ROLE ... SET search_path may decide what the names in
	 * its queries mean (issue 9; docs/security.md).  A session setting
	 * outranks those and the configuration file (reloads too), and nothing in
	 * this process sets it again: delq's functions set it only for their own
	 * calls, and the one place user code runs, a SQL destination's function
	 * (src/sqldest.c), has every setting it changes undone.  Not an override:
	 * that would also silence the SET search_path clause of such a function.
	 */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_SESSION);

	delq_wait_for_schema("delq worker", "forwarding");

	begin_step("delq: requeueing deliveries of a previous worker");
	{
		int			requeued = delq_store_requeue_stale(true);
		int			lost = delq_store_run_int(&lost_stmt, (Datum) 0);

		if (requeued > 0)
			ereport(LOG,
					(errmsg("delq worker requeued %d deliveries left in flight by a previous worker",
							requeued)));
		/* a restore that lost rows must not go unnoticed (docs/operations.md) */
		if (lost > 0)
			ereport(WARNING,
					(errmsg("delq: %d open requests in database \"%s\" have lost their deliveries",
							lost, delq_database),
					 errdetail("The ledger shows they were planned, but delq.delivery has no row for them: an incomplete restore?"),
					 errhint("Run SELECT * FROM delq.check_consistency(); and restore as docs/operations.md, \"Backups and restores\", says.")));
	}
	end_step();

	/* from now on, commits of submit() and approve() wake us */
	on_shmem_exit(withdraw_latch, (Datum) 0);
	delq_wake_set_worker_latch(MyLatch);

	ereport(LOG, (errmsg("delq worker started in database \"%s\"", delq_database)));
	fw = delq_forwarder_create();
	forwarding_loop(fw);
}
