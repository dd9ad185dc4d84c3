/*
 * lcheck.h - the harness of the C tests of the Lua binding (test_lua_*.c):
 * counters and CHECK(cond), an expression worth cond, so a test can stop
 * at a failed step (`if (!CHECK(rc == 0)) return;`). Each test is its own
 * program, includes this once and ends with
 * `printf("%d passed, %d failed\n", passed, failed)`.
 */
#ifndef INSTATE_LCHECK_H
#define INSTATE_LCHECK_H

#include <stdio.h>

static int passed, failed;

#define CHECK(cond) check((cond), #cond, __LINE__)
static int check(int ok, const char *what, int line)
{
	if (ok) {
		passed++;
	} else {
		failed++;
		fprintf(stderr, "%s:%d: FAIL: %s\n", __FILE__, line, what);
	}
	return ok;
}

#endif
