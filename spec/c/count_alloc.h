/*
 * count_alloc.h - a lua_Alloc that counts the Lua objects created while
 * `counting` is set (lua_Alloc is told of a new object by ptr NULL and
 * osize its type tag). The codec's tests and fuzz target use it to check
 * that encoding creates no object, so no finalizer can run inside one
 * (src/linstate.h). Included once by each program that uses it.
 */
#ifndef INSTATE_COUNT_ALLOC_H
#define INSTATE_COUNT_ALLOC_H

#include <lua.h>
#include <stdlib.h>

static int counting;
static long objects_created;

static void *count_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	(void)ud;
	if (nsize == 0) {
		free(ptr);
		return NULL;
	}
	if (counting && ptr == NULL &&
	    (osize == LUA_TSTRING || osize == LUA_TTABLE || osize == LUA_TFUNCTION ||
	     osize == LUA_TUSERDATA || osize == LUA_TTHREAD))
		objects_created++;
	return realloc(ptr, nsize);
}

#endif /* INSTATE_COUNT_ALLOC_H */
