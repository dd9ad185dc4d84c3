/*
 * consumer.c - a C program using only the installed instate.h and
 * libinstate, built through pkg-config by install_check.sh: what an engine
 * embedding instate without Lua does.
 */
#include <instate.h>

#include <stdio.h>
#include <string.h>

#define CHECK(expr)                                                           \
	do {                                                                  \
		int rc_ = (expr);                                             \
		if (rc_) {                                                    \
			fprintf(stderr, "%s: %s\n", #expr, instate_strerror(rc_)); \
			return 1;                                             \
		}                                                             \
	} while (0)

int main(int argc, char **argv)
{
	instate_store *s;
	instate_txn *t;
	instate_ns *ns;
	instate_buf b = {0};
	instate_meta meta = {0, 3};

	if (argc != 2)
		return 2;
	CHECK(instate_store_open(argv[1], NULL, &s));
	CHECK(instate_ns_get(s, "engine", 6, INSTATE_NS_KV, &ns));
	CHECK(instate_txn_begin(s, NULL, 0, &t));
	CHECK(instate_put(t, ns, "level", 5, "\x07", 1, &meta, 0));
	CHECK(instate_txn_commit(t));
	CHECK(instate_txn_begin(s, NULL, INSTATE_TXN_READ, &t));
	memset(&meta, 0, sizeof meta);
	CHECK(instate_get(t, ns, "level", 5, &b, &meta));
	instate_txn_abort(t);
	if (b.len != 1 || b.data[0] != 7 || meta.version != 3) {
		fprintf(stderr, "read back the wrong record\n");
		return 1;
	}
	instate_buf_free(&b);
	instate_store_close(s);
	printf("consumer ok (instate %s)\n", INSTATE_VERSION_STRING);
	return 0;
}
