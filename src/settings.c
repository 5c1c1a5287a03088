/*-------------------------------------------------------------------------
 *
 * settings.c
 *	  Definitions of the delq.* configuration parameters.
 *
 * Durations are integer GUCs with units, so postgresql.conf accepts
 * '30d', '5s', '250ms'; SQL code reads them with current_setting() and a
 * cast to interval.  Every parameter is documented in
 * docs/configuration.md.
 *
 * src/settings.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/guc.h"

#include "httpclient.h"
#include "settings.h"

char	   *delq_database = NULL;
char	   *delq_worker_role = NULL;
int			delq_default_deadline_s = 30 * 24 * 3600;
int			delq_hold_period_s = 0;
bool		delq_require_approval = false;
int			delq_retry_base_ms = 5000;
int			delq_retry_max_s = 24 * 3600;
int			delq_max_attempts = 25;
int			delq_batch_size = 500;
int			delq_max_in_flight = 256;
int			delq_idle_timeout_ms = 10000;
int			delq_breaker_threshold = 10;
int			delq_breaker_cooldown_s = 60;
int			delq_breaker_max_cooldown_s = 3600;
char	   *delq_ca_file = NULL;
char	   *delq_tls_dir = NULL;
char	   *delq_http_proxy = NULL;
char	   *delq_denied_networks = NULL;
int			delq_warn_before_s = 7 * 24 * 3600;
int			delq_subject_retention_s = 30 * 24 * 3600;
int			delq_secret_overlap_s = 24 * 3600;
char	   *delq_redact_attributes = NULL;
static char *delq_library_version = NULL;
char	   *delq_http_listen = NULL;
char	   *delq_http_tls_cert = NULL;
char	   *delq_http_tls_key = NULL;
char	   *delq_http_public_url = NULL;
int			delq_http_max_body = 64 * 1024;
int			delq_http_max_connections = 64;
int			delq_http_max_client_connections = 16;
int			delq_http_request_timeout_ms = 10000;

/* delq.denied_networks must parse (src/httpclient.c reads the list). */
static bool
check_networks(char **newval, void **extra, GucSource source)
{
	DelqNetwork *nets;
	int			n;
	const char *err = delq_http_parse_networks(*newval, &nets, &n);

	if (err != NULL)
	{
		GUC_check_errdetail("%s", err);
		return false;
	}
	if (nets)
		pfree(nets);
	return true;
}

/*
 * The HTTP ingress (docs/http-api.md).  Its server reads these at start,
 * like the worker's, except delq.http_public_url, which the forwarding
 * SQL reads when it builds a webhook body.
 */
