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
 * the *len bytes, in an encoder context of this Lua state that is busy for
 * the call alone (reused, so a call allocates nothing, and raising leaks
 * nothing). An unstorable value raises "cannot store a <type> at
 * <root><path>", e.g. root "inventory" gives
 * "cannot store a function at inventory.items[3].on_use".
 *
 * Calls no metamethods, runs no Lua code and creates no Lua object, so no
 * finalizer runs inside it. Re-entrant: an encoding made while another is
 * in progress, or by a finalizer at any time, uses a context of its own.
 *
 * Lifetime of the bytes: valid until the calling C function encodes
 * again, runs Lua code (lua_call, lua_pcall, luaL_error, ...), or returns.
 * Allocating in between is fine (a finalizer the collector runs then
 * encodes elsewhere): hand them to the core (instate_put) or copy them
 * (lua_pushlstring) within that window.
 */
const char *linstate_encode(lua_State *L, int idx, const char *root, size_t *len);

/*
 * linstate_encode() in canonical map order (docs/FORMAT.md section 1): the
 * same value gives the same bytes in every process, whatever the insertion
 * history of its tables. Same contract and lifetime as linstate_encode().
 */
const char *linstate_encode_canonical(lua_State *L, int idx, const char *root, size_t *len);

/*
 * Decode n bytes at p. On success pushes the value and returns 1. On corrupt
 * input pushes an error message naming the byte offset and returns 0. Raises
 * only on memory errors. Never runs Lua code itself; a finalizer run by its
 * allocations may decode or encode (re-entrant), or write to a store: p
 * must stay valid through that too (a Lua string on the stack does).
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
