/*
 * test_map_start.c - a store's first map and its growth, on a non-ASCII
 * path, through the portability layer: the default map is
 * instate__os_default_map_size() (64 MiB; 1 MiB on Windows, where LMDB
 * makes data.mdb as large as the map), the store grows past it by the
 * core's map growth with every record intact, and a dump replaces an
 * existing dump and loads into another store. Portable C: it runs on Linux
 * and, cross-built with mingw-w64, under Wine.
 */
#include "check.h"
#include "instate_os.h"
#include "os_scratch.h"

#include <errno.h>

#ifdef _WIN32
#include <windows.h>
static int rmdir(const char *path)
{
	wchar_t w[512];
	MultiByteToWideChar(CP_UTF8, 0, path, -1, w, 512);
	return RemoveDirectoryW(w) ? 0 : -1;
}
#else
#include <unistd.h>
#endif

#define NONASCII "partie-\xc3\xa9t\xc3\xa9-\xe6\x97\xa5\xe6\x9c\xac"
#define RECORDS 400
#define VALUE 10000

static uint64_t file_size(const char *path)
{
	instate_os_stat st;

	return instate__os_stat(path, &st) == 0 ? st.size : 0;
}

/* Records [from, from + n) of VALUE bytes, one write transaction each,
 * run again on INSTATE_RETRY (the map grew), as the binding does. */
static int put_range(instate_store *s, int from, int n)
{
	static char v[VALUE];
	int i, tries, rc = 0;

	for (i = from; i < from + n && rc == 0; i++) {
		char k[32];
		memset(v, 'a' + i % 26, sizeof v);
		snprintf(k, sizeof k, "key%06d", i);
		for (tries = 0; tries < 16; tries++) {
			instate_txn *t;
			instate_ns *ns;
			if ((rc = instate_txn_begin(s, NULL, 0, &t)) != 0)
				break;
			rc = instate_ns_get(s, "n", 1, INSTATE_NS_ANY, &ns);
			if (rc == 0)
				rc = instate_put(t, ns, k, strlen(k), v, sizeof v, NULL, 0);
			if (rc)
				instate_txn_abort(t);
			else
				rc = instate_txn_commit(t);
			if (rc != INSTATE_RETRY)
				break;
		}
	}
	return rc;
}

/* Every record of put_range(0, n) is there with its bytes. */
static int all_there(instate_store *s, int n)
{
	instate_txn *t;
	instate_ns *ns;
	instate_buf b = {0};
	int i, bad = 0;

	if (instate_txn_begin(s, NULL, INSTATE_TXN_READ, &t) != 0)
		return 0;
	if (instate_ns_get(s, "n", 1, INSTATE_NS_ANY, &ns) != 0) {
		instate_txn_abort(t);
		return 0;
	}
	for (i = 0; i < n; i++) {
		char k[32];
		snprintf(k, sizeof k, "key%06d", i);
		if (instate_get(t, ns, k, strlen(k), &b, NULL) != 0 || b.len != VALUE ||
		    b.data[0] != 'a' + i % 26 || b.data[VALUE - 1] != 'a' + i % 26)
			bad++;
	}
	instate_txn_abort(t);
	instate_buf_free(&b);
	return bad == 0;
}

int main(void)
{
	char err[256], data[256];
	instate_store *s, *s2;
	instate_stats st;
	instate_dump_info di;
	uint64_t first;

	if (os_scratch_root("map") != 0)
		return 2;
	snprintf(data, sizeof data, "%s", tpath(NONASCII ".store/data.mdb"));

	/* The first map, and the file it makes. */
	CHECK_RC(instate_store_open(tpath(NONASCII ".store"), NULL, &s), 0);
	CHECK_RC(instate_store_stats(s, &st), 0);
	CHECK(st.map_size == instate__os_default_map_size());
	first = file_size(data);
	CHECK(first > 0 && first <= st.map_size);
#ifdef _WIN32
	CHECK(first == ((uint64_t)1 << 20)); /* LMDB: the file is the map */
#endif
	printf("first open: map %llu bytes, data.mdb %llu bytes\n",
	       (unsigned long long)st.map_size, (unsigned long long)first);

	/* Past the first map (on Windows): 4 MB of records. */
	CHECK_RC(put_range(s, 0, RECORDS), 0);
	CHECK(all_there(s, RECORDS));
	CHECK_RC(instate_store_stats(s, &st), 0);
	CHECK(st.used_bytes > (uint64_t)RECORDS * VALUE);
	CHECK(st.map_size >= st.used_bytes);
#ifdef _WIN32
	CHECK(st.map_size > ((uint64_t)1 << 20));
	CHECK(file_size(data) == st.map_size);
#endif
	printf("after %d records of %d bytes: map %llu, used %llu, data.mdb %llu bytes\n", RECORDS,
	       VALUE, (unsigned long long)st.map_size, (unsigned long long)st.used_bytes,
	       (unsigned long long)file_size(data));

	/* One environment per store: a second handle shares it, another store
	 * (another file identity) does not. */
	CHECK_RC(instate_store_open(tpath(NONASCII ".store"), NULL, &s2), 0);
	CHECK(all_there(s2, RECORDS));
	instate_store_close(s2);
	CHECK_RC(instate_store_open(tpath("second.store"), NULL, &s2), 0);
	CHECK_RC(instate_store_stats(s2, &st), 0);
	CHECK(st.revision == 0);

	/* A dump over an existing dump, loaded into the other store. */
	CHECK_RC(instate_dump(s, tpath(NONASCII ".dump"), NULL, &di, err), 0);
	CHECK_RC(put_range(s, RECORDS, 1), 0);
	CHECK_RC(instate_dump(s, tpath(NONASCII ".dump"), NULL, &di, err), 0);
	CHECK(di.records == RECORDS + 1);
	CHECK_RC(instate_load(s2, tpath(NONASCII ".dump"), NULL, &di, err), 0);
	CHECK(di.records == RECORDS + 1);
	CHECK(all_there(s2, RECORDS + 1));
	instate_store_close(s2);
	instate_store_close(s);

	/* Reopened: everything is there. */
	CHECK_RC(instate_store_open(tpath(NONASCII ".store"), NULL, &s), 0);
	CHECK(all_there(s, RECORDS + 1));
	instate_store_close(s);

	{
		static const char *const files[] = {
			NONASCII ".store/data.mdb", NONASCII ".store/lock.mdb", "second.store/data.mdb",
			"second.store/lock.mdb", NONASCII ".dump"
		};
		size_t i;
		for (i = 0; i < sizeof files / sizeof *files; i++)
			CHECK_RC(instate__os_unlink(tpath(files[i])), 0);
	}
	rmdir(tpath(NONASCII ".store"));
	rmdir(tpath("second.store"));
	rmdir(root);
	printf("test_map_start: %d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
