/*
 * instate_dump.c - dump and load: portable, checksummed, compressed files.
 *
 * The format is docs/FORMAT.md section 3. Both directions stream: the
 * writer holds one block of body bytes and its compressed copy, the reader
 * one stored and one raw block plus the record being read (none for
 * dump_info), whatever the size of the store or the file; load's max_bytes
 * bounds the body a file may decompress to, so a hostile file cannot make a
 * record, or the bytes written, larger than that. Values are opaque bytes:
 * this file knows nothing of the value codec.
 */
#include "instate_dump_int.h"
#include "instate_store_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

static const unsigned char MAGIC[8] = {0x89, 'I', 'S', 'D', '\r', '\n', 0x1a, '\n'};

#define FLAG_CAPPED 0x1u
#define CODEC_RAW 0
#define CODEC_ZSTD 1
#define KIND_BLOCK 0x42
#define KIND_END 0x45
#define ITEM_SECTION 0x53
#define ITEM_RECORD 0x52
#define ITEM_SECTION_END 0x54
#define RF_EXPIRY 0x1
#define RF_VERSION 0x2
#define REC_FIXED 8           /* tag, rflags, key_len, value_len */
#define SECTION_FIXED 12      /* tag, type, name_len; end tag and count */
#define VALUE_CHUNK 1048576u  /* values are read in steps this large */
#define TMP_INFIX ".tmp-"     /* temporary files are <path>.tmp-XXXXXX */
#define TMP_RANDOM 6          /* mkstemp's XXXXXX */
#define LOAD_ATTEMPTS 8       /* runs of a load whose map had to grow */
#define SIZE_ATTEMPTS 4       /* compressed writes tried against max_bytes */
#define HIST_BUCKETS 65536u

/* ===================================================================== */
/* Helpers                                                               */

static void put16(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 8); p[1] = (unsigned char)v;
}
static void put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);  p[3] = (unsigned char)v;
}
static void put64(unsigned char *p, uint64_t v)
{
	put32(p, (uint32_t)(v >> 32));
	put32(p + 4, (uint32_t)v);
}
static uint32_t get16(const unsigned char *p)
{
	return (uint32_t)p[0] << 8 | p[1];
}
static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint64_t get64(const unsigned char *p)
{
	return (uint64_t)get32(p) << 32 | get32(p + 4);
}

static void seterr(char *err, const char *fmt, ...)
#if defined(__GNUC__)
	__attribute__((format(printf, 2, 3)))
#endif
	;
static void seterr(char *err, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return;
	va_start(ap, fmt);
	vsnprintf(err, INSTATE_ERRMSG_MAX, fmt, ap);
	va_end(ap);
}

/* Option n is zstd level n (docs/FORMAT.md 3.2): the levels above 9 cost
 * seconds per megabyte for a few percent, which no dump is worth. */
int instate_dump_zstd_level(int level)
{
	return level < 0 || level > 9 ? 0 : level;
}

void instate_dump_options_init(instate_dump_options *o)
{
	memset(o, 0, sizeof *o);
	o->compression = 1;
}

void instate_load_options_init(instate_load_options *o)
{
	memset(o, 0, sizeof *o);
}

static int name_selected(const char *const *names, size_t n, const char *name, size_t len)
{
	size_t i;

	if (!names)
		return 1;
	for (i = 0; i < n; i++)
		if (names[i] && strlen(names[i]) == len && memcmp(names[i], name, len) == 0)
			return 1;
	return 0;
}

/* Byte order of names and keys: memcmp, then the shorter first. */
static int bytes_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);
	if (c)
		return c;
	return alen < blen ? -1 : alen > blen;
}

/*
 * *own = whether `st` is one of the store's own files: the data file it
 * has open, the data file now at its path, or its lock file. load never
 * reads nor deletes them, dump never writes over them: a dump path is a
 * caller's string, and one pointing into the store must not destroy it.
 */
static int own_file(instate_store *s, const instate_os_stat *st, int *own)
{
	const char *p = instate_store_path(s);
	size_t n = strlen(p);
	instate_os_stat ps, fs;
	char *q;
	int i;

	*own = instate__os_id_equal(st->id, instate__store_data_id(s));
	if (*own || instate__os_stat(p, &ps) != 0)
		return 0;
	if (!(q = malloc(n + sizeof "/data.mdb")))
		return ENOMEM;
	memcpy(q, p, n);
	/* A directory holds data.mdb and lock.mdb; a single-file store's
	 * lock file is beside it (LMDB's MDB_NOSUBDIR layout). */
	for (i = 0; i < 2 && !*own; i++) {
		if (ps.type == INSTATE_OS_DIR)
			memcpy(q + n, i ? "/lock.mdb" : "/data.mdb", sizeof "/data.mdb");
		else if (i)
			memcpy(q + n, "-lock", sizeof "-lock");
		else
			q[n] = '\0';
		*own = instate__os_stat(q, &fs) == 0 && instate__os_id_equal(fs.id, st->id);
	}
	free(q);
	return 0;
}

/* ===================================================================== */
/* Writer                                                                */

struct writer {
	instate_os_fd fd;
	uint64_t off;        /* file bytes written */
	uint32_t crc;        /* of every byte written */
	int zlevel;          /* zstd level, 0 = raw */
	ZSTD_CCtx *cctx;     /* one per dump: its tables are reused per block */
	/* Both buffers keep a block header's room in front of the block, so
	 * header and bytes leave in one write. */
	unsigned char *rawbuf, *raw;  /* the block being filled: raw = rawbuf + 16 */
	size_t rawlen;
	unsigned char *zbuf;          /* compressed bytes start at zbuf + 16 */
	size_t zcap;
	uint64_t body_len;
};

static int w_out(struct writer *w, const void *p, size_t n)
{
	int rc = instate__os_write_all(w->fd, p, n);
	if (rc)
		return rc;
	w->crc = instate_crc32c(w->crc, p, n);
	w->off += n;
	return 0;
}

static int w_flush(struct writer *w)
{
	const size_t hs = INSTATE_DUMP_BLOCK_HEADER_SIZE;
	unsigned char *data = w->raw, *h;
	size_t stored = w->rawlen;
	uint32_t dcrc;
	int codec = CODEC_RAW, rc;

	if (!w->rawlen)
		return 0;
	if (w->zlevel) {
		size_t z = ZSTD_compressCCtx(w->cctx, w->zbuf + hs, w->zcap, w->raw, w->rawlen,
		                             w->zlevel);
		if (ZSTD_isError(z))
			return ENOMEM;
		/* Never store a block larger than raw: readers rely on it, and so
		 * does the max_bytes fallback. */
		if (z < w->rawlen) {
			data = w->zbuf + hs;
			stored = z;
			codec = CODEC_ZSTD;
		}
	}
	h = data - hs;
	h[0] = KIND_BLOCK;
	h[1] = (unsigned char)codec;
	h[2] = h[3] = 0;
	put32(h + 4, (uint32_t)w->rawlen);
	put32(h + 8, (uint32_t)stored);
	/* The stored bytes are read once for both the block CRC and the file
	 * CRC; each is completed by combining, not by a second pass. */
	dcrc = instate_crc32c(0, data, stored);
	put32(h + 12, instate_crc32c_combine(instate_crc32c(0, h, 12), dcrc, stored));
	if ((rc = instate__os_write_all(w->fd, h, hs + stored)) != 0)
		return rc;
	w->crc = instate_crc32c_combine(instate_crc32c(w->crc, h, hs), dcrc, stored);
	w->off += hs + stored;
	w->body_len += w->rawlen;
	w->rawlen = 0;
	return 0;
}

static int w_body(struct writer *w, const void *data, size_t n)
{
	const unsigned char *p = data;
	int rc;

	while (n) {
		size_t take = INSTATE_DUMP_BLOCK_TARGET - w->rawlen;
		if (take > n)
			take = n;
		memcpy(w->raw + w->rawlen, p, take);
		w->rawlen += take;
		p += take;
		n -= take;
		if (w->rawlen == INSTATE_DUMP_BLOCK_TARGET && (rc = w_flush(w)) != 0)
			return rc;
	}
	return 0;
}

