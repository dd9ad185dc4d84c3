/*
 * check.h - the C tests' harness: counters, CHECK/CHECK_RC, a scratch
 * directory and paths in it, namespace lookup. Each test_*.c is its own
 * program and includes this once.
 */
#ifndef INSTATE_CHECK_H
#define INSTATE_CHECK_H

#include "instate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;
static char root[64];   /* the scratch directory, made by the test's main */

#define CHECK(cond) do { \
	if (cond) passed++; \
	else { failed++; fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); } \
} while (0)
#define CHECK_RC(expr, want) do { \
	int rc_ = (expr); \
	if (rc_ == (want)) passed++; \
	else { failed++; fprintf(stderr, "%s:%d: %s returned %d (%s), want %d (%s)\n", __FILE__, \
	       __LINE__, #expr, rc_, instate_strerror(rc_), (want), instate_strerror(want)); } \
} while (0)

/* root/name, in one of 8 rotating buffers. */
static const char *tpath(const char *name)
{
	static char buf[8][256];
	static int i;
	char *p = buf[i++ % 8];
	snprintf(p, 256, "%s/%s", root, name);
	return p;
}

/* The namespace `name` of s (any type); exits the test on failure. */
static instate_ns *ns_of(instate_store *s, const char *name)
{
	instate_ns *ns = NULL;
	int rc = instate_ns_get(s, name, strlen(name), INSTATE_NS_ANY, &ns);
	if (rc) {
		fprintf(stderr, "ns %s: %s\n", name, instate_strerror(rc));
		exit(2);
	}
	return ns;
}

/* One write transaction putting k = v with that expiry and version; the
 * commit's code. */
static inline int put_record(instate_store *s, instate_ns *ns, const char *k, const char *v,
                             int64_t exp, uint32_t ver)
{
	instate_txn *t;
	instate_meta m = { exp, ver };
	int rc = instate_txn_begin(s, NULL, 0, &t);
	if (rc)
		return rc;
	rc = instate_put(t, ns, k, strlen(k), v, strlen(v), &m, 0);
	if (rc) {
		instate_txn_abort(t);
		return rc;
	}
	return instate_txn_commit(t);
}

#endif /* INSTATE_CHECK_H */
