/*
 * instate_version.c - instate_version(): the library's version and those of
 * the LMDB and zstd it runs on, as they report themselves at run time (a
 * shared LMDB or zstd may be another release than the headers built with).
 */
#include "instate.h"
#include "instate_os.h"

#include <lmdb.h>
#include <stdio.h>
#include <zstd.h>

static char version_text[96];
static instate_os_once version_once = INSTATE_OS_ONCE_INIT;

/* Once: callers on several threads then read a string no one writes. */
static void version_init(void)
{
	int maj, min, pat;
	unsigned z = ZSTD_versionNumber();

	mdb_version(&maj, &min, &pat);
	snprintf(version_text, sizeof version_text, "instate %s (LMDB %d.%d.%d, zstd %u.%u.%u)",
	         INSTATE_VERSION_STRING, maj, min, pat, z / 10000, z / 100 % 100, z % 100);
}

const char *instate_version(int *major, int *minor, int *patch)
{
	if (major)
		*major = INSTATE_VERSION_MAJOR;
	if (minor)
		*minor = INSTATE_VERSION_MINOR;
	if (patch)
		*patch = INSTATE_VERSION_PATCH;
	instate__os_once(&version_once, version_init);
	return version_text;
}