static int w_start(struct writer *w, uint32_t flags, uint64_t revision, int64_t created)
{
	unsigned char h[INSTATE_DUMP_HEADER_SIZE];

	w->off = 0;
	w->crc = 0;
	w->rawlen = 0;
	w->body_len = 0;
	memcpy(h, MAGIC, 8);
	put32(h + 8, INSTATE_DUMP_FORMAT);
	put32(h + 12, instate_crc32c(0, h, 12));
	put32(h + 16, flags);
	put64(h + 20, revision);
	put64(h + 28, (uint64_t)created);
	put32(h + 36, instate_crc32c(0, h + 16, 20));
	return w_out(w, h, sizeof h);
}

static int w_finish(struct writer *w, uint64_t sections, uint64_t records)
{
	unsigned char t[INSTATE_DUMP_TRAILER_SIZE];
	int rc = w_flush(w);

	if (rc)
		return rc;
	t[0] = KIND_END;
	t[1] = t[2] = t[3] = 0;
	put64(t + 4, sections);
	put64(t + 12, records);
	put64(t + 20, w->body_len);
	put64(t + 28, w->off + sizeof t);
	put32(t + 36, instate_crc32c(w->crc, t, 36));
	return w_out(w, t, sizeof t);
}

/* ===================================================================== */
/* Dump                                                                  */

struct nsent {
	char *name;
	size_t len;
	instate_ns_type type;
};

/* Which records a write pass keeps: docs/FORMAT.md 3.6. */
struct plan {
	int active;           /* max_bytes leaves records out */
	uint64_t cut;         /* records above this size are left out */
	uint64_t tie_budget;  /* encoded bytes allowed for records of size cut */
};

struct dumper {
	instate_store *s;
	instate_txn *txn;
	const instate_dump_options *o;
	struct nsent *ns;
	size_t n_ns, cap_ns;
	int64_t now;
	instate_buf key, val;
	char *err;
	/* results of the last pass */
	uint64_t records, dropped;
	/* progress: the live records counted up front, the last done reported */
	uint64_t total, reported;
	int stopped;          /* the callback returned nonzero */
};

/* Report records walked, never going back (see instate_progress_fn). */
static int dump_progress(struct dumper *d, uint64_t done, uint64_t total)
{
	int rc;

	if (!d->o->progress || (done <= d->reported && done != total))
		return 0;
	if (done > total)
		total = done;
	d->reported = done;
	if ((rc = d->o->progress(d->o->progress_ud, done, total)) != 0)
		d->stopped = 1;
	return rc;
}

static int collect_ns(void *ud, const char *name, size_t len, instate_ns_type type)
{
	struct dumper *d = ud;
	struct nsent *e;

	if (!name_selected(d->o->namespaces, d->o->n_namespaces, name, len))
		return 0;
	if (d->n_ns == d->cap_ns) {
		size_t cap = d->cap_ns ? d->cap_ns * 2 : 16;
		e = realloc(d->ns, cap * sizeof *e);
		if (!e)
			return ENOMEM;
		d->ns = e;
		d->cap_ns = cap;
	}
	e = &d->ns[d->n_ns];
	if (!(e->name = malloc(len + 1)))
		return ENOMEM;
	memcpy(e->name, name, len);
	e->name[len] = '\0';
	e->len = len;
	e->type = type;
	d->n_ns++;
	return 0;
}

static uint64_t rec_encoded(size_t klen, size_t vlen, const instate_meta *m)
{
	return REC_FIXED + klen + vlen + (m->expires_ms > 0 ? 8 : 0) + (m->version ? 4 : 0);
}

/*
 * Walk the records of section i that survive max_record_bytes,
 * max_records_per_section and expiry, calling fn for each; records left out
 * by those two caps are counted in d->dropped.
 */
typedef int (*rec_fn)(struct dumper *d, void *ud, const instate_meta *m,
                      uint64_t size, uint64_t enc);

static int scan_section(struct dumper *d, size_t i, rec_fn fn, void *ud)
{
	instate_ns *ns;
	instate_cursor *c = NULL;
	instate_meta m;
	uint64_t kept = 0;
	int rc;

	rc = instate_ns_get(d->s, d->ns[i].name, d->ns[i].len, INSTATE_NS_ANY, &ns);
	if (rc)
		return rc;
	if ((rc = instate_cursor_open(d->txn, ns, NULL, 0, &c)) != 0)
		return rc;
	while ((rc = instate_cursor_next(c, &d->key, &d->val, &m)) == 0) {
		uint64_t size = (uint64_t)d->key.len + d->val.len;
		if (m.expires_ms > 0 && m.expires_ms <= d->now)
			continue;
		if (d->val.len > UINT32_MAX) {
			seterr(d->err, "record of %llu bytes in namespace \"%s\" is too large for a dump",
			       (unsigned long long)d->val.len, d->ns[i].name);
			rc = EFBIG;
			break;
		}
		if ((d->o->max_record_bytes && size > d->o->max_record_bytes) ||
		    (d->o->max_records_per_section && kept >= d->o->max_records_per_section)) {
			d->dropped++;
			continue;
		}
		kept++;
		if ((rc = fn(d, ud, &m, size, rec_encoded(d->key.len, d->val.len, &m))) != 0)
			break;
	}
	instate_cursor_close(c);
	return rc == INSTATE_NOTFOUND ? 0 : rc;
}

/* ---- the write pass -------------------------------------------------- */

struct wpass {
	struct writer *w;
	struct plan plan;
	uint64_t tie_left;
	uint64_t count;   /* records of the current section */
};

static int write_rec(struct dumper *d, void *ud, const instate_meta *m,
                     uint64_t size, uint64_t enc)
{
	struct wpass *p = ud;
	struct writer *w = p->w;
	unsigned char tmp[REC_FIXED + 12], *h, *q;
	uint64_t blocks = w->body_len;
	int fits, rc;

	if (p->plan.active && size >= p->plan.cut) {
		if (size > p->plan.cut || enc > p->tie_left) {
			d->dropped++;
			return 0;
		}
		p->tie_left -= enc;
	}
	/* Most records fit in the block being filled: they are framed in
	 * place, without the block-boundary bookkeeping of w_body(). */
	fits = w->rawlen + enc < INSTATE_DUMP_BLOCK_TARGET;
	h = fits ? w->raw + w->rawlen : tmp;
	q = h + REC_FIXED;
	h[0] = ITEM_RECORD;
	h[1] = (unsigned char)((m->expires_ms > 0 ? RF_EXPIRY : 0) | (m->version ? RF_VERSION : 0));
	put16(h + 2, (uint32_t)d->key.len);
	put32(h + 4, (uint32_t)d->val.len);
	if (m->expires_ms > 0) {
		put64(q, (uint64_t)m->expires_ms);
		q += 8;
	}
	if (m->version) {
		put32(q, m->version);
		q += 4;
	}
	if (fits) {
		memcpy(q, d->key.data, d->key.len);
		q += d->key.len;
		if (d->val.len)
			memcpy(q, d->val.data, d->val.len);
		w->rawlen += (size_t)enc;
	} else if ((rc = w_body(w, h, (size_t)(q - h))) != 0 ||
	           (rc = w_body(w, d->key.data, d->key.len)) != 0 ||
	           (rc = w_body(w, d->val.data, d->val.len)) != 0) {
		return rc;
	}
	p->count++;
	d->records++;
	if (w->body_len != blocks)  /* a block was written */
		return dump_progress(d, d->records + d->dropped, d->total);
	return 0;
}

static int write_pass(struct dumper *d, struct writer *w, const struct plan *plan,
                      uint32_t flags)
{
	struct wpass p;
	unsigned char h[3 + INSTATE_NSNAME_MAX];
	size_t i;
	int rc;

	memset(&p, 0, sizeof p);
	p.w = w;
	p.plan = *plan;
	p.tie_left = plan->tie_budget;
	d->records = d->dropped = 0;
	if ((rc = w_start(w, flags, instate_txn_revision(d->txn), d->now)) != 0)
		return rc;
	for (i = 0; i < d->n_ns; i++) {
		h[0] = ITEM_SECTION;
		h[1] = (unsigned char)(d->ns[i].type == INSTATE_NS_STATE ? 2 : 1);
		h[2] = (unsigned char)d->ns[i].len;
		memcpy(h + 3, d->ns[i].name, d->ns[i].len);
		if ((rc = w_body(w, h, 3 + d->ns[i].len)) != 0)
			return rc;
		p.count = 0;
		if ((rc = scan_section(d, i, write_rec, &p)) != 0)
			return rc;
		h[0] = ITEM_SECTION_END;
		put64(h + 1, p.count);
		if ((rc = w_body(w, h, 9)) != 0)
			return rc;
	}
	return w_finish(w, d->n_ns, d->records);
}

