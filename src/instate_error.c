/*
 * instate_error.c - names for the return codes of instate.h.
 */
#include "instate.h"

#include <string.h>

static const char *const messages[] = {
	/* INSTATE_ERR_BASE - 1 ... */
	"not found",
	"a write transaction is already open in this thread",
	"the store reached its max_size",
	"the map was grown: run the transaction again",
	"the store is read-only",
	"corrupt data",
	"written by a newer format version",
	"a size limit could not be met",
	"invalid argument",
	"the namespace exists with another type",
	"the transaction has ended",
	"the store is already open in this process with other options",
	"the key exists",
	"too many readers (raise max_readers)",
	"too many namespaces (raise max_namespaces)",
	"unsafe store file: a symlink, owned by another user, or writable by others",
	"another process owns the store",
};

const char *instate_strerror(int rc)
{
	if (rc == 0)
		return "success";
	if (rc < 0) {
		int i = INSTATE_ERR_BASE - rc - 1;
		if (rc <= INSTATE_ERR_BASE && rc >= INSTATE_ERR_LAST &&
		    i >= 0 && i < (int)(sizeof messages / sizeof *messages))
			return messages[i];
		return "unknown error";
	}
	return strerror(rc);
}
