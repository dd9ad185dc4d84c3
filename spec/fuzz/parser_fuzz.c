/*
 * parser_fuzz.c - libFuzzer target for the public codec of instate.h.
 *
 * Any input must parse to a whole value or to CORRUPT with an offset inside
 * the input, never crash, and in at most one item per byte. The verdict,
 * offset and message must be instate_mp_validate()'s (what instate.decode
 * accepts), but for extension types other than instate's, which the parser
 * returns as items and the validator refuses.
 *
 * Whatever parses whole is written again item by item with the writer
 * (a str of invalid UTF-8, which readers accept, as a bin): the writer must
 * accept every item, and its bytes must parse to the same items.
 *
 * Build: make fuzz (clang, -DINSTATE_FUZZ=ON); run with -max_total_time=N.
 */
#include "instate_mpack.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ITEMS 4096

typedef struct items {
	size_t n;
	instate_mp_item it[MAX_ITEMS];
} items;

/* Parse whole: 0, or CORRUPT (*off, *msg); the items into out (may be NULL). */
static int parse(const uint8_t *d, size_t n, size_t *off, const char **msg, size_t *foreign,
                 items *out, instate_mp_parser *p)
{
	instate_mp_item it;
	size_t count = 0;
	int rc;

	instate_mp_parser_init(p, d, n);
	*foreign = SIZE_MAX;
	if (out)
		out->n = 0;
	while ((rc = instate_mp_parser_next(p, &it)) == 0) {
		if (++count > n)
			abort(); /* every item takes a byte at least */
		if (it.type == INSTATE_MP_EXT && it.ext != INSTATE_MP_EXT_REF && *foreign == SIZE_MAX)
			*foreign = p->item_off;
		if (out && out->n < MAX_ITEMS)
			out->it[out->n++] = it;
	}
	if (rc == INSTATE_NOTFOUND)
		return 0;
	if (rc != INSTATE_CORRUPT)
		abort();
	*msg = instate_mp_parser_error(p, off);
	if (*off > n || strncmp(*msg, "corrupt MessagePack at byte ", 28) != 0)
		abort();
	return rc;
}

static int same_item(const instate_mp_item *a, const instate_mp_item *b)
{
	/* int8..int64 holding a value >= 0 (another writer's choice) is
	 * written back in the shortest form, an unsigned one */
	if (a->type == INSTATE_MP_INT && a->v.i >= 0)
		return b->type == INSTATE_MP_UINT && b->v.u == (uint64_t)a->v.i;
	if (a->type != b->type && !(a->type == INSTATE_MP_STR && b->type == INSTATE_MP_BIN) &&
	    !((a->type == INSTATE_MP_FLOAT || a->type == INSTATE_MP_DOUBLE) &&
	      (b->type == INSTATE_MP_FLOAT || b->type == INSTATE_MP_DOUBLE)))
		return 0;
	switch (a->type) {
	case INSTATE_MP_BOOL: return a->v.b == b->v.b;
	case INSTATE_MP_UINT: return a->v.u == b->v.u;
	case INSTATE_MP_INT: return a->v.i == b->v.i;
	case INSTATE_MP_FLOAT:
	case INSTATE_MP_DOUBLE:
		/* a float32 NaN, widened, is written as a float64 (its payload
		 * kept), and a float64 narrowed when exact */
		return (b->type == INSTATE_MP_FLOAT || b->type == INSTATE_MP_DOUBLE) &&
		       memcmp(&a->v.d, &b->v.d, 8) == 0;
	case INSTATE_MP_STR:
	case INSTATE_MP_BIN:
	case INSTATE_MP_EXT:
		return a->len == b->len &&
		       (a->len == 0 || memcmp(a->data, b->data, a->len) == 0) &&
		       (a->type != INSTATE_MP_EXT || (a->ext == b->ext && a->v.u == b->v.u));
	case INSTATE_MP_ARRAY:
	case INSTATE_MP_MAP:
		return a->len == b->len;
	default:
		return 1;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static items first, second;
	static instate_mp_parser p, p2;
	char vmsg[INSTATE_MP_ERRMAX];
	const char *msg = "";
	size_t off = 0, voff = 0, foreign, i;
	int rc = parse(data, size, &off, &msg, &foreign, &first, &p);
	int vrc = instate_mp_validate(data, size, &voff, vmsg, sizeof vmsg);

	if (vrc && strstr(vmsg, "unsupported extension type")) {
		if (foreign != voff ||
		    (rc && off <= voff && !strstr(msg, "graph extension without a reference")))
			abort();
	} else if (rc != vrc || (rc && (off != voff || strcmp(msg, vmsg) != 0))) {
		abort();
	}
	if (rc == 0 && first.n < MAX_ITEMS) {
		instate_buf b = {0};
		instate_mp_writer w;
		const char *m2;
		size_t off2, f2;

		instate_mp_writer_init(&w, &b);
		for (i = 0; i < first.n; i++) {
			const instate_mp_item *it = &first.it[i];
			switch (it->type) {
			case INSTATE_MP_NIL: instate_mp_write_nil(&w); break;
			case INSTATE_MP_BOOL: instate_mp_write_bool(&w, it->v.b); break;
			case INSTATE_MP_UINT: instate_mp_write_uint(&w, it->v.u); break;
			case INSTATE_MP_INT: instate_mp_write_int(&w, it->v.i); break;
			case INSTATE_MP_FLOAT:
			case INSTATE_MP_DOUBLE: instate_mp_write_double(&w, it->v.d); break;
			case INSTATE_MP_STR: instate_mp_write_string(&w, it->data, it->len); break;
			case INSTATE_MP_BIN: instate_mp_write_bin(&w, it->data, it->len); break;
			case INSTATE_MP_ARRAY: instate_mp_write_array(&w, it->len); break;
			case INSTATE_MP_MAP: instate_mp_write_map(&w, it->len); break;
			case INSTATE_MP_EXT:
				if (it->ext == INSTATE_MP_EXT_REF)
					instate_mp_write_ref(&w, it->v.u);
				else
					instate_mp_write_ext(&w, (int8_t)it->ext, it->data, it->len);
				break;
			}
		}
		if (instate_mp_writer_finish(&w) != 0)
			abort();
		if (parse((const uint8_t *)b.data, b.len, &off2, &m2, &f2, &second, &p2) != 0 ||
		    second.n != first.n)
			abort();
		for (i = 0; i < first.n; i++)
			if (!same_item(&first.it[i], &second.it[i]))
				abort();
		instate_buf_free(&b);
	}
	return 0;
}
