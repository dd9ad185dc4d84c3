/*
 * instate_codec.c - the public value codec of instate.h: a MessagePack
 * writer over an instate_buf and a pull parser over bytes.
 *
 * Both are thin shells over the primitives of instate_mpack.h, which the
 * Lua codec (lcodec.c) uses too, so a C engine writes exactly the bytes Lua
 * writes (the shortest forms, the same float narrowing, the same GRAPH/REF
 * framing) and the parser accepts and refuses exactly what Lua's decoder
 * does, with the same messages. Each keeps a stack of the items still due
 * per open table instead of recursing, so depth costs no C stack.
 */
#include "instate_mpack.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

/* ===================================================================== */
/* Writer                                                                */

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static int w_fail(instate_mp_writer *w, int rc, const char *fmt, ...)
{
	va_list ap;

	if (w->err) /* keep the first */
		return w->err;
	w->err = rc;
	va_start(ap, fmt);
	vsnprintf(w->errmsg, sizeof w->errmsg, fmt, ap);
	va_end(ap);
	return rc;
}

/* Offset of the next item, counted from the value's first byte. */
static unsigned long w_off(const instate_mp_writer *w)
{
	return (unsigned long)(w->buf->len - w->start);
}

/* Before an item: the sticky error, tables that are complete closed, no
 * second value; *key tells whether the item is a map key. `room` bytes are
 * reserved. */
static int w_begin(instate_mp_writer *w, size_t room, int *key)
{
	if (w->err)
		return w->err;
	while (w->depth && w->left[w->depth] == 0)
		w->depth--;
	if (w->depth == 0 && w->written)
		return w_fail(w, INSTATE_INVALID, "an item after the complete value at byte %lu",
		              w_off(w));
	*key = w->depth && w->ismap[w->depth] && w->left[w->depth] % 2 == 0;
	if (instate_buf_reserve(w->buf, room))
		return w_fail(w, ENOMEM, "out of memory");
	return 0;
}

/* After an item of `n` bytes: it fills one place of its table. */
static int w_end(instate_mp_writer *w, const unsigned char *end)
{
	w->buf->len = (size_t)(end - (const unsigned char *)w->buf->data);
	if (w->depth)
		w->left[w->depth]--;
	w->written = 1;
	return 0;
}

#define W_AT(w) ((unsigned char *)(w)->buf->data + (w)->buf->len)

void instate_mp_writer_init(instate_mp_writer *w, instate_buf *buf)
{
	memset(w, 0, sizeof *w);
	w->buf = buf;
	w->start = buf->len;
}

int instate_mp_write_nil(instate_mp_writer *w)
{
	int key, rc = w_begin(w, 1, &key);
	if (rc)
		return rc;
	if (key)
		return w_fail(w, INSTATE_INVALID, "nil map key at byte %lu (depth %u)", w_off(w),
		              w->depth);
	return w_end(w, instate_mp_put_nil(W_AT(w)));
}

int instate_mp_write_bool(instate_mp_writer *w, int b)
{
	int key, rc = w_begin(w, 1, &key);
	return rc ? rc : w_end(w, instate_mp_put_bool(W_AT(w), b));
}

int instate_mp_write_int(instate_mp_writer *w, int64_t v)
{
	int key, rc = w_begin(w, INSTATE_MP_MAX_HEADER, &key);
	return rc ? rc : w_end(w, instate_mp_put_int(W_AT(w), v));
}

int instate_mp_write_uint(instate_mp_writer *w, uint64_t v)
{
	int key, rc = w_begin(w, INSTATE_MP_MAX_HEADER, &key);
	return rc ? rc : w_end(w, instate_mp_put_uint(W_AT(w), v));
}

int instate_mp_write_double(instate_mp_writer *w, double d)
{
	int key, rc = w_begin(w, INSTATE_MP_MAX_HEADER, &key);
	if (rc)
		return rc;
	if (key && d != d)
		return w_fail(w, INSTATE_INVALID, "NaN map key at byte %lu (depth %u)", w_off(w),
		              w->depth);
	return w_end(w, instate_mp_put_double(W_AT(w), d));
}

/* str or bin: `text` chooses the header. */
static int w_bytes(instate_mp_writer *w, const void *p, size_t len, int text)
{
	unsigned char *q;
	int key, rc;

	if (w->err)
		return w->err;
	if (len > 0xffffffffu)
		return w_fail(w, INSTATE_LIMIT, "a %s of %llu bytes at byte %lu (at most 2^32 - 1)",
		              text ? "str" : "bin", (unsigned long long)len, w_off(w));
	if (!p && len)
		return w_fail(w, INSTATE_INVALID, "NULL bytes at byte %lu", w_off(w));
	rc = w_begin(w, 5 + len, &key);
	if (rc)
		return rc;
	q = text ? instate_mp_put_str_header(W_AT(w), (uint32_t)len)
	         : instate_mp_put_bin_header(W_AT(w), (uint32_t)len);
	if (len)
		memcpy(q, p, len);
	return w_end(w, q + len);
}