/* ---- max_bytes planning ---------------------------------------------- */

/* File size of a raw file whose body is `body` bytes. */
static uint64_t raw_file_size(uint64_t body)
{
	uint64_t blocks = (body + INSTATE_DUMP_BLOCK_TARGET - 1) / INSTATE_DUMP_BLOCK_TARGET;
	return INSTATE_DUMP_HEADER_SIZE + INSTATE_DUMP_TRAILER_SIZE + body +
	       blocks * INSTATE_DUMP_BLOCK_HEADER_SIZE;
}

/* The largest body whose raw file fits in max; 0 with *ok = 0 if none. */
static uint64_t body_budget(uint64_t max, int *ok)
{
	uint64_t avail, full, rem, per = INSTATE_DUMP_BLOCK_TARGET + INSTATE_DUMP_BLOCK_HEADER_SIZE;

	*ok = max >= INSTATE_DUMP_HEADER_SIZE + INSTATE_DUMP_TRAILER_SIZE;
	if (!*ok)
		return 0;
	avail = max - INSTATE_DUMP_HEADER_SIZE - INSTATE_DUMP_TRAILER_SIZE;
	full = avail / per;
	rem = avail - full * per;
	return full * INSTATE_DUMP_BLOCK_TARGET +
	       (rem > INSTATE_DUMP_BLOCK_HEADER_SIZE ? rem - INSTATE_DUMP_BLOCK_HEADER_SIZE : 0);
}

struct hist {
	uint64_t lo, width, hi;  /* buckets cover [lo, lo + width * HIST_BUCKETS) */
	uint64_t below;          /* encoded bytes of records smaller than lo */
	uint64_t total;          /* encoded bytes of all records */
	uint64_t max_size;
	uint64_t *enc;           /* encoded bytes per bucket */
};

static int hist_rec(struct dumper *d, void *ud, const instate_meta *m, uint64_t size,
                    uint64_t enc)
{
	struct hist *h = ud;

	h->total += enc;
	if (size > h->max_size)
		h->max_size = size;
	if (size < h->lo)
		h->below += enc;
	else if (size < h->hi)
		h->enc[(size - h->lo) / h->width] += enc;
	return 0;
}

static int hist_pass(struct dumper *d, struct hist *h)
{
	size_t i;
	int rc;

	h->below = h->total = h->max_size = 0;
	memset(h->enc, 0, HIST_BUCKETS * sizeof *h->enc);
	for (i = 0; i < d->n_ns; i++)
		if ((rc = scan_section(d, i, hist_rec, h)) != 0)
			return rc;
	return 0;
}

/*
 * Choose the plan that keeps the most records, smallest first, whose
 * encoded bytes fit in `budget`: the size S where the running total
 * crosses the budget, found by refining a histogram until its bucket is
 * one size wide.
 */
static int plan_for_budget(struct dumper *d, uint64_t budget, struct plan *out)
{
	struct hist h;
	uint64_t cum = 0, b;
	int rc;

	memset(&h, 0, sizeof h);
	memset(out, 0, sizeof *out);
	if (!(h.enc = malloc(HIST_BUCKETS * sizeof *h.enc)))
		return ENOMEM;
	/* First pass: exact for sizes below HIST_BUCKETS; it also learns the
	 * total and the largest size. */
	h.lo = 0;
	h.width = 1;
	h.hi = HIST_BUCKETS;
	if ((rc = hist_pass(d, &h)) != 0)
		goto done;
	if (h.total <= budget)
		goto done;  /* nothing to leave out */
	h.hi = h.max_size + 1;
	for (;;) {
		h.width = (h.hi - h.lo + HIST_BUCKETS - 1) / HIST_BUCKETS;
		/* Sizes below HIST_BUCKETS are already exact from the first pass. */
		if (h.lo != 0 || h.width != 1) {
			h.hi = h.lo + h.width * HIST_BUCKETS;
			if ((rc = hist_pass(d, &h)) != 0)
				goto done;
		}
		cum = h.below;
		for (b = 0; b < HIST_BUCKETS; b++) {
			if (cum + h.enc[b] > budget)
				break;
			cum += h.enc[b];
		}
		if (b == HIST_BUCKETS) {
			/* The records grew between passes (another clock reading
			 * expired some): nothing above the range, keep it all. */
			b = HIST_BUCKETS - 1;
		}
		if (h.width == 1) {
			out->active = 1;
			out->cut = h.lo + b;
			out->tie_budget = budget - cum;
			break;
		}
		h.lo += b * h.width;
		h.hi = h.lo + h.width;
	}
done:
	free(h.enc);
	return rc;
}

/* ---- instate_dump() -------------------------------------------------- */

/* ---- temporary files ------------------------------------------------ */

