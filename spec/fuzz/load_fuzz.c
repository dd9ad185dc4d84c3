/*
 * load_fuzz.c - libFuzzer target over the dump reader.
 *
 * Every input goes through the in-memory reader (the same parser that
 * instate_load() and instate_dump_info_read() run on files). Inputs the
 * reader accepts are also loaded into a scratch store through a file, in
 * both modes, so the apply path sees whatever shapes the fuzzer finds.
 */
#include "instate.h"
#include "instate_dump_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static instate_store *store;
static char file[96], store_path[96];
static unsigned loads;

static int count_fn(void *ud, const char *name, size_t len, instate_ns_type type,
                    uint64_t records)
{
	uint64_t *n = ud;
	if (len == 0 || len > INSTATE_NSNAME_MAX || memchr(name, 0, len) ||
	    (type != INSTATE_NS_KV && type != INSTATE_NS_STATE))
		abort();
	*n += records;
	return 0;
}

static void setup(void)
{
	static char dir[] = "/tmp/instate-load-fuzz.XXXXXX";
	instate_options o;

	if (!dir[0] || (!store_path[0] && !mkdtemp(dir)))
		abort();
	snprintf(store_path, sizeof store_path, "%s/store", dir);
	snprintf(file, sizeof file, "%s/in.dump", dir);
	instate_options_init(&o);
	o.sync = INSTATE_SYNC_NONE;
	if (instate_store_open(store_path, &o, &store) != 0)
		abort();
}

/* A fresh store now and then: loads accumulate namespaces (max 128). */
static void renew_store(void)
{
	char p[128];
	instate_store_close(store);
	snprintf(p, sizeof p, "%s/data.mdb", store_path);
	unlink(p);
	snprintf(p, sizeof p, "%s/lock.mdb", store_path);
	unlink(p);
	store = NULL;
	setup();
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void set32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

/*
 * Recompute every checksum of the input where its framing allows, so that
 * mutations reach the structural checks behind the CRCs instead of dying
 * at the first checksum.
 */
static void fix_checksums(uint8_t *p, size_t n)
{
	size_t off = INSTATE_DUMP_HEADER_SIZE;

	if (n < 16)
		return;
	set32(p + 12, instate_crc32c(0, p, 12));
	if (n < INSTATE_DUMP_HEADER_SIZE)
		return;
	set32(p + 36, instate_crc32c(0, p + 16, 20));
	while (off + INSTATE_DUMP_BLOCK_HEADER_SIZE <= n) {
		if (p[off] == 0x45) {
			if (off + INSTATE_DUMP_TRAILER_SIZE <= n)
				set32(p + off + 36, instate_crc32c(0, p, off + 36));
			return;
		}
		{
			uint32_t stored = be32(p + off + 8);
			if (stored > n - off - INSTATE_DUMP_BLOCK_HEADER_SIZE)
				return;
			set32(p + off + 12, instate_crc32c(instate_crc32c(0, p + off, 12),
			                                   p + off + 16, stored));
			off += INSTATE_DUMP_BLOCK_HEADER_SIZE + stored;
		}
	}
}

static int one_input(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *copy = malloc(size ? size : 1);

	if (!copy)
		return 0;
	one_input(data, size);
	memcpy(copy, data, size);
	fix_checksums(copy, size);
	one_input(copy, size);
	free(copy);
	return 0;
}

static int one_input(const uint8_t *data, size_t size)
{
	instate_dump_info info;
	instate_load_options lo;
	char err[INSTATE_ERRMSG_MAX];
	uint64_t records = 0;
	int rc;
	FILE *f;

	if (!store)
		setup();
	rc = instate_dump_info_mem(data, size, count_fn, &records, &info, err);
	if (rc == INSTATE_CORRUPT || rc == INSTATE_VERSION) {
		if (!err[0])
			abort();  /* every failure explains itself */
		return 0;
	}
	if (rc != 0)
		abort();
	if (records != info.records || info.bytes != size)
		abort();

	f = fopen(file, "wb");
	if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
		abort();
	if (++loads % 64 == 0)
		renew_store();
	instate_load_options_init(&lo);
	lo.replace = (size & 1) != 0;
	rc = instate_load(store, file, &lo, &info, err);
	/* Valid framing can still clash with the store (type, names). */
	if (rc != 0 && rc != INSTATE_CORRUPT && rc != INSTATE_NAMESPACES_FULL) {
		fprintf(stderr, "load: %d %s: %s\n", rc, instate_strerror(rc), err);
		abort();
	}
	if (rc == 0 && info.records + info.expired > records)
		abort();
	unlink(file);
	return 0;
}
