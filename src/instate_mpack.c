/*
 * instate_mpack.c - the out-of-line half of the MessagePack layer: UTF-8
 * check, error messages, the top-level framing and the validator.
 * The hot writers and the item reader are inline in instate_mpack.h.
 */
#include "instate_mpack.h"

#include <stdarg.h>
#include <stdio.h>

/* ===================================================================== */
/* Errors                                                                */

int instate_mp_corrupt(instate_mp_reader *r, size_t off, const char *fmt, ...)
{
	va_list ap;
	int k;

	if (r->err[0]) /* keep the first fault */
		return INSTATE_CORRUPT;
	r->err_off = off;
	k = snprintf(r->err, sizeof r->err, "corrupt MessagePack at byte %lu: ",
	             (unsigned long)off);
	if (k < 0 || (size_t)k >= sizeof r->err)
		return INSTATE_CORRUPT;
	va_start(ap, fmt);
	vsnprintf(r->err + k, sizeof r->err - (size_t)k, fmt, ap);
	va_end(ap);
	return INSTATE_CORRUPT;
}

int instate_mp_truncated(instate_mp_reader *r, size_t off, const char *what, size_t need,
                         size_t left)
{
	return instate_mp_corrupt(r, off, "truncated %s (need %lu bytes, %lu left)", what,
	                          (unsigned long)need, (unsigned long)left);
}

/* ===================================================================== */
/* Framing shared by the validator and the decoder                       */

int instate_mp_begin(instate_mp_reader *r, int *graph)
{
	instate_mp_item it;
	unsigned c;

	*graph = r->graph = 0;
	r->refs = 0;
	if (r->pos >= r->n)
		return 0;
	c = r->p[r->pos];
	if (!((c >= 0xc7 && c <= 0xc9) || (c >= 0xd4 && c <= 0xd8)))
		return 0; /* not an extension: the common case costs one test */
	{
		size_t off = r->pos;
		if (instate_mp_read(r, &it))
			return INSTATE_CORRUPT;
		if (it.ext != INSTATE_MP_EXT_GRAPH) {
			r->pos = off; /* another extension: the value reader reports it */
			return 0;
		}
		if (r->pos != r->n)
			return instate_mp_corrupt(r, r->pos, "%lu trailing bytes after the value",
			                          (unsigned long)(r->n - r->pos));
		r->pos = (size_t)(it.data - r->p);
		r->graph_off = off;
		*graph = r->graph = 1;
	}
	return 0;
}

int instate_mp_finish(instate_mp_reader *r)
{
	if (r->pos != r->n)
		return instate_mp_corrupt(r, r->pos, "%lu trailing bytes after the value",
		                          (unsigned long)(r->n - r->pos));
	/* We wrap a value in GRAPH only once a REF was written: a GRAPH of a
	 * plain tree is someone else's extension type 1, to be refused rather
	 * than read as if its payload were ours. */
	if (r->graph && r->refs == 0)
		return instate_mp_corrupt(r, r->graph_off, "graph extension without a reference");
	return 0;
}

int instate_mp_check_ext(instate_mp_reader *r, size_t off, const instate_mp_item *it,
                         int graph, uint64_t tables, uint64_t *id)
{
	if (it->ext == INSTATE_MP_EXT_REF) {
		if (!graph)
			return instate_mp_corrupt(r, off, "reference outside a graph extension");
		if (it->len != 1 && it->len != 2 && it->len != 4 && it->len != 8)
			return instate_mp_corrupt(r, off, "reference of %lu bytes (1, 2, 4 or 8 expected)",
			                          (unsigned long)it->len);
		*id = instate_mp_ref_id(it);
		if (*id >= tables)
			return instate_mp_corrupt(r, off,
				"reference to table %llu, but only %llu tables begun",
				(unsigned long long)*id, (unsigned long long)tables);
		r->refs++;
		return 0;
	}
	if (it->ext == INSTATE_MP_EXT_GRAPH)
		return instate_mp_corrupt(r, off, "graph extension not at the top level");
	return instate_mp_corrupt(r, off, "unsupported extension type %d", it->ext);
}

