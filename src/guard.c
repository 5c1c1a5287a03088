/*-------------------------------------------------------------------------
 *
 * guard.c
 *	  delq.guard(): a trigger for application tables that warns about, or
 *	  refuses, a row whose column holds the subject of a completed
 *	  deletion request (docs/privacy.md).
 *
 * The trigger runs as the role that writes the row (SECURITY INVOKER) and
 * reads one column, of a built-in text type, straight from the tuple: no
 * cast, output function or operator of the table's types runs, so neither
 * the table's owner nor the writer can have delq run code of theirs.  In
 * 1.0 guard() was SECURITY DEFINER and converted the whole row to jsonb,
 * which calls user-defined casts of any column type, as the extension's
 * owner (issue 9).  Only the lookup needs the owner's rights: it is the
 * SECURITY DEFINER SQL function delq._guard_erased(text, text)
 * (src/sql/80_privacy.sql), called here through fmgr, which checks no
 * EXECUTE privilege; so it is granted to nobody, and the application's
 * roles need no delq privilege to write guarded tables.
 *
 * IDENTIFICATION
 *	  src/guard.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

PG_FUNCTION_INFO_V1(delq_guard);

#define GUARD_USAGE \
	"Use CREATE TRIGGER ... BEFORE INSERT OR UPDATE ON t FOR EACH ROW EXECUTE FUNCTION delq.guard('column', 'refuse' or 'warn' [, 'source'])."

/* the value of column attnum as text, or NULL; char(n) without its padding */
static text *
column_text(HeapTuple tuple, TupleDesc desc, int attnum)
{
	bool		isnull;
	Datum		d = heap_getattr(tuple, attnum, desc, &isnull);
	text	   *t;
	int			len;

	if (isnull)
		return NULL;
	t = DatumGetTextPP(d);
	len = VARSIZE_ANY_EXHDR(t);
	if (TupleDescAttr(desc, attnum - 1)->atttypid == BPCHAROID)
		while (len > 0 && VARDATA_ANY(t)[len - 1] == ' ')
			len--;
	return cstring_to_text_with_len(VARDATA_ANY(t), len);
}

/* delq._guard_erased(value, source), called without an EXECUTE check */
static bool
erased(text *value, const char *source)
{
	LOCAL_FCINFO(fcinfo, 2);
	Oid			argtypes[2] = {TEXTOID, TEXTOID};
	Oid			fn;
	FmgrInfo	flinfo;
	Datum		result;

	/* by catalog, not by name: a name lookup checks USAGE on schema delq */
	fn = GetSysCacheOid3(PROCNAMEARGSNSP, Anum_pg_proc_oid,
						 CStringGetDatum("_guard_erased"),
						 PointerGetDatum(buildoidvector(argtypes, 2)),
						 ObjectIdGetDatum(get_namespace_oid("delq", false)));
	if (!OidIsValid(fn))
		elog(ERROR, "delq._guard_erased(text, text) is missing");
	fmgr_info(fn, &flinfo);
	InitFunctionCallInfoData(*fcinfo, &flinfo, 2, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = PointerGetDatum(value);
	fcinfo->args[0].isnull = false;
	fcinfo->args[1].value = source ? CStringGetTextDatum(source) : (Datum) 0;
	fcinfo->args[1].isnull = (source == NULL);
	result = FunctionCallInvoke(fcinfo);
	return !fcinfo->isnull && DatumGetBool(result);
}

/* the column's number, after checking that guard() may read it */
static int
guarded_column(Relation rel, const char *col)
{
	TupleDesc	desc = RelationGetDescr(rel);
	int			attnum = SPI_fnumber(desc, col);
	Oid			type;

	if (attnum <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("delq.guard(): table %s.%s has no column %s",
						get_namespace_name(RelationGetNamespace(rel)),
						RelationGetRelationName(rel), quote_identifier(col)),
				 errhint("Pass the name of the column that holds the subject as the first trigger argument.")));
	type = TupleDescAttr(desc, attnum - 1)->atttypid;
	if (type != TEXTOID && type != VARCHAROID && type != BPCHAROID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("delq.guard(): column %s of %s.%s is of type %s",
						quote_identifier(col),
						get_namespace_name(RelationGetNamespace(rel)),
						RelationGetRelationName(rel), format_type_be(type)),
				 errhint("delq.guard() reads only columns of type text, varchar or char; for another type (a domain, citext), guard a generated text column, e.g. email_text text GENERATED ALWAYS AS (email::text) STORED.")));
	return attnum;
}

Datum
delq_guard(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	Trigger    *tg;
	Relation	rel;
	const char *mode;
	const char *source;
	HeapTuple	row;
	int			attnum;
	text	   *value;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("delq.guard() must be called as a trigger"),
				 errhint(GUARD_USAGE)));
	tg = td->tg_trigger;
	rel = td->tg_relation;
	mode = tg->tgnargs > 1 ? tg->tgargs[1] : "refuse";
	source = tg->tgnargs > 2 ? tg->tgargs[2] : NULL;
	if (!TRIGGER_FIRED_BEFORE(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
		!(TRIGGER_FIRED_BY_INSERT(td->tg_event) || TRIGGER_FIRED_BY_UPDATE(td->tg_event)) ||
		tg->tgnargs < 1 || tg->tgnargs > 3 ||
		(strcmp(mode, "refuse") != 0 && strcmp(mode, "warn") != 0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("delq.guard() on %s.%s is attached wrongly",
						get_namespace_name(RelationGetNamespace(rel)),
						RelationGetRelationName(rel)),
				 errhint(GUARD_USAGE)));

	row = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple;
	attnum = guarded_column(rel, tg->tgargs[0]);
	value = column_text(row, RelationGetDescr(rel), attnum);
	if (value == NULL)
		return PointerGetDatum(row);
	if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
	{
		text	   *old = column_text(td->tg_trigtuple, RelationGetDescr(rel), attnum);

		if (old != NULL && VARSIZE(old) == VARSIZE(value) &&
			memcmp(VARDATA(old), VARDATA(value), VARSIZE(value) - VARHDRSZ) == 0)
			return PointerGetDatum(row);
	}
	if (!erased(value, source))
		return PointerGetDatum(row);

	if (strcmp(mode, "refuse") == 0)
	{
		/*
		 * The failing statement holds the value: keep it out of the server
		 * log.  A SET clause would need the caller to be allowed to set this
		 * superuser setting; the error's abort undoes it.
		 */
		(void) set_config_option("log_min_error_statement", "panic",
								 PGC_SUSET, PGC_S_SESSION, GUC_ACTION_LOCAL,
								 true, 0, false);
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("column %s of %s.%s holds the subject of a completed deletion request",
						quote_identifier(tg->tgargs[0]),
						get_namespace_name(RelationGetNamespace(rel)),
						RelationGetRelationName(rel)),
				 errdetail("The data of this person was erased at their request; delq keeps a keyed hash so that it stays erased."),
				 errhint("Do not re-create the person's data from an old source.  If the person signed up again, use delq.guard(..., 'warn') on this table."),
				 errtablecol(rel, attnum),
				 err_generic_string(PG_DIAG_CONSTRAINT_NAME, "delq_erased_subject")));
	}
	ereport(WARNING,
			(errmsg("column %s of %s.%s holds the subject of a completed deletion request",
					quote_identifier(tg->tgargs[0]),
					get_namespace_name(RelationGetNamespace(rel)),
					RelationGetRelationName(rel)),
			 errdetail("The data of this person was erased at their request."),
			 errhint("Check that the row does not restore erased data.")));
	return PointerGetDatum(row);
}
