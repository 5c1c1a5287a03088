/*-------------------------------------------------------------------------
 *
 * forward.c
 *	  The forwarding engine shared by the background worker and
 *	  delq.dispatch(), so that both follow the same rules.
 *
 * Each claimed delivery becomes a DelqTransfer in a memory context of its
 * own, which lives until its outcome has been recorded; everything else
 * the engine keeps is in one long-lived context, so the caller may commit
 * and start transactions between calls.
 *
 * src/forward.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdlib.h>

#include "pgstat.h"
#include "utils/memutils.h"

#include "forward.h"
#include "settings.h"
#include "store.h"
#include "template.h"

/* Queue a finished transfer's outcome for recording. */
static void
queue_done(DelqForwarder *fw, DelqTransfer *t)
{
	if (fw->ndone == fw->done_size)
	{
		fw->done_size *= 2;
		fw->done = repalloc(fw->done, sizeof(DelqTransfer *) * fw->done_size);
	}
	fw->done[fw->ndone++] = t;
}

/* The client hands back a finished request. */
static void
transfer_done(DelqHttpRequest *req, void *arg)
{
	DelqForwarder *fw = (DelqForwarder *) arg;

	queue_done(fw, delq_webhook_finish(req));
	fw->running--;
}

/*
 * Whether path resolves (symbolic links and ".." followed) to a file
 * inside delq.tls_dir.  A delq_admin names a destination's TLS files; they
 * must not make the server read its own key, or any other file it can
 * read (docs/security.md, "TLS files").
 */
static bool
in_tls_dir(const char *path)
{
	char	   *dir;
	char	   *real;
	bool		ok;

	if (delq_tls_dir == NULL || delq_tls_dir[0] == '\0')
		return false;
	dir = realpath(delq_tls_dir, NULL);
	real = realpath(path, NULL);
	ok = dir != NULL && real != NULL &&
		strncmp(real, dir, strlen(dir)) == 0 && real[strlen(dir)] == '/';
	free(dir);
	free(real);
	return ok;
}

/*
 * delq.denied_networks, parsed again when it changed (checked when set, so
 * it parses).
 */
static void
denied_networks(const DelqNetwork **nets, int *n)
{
	static char *parsed_from = NULL;
	static DelqNetwork *parsed = NULL;
	static int	nparsed = 0;

	if (parsed_from == NULL || strcmp(parsed_from, delq_denied_networks) != 0)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		if (parsed_from)
			pfree(parsed_from);
		if (parsed)
			pfree(parsed);
		if (delq_http_parse_networks(delq_denied_networks, &parsed, &nparsed) != NULL)
			nparsed = 0;
		parsed_from = pstrdup(delq_denied_networks);
		MemoryContextSwitchTo(old);
	}
	*nets = parsed;
	*n = nparsed;
}

/*
 * The settings every request of a transfer follows: its TLS files confined
 * to delq.tls_dir (else it is not sent, and fails with why), the global CA
 * bundle, the proxy, the networks it may not reach.  Copied: a reload
 * frees or replaces the old values while requests may still wait in the
 * client's queue.
 */
static void
apply_settings(DelqTransfer *t)
{
	MemoryContext cxt = (MemoryContext) t->user;
	const DelqNetwork *nets;
	int			n;
	const char *files[3] = {t->req.ca_file, t->req.client_cert, t->req.client_key};
	static const char *const refusals[3] = {
		"ca_file is not a file in delq.tls_dir",
		"client_cert is not a file in delq.tls_dir",
		"client_key is not a file in delq.tls_dir",
	};

	for (int i = 0; i < 3 && t->req.refuse == NULL; i++)
		if (files[i] != NULL && !in_tls_dir(files[i]))
			t->req.refuse = refusals[i];
	if (t->req.ca_file == NULL && delq_ca_file[0] != '\0')
		t->req.ca_file = MemoryContextStrdup(cxt, delq_ca_file);
	if (delq_http_proxy[0] != '\0')
		t->req.proxy = MemoryContextStrdup(cxt, delq_http_proxy);
	denied_networks(&nets, &n);
	if (n > 0)
	{
		DelqNetwork *copy = MemoryContextAlloc(cxt, sizeof(DelqNetwork) * n);

		memcpy(copy, nets, sizeof(DelqNetwork) * n);
		t->req.denied = copy;
		t->req.ndenied = n;
	}
}

DelqForwarder *
delq_forwarder_create(void)
{
	MemoryContext cxt = AllocSetContextCreate(TopMemoryContext, "delq forwarder",
											  ALLOCSET_DEFAULT_SIZES);
	DelqForwarder *fw = MemoryContextAllocZero(cxt, sizeof(DelqForwarder));

	fw->cxt = cxt;
	fw->done_size = 64;
	fw->done = MemoryContextAlloc(cxt, sizeof(DelqTransfer *) * fw->done_size);
	fw->http = delq_http_create(delq_max_in_flight);
	return fw;
}

void
delq_forwarder_destroy(DelqForwarder *fw)
{
	delq_http_destroy(fw->http);
	MemoryContextDelete(fw->cxt);
}

int
delq_forwarder_claim(DelqForwarder *fw, int max)
{
	DelqTransfer **claimed;
	int			n;

	if (max <= 0)
		return 0;
	n = delq_store_claim(max, fw->cxt, &claimed);
	for (int i = 0; i < n; i++)
	{
		apply_settings(claimed[i]);
		if (claimed[i]->render_error != NULL)
		{
			/* a template that cannot be rendered: nothing to send */
			claimed[i]->outcome = DELQ_OUTCOME_FAILED;
			claimed[i]->retry_after_s = -1;
			strlcpy(claimed[i]->error, claimed[i]->render_error,
					sizeof(claimed[i]->error));
			queue_done(fw, claimed[i]);
			continue;
		}
		if (claimed[i]->method != NULL)
			delq_template_start(fw->http, claimed[i]);
		else
			delq_webhook_start(fw->http, claimed[i]);
		fw->running++;
	}
	if (claimed)
		pfree(claimed);
	fw->claimed += n;
	return n;
}

int
delq_forwarder_record(DelqForwarder *fw)
{
	int			n = fw->ndone;

	if (n == 0)
		return 0;
	delq_store_record(fw->done, n);
	/* recorded (the caller commits): the transfers may go */
	for (int i = 0; i < n; i++)
		MemoryContextDelete((MemoryContext) fw->done[i]->user);
	fw->ndone = 0;
	fw->recorded += n;
	return n;
}

bool
delq_forwarder_wait(DelqForwarder *fw, long timeout_ms)
{
	return delq_http_wait(fw->http, timeout_ms, transfer_done, fw,
						  PG_WAIT_EXTENSION);
}