int instate_mp_class_begin(instate_mp_reader *r, size_t off, const instate_mp_item *it,
                           const unsigned char **name, uint32_t *namelen, size_t *saved_n)
{
	size_t end = r->pos, start = (size_t)(it->data - r->p);
	instate_mp_item nm;
	unsigned c;

	*saved_n = r->n;
	r->n = end;
	r->pos = start;
	if (start == end || ((r->p[start] & 0xe0) != 0xa0 &&
	    r->p[start] != 0xd9 && r->p[start] != 0xda && r->p[start] != 0xdb))
		goto bad_name;
	if (instate_mp_read(r, &nm))
		goto fail;
	if (nm.len < 1 || nm.len > INSTATE_MP_CLASS_NAME_MAX)
		goto bad_name;
	if (r->pos == end)
		goto no_table;
	c = r->p[r->pos];
	if (!(c >= 0x80 && c <= 0x9f) && !(c >= 0xdc && c <= 0xdf))
		goto no_table;
	*name = nm.data;
	*namelen = nm.len;
	return 0;
bad_name:
	instate_mp_corrupt(r, off, "class extension without a name (a str of 1..%d bytes)",
	                   INSTATE_MP_CLASS_NAME_MAX);
	goto fail;
no_table:
	instate_mp_corrupt(r, off, "class extension without a table after its name");
fail:
	r->n = *saved_n;
	return INSTATE_CORRUPT;
}

int instate_mp_class_end(instate_mp_reader *r, size_t off, size_t saved_n)
{
	size_t end = r->n;

	r->n = saved_n;
	if (r->pos != end)
		return instate_mp_corrupt(r, off, "%lu bytes left over in a class extension",
		                          (unsigned long)(end - r->pos));
	return 0;
}

/* ===================================================================== */
/* Validator                                                             */

typedef struct vstate {
	instate_mp_reader r;
	int graph;
	uint64_t tables;
} vstate;

static int v_value(vstate *v, int depth, int is_key)
{
	instate_mp_item it;
	size_t off = v->r.pos;
	uint64_t id;
	uint32_t i;

	if (instate_mp_read(&v->r, &it))
		return INSTATE_CORRUPT;
	switch (it.type) {
	case INSTATE_MP_NIL:
		if (is_key)
			return instate_mp_corrupt(&v->r, off, "nil map key");
		return 0;
	case INSTATE_MP_FLOAT:
	case INSTATE_MP_DOUBLE:
		if (is_key && it.v.d != it.v.d)
			return instate_mp_corrupt(&v->r, off, "NaN map key");
		return 0;
	case INSTATE_MP_ARRAY:
	case INSTATE_MP_MAP:
		if (depth >= INSTATE_MP_MAX_DEPTH)
			return instate_mp_corrupt(&v->r, off, "tables nested deeper than %d levels",
			                          INSTATE_MP_MAX_DEPTH);
		v->tables++;
		if (it.type == INSTATE_MP_ARRAY) {
			for (i = 0; i < it.len; i++)
				if (v_value(v, depth + 1, 0))
					return INSTATE_CORRUPT;
		} else {
			for (i = 0; i < it.len; i++)
				if (v_value(v, depth + 1, 1) || v_value(v, depth + 1, 0))
					return INSTATE_CORRUPT;
		}
		return 0;
	case INSTATE_MP_EXT:
		if (it.ext == INSTATE_MP_EXT_CLASS) {
			const unsigned char *name;
			uint32_t namelen;
			size_t saved_n;
			if (instate_mp_class_begin(&v->r, off, &it, &name, &namelen, &saved_n))
				return INSTATE_CORRUPT;
			if (v_value(v, depth, is_key)) {
				v->r.n = saved_n;
				return INSTATE_CORRUPT;
			}
			return instate_mp_class_end(&v->r, off, saved_n);
		}
		return instate_mp_check_ext(&v->r, off, &it, v->graph, v->tables, &id);
	default:
		return 0;
	}
}

int instate_mp_check_class(instate_mp_reader *r, size_t off, const instate_mp_item *it,
                           int depth, int is_key, uint64_t *tables)
{
	vstate v;
	const unsigned char *name;
	uint32_t namelen;
	size_t saved_n;
	int rc;

	v.r = *r;
	v.graph = r->graph;
	v.tables = *tables;
	if (instate_mp_class_begin(&v.r, off, it, &name, &namelen, &saved_n))
		rc = INSTATE_CORRUPT;
	else if (v_value(&v, depth, is_key)) {
		v.r.n = saved_n;
		rc = INSTATE_CORRUPT;
	} else
		rc = instate_mp_class_end(&v.r, off, saved_n);
	*r = v.r;
	if (!rc)
		*tables = v.tables;
	return rc;
}

int instate_mp_validate(const void *p, size_t n, size_t *err_off, char *err, size_t errlen)
{
	vstate v;
	int rc;

	memset(&v, 0, sizeof v);
	v.r.p = p;
	v.r.n = n;
	rc = instate_mp_begin(&v.r, &v.graph);
	if (!rc)
		rc = v_value(&v, 0, 0);
	if (!rc)
		rc = instate_mp_finish(&v.r);
	if (rc) {
		if (err_off)
			*err_off = v.r.err_off;
		if (err && errlen)
			snprintf(err, errlen, "%s", v.r.err);
	}
	return rc;
}