static void
delq_define_http_settings(GucContext worker_context)
{
	DefineCustomStringVariable("delq.http_listen",
							   "Address (host:port) of the HTTP API; empty starts no HTTP server.",
							   NULL,
							   &delq_http_listen,
							   "",
							   worker_context,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("delq.http_tls_cert",
							   "PEM certificate (chain) of the HTTP API; with delq.http_tls_key it serves HTTPS.",
							   NULL,
							   &delq_http_tls_cert,
							   "",
							   worker_context,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("delq.http_tls_key",
							   "PEM private key of the HTTP API's certificate.",
							   NULL,
							   &delq_http_tls_key,
							   "",
							   worker_context,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("delq.http_public_url",
							   "Base URL at which destinations reach the HTTP API, for the confirm_url of callback deliveries.",
							   NULL,
							   &delq_http_public_url,
							   "",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("delq.http_max_body",
							"Largest request body the HTTP API accepts.",
							NULL,
							&delq_http_max_body,
							64 * 1024, 1024, 16 * 1024 * 1024,
							worker_context,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("delq.http_max_connections",
							"Open HTTP connections beyond which requests are answered 503.",
							NULL,
							&delq_http_max_connections,
							64, 1, 250,
							worker_context,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("delq.http_max_client_connections",
							"Open HTTP connections from one client address beyond which its requests are answered 429 (0: no limit).",
							NULL,
							&delq_http_max_client_connections,
							16, 0, 250,
							worker_context,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("delq.http_request_timeout",
							"Time a client has to send a whole request (headers and body); slower connections are closed.",
							NULL,
							&delq_http_request_timeout_ms,
							10000, 100, 600 * 1000,
							worker_context,
							GUC_UNIT_MS,
							NULL, NULL, NULL);
}

/* Where the worker runs, and how requests are taken in. */
static void
delq_define_request_settings(GucContext worker_context)
{
	DefineCustomStringVariable("delq.database",
							   "Database in which the delq worker runs.",
							   NULL,
							   &delq_database,
							   "postgres",
							   worker_context,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("delq.worker_role",
							   "Role the delq worker connects as (default: the bootstrap superuser).",
							   NULL,
							   &delq_worker_role,
							   "",
							   worker_context,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("delq.default_deadline",
							"Time a request has to be completed when submit() is given no due_at.",
							NULL,
							&delq_default_deadline_s,
							30 * 24 * 3600, 60, 365 * 24 * 3600,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("delq.hold_period",
							"Time a new request stays held (rejectable) before it is forwarded.",
							NULL,
							&delq_hold_period_s,
							0, 0, 90 * 24 * 3600,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("delq.require_approval",
							 "Keep new requests held until an operator calls delq.approve().",
							 NULL,
							 &delq_require_approval,
							 false,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);
}

/* Retries, batches, the circuit breaker and TLS of the forwarding. */
static void
delq_define_forwarding_settings(void)
{
	DefineCustomIntVariable("delq.retry_base",
							"First retry delay; doubles with each attempt up to delq.retry_max.",
							NULL,
							&delq_retry_base_ms,
							5000, 1, 24 * 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("delq.retry_max",
							"Longest delay between two attempts of one delivery.",
							NULL,
							&delq_retry_max_s,
							24 * 3600, 1, 30 * 24 * 3600,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("delq.max_attempts",
							"Attempts after which a delivery fails, for destinations without their own.",
							NULL,
							&delq_max_attempts,
							25, 1, 1000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("delq.batch_size",
							"Deliveries the worker claims, and outcomes it records, per transaction.",
							NULL,
							&delq_batch_size,
							500, 1, 100000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("delq.max_in_flight",
							"HTTP requests the worker keeps open at once, over all destinations.",
							NULL,
							&delq_max_in_flight,
							256, 1, 100000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("delq.idle_timeout",
							"Longest the idle worker sleeps before looking for due retries and held requests.",
							NULL,
							&delq_idle_timeout_ms,
							10000, 10, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("delq.breaker_threshold",
							"Consecutive failed attempts after which a destination's circuit breaker opens.",
							NULL,
							&delq_breaker_threshold,
							10, 1, 100000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("delq.breaker_cooldown",
							"How long an open circuit breaker waits before one probe; doubles while probes fail.",
							NULL,
							&delq_breaker_cooldown_s,
							60, 1, 24 * 3600,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("delq.breaker_max_cooldown",
							"Longest an open circuit breaker waits before a probe, however many probes failed.",
							NULL,
							&delq_breaker_max_cooldown_s,
							3600, 1, 24 * 3600,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomStringVariable("delq.ca_file",
							   "CA bundle used to verify destinations' TLS certificates (empty: the system's).",
							   NULL,
							   &delq_ca_file,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	/* docs/security.md: an admin's TLS paths may not name any server file */
	DefineCustomStringVariable("delq.tls_dir",
							   "Directory that destinations' TLS files (ca_file, client_cert, client_key) must be in (empty: none allowed).",
							   NULL,
							   &delq_tls_dir,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("delq.http_proxy",
							   "Proxy for every outgoing HTTP request (empty: none; the server's proxy environment is ignored).",
							   NULL,
							   &delq_http_proxy,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("delq.denied_networks",
							   "IP networks no destination may be reached at (a cloud's metadata service by default).",
							   "Checked after name resolution, before connecting; with delq.http_proxy, the proxy is what is checked.",
							   &delq_denied_networks,
							   "169.254.0.0/16, fe80::/10, fd00:ec2::254",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   check_networks, NULL, NULL);
}

/* Deadlines and minimisation (docs/privacy.md). */
static void
delq_define_privacy_settings(void)
{
	DefineCustomIntVariable("delq.warn_before",
							"How long before its deadline an unfinished request counts as at risk.",
							"Used by the view delq.at_risk and by delq.check_deadlines().",
							&delq_warn_before_s,
							7 * 24 * 3600, 0, 365 * 24 * 3600,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("delq.secret_overlap",
							"How long a destination's previous signing secret keeps signing next to a new one.",
							"alter_destination(secret => ...) keeps the old secret for this long (0: none).",
							&delq_secret_overlap_s,
							24 * 3600, 0, 30 * 24 * 3600,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("delq.subject_retention",
							"How long a finished request keeps its subject before delq.redact() replaces it by a keyed hash.",
							NULL,
							&delq_subject_retention_s,
							30 * 24 * 3600, 0, 3650 * 24 * 3600,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomStringVariable("delq.redact_attributes",
							   "Comma-separated attribute keys that delq.redact() replaces by a keyed hash with the subject.",
							   NULL,
							   &delq_redact_attributes,
							   "",
							   PGC_SUSET,
							   0,
							   NULL, NULL, NULL);
}

void
delq_define_settings(void)
{
	/*
	 * The worker reads these only at start, so they are postmaster-level when
	 * preloaded; in a session that loads delq later (dispatch()), PostgreSQL
	 * refuses new postmaster-level settings, and they are only informative
	 * there.
	 */
	GucContext	worker_context = PGC_SIGHUP;

	if (process_shared_preload_libraries_in_progress)
		worker_context = PGC_POSTMASTER;

	delq_define_request_settings(worker_context);
	delq_define_forwarding_settings();
	delq_define_privacy_settings();

	/*
	 * Read only: which library a session or the server loaded.  The upgrade
	 * script checks it (src/sql/upgrade/1.0--1.1-before.sql), because a
	 * server keeps a preloaded library until it restarts.
	 */
	DefineCustomStringVariable("delq.library_version",
							   "Version of the loaded delq library.",
							   NULL,
							   &delq_library_version,
							   DELQ_VERSION,
							   PGC_INTERNAL,
							   GUC_NOT_IN_SAMPLE | GUC_DISALLOW_IN_FILE,
							   NULL, NULL, NULL);

	delq_define_http_settings(worker_context);

	MarkGUCPrefixReserved("delq");
}
