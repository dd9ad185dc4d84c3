/*
 * linstate.h - declarations shared by the binding's files (src/l*.c).
 *
 * Not installed: the public C API is instate.h. The binding only converts:
 * it checks arguments, calls the core and pushes results.
 */
#ifndef LINSTATE_H
#define LINSTATE_H

#include "lcompat.h"
#include <stddef.h>

/* ---- lcodec.c: Lua values <-> MessagePack ---------------------------- */

/*
 * Encode the value at stack index idx as MessagePack. Returns a pointer to
 * the bytes, valid until the next linstate_encode() call in this Lua state
 * (a per-state scratch buffer owned by a userdata, so raising leaks nothing).
 * An unstorable value raises "cannot store a <type> at <root><path>", e.g.
 * root "inventory" gives "cannot store a function at inventory.items[3].on_use".
 * Calls no metamethods and runs no Lua code.
 */
const char *linstate_encode(lua_State *L, int idx, const char *root, size_t *len);

/*
 * linstate_encode() in canonical map order (docs/FORMAT.md section 1): the
 * same value gives the same bytes in every process, whatever the insertion
 * history of its tables. Same contract and buffer as linstate_encode().
 */
const char *linstate_encode_canonical(lua_State *L, int idx, const char *root, size_t *len);

/*
 * Decode n bytes at p. On success pushes the value and returns 1. On corrupt
 * input pushes an error message naming the byte offset and returns 0. Raises
 * only on memory errors. Never runs Lua code.
 */
int linstate_decode(lua_State *L, const char *p, size_t n);

/* Set encode/decode (and codec constants) into the table at the stack top. */
void linstate_open_codec(lua_State *L);

/* ---- lstore.c: Store, Transaction, Namespace, Iterator ---------------- */

#include "instate.h"

/* Metatable names. Methods live in the metatable itself (__index = mt). */
#define LINSTATE_STORE_MT "instate.Store"
#define LINSTATE_TXN_MT   "instate.Transaction"
#define LINSTATE_NS_MT    "instate.Namespace"
#define LINSTATE_ITER_MT  "instate.Iterator"

/* The open store at idx; raises "store is closed" / a type error. */
instate_store *linstate_checkstore(lua_State *L, int idx);

/* Set open() and the store metatables' constructors into the table at top. */
void linstate_open_store(lua_State *L);

/* ---- ldump.c: dump_info and store:dump/load --------------------------- */

/* Set dump_info() into the table at top; register the store's dump/load. */
void linstate_open_dump(lua_State *L);

/* ---- lcheck.c: store:check ------------------------------------------- */

/* Register the store's check method (after linstate_open_store). */
void linstate_open_check(lua_State *L);

/* ---- lcore.c: helpers shared by the files above ----------------------- */

/*
 * Push the runtime-failure triple for core error code rc: nil, message,
 * stable code string ("IO", "NOSPACE", "MAP_FULL", "READONLY", "CORRUPT",
 * "VERSION", "BUSY", "NOTFOUND", "LIMIT"). Returns 3. The one error pusher.
 */
int linstate_fail(lua_State *L, int rc, const char *context);

/* The stable code string for rc (NULL-free: unknown codes give "IO"). */
const char *linstate_code(int rc);

#endif /* LINSTATE_H */