int instate_mp_write_str(instate_mp_writer *w, const char *s, size_t len)
{
	if (!w->err && s && !instate_mp_utf8_valid(s, len))
		return w_fail(w, INSTATE_INVALID, "a str of invalid UTF-8 at byte %lu", w_off(w));
	return w_bytes(w, s, len, 1);
}

int instate_mp_write_bin(instate_mp_writer *w, const void *p, size_t len)
{
	return w_bytes(w, p, len, 0);
}

int instate_mp_write_string(instate_mp_writer *w, const void *p, size_t len)
{
	return w_bytes(w, p, len, len == 0 || (p && instate_mp_utf8_valid(p, len)));
}

static int w_table(instate_mp_writer *w, uint32_t n, int map)
{
	unsigned char *q;
	int key, rc = w_begin(w, 5, &key);

	if (rc)
		return rc;
	if (w->depth >= INSTATE_MP_MAX_DEPTH)
		return w_fail(w, INSTATE_INVALID, "tables nested deeper than %d levels at byte %lu",
		              INSTATE_MP_MAX_DEPTH, w_off(w));
	q = map ? instate_mp_put_map_header(W_AT(w), n) : instate_mp_put_array_header(W_AT(w), n);
	w_end(w, q);
	w->tables++;
	if (n) {
		w->depth++;
		w->left[w->depth] = map ? 2 * (uint64_t)n : n;
		w->ismap[w->depth] = (unsigned char)map;
	}
	return 0;
}

int instate_mp_write_array(instate_mp_writer *w, uint32_t n)
{
	return w_table(w, n, 0);
}

int instate_mp_write_map(instate_mp_writer *w, uint32_t n)
{
	return w_table(w, n, 1);
}

int instate_mp_write_ref(instate_mp_writer *w, uint64_t id)
{
	int key, rc = w_begin(w, 10, &key); /* fixext 8: 2 + 8 bytes */

	if (rc)
		return rc;
	if (id >= w->tables)
		return w_fail(w, INSTATE_INVALID,
		              "reference to table %llu at byte %lu, but only %llu tables begun",
		              (unsigned long long)id, w_off(w), (unsigned long long)w->tables);
	w->refs++;
	return w_end(w, instate_mp_put_ref(W_AT(w), id));
}

int instate_mp_write_ext(instate_mp_writer *w, int8_t type, const void *p, size_t len)
{
	unsigned char *q;
	int key, rc;

	if (w->err)
		return w->err;
	if (type == INSTATE_MP_EXT_GRAPH || type == INSTATE_MP_EXT_REF)
		return w_fail(w, INSTATE_INVALID,
		              "extension type %d at byte %lu is instate's own (write references "
		              "with instate_mp_write_ref)", type, w_off(w));
	if (len > 0xffffffffu)
		return w_fail(w, INSTATE_LIMIT, "an ext of %llu bytes at byte %lu (at most 2^32 - 1)",
		              (unsigned long long)len, w_off(w));
	if (!p && len)
		return w_fail(w, INSTATE_INVALID, "NULL bytes at byte %lu", w_off(w));
	rc = w_begin(w, 6 + len, &key);
	if (rc)
		return rc;
	q = instate_mp_put_ext_header(W_AT(w), type, (uint32_t)len);
	if (len)
		memcpy(q, p, len);
	return w_end(w, q + len);
}

int instate_mp_writer_finish(instate_mp_writer *w)
{
	instate_buf *b = w->buf;
	size_t n, h;

	if (w->written == 2 && !w->err)
		return 0; /* finished already */
	while (!w->err && w->depth && w->left[w->depth] == 0)
		w->depth--;
	if (!w->err && !w->written)
		w_fail(w, INSTATE_INVALID, "no value written");
	if (!w->err && w->depth)
		w_fail(w, INSTATE_INVALID,
		       "incomplete value: the %s at depth %u still needs %llu item%s (%u table%s open)",
		       w->ismap[w->depth] ? "map" : "array", w->depth - 1,
		       (unsigned long long)w->left[w->depth], w->left[w->depth] == 1 ? "" : "s",
		       w->depth, w->depth == 1 ? "" : "s");
	if (!w->err && w->refs) {
		/* One REF or more: the GRAPH goes around the whole value, so a
		 * reader knows before the first table that it must keep tables
		 * by id (docs/FORMAT.md). */
		n = b->len - w->start;
		if (n > 0xffffffffu)
			w_fail(w, INSTATE_LIMIT, "a value with references of %llu bytes (at most 2^32 - 1)",
			       (unsigned long long)n);
		else if (instate_buf_reserve(b, h = instate_mp_ext_header_size((uint32_t)n)))
			w_fail(w, ENOMEM, "out of memory");
		else {
			unsigned char *v = (unsigned char *)b->data + w->start;
			memmove(v + h, v, n);
			instate_mp_put_ext_header(v, INSTATE_MP_EXT_GRAPH, (uint32_t)n);
			b->len += h;
		}
	}
	if (w->err) {
		b->len = w->start; /* nothing half-written stays */
		return w->err;
	}
	w->written = 2;
	return 0;
}

