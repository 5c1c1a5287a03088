/* worker.c: being written */
#include "postgres.h"
#include "worker.h"

void
delq_worker_register(void)
{
}
