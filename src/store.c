/* store.c: to be written */
#include "postgres.h"