const char *instate_mp_writer_error(const instate_mp_writer *w)
{
	return w->err ? w->errmsg : "";
}

/* ===================================================================== */
/* Parser                                                                */

enum { P_NEW, P_FRAMED, P_READING, P_DONE };

/* The internal reader, positioned where the parser is. */
static void p_reader(const instate_mp_parser *p, instate_mp_reader *r)
{
	r->p = p->data;
	r->n = p->len;
	r->pos = p->pos;
	r->err_off = 0;
	r->graph = p->graph;
	r->graph_off = p->graph_off;
	r->refs = p->refs;
	r->err[0] = '\0';
}

static int p_fail(instate_mp_parser *p, const instate_mp_reader *r)
{
	p->err = INSTATE_CORRUPT;
	p->err_off = r->err_off;
	memcpy(p->errmsg, r->err, sizeof p->errmsg);
	p->errmsg[sizeof p->errmsg - 1] = '\0';
	return p->err;
}

void instate_mp_parser_init(instate_mp_parser *p, const void *data, size_t len)
{
	memset(p, 0, sizeof *p);
	p->data = data;
	p->len = data ? len : 0;
}

int instate_mp_parser_next(instate_mp_parser *p, instate_mp_item *it)
{
	instate_mp_reader r;
	size_t off;
	int key;

	if (p->err)
		return p->err;
	if (p->state == P_DONE)
		return INSTATE_NOTFOUND;
	p_reader(p, &r);
	if (p->state == P_NEW) {
		if (instate_mp_begin(&r, &p->graph))
			return p_fail(p, &r);
		p->graph_off = r.graph_off;
		p->pos = r.pos;
		p->state = P_FRAMED;
	}
	while (p->depth && p->left[p->depth] == 0)
		p->depth--;
	if (p->depth == 0 && p->state == P_READING) {
		/* The value is whole: nothing may trail it. */
		if (instate_mp_finish(&r))
			return p_fail(p, &r);
		p->state = P_DONE;
		return INSTATE_NOTFOUND;
	}
	off = p->pos;
	key = p->depth && p->ismap[p->depth] && p->left[p->depth] % 2 == 0;
	if (instate_mp_read(&r, it))
		return p_fail(p, &r);
	switch (it->type) {
	case INSTATE_MP_NIL:
		if (key) {
			instate_mp_corrupt(&r, off, "nil map key");
			return p_fail(p, &r);
		}
		break;
	case INSTATE_MP_FLOAT:
	case INSTATE_MP_DOUBLE:
		if (key && it->v.d != it->v.d) {
			instate_mp_corrupt(&r, off, "NaN map key");
			return p_fail(p, &r);
		}
		break;
	case INSTATE_MP_ARRAY:
	case INSTATE_MP_MAP:
		if (p->depth >= INSTATE_MP_MAX_DEPTH) {
			instate_mp_corrupt(&r, off, "tables nested deeper than %d levels",
			                   INSTATE_MP_MAX_DEPTH);
			return p_fail(p, &r);
		}
		break;
	case INSTATE_MP_EXT:
		it->v.u = 0;
		/* instate's own types are checked as Lua's decoder checks them;
		 * others are the caller's to judge. */
		if (it->ext == INSTATE_MP_EXT_REF || it->ext == INSTATE_MP_EXT_GRAPH) {
			if (instate_mp_check_ext(&r, off, it, p->graph, p->tables, &it->v.u))
				return p_fail(p, &r);
			p->refs = r.refs;
		} else if (it->ext == INSTATE_MP_EXT_CLASS) {
			/* One item, checked whole (the tables inside count for
			 * later references); its payload is the name, then the
			 * instance's table. */
			if (instate_mp_check_class(&r, off, it, (int)p->depth, key, &p->tables))
				return p_fail(p, &r);
			p->refs = r.refs;
		}
		break;
	default:
		break;
	}
	p->pos = r.pos;
	p->item_off = off;
	p->item_depth = p->depth;
	p->item_key = key;
	p->state = P_READING;
	if (p->depth)
		p->left[p->depth]--;
	if (it->type == INSTATE_MP_ARRAY || it->type == INSTATE_MP_MAP) {
		p->tables++;
		if (it->len) {
			p->depth++;
			p->left[p->depth] = it->type == INSTATE_MP_MAP ? 2 * (uint64_t)it->len : it->len;
			p->ismap[p->depth] = it->type == INSTATE_MP_MAP;
		}
	}
	return 0;
}

int instate_mp_parser_skip(instate_mp_parser *p)
{
	instate_mp_item it;
	unsigned target = p->item_depth;
	int rc;

	if (p->err)
		return p->err;
	if (p->state != P_READING)
		return 0;
	for (;;) {
		while (p->depth > target && p->left[p->depth] == 0)
			p->depth--;
		if (p->depth <= target)
			return 0;
		if ((rc = instate_mp_parser_next(p, &it)) != 0)
			return rc;
	}
}

const char *instate_mp_parser_error(const instate_mp_parser *p, size_t *offset)
{
	if (offset)
		*offset = p->err ? p->err_off : 0;
	return p->err ? p->errmsg : "";
}
