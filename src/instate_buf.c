/*
 * instate_buf.c - the caller-owned growable byte buffer of instate.h.
 */
#include "instate.h"

#include <errno.h>
#include <stdlib.h>

int instate_buf_reserve(instate_buf *b, size_t extra)
{
	size_t need, cap;
	char *p;

	if (extra <= b->cap - b->len)
		return 0;
	if (extra > SIZE_MAX - b->len)
		return ENOMEM;
	need = b->len + extra;
	cap = b->cap ? b->cap : 64;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	p = realloc(b->data, cap);
	if (!p)
		return ENOMEM;
	b->data = p;
	b->cap = cap;
	return 0;
}

void instate_buf_free(instate_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}
