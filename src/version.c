/*-------------------------------------------------------------------------
 *
 * version.c
 *	  Whether a database's delq extension is at the version of this
 *	  library.
 *
 * Users install a new package (a new library) first and run ALTER
 * EXTENSION delq UPDATE in each database later (docs/upgrading.md).  The
 * forwarding SQL of src/store.c is written for its own version's schema,
 * so the worker waits, and delq.dispatch() refuses, in a database that is
 * not there yet.  Everything else a 1.0 database calls in the library (the
 * ledger seal trigger, HMAC, the commit wake-up) keeps working there, so
 * requests can still be submitted until the update.
 *
 * DELQ_VERSION comes from delq.control's default_version (Makefile).
 *
 * src/version.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"

#include "version.h"

/*
 * extversion of delq in the current database, palloc'd, or NULL when the
 * extension is not installed.  Needs a transaction.
 */
char *
delq_extension_version(void)
{
	char	   *version = NULL;
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber,
				F_NAMEEQ, CStringGetDatum("delq"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);

		if (!isnull)
			version = text_to_cstring(DatumGetTextPP(d));
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return version;
}

/*
 * ERROR unless delq is installed at this library's version: for SQL
 * entry points that run the forwarding queries (delq.dispatch()).
 */
void
delq_require_current_schema(void)
{
	char	   *version = delq_extension_version();

	if (version == NULL || strcmp(version, DELQ_VERSION) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"delq\" is at version %s, but the loaded delq library is version %s",
						version ? version : "(none)", DELQ_VERSION),
				 errhint("Run ALTER EXTENSION delq UPDATE in this database.")));
}
