/* dispatch.c: to be written */
#include "postgres.h"
