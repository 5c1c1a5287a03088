# delq: PGXS build, install and tests.
#
#   make && make install      build and install (install needs root)
#   make test                 install what is missing, build, run every suite
#   make demo                 a throwaway cluster with requests flowing
#   make indent               lay out the C code as pgindent does (tools/pgindent)
#
# Extension scripts (docs/upgrading.md):
#   delq--1.0.sql        1.0 as it shipped, frozen (committed, never rebuilt)
#   delq--1.1.sql        a fresh install: src/sql/*.sql in file-name order,
#                        then connectors.sql
#   delq--1.0--1.1.sql   the upgrade: src/sql/upgrade/1.0--1.1-before.sql,
#                        the same src/sql/*.sql (written to run again over
#                        1.0: CREATE OR REPLACE, IF NOT EXISTS), connectors.sql,
#                        then src/sql/upgrade/1.0--1.1-after.sql
#   connectors.sql       the connector catalogue (delq.connectors), made by
#                        connectors/to-sql from connectors/*.json

MODULE_big = delq
OBJS = \
	src/delq.o \
	src/settings.o \
	src/wake.o \
	src/signing.o \
	src/httpclient.o \
	src/webhook.o \
	src/template.o \
	src/store.o \
	src/upkeep.o \
	src/worker.o \
	src/forward.o \
	src/dispatch.o \
	src/sqldest.o \
	src/hmac.o \
	src/ledger.o \
	src/guard.o \
	src/version.o \
	src/ingress.o \
	src/api.o

# The library's version is the extension's default_version (src/version.c).
DELQ_VERSION = $(shell sed -n "s/^default_version *= *'\(.*\)'.*/\1/p" $(srcdir)/delq.control)
PG_CPPFLAGS = -I$(srcdir)/src -DDELQ_VERSION='"$(DELQ_VERSION)"'
SHLIB_LINK = -lcurl -lmicrohttpd
EXTENSION = delq
DATA = delq--1.0.sql src/delq-openapi.json
DATA_built = delq--1.1.sql delq--1.0--1.1.sql

SQL_PARTS = $(sort $(wildcard $(srcdir)/src/sql/*.sql))
SQL_BODY = $(filter-out %/00_header.sql,$(SQL_PARTS))
CONNECTORS = $(sort $(wildcard $(srcdir)/connectors/*.json))

REGRESS = $(sort $(basename $(notdir $(wildcard $(srcdir)/sql/*.sql))))
REGRESS_OPTS = --no-locale --encoding=UTF8 --temp-instance=./tmp_check_regress --temp-config=$(srcdir)/test/regress.conf

ISOLATION = $(sort $(basename $(notdir $(wildcard $(srcdir)/test/isolation/specs/*.spec))))
ISOLATION_OPTS = --no-locale --encoding=UTF8 --inputdir=$(srcdir)/test/isolation --outputdir=./output_iso \
	--temp-instance=./tmp_check_iso --temp-config=$(srcdir)/test/regress.conf

TAP_TESTS = 1
PROVE_TESTS ?= test/t/*.pl

EXTRA_CLEAN = connectors.sql tmp_check_regress tmp_check_iso output_iso results regression.diffs regression.out

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# The files that use DELQ_VERSION follow a change of delq.control.
src/version.o src/settings.o src/worker.o: $(srcdir)/delq.control

# after PGXS, which resets it
PROVE_FLAGS = -I test/perl

delq--1.1.sql: $(SQL_PARTS) connectors.sql
	cat $^ > $@

delq--1.0--1.1.sql: $(srcdir)/src/sql/upgrade/1.0--1.1-before.sql $(SQL_BODY) connectors.sql $(srcdir)/src/sql/upgrade/1.0--1.1-after.sql
	cat $^ > $@

connectors.sql: $(CONNECTORS) $(srcdir)/connectors/to-sql
	sh $(srcdir)/connectors/to-sql $(CONNECTORS) > $@

.PHONY: indent indent-check typedefs
# C layout as PostgreSQL's pgindent makes it (tools/pgindent; needs Debian's
# pg-bsd-indent and universal-ctags).  indent-check changes nothing and
# fails when a file would change.
typedefs:
	PG_CONFIG=$(PG_CONFIG) tools/typedefs
indent:
	PG_CONFIG=$(PG_CONFIG) tools/pgindent
indent-check:
	PG_CONFIG=$(PG_CONFIG) CHECK=1 tools/pgindent

.PHONY: test demo chaos
test:
	bash test/run-all

# The chaos test's long form (test/chaos; `make test` runs a 40 s form).
chaos:
	bash test/chaos $${DELQ_CHAOS_SECONDS:-600}

demo:
	bash test/demo