/* Whether `name` is base + infix + mkstemp's six letters or digits. */
static int temp_name(const char *name, const char *base, size_t blen, const char *infix)
{
	size_t ilen = strlen(infix), i;

	if (strncmp(name, base, blen) != 0 || strncmp(name + blen, infix, ilen) != 0)
		return 0;
	name += blen + ilen;
	for (i = 0; i < TMP_RANDOM; i++) {
		char c = name[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')))
			return 0;
	}
	return name[TMP_RANDOM] == '\0';
}

/*
 * Whether an unlocked file of a temporary name holds what a killed dump
 * leaves: nothing, or the beginning of a dump. A name of the older pattern
 * (<path>.XXXXXX, which a user's "<path>.backup" also matches) must in
 * addition not be a whole dump.
 */
static int stale_content(instate_os_fd fd, const instate_os_stat *st, int legacy)
{
	unsigned char m[sizeof MAGIC], t[INSTATE_DUMP_TRAILER_SIZE];
	size_t got;

	if (st->size == 0)
		return !legacy;
	if (instate__os_pread(fd, m, sizeof m, 0, &got) != 0 || got != sizeof m ||
	    memcmp(m, MAGIC, sizeof m) != 0)
		return 0;
	if (!legacy || st->size < INSTATE_DUMP_HEADER_SIZE + INSTATE_DUMP_TRAILER_SIZE)
		return 1;
	if (instate__os_pread(fd, t, sizeof t, st->size - sizeof t, &got) != 0 || got != sizeof t)
		return 0;
	return !(t[0] == KIND_END && get64(t + 28) == st->size);
}

/*
 * Remove the temporary files that dumps of `path` killed before their
 * rename left behind (docs/FORMAT.md 3.6). A dump holds an exclusive flock
 * on its temporary file until it is renamed or removed, so a file of this
 * target's pattern whose lock can be taken belongs to no live dump; it is
 * removed if this user owns it and it holds nothing or a dump's beginning.
 * Best effort: what cannot be read or removed is left.
 */
struct stale_scan {
	const char *base;
	size_t blen;
};

static void stale_entry(void *ud, const instate_os_dir *d, const char *name)
{
	struct stale_scan *sc = ud;
	instate_os_stat st, now;
	instate_os_fd fd;
	int legacy;

	if (temp_name(name, sc->base, sc->blen, TMP_INFIX))
		legacy = 0;
	else if (temp_name(name, sc->base, sc->blen, "."))
		legacy = 1;
	else
		return;
	if (instate__os_openat(d, name, INSTATE_OS_O_READ | INSTATE_OS_O_NOFOLLOW |
	                       INSTATE_OS_O_NONBLOCK, 0, &fd) != 0)
		return;
	/* The name must still lead to the file locked and read: a live
	 * dump re-creates its file if this one took it first. */
	if (instate__os_fstat(fd, &st) == 0 && st.type == INSTATE_OS_REG &&
	    st.owner == INSTATE_OS_OWNER_SELF && instate__os_trylock(fd) == 0 &&
	    stale_content(fd, &st, legacy) && instate__os_statat(d, name, &now) == 0 &&
	    instate__os_id_equal(now.id, st.id)) {
#ifdef _WIN32
		/* A file still open is removed at its last close there: close
		 * first (no dump takes an unlocked stale file meanwhile). */
		instate__os_close(fd);
		instate__os_unlinkat(d, name);
		return;
#else
		instate__os_unlinkat(d, name);
#endif
	}
	instate__os_close(fd);
}

static void remove_stale_temps(const char *path)
{
	struct stale_scan sc;
	const char *base = instate__os_path_base(path);
	char *dir;

	sc.base = base;
	sc.blen = strlen(base);
	if (!sc.blen)
		return;
	if (base == path)
		dir = strdup(".");
	else if (base - 1 == path)
		dir = strdup("/");
	else if ((dir = malloc((size_t)(base - 1 - path) + 1)) != NULL) {
		memcpy(dir, path, (size_t)(base - 1 - path));
		dir[base - 1 - path] = '\0';
	}
	if (!dir)
		return;
	instate__os_dir_scan(dir, stale_entry, &sc);
	free(dir);
}

/*
 * Create the temporary file of `path` and lock it (remove_stale_temps()).
 * Another dump's cleaning may take the new file between mkstemp and flock
 * and remove it: then the name no longer leads to ours and another is made.
 */
static int make_temp(const char *path, char **tmp_out, instate_os_fd *fd_out)
{
	size_t n = strlen(path);
	char *tmp = malloc(n + sizeof TMP_INFIX + TMP_RANDOM);
	instate_os_fd fd = INSTATE_OS_NOFD;
	int attempt, rc = 0, lk;

	if (!tmp)
		return ENOMEM;
	for (attempt = 0; attempt < 8; attempt++) {
		instate_os_stat a, b;
		memcpy(tmp, path, n);
		memcpy(tmp + n, TMP_INFIX "XXXXXX", sizeof TMP_INFIX + TMP_RANDOM);
		if ((rc = instate__os_temp_create(tmp, &fd)) != 0) {
			fd = INSTATE_OS_NOFD;
			break;
		}
		if ((lk = instate__os_trylock(fd)) == 0) {
			if (instate__os_fstat(fd, &a) == 0 && instate__os_stat(tmp, &b) == 0 &&
			    instate__os_id_equal(a.id, b.id))
				break;
		} else if (lk > 0) {
			rc = 0;
			break;  /* a file system without flock: no cleaner can lock it either */
		}
		/* A cleaner holds or took it: it removes the file, we make another. */
		instate__os_close(fd);
		fd = INSTATE_OS_NOFD;
		rc = EEXIST;
	}
	if (fd == INSTATE_OS_NOFD) {
		free(tmp);
		return rc;
	}
	*tmp_out = tmp;
	*fd_out = fd;
	return 0;
}

int instate_dump(instate_store *s, const char *path, const instate_dump_options *opts,
                 instate_dump_info *info, char *err)
{
	instate_dump_options defaults;
	struct dumper d;
	struct writer w;
	struct plan plan;
	char *tmp = NULL;
	instate_os_stat st;
	instate_os_fd lockfd = INSTATE_OS_NOFD;
	uint64_t overhead = 0, raw_budget = 0, body_cap = 0;
	size_t i;
	int rc, attempt, own;

	if (err)
		err[0] = '\0';
	if (info)
		memset(info, 0, sizeof *info);
	if (!opts) {
		instate_dump_options_init(&defaults);
		opts = &defaults;
	}
	if (opts->compression < 0 || opts->compression > 9) {
		seterr(err, "compression %d is outside 0..9", opts->compression);
		return INSTATE_INVALID;
	}
	if (!path || !*path) {
		seterr(err, "empty dump path");
		return INSTATE_INVALID;
	}
	if (instate__os_stat(path, &st) == 0) {
		if ((rc = own_file(s, &st, &own)) != 0)
			return rc;
		if (own) {
			seterr(err, "dump %s: this is the store's own data or lock file", path);
			return INSTATE_INVALID;
		}
	}
	memset(&d, 0, sizeof d);
	memset(&w, 0, sizeof w);
	memset(&plan, 0, sizeof plan);
	w.fd = INSTATE_OS_NOFD;
	d.s = s;
	d.o = opts;
	d.err = err;
	d.now = instate_clock_now();
	w.zlevel = instate_dump_zstd_level(opts->compression);

	if ((rc = instate_txn_begin(s, NULL, INSTATE_TXN_READ, &d.txn)) != 0) {
		seterr(err, "dump %s: cannot begin a read transaction", path);
		return rc;
	}
	if ((rc = instate_ns_list(d.txn, collect_ns, &d)) != 0)
		goto fail;
	for (i = 0; i < d.n_ns; i++)
		overhead += SECTION_FIXED + d.ns[i].len;
	/* The total is a count pass of its own: only made for a callback. */
	for (i = 0; opts->progress && i < d.n_ns; i++) {
		instate_ns *ns;
		uint64_t n;
		if ((rc = instate_ns_get(s, d.ns[i].name, d.ns[i].len, INSTATE_NS_ANY, &ns)) != 0 ||
		    (rc = instate_count(d.txn, ns, &n)) != 0)
			goto fail;
		d.total += n;
	}

	if (opts->max_bytes) {
		int ok;
		uint64_t body = body_budget(opts->max_bytes, &ok);
		if (!ok || body < overhead) {
			seterr(err, "dump %s: even an empty dump (%llu bytes) exceeds max_bytes %llu",
			       path, (unsigned long long)raw_file_size(overhead),
			       (unsigned long long)opts->max_bytes);
			rc = INSTATE_LIMIT;
			goto fail;
		}
		raw_budget = body - overhead;
		/* The body is bounded as load bounds it, so that a dump made
		 * with max_bytes M always loads with max_bytes M. */
		body_cap = opts->max_bytes > UINT64_MAX / INSTATE_DUMP_BODY_RATIO
		               ? UINT64_MAX : opts->max_bytes * INSTATE_DUMP_BODY_RATIO;
		/* Raw: the first write is already the answer. Compressed: try
		 * everything first (the plan stays inactive). */
		if (!w.zlevel && (rc = plan_for_budget(&d, raw_budget, &plan)) != 0)
			goto fail;
	}

	if (!(w.rawbuf = malloc(INSTATE_DUMP_BLOCK_HEADER_SIZE + INSTATE_DUMP_BLOCK_TARGET))) {
		rc = ENOMEM;
		goto fail;
	}
	w.raw = w.rawbuf + INSTATE_DUMP_BLOCK_HEADER_SIZE;
	if (w.zlevel) {
		w.zcap = ZSTD_compressBound(INSTATE_DUMP_BLOCK_TARGET);
		w.zbuf = malloc(INSTATE_DUMP_BLOCK_HEADER_SIZE + w.zcap);
		w.cctx = ZSTD_createCCtx();
		if (!w.zbuf || !w.cctx) {
			rc = ENOMEM;
			goto fail;
		}
	}
	remove_stale_temps(path);
	if ((rc = make_temp(path, &tmp, &w.fd)) != 0) {
		seterr(err, "dump %s: cannot create a temporary file: %s", path, instate_strerror(rc));
		goto fail;
	}

	for (attempt = 1;; attempt++) {
		uint32_t flags = 0;
		if (attempt > 1) {
			if ((rc = instate__os_truncate(w.fd, 0)) != 0 ||
			    (rc = instate__os_rewind(w.fd)) != 0)
				goto fail;
		}
		if (opts->max_bytes || opts->max_record_bytes || opts->max_records_per_section)
			flags = FLAG_CAPPED;
		if ((rc = write_pass(&d, &w, &plan, flags)) != 0) {
			if (d.stopped)
				seterr(err, "dump %s: stopped by the progress callback", path);
			else if (err && !err[0])
				seterr(err, "dump %s: %s", path, instate_strerror(rc));
			goto fail;
		}
		if (!opts->max_bytes || (w.off <= opts->max_bytes && w.body_len <= body_cap))
			break;
		if (!w.zlevel || attempt >= SIZE_ATTEMPTS) {
			/* The raw plan is exact arithmetic; failing it is a bug. */
			seterr(err, "dump %s: %llu bytes exceed max_bytes %llu", path,
			       (unsigned long long)w.off, (unsigned long long)opts->max_bytes);
			rc = INSTATE_LIMIT;
			goto fail;
		}
		{
			/* Scale the budget by the ratio just measured; the last try
			 * budgets as if raw, which always fits. */
			double ratio = (double)w.off / (double)raw_file_size(w.body_len);
			uint64_t budget = raw_budget;
			if (attempt + 1 < SIZE_ATTEMPTS && ratio > 0) {
				int ok;
				uint64_t body = body_budget((uint64_t)((double)opts->max_bytes / ratio * 0.97),
				                            &ok);
				if (ok && body > overhead && body - overhead > raw_budget)
					budget = body - overhead;
				if (budget > body_cap - overhead)
					budget = body_cap - overhead;
			}
			if (budget == raw_budget)
				attempt = SIZE_ATTEMPTS - 1;
			if ((rc = plan_for_budget(&d, budget, &plan)) != 0)
				goto fail;
			if (!plan.active) {
				/* The records changed size between passes; force progress. */
				plan.active = 1;
				plan.cut = 0;
				plan.tie_budget = 0;
			}
		}
	}

	/* The last report comes before the rename: a stop there still leaves
	 * the old file, if any, in place. */
	if ((rc = dump_progress(&d, d.records + d.dropped, d.records + d.dropped)) != 0) {
		seterr(err, "dump %s: stopped by the progress callback", path);
		goto fail;
	}
	if ((rc = instate__os_sync(w.fd)) != 0) {
		seterr(err, "dump %s: fsync: %s", path, strerror(rc));
		goto fail;
	}
	/* The lock stays held through the rename (by a second descriptor of
	 * the same open file), so that no cleaner takes the finished file. */
	if (instate__os_dup(w.fd, &lockfd) != 0)
		lockfd = INSTATE_OS_NOFD;
	rc = instate__os_close(w.fd);
	w.fd = INSTATE_OS_NOFD;
	if (rc)
		goto fail;
	if ((rc = instate__os_rename(tmp, path)) != 0) {
		seterr(err, "dump %s: rename: %s", path, strerror(rc));
		goto fail;
	}
	free(tmp);
	tmp = NULL;
	if (lockfd != INSTATE_OS_NOFD)
		instate__os_close(lockfd);
	lockfd = INSTATE_OS_NOFD;
	if ((rc = instate__os_sync_dir_of(path)) != 0) {
		/* The file is in place; only its durability is in doubt. */
		seterr(err, "dump %s: fsync of the directory: %s", path, strerror(rc));
		goto fail;
	}
	if (info) {
		info->records = d.records;
		info->dropped = d.dropped;
		info->sections = d.n_ns;
		info->bytes = w.off;
		info->revision = instate_txn_revision(d.txn);
		info->created_ms = d.now;
		info->format = INSTATE_DUMP_FORMAT;
	}
	rc = 0;

fail:
	/* Removed while still locked: no cleaner ever sees it unlocked. */
	if (tmp) {
		instate__os_unlink(tmp);
		free(tmp);
	}
	if (w.fd != INSTATE_OS_NOFD)
		instate__os_close(w.fd);
	if (lockfd != INSTATE_OS_NOFD)
		instate__os_close(lockfd);
	if (rc && err && !err[0])
		seterr(err, "dump %s: %s", path, instate_strerror(rc));
	if (d.txn)
		instate_txn_abort(d.txn);
	for (i = 0; i < d.n_ns; i++)
		free(d.ns[i].name);
	free(d.ns);
	instate_buf_free(&d.key);
	instate_buf_free(&d.val);
	free(w.rawbuf);
	free(w.zbuf);
	ZSTD_freeCCtx(w.cctx);
	return rc;
}

/* ===================================================================== */
/* Reader                                                                */

struct reader {
	instate_os_fd fd;              /* the file, or INSTATE_OS_NOFD for memory */
	const unsigned char *mem;
	size_t memlen, mempos;
	const char *path;              /* for messages; NULL for memory */
	uint64_t off;                  /* file bytes consumed */
	uint32_t crc;                  /* of the file bytes consumed */
	ZSTD_DCtx *dctx;
	unsigned char *stored, *raw;
	size_t stored_cap, raw_cap;
	uint32_t rlen, rpos;           /* the current block's body bytes */
	uint64_t block_off;            /* file offset of the current block */
	uint64_t body_pos;             /* body bytes consumed */
	uint64_t body_len;             /* body bytes in the blocks read */
	int ended;                     /* the trailer has been read */
	unsigned char trailer[INSTATE_DUMP_TRAILER_SIZE];
	uint32_t format, flags;
	uint64_t revision;
	int64_t created;
	uint64_t max_bytes;            /* load's max_bytes, 0 = none */
	uint64_t max_body;             /* body bytes allowed, 0 = any */
	int file_corrupt;              /* r_corrupt() said why the file is corrupt */
	char *err;
	instate_progress_fn progress;  /* load's callback, NULL = none */
	void *progress_ud;
	uint64_t size, reported;       /* the file size, the last done reported */
	int stopped;                   /* the callback returned nonzero */
};

/* Report file bytes read, never going back (see instate_progress_fn). */
static int r_progress(struct reader *r)
{
	int rc;

	if (!r->progress || (r->off <= r->reported && r->off != r->size))
		return 0;
	r->reported = r->off;
	if ((rc = r->progress(r->progress_ud, r->off, r->off > r->size ? r->off : r->size)) != 0) {
		r->stopped = 1;
		seterr(r->err, "load %s: stopped by the progress callback", r->path);
	}
	return rc;
}

static int r_corrupt(struct reader *r, uint64_t at, const char *fmt, ...)
#if defined(__GNUC__)
	__attribute__((format(printf, 3, 4)))
#endif
	;
static int r_corrupt(struct reader *r, uint64_t at, const char *fmt, ...)
{
	char what[160];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	/* The one place that finds the file corrupt: only then does load
	 * apply the on_corrupt policy (a store error never does). */
	r->file_corrupt = 1;
	seterr(r->err, "corrupt dump%s%s at byte %llu: %s", r->path ? " " : "",
	       r->path ? r->path : "", (unsigned long long)at, what);
	return INSTATE_CORRUPT;
}

/* A body item's location: its block and body offset. */
#define BODY_AT(r) (r)->block_off

/* Read exactly n file bytes; running out is truncation of `what`. */
static int r_file(struct reader *r, void *buf, size_t n, const char *what)
{
	size_t got = 0;

	if (r->fd == INSTATE_OS_NOFD) {
		got = r->memlen - r->mempos < n ? r->memlen - r->mempos : n;
		memcpy(buf, r->mem + r->mempos, got);
		r->mempos += got;
	} else {
		while (got < n) {
			size_t k;
			int rc = instate__os_read(r->fd, (char *)buf + got, n - got, &k);
			if (rc) {
				seterr(r->err, "read %s: %s", r->path, strerror(rc));
				return rc;
			}
			if (k == 0)
				break;
			got += k;
		}
	}
	r->off += got;
	if (got < n)
		return r_corrupt(r, r->off, "truncated: the file ends inside %s", what);
	return 0;
}

static int r_grow(unsigned char **buf, size_t *cap, size_t need)
{
	unsigned char *p;

	if (need <= *cap)
		return 0;
	if (!(p = realloc(*buf, need)))
		return ENOMEM;
	*buf = p;
	*cap = need;
	return 0;
}

static int r_rewind(struct reader *r)
{
	int rc;

	if (r->fd == INSTATE_OS_NOFD)
		r->mempos = 0;
	else if ((rc = instate__os_rewind(r->fd)) != 0)
		return rc;
	r->off = 0;
	r->crc = 0;
	r->rlen = r->rpos = 0;
	r->block_off = 0;
	r->body_pos = r->body_len = 0;
	r->ended = 0;
	r->file_corrupt = 0;
	return 0;
}

/* The header: INSTATE_VERSION for a newer format, whatever else is wrong. */
static int r_header(struct reader *r)
{
	unsigned char h[INSTATE_DUMP_HEADER_SIZE];
	int rc;

	if ((rc = r_file(r, h, 16, "the header")) != 0)
		return rc;
	if (memcmp(h, MAGIC, 8) != 0)
		return r_corrupt(r, 0, "bad magic (not an instate dump, or damaged in transfer)");
	if (get32(h + 12) != instate_crc32c(0, h, 12))
		return r_corrupt(r, 12, "header prefix checksum mismatch");
	r->format = get32(h + 8);
	if (r->format == 0)
		return r_corrupt(r, 8, "format version 0");
	if (r->format > INSTATE_DUMP_FORMAT) {
		seterr(r->err, "dump%s%s has format version %u; this library reads up to %u",
		       r->path ? " " : "", r->path ? r->path : "", (unsigned)r->format,
		       (unsigned)INSTATE_DUMP_FORMAT);
		return INSTATE_VERSION;
	}
	if ((rc = r_file(r, h + 16, 24, "the header")) != 0)
		return rc;
	if (get32(h + 36) != instate_crc32c(0, h + 16, 20))
		return r_corrupt(r, 36, "header checksum mismatch");
	r->flags = get32(h + 16);
	if (r->flags & ~FLAG_CAPPED)
		return r_corrupt(r, 16, "unknown header flags 0x%x", (unsigned)r->flags);
	r->revision = get64(h + 20);
	r->created = (int64_t)get64(h + 28);
	r->crc = instate_crc32c(0, h, sizeof h);
	return 0;
}

/* Read the next block, or the trailer (r->ended). */
static int r_block(struct reader *r)
{
	unsigned char *h = r->trailer;
	uint32_t raw_len, stored_len, codec;
	int rc;

	r->block_off = r->off;
	if ((rc = r_file(r, h, INSTATE_DUMP_BLOCK_HEADER_SIZE, "a block header")) != 0)
		return rc;
	if (h[0] == KIND_END) {
		rc = r_file(r, h + INSTATE_DUMP_BLOCK_HEADER_SIZE,
		            INSTATE_DUMP_TRAILER_SIZE - INSTATE_DUMP_BLOCK_HEADER_SIZE, "the trailer");
		if (rc)
			return rc;
		r->ended = 1;
		return 0;
	}
	if (h[0] != KIND_BLOCK)
		return r_corrupt(r, r->block_off, "expected a block or the trailer, found 0x%02x",
		                 h[0]);
	codec = h[1];
	raw_len = get32(h + 4);
	stored_len = get32(h + 8);
	if (codec > CODEC_ZSTD || h[2] || h[3])
		return r_corrupt(r, r->block_off, "bad block codec or reserved bytes");
	if (raw_len == 0 || raw_len > INSTATE_DUMP_BLOCK_MAX)
		return r_corrupt(r, r->block_off, "bad block length %u", (unsigned)raw_len);
	if (codec == CODEC_RAW ? stored_len != raw_len : (stored_len == 0 || stored_len >= raw_len))
		return r_corrupt(r, r->block_off, "bad stored length %u for %u bytes",
		                 (unsigned)stored_len, (unsigned)raw_len);
	/* Checked before decompressing: what a block claims is all it can
	 * give (body_len never passes max_body). */
	if (r->max_body && raw_len > r->max_body - r->body_len)
		return r_corrupt(r, r->block_off,
		                 "the body decompresses to more than %llu bytes (%u x max_bytes %llu)",
		                 (unsigned long long)r->max_body, INSTATE_DUMP_BODY_RATIO,
		                 (unsigned long long)r->max_bytes);
	if (r_grow(&r->raw, &r->raw_cap, raw_len) != 0)
		return ENOMEM;
	if (codec == CODEC_ZSTD && r_grow(&r->stored, &r->stored_cap, stored_len) != 0)
		return ENOMEM;
	{
		unsigned char *dst = codec == CODEC_RAW ? r->raw : r->stored;
		uint32_t dcrc;
		if ((rc = r_file(r, dst, stored_len, "a block")) != 0)
			return rc;
		/* One pass over the stored bytes serves both CRCs (as in w_flush()). */
		dcrc = instate_crc32c(0, dst, stored_len);
		if (get32(h + 12) != instate_crc32c_combine(instate_crc32c(0, h, 12), dcrc, stored_len))
			return r_corrupt(r, r->block_off, "block checksum mismatch");
		r->crc = instate_crc32c_combine(
			instate_crc32c(r->crc, h, INSTATE_DUMP_BLOCK_HEADER_SIZE), dcrc, stored_len);
	}
	if (codec == CODEC_ZSTD) {
		size_t n;
		if (!r->dctx && !(r->dctx = ZSTD_createDCtx()))
			return ENOMEM;
		n = ZSTD_decompressDCtx(r->dctx, r->raw, raw_len, r->stored, stored_len);
		if (ZSTD_isError(n) || n != raw_len)
			return r_corrupt(r, r->block_off, "block does not decompress to %u bytes",
			                 (unsigned)raw_len);
	}
	r->rlen = raw_len;
	r->rpos = 0;
	r->body_len += raw_len;
	return r->progress && r->off < r->size ? r_progress(r) : 0;
}

/* *more = whether the body has another byte (reading blocks as needed). */
static int r_more(struct reader *r, int *more)
{
	int rc;

	*more = 0;
	while (r->rpos == r->rlen) {
		if (r->ended)
			return 0;
		if ((rc = r_block(r)) != 0)
			return rc;
	}
	*more = 1;
	return 0;
}

/* Read n body bytes into buf, or skip them if buf is NULL. */
static int r_body(struct reader *r, void *buf, size_t n, const char *what)
{
	unsigned char *p = buf;
	int rc;

	while (n) {
		size_t take;
		int more;
		if ((rc = r_more(r, &more)) != 0)
			return rc;
		if (!more)
			return r_corrupt(r, r->block_off, "the body ends inside %s (body byte %llu)",
			                 what, (unsigned long long)r->body_pos);
		take = r->rlen - r->rpos;
		if (take > n)
			take = n;
		if (p) {
			memcpy(p, r->raw + r->rpos, take);
			p += take;
		}
		r->rpos += (uint32_t)take;
		r->body_pos += take;
		n -= take;
	}
	return 0;
}

/* ---- the body parser ------------------------------------------------- */

/* What the parser hands over; a nonzero return stops it. */
struct sink {
	int (*section)(void *ud, struct reader *r, const char *name, size_t len,
	               instate_ns_type type);
	int (*record)(void *ud, struct reader *r, const void *key, size_t klen,
	              const void *val, size_t vlen, const instate_meta *m);
	int (*section_end)(void *ud, struct reader *r, const char *name, size_t len,
	                   instate_ns_type type, uint64_t records);
};

struct parsed {
	uint64_t sections, records;
};

static int parse_body(struct reader *r, const struct sink *k, void *ud, instate_buf *val,
                      struct parsed *out)
{
	char name[INSTATE_NSNAME_MAX + 1], prev[INSTATE_NSNAME_MAX];
	unsigned char key[INSTATE_KEY_MAX], pkey[INSTATE_KEY_MAX], h[REC_FIXED + 12];
	size_t nlen, plen = 0, klen, pklen;
	uint64_t sections = 0, records = 0, count, at;
	int rc, more;

	for (;;) {
		instate_ns_type type;

		if ((rc = r_more(r, &more)) != 0)
			return rc;
		if (!more)
			break;

		at = r->body_pos;
		if ((rc = r_body(r, h, 3, "a section start")) != 0)
			return rc;
		if (h[0] != ITEM_SECTION)
			return r_corrupt(r, BODY_AT(r), "expected a section, found 0x%02x (body byte %llu)",
			                 h[0], (unsigned long long)at);
		if (h[1] != 1 && h[1] != 2)
			return r_corrupt(r, BODY_AT(r), "bad section type %u (body byte %llu)",
			                 h[1], (unsigned long long)at);
		type = h[1] == 2 ? INSTATE_NS_STATE : INSTATE_NS_KV;
		nlen = h[2];
		if (nlen == 0)
			return r_corrupt(r, BODY_AT(r), "empty section name (body byte %llu)",
			                 (unsigned long long)at);
		if ((rc = r_body(r, name, nlen, "a section name")) != 0)
			return rc;
		name[nlen] = '\0';
		if (!instate__ns_name_kind(name, nlen))
			return r_corrupt(r, BODY_AT(r), "invalid section name (body byte %llu)",
			                 (unsigned long long)at);
		if (sections && bytes_cmp(prev, plen, name, nlen) >= 0)
			return r_corrupt(r, BODY_AT(r),
			                 "section \"%s\" out of order (body byte %llu)", name,
			                 (unsigned long long)at);
		memcpy(prev, name, nlen);
		plen = nlen;
		if (k->section && (rc = k->section(ud, r, name, nlen, type)) != 0)
			return rc;

		count = 0;
		pklen = 0;
		for (;;) {
			uint32_t rf, vlen;
			instate_meta m;
			size_t hl = REC_FIXED, done;

			at = r->body_pos;
			if ((rc = r_body(r, h, 1, "a section")) != 0)
				return rc;
			if (h[0] == ITEM_SECTION_END) {
				if ((rc = r_body(r, h, 8, "a section end")) != 0)
					return rc;
				if (get64(h) != count)
					return r_corrupt(r, BODY_AT(r),
					                 "section \"%s\" claims %llu records, holds %llu "
					                 "(body byte %llu)", name,
					                 (unsigned long long)get64(h),
					                 (unsigned long long)count, (unsigned long long)at);
				break;
			}
			if (h[0] != ITEM_RECORD)
				return r_corrupt(r, BODY_AT(r),
				                 "expected a record, found 0x%02x (body byte %llu)", h[0],
				                 (unsigned long long)at);
			if ((rc = r_body(r, h + 1, REC_FIXED - 1, "a record header")) != 0)
				return rc;
			rf = h[1];
			klen = get16(h + 2);
			vlen = get32(h + 4);
			if (rf & ~(unsigned)(RF_EXPIRY | RF_VERSION))
				return r_corrupt(r, BODY_AT(r), "bad record flags 0x%02x (body byte %llu)",
				                 (unsigned)rf, (unsigned long long)at);
			if (klen == 0 || klen > INSTATE_KEY_MAX)
				return r_corrupt(r, BODY_AT(r), "bad key length %llu (body byte %llu)",
				                 (unsigned long long)klen,
				                 (unsigned long long)at);
			hl += (rf & RF_EXPIRY ? 8 : 0) + (rf & RF_VERSION ? 4 : 0);
			if (hl > REC_FIXED &&
			    (rc = r_body(r, h + REC_FIXED, hl - REC_FIXED, "a record header")) != 0)
				return rc;
			m.expires_ms = 0;
			m.version = 0;
			if (rf & RF_EXPIRY) {
				m.expires_ms = (int64_t)get64(h + REC_FIXED);
				if (m.expires_ms <= 0)
					return r_corrupt(r, BODY_AT(r), "bad expiry (body byte %llu)",
					                 (unsigned long long)at);
			}
			if (rf & RF_VERSION) {
				m.version = get32(h + hl - 4);
				if (!m.version)
					return r_corrupt(r, BODY_AT(r), "version 0 (body byte %llu)",
					                 (unsigned long long)at);
			}
			if (r->max_body && (uint64_t)klen + vlen > r->max_body - r->body_pos)
				return r_corrupt(r, BODY_AT(r),
				                 "a record of %u value bytes would take the body past %llu "
				                 "bytes (%u x max_bytes %llu) (body byte %llu)", (unsigned)vlen,
				                 (unsigned long long)r->max_body, INSTATE_DUMP_BODY_RATIO,
				                 (unsigned long long)r->max_bytes, (unsigned long long)at);
			if ((rc = r_body(r, key, klen, "a key")) != 0)
				return rc;
			if (count && bytes_cmp(pkey, pklen, key, klen) >= 0)
				return r_corrupt(r, BODY_AT(r),
				                 "keys out of order in section \"%s\" (body byte %llu)",
				                 name, (unsigned long long)at);
			memcpy(pkey, key, klen);
			pklen = klen;
			/* A value is opaque bytes (the store's, whatever codec made
			 * them): its framing and the checksums are all there is to
			 * check. Only a sink that takes records holds it. */
			val->len = 0;
			if (!k->record) {
				if ((rc = r_body(r, NULL, vlen, "a value")) != 0)
					return rc;
			}
			/* Grow with the bytes that actually arrive, never by the
			 * length the file claims. */
			for (done = 0; k->record && done < vlen;) {
				size_t step = vlen - done < VALUE_CHUNK ? vlen - done : VALUE_CHUNK;
				if (instate_buf_reserve(val, step) != 0)
					return ENOMEM;
				if ((rc = r_body(r, val->data + done, step, "a value")) != 0)
					return rc;
				done += step;
				val->len = done;
			}
			count++;
			records++;
			if (k->record &&
			    (rc = k->record(ud, r, key, klen, vlen ? val->data : "", vlen, &m)) != 0)
				return rc;
		}
		sections++;
		if (k->section_end && (rc = k->section_end(ud, r, name, nlen, type, count)) != 0)
			return rc;
	}
	/* The trailer. */
	{
		const unsigned char *t = r->trailer;
		unsigned char extra;
		size_t got = 0;

		if (t[1] || t[2] || t[3])
			return r_corrupt(r, r->block_off, "bad trailer reserved bytes");
		if (get64(t + 4) != sections || get64(t + 12) != records)
			return r_corrupt(r, r->block_off,
			                 "trailer counts (%llu sections, %llu records) do not match "
			                 "the body (%llu, %llu)",
			                 (unsigned long long)get64(t + 4),
			                 (unsigned long long)get64(t + 12),
			                 (unsigned long long)sections, (unsigned long long)records);
		if (get64(t + 20) != r->body_len)
			return r_corrupt(r, r->block_off, "trailer body length mismatch");
		if (get64(t + 28) != r->off)
			return r_corrupt(r, r->block_off, "trailer file length mismatch");
		if (get32(t + 36) != instate_crc32c(r->crc, t, 36))
			return r_corrupt(r, r->block_off + 36, "file checksum mismatch");
		if (r->fd == INSTATE_OS_NOFD)
			got = r->mempos < r->memlen;
		else {
			int e = instate__os_read(r->fd, &extra, 1, &got);
			if (e) {
				seterr(r->err, "read %s: %s", r->path, strerror(e));
				return e;
			}
		}
		if (got)
			return r_corrupt(r, r->off, "data after the trailer");
	}
	if (out) {
		out->sections = sections;
		out->records = records;
	}
	return 0;
}

static void r_free(struct reader *r)
{
	free(r->stored);
	free(r->raw);
	ZSTD_freeDCtx(r->dctx);
	if (r->fd != INSTATE_OS_NOFD)
		instate__os_close(r->fd);
	r->fd = INSTATE_OS_NOFD;
}

static int r_open(struct reader *r, const char *path, instate_os_stat *st, char *err)
{
	int e;

	memset(r, 0, sizeof *r);
	r->err = err;
	r->path = path;
	if ((e = instate__os_open_read(path, &r->fd)) != 0) {
		r->fd = INSTATE_OS_NOFD;
		if (e == ENOENT) {
			seterr(err, "no dump file at %s", path);
			return INSTATE_NOTFOUND;
		}
		seterr(err, "open %s: %s", path, strerror(e));
		return e;
	}
	if ((e = instate__os_fstat(r->fd, st)) != 0) {
		seterr(err, "stat %s: %s", path, strerror(e));
		instate__os_close(r->fd);
		r->fd = INSTATE_OS_NOFD;
		return e;
	}
	if (st->type != INSTATE_OS_REG) {
		seterr(err, "%s is not a regular file", path);
		instate__os_close(r->fd);
		r->fd = INSTATE_OS_NOFD;
		return EISDIR;
	}
	return 0;
}

/* ---- dump_info ------------------------------------------------------- */

struct info_ud {
	int (*fn)(void *ud, const char *name, size_t len, instate_ns_type type,
	          uint64_t records);
	void *ud;
};

static int info_section_end(void *ud, struct reader *r, const char *name, size_t len,
                            instate_ns_type type, uint64_t records)
{
	struct info_ud *u = ud;
	return u->fn ? u->fn(u->ud, name, len, type, records) : 0;
}

static int info_run(struct reader *r,
                    int (*fn)(void *, const char *, size_t, instate_ns_type, uint64_t),
                    void *ud, instate_dump_info *info)
{
	static const struct sink k = {NULL, NULL, info_section_end};
	struct info_ud u;
	struct parsed p;
	instate_buf val = {0};
	int rc;

	u.fn = fn;
	u.ud = ud;
	if ((rc = r_header(r)) == 0)
		rc = parse_body(r, &k, &u, &val, &p);
	instate_buf_free(&val);
	if (rc == 0 && info) {
		info->records = p.records;
		info->sections = p.sections;
		info->bytes = r->off;
		info->revision = r->revision;
		info->created_ms = r->created;
		info->format = r->format;
	}
	return rc;
}

int instate_dump_info_read(const char *path,
                           int (*fn)(void *ud, const char *name, size_t len,
                                     instate_ns_type type, uint64_t records),
                           void *ud, instate_dump_info *info, char *err)
{
	struct reader r;
	instate_os_stat st;
	int rc;

	if (err)
		err[0] = '\0';
	if (info)
		memset(info, 0, sizeof *info);
	if ((rc = r_open(&r, path, &st, err)) != 0)
		return rc;
	rc = info_run(&r, fn, ud, info);
	r_free(&r);
	return rc;
}

int instate_dump_info_mem(const void *data, size_t n,
                          int (*fn)(void *ud, const char *name, size_t len,
                                    instate_ns_type type, uint64_t records),
                          void *ud, instate_dump_info *info, char *err)
{
	struct reader r;
	int rc;

	if (err)
		err[0] = '\0';
	if (info)
		memset(info, 0, sizeof *info);
	memset(&r, 0, sizeof r);
	r.fd = INSTATE_OS_NOFD;
	r.mem = data;
	r.memlen = n;
	r.err = err;
	rc = info_run(&r, fn, ud, info);
	r_free(&r);
	return rc;
}

/* ---- load ------------------------------------------------------------ */

struct loader {
	instate_store *s;
	instate_txn *txn;
	const instate_load_options *o;
	instate_ns *ns;      /* the current section's namespace, if applied */
	int64_t now;
	uint64_t records, expired, sections;
};

static int load_section(void *ud, struct reader *r, const char *name, size_t len,
                        instate_ns_type type)
{
	struct loader *l = ud;
	int rc;

	l->ns = NULL;
	if (!name_selected(l->o->namespaces, l->o->n_namespaces, name, len))
		return 0;
	rc = instate_ns_get(l->s, name, len, type, &l->ns);
	if (rc == INSTATE_TYPE)
		return r_corrupt(r, r->block_off,
		                 "section \"%s\" has type %s but the namespace exists with "
		                 "another type", name, type == INSTATE_NS_STATE ? "state" : "kv");
	if (rc == INSTATE_INVALID)
		return r_corrupt(r, r->block_off, "invalid section name \"%s\"", name);
	if (rc == 0 && l->o->replace && (rc = instate_clear(l->txn, l->ns, NULL)) == INSTATE_NOTFOUND)
		rc = 0;
	if (rc) {
		seterr(r->err, "load %s: the store failed on namespace \"%s\": %s", r->path, name,
		       instate_strerror(rc));
		return rc;
	}
	l->sections++;
	return 0;
}

static int load_record(void *ud, struct reader *r, const void *key, size_t klen,
                       const void *val, size_t vlen, const instate_meta *m)
{
	struct loader *l = ud;

	if (!l->ns)
		return 0;
	if (m->expires_ms > 0 && m->expires_ms <= l->now) {
		l->expired++;
		return 0;
	}
	l->records++;
	return instate_put(l->txn, l->ns, key, klen, val, vlen, m, 0);
}

static int load_once(instate_store *s, struct reader *r, const instate_load_options *o,
                     struct loader *l)
{
	static const struct sink k = {load_section, load_record, NULL};
	instate_buf val = {0};
	uint64_t before;
	int rc;

	memset(l, 0, sizeof *l);
	l->s = s;
	l->o = o;
	l->now = instate_clock_now();
	if ((rc = r_header(r)) != 0)
		return rc;
	if ((rc = instate_txn_begin(s, NULL, 0, &l->txn)) != 0) {
		seterr(r->err, "load %s: cannot begin a write transaction", r->path);
		return rc;
	}
	before = instate_txn_revision(l->txn);
	rc = parse_body(r, &k, l, &val, NULL);
	instate_buf_free(&val);
	if (rc == 0 && r->revision > before)
		rc = instate_txn_set_revision_min(l->txn, r->revision);
	/* The last report comes before the commit: a stop there still
	 * leaves the store unchanged. */
	if (rc == 0 && r->progress) {
		r->size = r->off;
		rc = r_progress(r);
	}
	if (rc != 0)
		instate_txn_abort(l->txn);
	else
		rc = instate_txn_commit(l->txn);
	l->txn = NULL;
	/* What is not the file's is the store's (a write, the commit). */
	if (rc && (rc != INSTATE_RETRY || r->stopped) && !r->file_corrupt && r->err && !r->err[0])
		seterr(r->err, "load %s: the store failed: %s", r->path, instate_strerror(rc));
	return rc;
}

int instate_load(instate_store *s, const char *path, const instate_load_options *opts,
                 instate_dump_info *info, char *err)
{
	instate_load_options defaults;
	struct reader r;
	struct loader l;
	instate_os_stat st;
	uint64_t size = 0, hint;
	int rc, attempt, own, file_corrupt;

	if (err)
		err[0] = '\0';
	if (info)
		memset(info, 0, sizeof *info);
	if (!opts) {
		instate_load_options_init(&defaults);
		opts = &defaults;
	}
	if (opts->on_corrupt < INSTATE_CORRUPT_ERROR || opts->on_corrupt > INSTATE_CORRUPT_DELETE) {
		seterr(err, "bad on_corrupt policy %d", (int)opts->on_corrupt);
		return INSTATE_INVALID;
	}
	if ((rc = r_open(&r, path, &st, err)) != 0)
		return rc;
	size = st.size;
	r.progress = opts->progress;
	r.progress_ud = opts->progress_ud;
	r.size = size;
	if ((rc = own_file(s, &st, &own)) != 0)
		goto done;
	if (own) {
		seterr(err, "load %s: this is the store's own data or lock file, not a dump", path);
		rc = INSTATE_INVALID;
		goto done;
	}
	/* max_bytes bounds the file and, by INSTATE_DUMP_BODY_RATIO, what it
	 * decompresses to: with the block size, that bounds the memory and
	 * the bytes a load writes, whatever the file claims. */
	r.max_bytes = opts->max_bytes;
	if (opts->max_bytes)
		r.max_body = opts->max_bytes > UINT64_MAX / INSTATE_DUMP_BODY_RATIO
		                 ? UINT64_MAX : opts->max_bytes * INSTATE_DUMP_BODY_RATIO;
	/* A newer format is VERSION even when it is also too large. */
	if ((rc = r_header(&r)) != 0 || (rc = r_rewind(&r)) != 0)
		goto done;
	if (opts->max_bytes && size > opts->max_bytes) {
		rc = r_corrupt(&r, opts->max_bytes, "the file has %llu bytes, over max_bytes %llu",
		               (unsigned long long)size, (unsigned long long)opts->max_bytes);
		goto done;
	}

	/* Grow the map ahead so that a RETRY, which reruns the whole load, is
	 * rare: a body is rarely over 4 times its compressed file, and LMDB
	 * needs about twice the record bytes. */
	hint = size > UINT64_MAX / 8 ? UINT64_MAX : size * 8;
	rc = instate_store_reserve(s, hint);
	if (rc == INSTATE_BUSY || rc == INSTATE_READONLY) {
		seterr(err, "load %s: %s", path, instate_strerror(rc));
		goto done;
	}

	for (attempt = 1;; attempt++) {
		rc = load_once(s, &r, opts, &l);
		if (rc != INSTATE_RETRY || r.stopped || attempt == LOAD_ATTEMPTS)
			break;
		if (err)
			err[0] = '\0';
		if ((rc = r_rewind(&r)) != 0)
			break;
	}
	if (rc == 0 && info) {
		info->records = l.records;
		info->expired = l.expired;
		info->sections = l.sections;
		info->bytes = size;
		info->revision = r.revision;
		info->created_ms = r.created;
		info->format = r.format;
	}

done:
	/* The policy is for a corrupt file, never for the store's errors (an
	 * IO, MAP_FULL or a CORRUPT read of the store keeps the file). */
	file_corrupt = rc == INSTATE_CORRUPT && r.file_corrupt && !r.stopped;
	r_free(&r);
	if (file_corrupt && info)
		info->file_corrupt = 1;
	if (file_corrupt && opts->on_corrupt == INSTATE_CORRUPT_DELETE) {
		if (instate__os_unlink(path) == 0) {
			if (info)
				info->deleted = 1;
		}
	}
	if (rc && err && !err[0])
		seterr(err, "load %s: %s", path, instate_strerror(rc));
	return rc;
}
