/*-------------------------------------------------------------------------
 *
 * version.h
 *	  The schema version this library works with (src/version.c).
 *
 * src/version.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DELQ_VERSION_H
#define DELQ_VERSION_H

#ifndef DELQ_VERSION
#error "DELQ_VERSION must be defined (the Makefile takes it from delq.control)"
#endif

extern char *delq_extension_version(void);
extern void delq_require_current_schema(void);

#endif							/* DELQ_VERSION_H */
