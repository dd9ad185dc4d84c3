/*
 * test_lua_threads.c - several threads, each with its own lua_State, open
 * and use the same store at once: one LMDB environment shared through the
 * process registry, atomic increments, savepoints, and snapshot readers that
 * never see half of a transaction.
 *
 * Prints "N passed, N failed"; exits 1 on any failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "lcompat.h" /* the same C on every Lua */

int luaopen_instate_core(lua_State *L);

#define WRITERS 4 /* the expected by_thread listing below names t1..t4 */
#define READERS 2
#define INCRS 500
#define TXNS 100
#define STR_(x) #x
#define STR(x) STR_(x)

static int passed, failed;

/* Writers still running; readers stop when it reaches 0, even if a writer
 * failed before reaching its total. */
static pthread_mutex_t running_mu = PTHREAD_MUTEX_INITIALIZER;
static int writers_running = WRITERS;

static int l_writers_running(lua_State *L)
{
	int n;
	pthread_mutex_lock(&running_mu);
	n = writers_running;
	pthread_mutex_unlock(&running_mu);
	lua_pushinteger(L, n);
	return 1;
}

static void check(int ok, const char *what)
{
	if (ok) {
		passed++;
	} else {
		failed++;
		fprintf(stderr, "FAIL: %s\n", what);
	}
}

/*
 * Each writer: INCRS single increments of counters/hits, then TXNS
 * transactions that move pair/a and pair/b together and, in a savepoint that
 * is rolled back, poison them (the poison must never be seen).
 */
static const char *writer_code =
	"local core, path, id = ...\n"
	"local store = assert(core.open(path, { sync = 'none' }))\n"
	"local hits = store:namespace('counters')\n"
	"for _ = 1, " STR(INCRS) " do assert(hits:incr('hits')) end\n"
	"for _ = 1, " STR(TXNS) " do\n"
	"  local r, msg = store:transaction(function(tx)\n"
	"    local pair = tx:namespace('pair')\n"
	"    pair:incr('a')\n"
	"    pcall(store.transaction, store, function(inner)\n"
	"      inner:namespace('pair'):set('a', -1000000)\n"
	"      error('roll back')\n"
	"    end)\n"
	"    pair:incr('b')\n"
	"    tx:namespace('by_thread'):incr(id)\n"
	"    return true\n"
	"  end)\n"
	"  assert(r, msg)\n"
	"end\n"
	"store:close()\n"
	"return 'ok'\n";

/* Each reader: snapshots until the writers are done; a != b is a torn read. */
static const char *reader_code =
	"local core, path, total = ...\n"
	"total = tonumber(total)\n"
	"local store = assert(core.open(path))\n"
	"local torn, reads, last, first = 0, 0, -1\n"
	"repeat\n"
	"  local a, b = store:snapshot(function(tx)\n"
	"    local pair = tx:namespace('pair')\n"
	"    return pair:get('a', 0), pair:get('b', 0)\n"
	"  end)\n"
	"  reads = reads + 1\n"
	"  if a ~= b or a < last then\n"
	"    torn = torn + 1\n"
	"    first = first or string.format('a=%d b=%d after a=%d', a, b, last)\n"
	"  end\n"
	"  last = a\n"
	"until a >= total or writers_running() == 0\n"
	"store:close()\n"
	"return torn == 0 and 'ok' or\n"
	"  ('torn reads: ' .. torn .. ' of ' .. reads .. ', the first ' .. first)\n";

typedef struct job {
	const char *code;
	const char *path;
	const char *arg;
	char result[256];
} job;

static void *run(void *p)
{
	job *j = p;
	lua_State *L = luaL_newstate();

	if (!L) {
		snprintf(j->result, sizeof j->result, "luaL_newstate failed");
		return NULL;
	}
	luaL_openlibs(L);
	luaL_requiref(L, "instate.core", luaopen_instate_core, 0);
	lua_register(L, "writers_running", l_writers_running);
	if (luaL_loadstring(L, j->code) != LUA_OK) {
		snprintf(j->result, sizeof j->result, "load: %s", lua_tostring(L, -1));
	} else {
		lua_pushvalue(L, -2);
		lua_pushstring(L, j->path);
		lua_pushstring(L, j->arg);
		if (lua_pcall(L, 3, 1, 0) != LUA_OK)
			snprintf(j->result, sizeof j->result, "error: %s", lua_tostring(L, -1));
		else
			snprintf(j->result, sizeof j->result, "%s", lua_tostring(L, -1));
	}
	lua_close(L);
	if (j->code == writer_code) {
		pthread_mutex_lock(&running_mu);
		writers_running--;
		pthread_mutex_unlock(&running_mu);
	}
	return NULL;
}

/* Read the final counts in a fresh state, as a Lua string for comparing. */
static void final_counts(const char *path, char *out, size_t n)
{
	static const char *code =
		"local core, path = ...\n"
		"local store = assert(core.open(path))\n"
		"local ids = {}\n"
		"for k, v in store:namespace('by_thread'):pairs() do ids[#ids + 1] = k .. '=' .. v end\n"
		"local s = string.format('hits=%d a=%d b=%d %s',\n"
		"  store:namespace('counters'):get('hits'), store:namespace('pair'):get('a'),\n"
		"  store:namespace('pair'):get('b'), table.concat(ids, ' '))\n"
		"store:close()\n"
		"return s\n";
	job j = { code, path, "", "" };
	run(&j);
	snprintf(out, n, "%s", j.result);
}

int main(void)
{
	char dir[] = "/tmp/instate-threads.XXXXXX";
	char path[64], expect[256], got[256], cmd[128];
	pthread_t tid[WRITERS + READERS];
	job jobs[WRITERS + READERS];
	char ids[WRITERS][8], total[16];
	int i;

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(path, sizeof path, "%s/store", dir);
	snprintf(total, sizeof total, "%d", WRITERS * TXNS);

	for (i = 0; i < WRITERS + READERS; i++) {
		job *j = &jobs[i];
		j->path = path;
		j->result[0] = 0;
		if (i < WRITERS) {
			snprintf(ids[i], sizeof ids[i], "t%d", i + 1);
			j->code = writer_code;
			j->arg = ids[i];
		} else {
			j->code = reader_code;
			j->arg = total;
		}
		if (pthread_create(&tid[i], NULL, run, j) != 0) {
			fprintf(stderr, "pthread_create failed\n");
			return 1;
		}
	}
	for (i = 0; i < WRITERS + READERS; i++) {
		char what[320];
		pthread_join(tid[i], NULL);
		snprintf(what, sizeof what, "%s thread %d: %s",
		         i < WRITERS ? "writer" : "reader", i + 1, jobs[i].result);
		check(strcmp(jobs[i].result, "ok") == 0, what);
	}

	/* after every Lua state is closed, the environment reopens cleanly */
	final_counts(path, got, sizeof got);
	snprintf(expect, sizeof expect, "hits=%d a=%d b=%d t1=%d t2=%d t3=%d t4=%d",
	         WRITERS * INCRS, WRITERS * TXNS, WRITERS * TXNS, TXNS, TXNS, TXNS, TXNS);
	{
		char what[600];
		snprintf(what, sizeof what, "final counts: want '%s', got '%s'", expect, got);
		check(strcmp(got, expect) == 0, what);
	}

	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
