/**
 * @file instate.h
 * @brief instate: a durable state store on LMDB.
 *
 * A store is one LMDB environment (a directory, or a single file with its
 * lock file beside it) holding named namespaces of records. A record maps a
 * key (1..511 bytes) to a value (opaque bytes; the Lua binding stores
 * MessagePack) with an optional absolute expiry time and a version number.
 * Every committed write transaction adds one to the store's revision.
 *
 * This header is the whole public C API. It never includes lua.h: a C or
 * C++ engine links libinstate alone.
 *
 * Conventions, as in lmdb.h:
 *  - Functions return an int: 0 on success, a negative INSTATE_* code
 *    below, or a positive errno value. instate_strerror() names any of them.
 *    Codes are never renumbered. Nothing calls exit() or abort().
 *  - Outputs come last. Handles are opaque.
 *  - Values read from a store are copied into an #instate_buf the caller
 *    owns, so they stay valid whatever happens to the map afterwards (the
 *    map may be grown by another thread at any time).
 *
 * Threads: a store handle may be used from any thread; a transaction
 * belongs to the thread that began it until it ends (read transactions may
 * move between threads, since the environment uses MDB_NOTLS). Opening the
 * same store several times in one process shares one LMDB environment.
 */
#ifndef INSTATE_H
#define INSTATE_H

#include <stddef.h>
#include <stdint.h>

/**
 * @brief Marks every public declaration of instate.h and instate_lua.h.
 *
 * The libraries are built with hidden symbols (-fvisibility=hidden), so
 * what this marks is all that libinstate.so (and the Lua module, which
 * exports luaopen_instate_core alone) exports. On Windows the DLL build
 * defines INSTATE_BUILD_DLL and exports these; a program linking the DLL
 * may define INSTATE_DLL (the exported CMake target instate::instate does)
 * to import them directly instead of through the import library's thunks;
 * a program linking libinstate.a defines neither. Define INSTATE_API
 * before including instate.h to override all of this.
 */
#ifndef INSTATE_API
#if defined(_WIN32) || defined(__CYGWIN__)
#if defined(INSTATE_BUILD_DLL)
#define INSTATE_API __declspec(dllexport)
#elif defined(INSTATE_DLL)
#define INSTATE_API __declspec(dllimport)
#else
#define INSTATE_API
#endif
#elif defined(__GNUC__) && __GNUC__ >= 4
#define INSTATE_API __attribute__((visibility("default")))
#else
#define INSTATE_API
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

/** @defgroup version Library and format versions
 * The library's version is defined here alone: CMake reads these three
 * lines for its project version (and so the shared library's), the Lua
 * module reports it as `instate._VERSION`.
 * @{ */
#define INSTATE_VERSION_MAJOR 0
#define INSTATE_VERSION_MINOR 1
#define INSTATE_VERSION_PATCH 0
#define INSTATE__QUOTE(x) #x
#define INSTATE__EXPAND_QUOTE(x) INSTATE__QUOTE(x)
/** "MAJOR.MINOR.PATCH" of the header compiled against, e.g. "0.1.0". */
#define INSTATE_VERSION_STRING INSTATE__EXPAND_QUOTE(INSTATE_VERSION_MAJOR) "." \
	INSTATE__EXPAND_QUOTE(INSTATE_VERSION_MINOR) "." INSTATE__EXPAND_QUOTE(INSTATE_VERSION_PATCH)
/** The version as one number, MAJOR * 10000 + MINOR * 100 + PATCH (as ZSTD_VERSION_NUMBER). */
#define INSTATE_VERSION_NUMBER (INSTATE_VERSION_MAJOR * 10000 + INSTATE_VERSION_MINOR * 100 + \
	INSTATE_VERSION_PATCH)
/** Version of the on-disk store layout (kept in the __meta database).
 * 2: every record carries a CRC-32C of its header and value. A store of
 * format 1 opens and reads; its first read-write open upgrades it (every
 * record rewritten with a checksum, in one transaction). A library that
 * knows only format 1 refuses a format 2 store with #INSTATE_VERSION. */
#define INSTATE_STORE_FORMAT 2
/** Version of the dump file format written by instate_dump(). */
#define INSTATE_DUMP_FORMAT 1

/**
 * @brief The version of the library linked (which may differ from the
 * header's #INSTATE_VERSION_STRING when it is a shared library), as
 * mdb_version() gives LMDB's.
 * @param[out] major, minor, patch the library's version numbers (each may
 *   be NULL).
 * @return a static string that lives forever, naming the library and the
 *   LMDB and zstd it runs on, as those libraries report themselves at run
 *   time: "instate 0.1.0 (LMDB 0.9.24, zstd 1.5.4)". Thread-safe.
 */
INSTATE_API const char *instate_version(int *major, int *minor, int *patch);
/** @} */

/** @defgroup limits Limits @{ */
#define INSTATE_KEY_MAX 511        /**< longest key, in bytes */
#define INSTATE_NSNAME_MAX 255     /**< longest namespace name, in bytes */
/** Prefix of the namespaces holding map variables' entries (one per map,
 * type state, named "__map." state-namespace "." map-name; docs/FORMAT.md).
 * The only names starting "__" that a namespace may have. */
#define INSTATE_MAP_PREFIX "__map."
#define INSTATE_MAP_PREFIX_LEN 6
#define INSTATE_ERRMSG_MAX 256     /**< size of a detailed error message buffer */
/** @} */

/** @defgroup errors Return codes
 * 0 is success; positive values are errno values (EIO, ENOSPC, EACCES...).
 * @{ */
#define INSTATE_SUCCESS 0
#define INSTATE_ERR_BASE (-32000)
/** key, namespace or file not found (also: the record has expired) */
#define INSTATE_NOTFOUND (-32001)
/** a write transaction is already open in this thread (e.g. another coroutine) */
#define INSTATE_BUSY (-32002)
/** the map reached max_size: the write cannot fit */
#define INSTATE_MAP_FULL (-32003)
/** the map was grown: the write transaction's work was undone and must be
 * run again in a new transaction. The instate_txn handles stay allocated
 * (ended): instate_txn_abort() them before beginning again, or let
 * instate_txn_run() do all of it (see @ref txn "Transactions"). */
#define INSTATE_RETRY (-32004)
/** the store was opened read-only */
#define INSTATE_READONLY (-32005)
/** a file or record is damaged (bad magic, checksum, truncation, malformed) */
#define INSTATE_CORRUPT (-32006)
/** written by a newer format version than this library reads */
#define INSTATE_VERSION (-32007)
/** a size limit could not be met (e.g. dump max_bytes) */
#define INSTATE_LIMIT (-32008)
/** invalid argument: bad key length, bad name, out-of-range option */
#define INSTATE_INVALID (-32009)
/** the namespace exists with another type */
#define INSTATE_TYPE (-32010)
/** the transaction has ended, or failed and can only be aborted */
#define INSTATE_ENDED (-32011)
/** the store is already open in this process with incompatible options */
#define INSTATE_CONFLICT (-32012)
/** the key exists (instate_put() with #INSTATE_NOOVERWRITE) */
#define INSTATE_EXISTS (-32013)
/** the reader table is full (raise max_readers) */
#define INSTATE_READERS_FULL (-32014)
/** the namespace table is full (raise max_namespaces) */
#define INSTATE_NAMESPACES_FULL (-32015)
/** a store file or directory is unsafe to open: a symlink, owned by another
 * user, or writable by group or others beyond what file_mode grants */
#define INSTATE_ACCESS (-32016)
/** another process owns the store (instate_store_lock_owner()) */
#define INSTATE_LOCKED (-32017)
#define INSTATE_ERR_LAST INSTATE_LOCKED
/** @} */

/**
 * @brief Return a static description of an error code.
 * @param[in] rc 0, a negative INSTATE_* code or a positive errno value.
 * @return a string that is never NULL and lives forever.
 */
INSTATE_API const char *instate_strerror(int rc);

/* ===================================================================== */
/** @defgroup buf Byte buffers
 * A growable byte buffer the caller owns. Zero-initialise it
 * (`instate_buf b = {0};`), pass it to any number of calls, which overwrite
 * its contents, then release it with instate_buf_free().
 * @{ */
typedef struct instate_buf {
	char *data;  /**< the bytes; NULL while cap is 0 */
	size_t len;  /**< bytes in use */
	size_t cap;  /**< bytes allocated */
} instate_buf;

/**
 * @brief Make room for at least `extra` more bytes after len.
 * @return 0, or ENOMEM (the buffer is unchanged).
 */
INSTATE_API int instate_buf_reserve(instate_buf *b, size_t extra);

/** @brief Release the buffer's memory; it can be used again afterwards. */
INSTATE_API void instate_buf_free(instate_buf *b);
/** @} */

/* ===================================================================== */
/** @defgroup store Stores @{ */

/** Opaque store handle. */
typedef struct instate_store instate_store;

/** Durability of commits. */
typedef enum instate_sync {
	INSTATE_SYNC_FULL = 0,   /**< fsync data and meta pages at commit (default) */
	INSTATE_SYNC_NOMETA = 1, /**< MDB_NOMETASYNC: the last commit may be lost, never torn */
	INSTATE_SYNC_NONE = 2    /**< MDB_NOSYNC: the OS decides when data reaches disk */
} instate_sync;

/** Options of instate_store_open(). Initialise with instate_options_init().
 * A zero map_size, max_size, max_namespaces or max_readers means the default;
 * max_size below map_size is #INSTATE_INVALID. max_namespaces is an exact
 * limit on live namespaces (#INSTATE_NAMESPACES_FULL past it). */
typedef struct instate_options {
	int readonly;             /**< open read-only (default 0) */
	instate_sync sync;        /**< durability (default #INSTATE_SYNC_FULL) */
	uint64_t map_size;        /**< initial map size in bytes (default 64 MiB; 1 MiB on
	                               Windows, where the data file is as large as the map) */
	uint64_t max_size;        /**< the map grows up to this (default 1 TiB) */
	unsigned file_mode;       /**< mode of created files (default 0600) */
	unsigned max_namespaces;  /**< named namespaces (default 128) */
	unsigned max_readers;     /**< concurrent read transactions (default 510) */
	int single_file;          /**< path is the data file, lock file beside it */
} instate_options;

/** @brief Fill `o` with the defaults listed in #instate_options. */
INSTATE_API void instate_options_init(instate_options *o);

/**
 * @brief Open (or create) a store.
 *
 * `path` is a directory, created with mode 0700 if missing, unless
 * `opts->single_file`, when it is the data file itself (lock file
 * `path-lock` beside it). The process keeps one LMDB environment per store
 * (keyed by the device and inode of both its data and its lock file):
 * opening the same store again returns a new handle on the shared
 * environment. A second open with a stricter `sync` raises the
 * environment's for every handle; the other options of the first open
 * hold. Stale reader slots left by dead processes are cleared at open, and
 * again whenever the reader table is found full.
 *
 * Files are opened without following symlinks, and a data or lock file
 * with a second hard link is refused. The store directory (or,
 * with single_file, the data file), the data file and the lock file must be
 * owned by the effective user or root and carry no group/other write bit
 * that `file_mode` does not; with single_file, a parent directory writable
 * by others must be sticky. The lock file's reader table is given disk
 * blocks before LMDB maps it, so a full disk is ENOSPC here, not SIGBUS
 * later.
 *
 * @param[in] path the store's path (copied).
 * @param[in] opts options, or NULL for the defaults.
 * @param[out] out the new handle; NULL on error.
 * @return 0, or #INSTATE_CONFLICT (already open here read-only vs
 *   read-write, or its data or lock file was replaced under the live
 *   environment), #INSTATE_ACCESS (a symlink or hard link, or a file or
 *   directory of another user or writable by others), #INSTATE_INVALID (bad option),
 *   #INSTATE_VERSION (store written by a newer layout, or the LMDB library
 *   loaded is not the 0.9 series this build relies on), #INSTATE_CORRUPT
 *   (not a store), #INSTATE_BUSY (a stricter sync requested from a thread
 *   holding the store's write transaction), an errno (ENOENT for a missing
 *   read-only store, EACCES, ENOTDIR, ENOSPC...).
 *
 * Lifetime: until instate_store_close(); the environment lives until its
 * last handle in the process is closed.
 */
INSTATE_API int instate_store_open(const char *path, const instate_options *opts, instate_store **out);

/**
 * @brief Close a store handle. NULL is ignored.
 *
 * All transactions and cursors begun through this handle must have ended.
 * Other handles on the same environment keep working.
 */
INSTATE_API void instate_store_close(instate_store *s);

/** @brief The path given to instate_store_open(); valid while the handle is. */
INSTATE_API const char *instate_store_path(const instate_store *s);

/**
 * @brief The store's revision: the number of committed write transactions.
 * @param[out] out the revision.
 * @return 0 or an error code.
 */
INSTATE_API int instate_store_revision(instate_store *s, uint64_t *out);

/**
 * @brief A number that changes whenever any process commits a write
 * transaction to the store (LMDB's last transaction id). Costs no
 * transaction: use it to tell cheaply whether a cached read is still
 * current. Not the revision: compare it only for equality.
 * @return the id, or 0 if it cannot be read.
 */
INSTATE_API uint64_t instate_store_last_commit(instate_store *s);

/** Statistics returned by instate_store_stats(). */
typedef struct instate_stats {
	uint64_t map_size;     /**< current map size in bytes */
	uint64_t max_size;     /**< the map's growth limit */
	uint64_t used_bytes;   /**< bytes of the map in use (last page + 1) */
	uint64_t page_size;    /**< LMDB page size */
	uint64_t namespaces;   /**< live namespaces */
	uint64_t readers;      /**< reader slots in use (all processes) */
	uint64_t max_readers;  /**< reader slots available */
	uint64_t revision;     /**< as instate_store_revision() */
	int readonly;          /**< opened read-only */
	uint32_t format;       /**< the store's format (#INSTATE_STORE_FORMAT; 1: an older
	                            store opened read-only, not upgraded) */
} instate_stats;

/** @brief Fill `out` with the store's statistics. @return 0 or an error code. */
INSTATE_API int instate_store_stats(instate_store *s, instate_stats *out);

/**
 * @brief Make sure at least `bytes` more bytes fit in the map, growing it
 * (within max_size) if needed. Must be called with no write transaction open
 * in this thread. Useful before a large batch to avoid #INSTATE_RETRY.
 * @return 0, #INSTATE_MAP_FULL, #INSTATE_BUSY or an errno.
 */
INSTATE_API int instate_store_reserve(instate_store *s, uint64_t bytes);

/**
 * @brief Clock used for expiry times, in milliseconds since the epoch.
 *
 * By default the real-time clock. Tests may fix it: instate_clock_set(ms)
 * makes every store in the process see `ms` as "now"; instate_clock_set(0)
 * restores the real clock. Process-wide and thread-safe.
 */
INSTATE_API int64_t instate_clock_now(void);
/** @brief Fix the clock at `ms` (0 restores the real clock). See instate_clock_now(). */
INSTATE_API void instate_clock_set(int64_t ms);
/** @} */

/**
 * @brief Make this process the store's owner: the one process that may
 * write it as its program's state (defstate's instate.setup takes it).
 *
 * The owner lock is an advisory lock (flock; LockFileEx on Windows) on a
 * file of its own beside the store's files: `owner.lock` in the store
 * directory, or `path-owner` beside a single_file store. It is created
 * with file_mode, and the owner's pid is written into it (decimal, one
 * line) once the lock is taken. The system releases it when the process
 * exits or dies (kill -9 included); the file stays, emptied at a clean
 * release. It does not stop anything: store-level reads and writes from
 * any process (instate_store_open) work as before; only another
 * instate_store_lock_owner() is refused.
 *
 * One process is one owner: every handle of this process on the store
 * (from any thread or Lua state) may take it; the lock is held while at
 * least one handle that took it is open, and released when the last of
 * them is closed with instate_store_close(). A second call on the same
 * handle does nothing. The lock file's descriptor is close-on-exec; a
 * child made by fork() without exec shares the lock while it lives.
 *
 * When another process holds the lock, its pid is read back from the
 * file; while the file names no live process (the owner has just taken
 * the lock and not written its pid yet, or a dead owner's pid is left
 * over and the lock was taken again) it is asked again every 10 ms, for
 * up to a second.
 *
 * @param[in] s a read-write handle.
 * @param[out] owner_pid NULL, or: on 0 this process's pid; on
 *   #INSTATE_LOCKED the owner's pid as it wrote it, or 0 when unknown.
 * @return 0, #INSTATE_LOCKED (another process owns the store),
 *   #INSTATE_READONLY (a read-only handle), #INSTATE_ACCESS (the lock
 *   file is a symlink, has a second hard link or is not a regular file),
 *   or an errno (ENOLCK or EOPNOTSUPP where the filesystem has no such
 *   locks, EACCES, ENOSPC...).
 *
 * Lifetime: until the last owning handle of the process is closed.
 */
INSTATE_API int instate_store_lock_owner(instate_store *s, uint64_t *owner_pid);

/* ===================================================================== */
/** @defgroup ns Namespaces
 * A namespace is a named LMDB database with a type. Handles are owned by
 * the store's environment: they need no closing and stay valid until the
 * environment closes. A namespace springs into existence with its first
 * write; reading a namespace that does not exist reads nothing.
 * @{ */

typedef struct instate_ns instate_ns;

/** Namespace types, recorded in __meta. */
typedef enum instate_ns_type {
	INSTATE_NS_ANY = 0,   /**< for lookups: accept whatever type it has (kv if new) */
	INSTATE_NS_KV = 1,    /**< plain key-value records */
	INSTATE_NS_STATE = 2  /**< defstate variables */
} instate_ns_type;

/**
 * @brief Get the handle of namespace `name`.
 *
 * Does not create it. If it exists with a type other than `type` (and
 * `type` is not #INSTATE_NS_ANY) returns #INSTATE_TYPE.
 *
 * @param[in] name 1..255 bytes, no NUL byte; names starting "__" are
 *   reserved (#INSTATE_INVALID), except #INSTATE_MAP_PREFIX followed by at
 *   least one byte: a map variable's namespace. The Lua layer makes those;
 *   a C program may read them (the Lua binding refuses them to users).
 * @param[in] type the expected type; a new namespace gets it (kv for ANY).
 * @param[out] out the handle.
 * @return 0, #INSTATE_INVALID, #INSTATE_TYPE, #INSTATE_NAMESPACES_FULL or an errno.
 */
INSTATE_API int instate_ns_get(instate_store *s, const char *name, size_t len,
                   instate_ns_type type, instate_ns **out);

/** @brief The namespace's name (NUL-terminated) and its byte length. */
INSTATE_API const char *instate_ns_name(const instate_ns *ns, size_t *len);

/** @brief The namespace's type as requested or as stored. */
INSTATE_API instate_ns_type instate_ns_type_of(const instate_ns *ns);
/** @} */

/* ===================================================================== */
/** @defgroup txn Transactions
 *
 * **Map growth and #INSTATE_RETRY.** LMDB cannot grow its map while a
 * write transaction is open. When a write (instate_put(), instate_del(),
 * instate_set_expiry(), instate_clear(), instate_drop(), instate_purge())
 * or a commit (instate_txn_commit(), of a top-level or a nested
 * transaction) finds the map full, the core undoes the whole top-level
 * write transaction, nested ones included, grows the map (doubling it,
 * within max_size; past max_size the error is #INSTATE_MAP_FULL instead)
 * and returns #INSTATE_RETRY. Nothing was written. Then:
 *  - the writer slot is already given up, but every instate_txn handle of
 *    that transaction stays allocated, ended: every later read or write on
 *    it returns #INSTATE_ENDED, its commit #INSTATE_RETRY, and its cursors
 *    return #INSTATE_ENDED;
 *  - the caller must still end each handle: instate_txn_abort() (or
 *    instate_txn_commit(), which returns #INSTATE_RETRY and frees it as
 *    well; a commit that itself returned #INSTATE_RETRY has freed its
 *    handle already), and instate_cursor_close() for its cursors.
 *    Beginning anew without that leaks each handle;
 *  - then run the transaction's work again from its start, in a new
 *    top-level transaction.
 * instate_txn_run() is that loop. instate_store_reserve() before a large
 * batch makes a RETRY unlikely. Read transactions never see it.
 * @{ */

typedef struct instate_txn instate_txn;

#define INSTATE_TXN_READ 0x1  /**< a read-only snapshot */

/**
 * @brief Begin a transaction.
 *
 * A write transaction (flags 0) takes the store's single writer slot. If a
 * write transaction is already open in the calling thread (another
 * coroutine, another Lua state on this thread) this returns #INSTATE_BUSY
 * at once instead of deadlocking; if one is open in another thread or
 * process it waits. With `parent` (a write transaction) it begins a nested
 * transaction: a savepoint that can be aborted alone.
 *
 * Before a top-level write transaction the map is grown ahead of need when
 * it is more than half full.
 *
 * Snapshots of a process never go back in time: one begun after another
 * has begun (in any thread of the process) sees at least its revision.
 *
 * @param[in] parent NULL, or the enclosing write transaction.
 * @param[in] flags 0 for read-write, #INSTATE_TXN_READ for a snapshot.
 * @param[out] out the transaction.
 * After a failed commit left LMDB in its fatal state (a meta page could
 * not be written), the first begin that finds no read transaction of the
 * process live reopens the environment in place; every handle keeps
 * working. Until then, begins return EIO (live read transactions keep
 * their snapshots). A full reader table is retried once after clearing the
 * slots of dead processes.
 *
 * @return 0, #INSTATE_BUSY (also: `parent` already has an open child),
 *   #INSTATE_READONLY (write on a read-only store), #INSTATE_READERS_FULL
 *   (every slot held by a live reader), EIO (see above) or another errno. A write transaction must end on the thread that began it (LMDB's
 *   writer lock belongs to that thread); a read transaction may move.
 *
 * Lifetime: until instate_txn_commit() or instate_txn_abort(), which free it.
 */
INSTATE_API int instate_txn_begin(instate_store *s, instate_txn *parent, unsigned flags, instate_txn **out);

/**
 * @brief Commit and free the transaction.
 *
 * A top-level write transaction adds one to the revision and is durable on
 * return as the store's sync option says. A nested one merges into its
 * parent. A read transaction just ends. On error the transaction is aborted
 * and freed all the same.
 *
 * @return 0, #INSTATE_RETRY (the map had to grow: nothing was written, and
 *   the handle is freed as on any error; run the transaction again in a new
 *   one), #INSTATE_MAP_FULL, the error of an earlier failed
 *   write (the transaction had failed), #INSTATE_BUSY (a nested transaction
 *   of it is still open: everything is aborted), an errno (ENOSPC, also
 *   for a write cut short on a full filesystem; EIO). Never #INSTATE_CORRUPT
 *   for a failed write.
 */
INSTATE_API int instate_txn_commit(instate_txn *txn);

/** @brief Abort and free the transaction (and its open children). NULL is ignored. */
INSTATE_API void instate_txn_abort(instate_txn *txn);

/**
 * @brief The revision this transaction sees (for a write transaction, the
 * revision it will commit as).
 */
INSTATE_API uint64_t instate_txn_revision(const instate_txn *txn);

/**
 * @brief Make a top-level write transaction commit with a revision of at
 * least `rev` (used by instate_load() so a store's revision never goes
 * below that of a dump loaded into it).
 * @return 0, #INSTATE_INVALID (a read or nested transaction), the error of
 *   an earlier failed write, or #INSTATE_ENDED.
 */
INSTATE_API int instate_txn_set_revision_min(instate_txn *txn, uint64_t rev);

/** @brief Nonzero for a read-only transaction. */
INSTATE_API int instate_txn_readonly(const instate_txn *txn);

/** Most runs of instate_txn_run()'s function: each RETRY doubles the map,
 * so growth alone reaches max_size (then #INSTATE_MAP_FULL) well before. */
#define INSTATE_TXN_RUN_ATTEMPTS 64

/**
 * @brief Run `fn` in a top-level transaction and commit it, running it
 * again in a new transaction for as long as the map has to grow.
 *
 * Begins a transaction with `flags` (0 for a write, #INSTATE_TXN_READ for
 * a snapshot), calls `fn(txn, ud)`, then commits if fn returned 0, or
 * aborts. If fn or the commit returned #INSTATE_RETRY, the transaction is
 * freed and the whole sequence begins again (at most
 * #INSTATE_TXN_RUN_ATTEMPTS times). So fn must be safe to run several
 * times: whatever it does outside the transaction (counters, allocations,
 * output) is done again on each run, and it should return the error of a
 * failed write as it is (a write returning #INSTATE_RETRY fails every
 * later write; returning 0 anyway is also caught at the commit).
 *
 * fn may begin and end nested transactions of `txn`, but must not commit or
 * abort `txn` itself, nor keep it after returning.
 *
 * @param[in] s the store.
 * @param[in] flags 0 or #INSTATE_TXN_READ, as instate_txn_begin().
 * @param[in] fn the work; 0 to commit, any other value to abort and return it.
 * @param[in] ud passed to fn.
 * @return 0 (committed), fn's nonzero value (aborted; #INSTATE_RETRY only
 *   after #INSTATE_TXN_RUN_ATTEMPTS runs), an error of
 *   instate_txn_begin() or instate_txn_commit() (#INSTATE_MAP_FULL when the
 *   map cannot grow further, #INSTATE_BUSY when this thread already holds
 *   a write transaction, ...). Every handle is freed on every path.
 */
INSTATE_API int instate_txn_run(instate_store *s, unsigned flags,
                                int (*fn)(instate_txn *txn, void *ud), void *ud);
/** @} */

/* ===================================================================== */
/** @defgroup rec Records
 * Keys are 1..511 bytes (#INSTATE_INVALID otherwise). An expired record
 * reads as absent everywhere.
 *
 * Every record carries a CRC-32C of its header and value, verified by each
 * call that reads it: a damaged record (checksum mismatch, bad header
 * lengths or flags) makes instate_get(), instate_cursor_next(),
 * instate_count(), instate_purge(), instate_set_expiry() and instate_put()
 * with #INSTATE_NOOVERWRITE or #INSTATE_KEEPEXPIRY return #INSTATE_CORRUPT;
 * no value bytes of it are ever returned. The transaction stays usable
 * (this error does not fail it). instate_del() deletes a damaged record,
 * plain instate_put() and instate_put() with #INSTATE_IFCHANGED alone
 * overwrite it, and instate_clear() removes it (counted as removed): the
 * ways to repair it. instate_store_check() lists every damaged record. Any write error other than #INSTATE_INVALID,
 * #INSTATE_EXISTS and #INSTATE_NOTFOUND leaves the transaction failed: it
 * can only be aborted (its commit returns the error). #INSTATE_RETRY from a
 * write means the map was grown and the transaction's work undone: abort
 * the transaction (its handle stays allocated until then) and run it again
 * (@ref txn "Transactions"; instate_txn_run() does both).
 * @{ */

/** Record metadata stored in front of each value. */
typedef struct instate_meta {
	int64_t expires_ms; /**< absolute expiry in ms since the epoch; 0 = never */
	uint32_t version;   /**< a version number for the value; 0 = none */
} instate_meta;

/** instate_put() flags. */
#define INSTATE_NOOVERWRITE 0x1  /**< fail with #INSTATE_EXISTS if a live record exists */
#define INSTATE_KEEPEXPIRY  0x2  /**< keep the old record's expiry (meta->expires_ms ignored) */
#define INSTATE_IFCHANGED   0x4  /**< write only if no equal live record exists, else #INSTATE_EXISTS */

/**
 * @brief Read a record.
 * @param[out] val receives a copy of the value bytes (may be NULL).
 * @param[out] meta receives the record's metadata (may be NULL).
 * @return 0, #INSTATE_NOTFOUND (absent or expired), #INSTATE_CORRUPT (the
 *   record is damaged: val and meta untouched), #INSTATE_INVALID or an error.
 */
INSTATE_API int instate_get(instate_txn *txn, instate_ns *ns, const void *key, size_t klen,
                instate_buf *val, instate_meta *meta);

/**
 * @brief Write a record (creating the namespace if needed).
 * @param[in] meta expiry and version; NULL for none.
 * @param[in] flags #INSTATE_NOOVERWRITE, #INSTATE_KEEPEXPIRY, #INSTATE_IFCHANGED.
 *   With #INSTATE_IFCHANGED a live record with the same value bytes,
 *   version and expiry is left as it is (nothing written, the page not
 *   dirtied) and #INSTATE_EXISTS is returned; the transaction stays usable.
 *   It costs one lookup more only when the record does change.
 * @return 0, #INSTATE_EXISTS, #INSTATE_INVALID, #INSTATE_READONLY,
 *   #INSTATE_RETRY (the map grew: the whole transaction is undone; abort
 *   it, which frees it, and run it again), #INSTATE_MAP_FULL,
 *   #INSTATE_ENDED or an errno.
 */
INSTATE_API int instate_put(instate_txn *txn, instate_ns *ns, const void *key, size_t klen,
                const void *val, size_t vlen, const instate_meta *meta, unsigned flags);

/**
 * @brief Delete a record.
 * @return 0, #INSTATE_NOTFOUND (absent or expired: nothing to delete), or
 *   an error as instate_put().
 */
INSTATE_API int instate_del(instate_txn *txn, instate_ns *ns, const void *key, size_t klen);

/**
 * @brief Change a live record's expiry without rewriting its value.
 * @param[in] expires_ms absolute expiry in ms; 0 removes it.
 * @return 0, #INSTATE_NOTFOUND, or an error as instate_put().
 */
INSTATE_API int instate_set_expiry(instate_txn *txn, instate_ns *ns, const void *key, size_t klen,
                       int64_t expires_ms);

/** @brief Count the live records of a namespace. @return 0 or an error. */
INSTATE_API int instate_count(instate_txn *txn, instate_ns *ns, uint64_t *out);

/**
 * @brief How many records a namespace holds in this transaction, expired
 * ones included: an upper bound of instate_count(), read in O(1) (LMDB's
 * own count) where instate_count() walks the records, to size a table
 * before reading them all.
 * @param[out] out the count; 0 on error or when the namespace does not
 *   exist in the transaction.
 * @return 0, #INSTATE_INVALID, #INSTATE_ENDED, #INSTATE_BUSY (a child
 *   transaction is open) or an error.
 */
INSTATE_API int instate_count_hint(instate_txn *txn, instate_ns *ns, uint64_t *out);

/**
 * @brief Delete every record of a namespace; `removed` counts live ones (may be NULL).
 * @return 0 or an error as instate_put() (#INSTATE_RETRY included).
 */
INSTATE_API int instate_clear(instate_txn *txn, instate_ns *ns, uint64_t *removed);

/**
 * @brief Drop a namespace: its records and its entry in __meta.
 * @param[out] existed 1 if it existed (may be NULL).
 * @return 0 or an error as instate_put() (#INSTATE_RETRY included).
 */
INSTATE_API int instate_drop(instate_txn *txn, instate_ns *ns, int *existed);

/**
 * @brief Remove expired records from every namespace; `removed` counts them.
 * @return 0 or an error as instate_put() (#INSTATE_RETRY included).
 */
INSTATE_API int instate_purge(instate_txn *txn, uint64_t *removed);

/**
 * @brief List the namespaces, in name byte order.
 * @param[in] fn called for each: name, its length, its type; a nonzero
 *   return stops the listing and is returned.
 * @return 0, fn's nonzero result, or an error.
 */
INSTATE_API int instate_ns_list(instate_txn *txn,
                    int (*fn)(void *ud, const char *name, size_t len, instate_ns_type type),
                    void *ud);

/** Results of instate_store_check(). */
typedef struct instate_check_info {
	uint64_t namespaces; /**< namespace entries of __meta walked */
	uint64_t records;    /**< records verified, expired ones included */
	uint64_t corrupt;    /**< damaged records, plus damaged namespace entries */
} instate_check_info;

/**
 * @brief Verify every record of every namespace, and every namespace entry
 * of __meta, in one read snapshot.
 *
 * Costs one pass over the data (a cursor step and a CRC-32C per record; on
 * the order of 3-20 ms per 100k small records): cheap enough at start-up.
 * Damaged records are collected during the walk, then reported to `fn`
 * once the snapshot has ended, so `fn` may use the store.
 *
 * @param[in] fn called per damaged record with its namespace's name (NUL-
 *   terminated) and length, and its key and length (klen 0, key not
 *   NULL, when the key's own size in LMDB's node is damaged); for a
 *   damaged namespace entry of __meta (a malformed value, an unknown type
 *   byte) key is NULL and klen 0. May be NULL. A nonzero return stops the
 *   reports and is returned. fn must return (a Lua binding calls it in
 *   protected mode): the list of reports is freed after the last call.
 * @param[out] out counts (may be NULL), filled even when fn stops early.
 * @return 0 (whether or not anything was damaged), fn's nonzero result,
 *   ENOMEM, #INSTATE_READERS_FULL, #INSTATE_CORRUPT (LMDB's own pages are
 *   damaged, so the walk could not finish) or an errno.
 *
 * Lifetime: holds a read transaction only for the duration of the walk.
 */
INSTATE_API int instate_store_check(instate_store *s,
                        int (*fn)(void *ud, const char *ns, size_t nslen, const void *key,
                                  size_t klen),
                        void *ud, instate_check_info *out);
/** @} */

/* ===================================================================== */
/** @defgroup cursor Cursors @{ */

typedef struct instate_cursor instate_cursor;

/**
 * @brief Open a cursor over the live records of `ns` whose keys start with
 * `prefix` (NULL or length 0 for all), in key byte order.
 * @return 0 or an error. Lifetime: until instate_cursor_close(), which must
 *   come before the transaction ends.
 */
INSTATE_API int instate_cursor_open(instate_txn *txn, instate_ns *ns, const void *prefix, size_t plen,
                        instate_cursor **out);

/**
 * @brief Step to the next live record and copy it out.
 * @param[out] key, val receive copies (val may be NULL); meta may be NULL.
 * @return 0, #INSTATE_NOTFOUND at the end, #INSTATE_CORRUPT for a damaged
 *   record (key receives its key, val and meta are untouched; the next
 *   call steps past it), or an error.
 */
INSTATE_API int instate_cursor_next(instate_cursor *c, instate_buf *key, instate_buf *val,
                        instate_meta *meta);

/** @brief Close a cursor. NULL is ignored. */
INSTATE_API void instate_cursor_close(instate_cursor *c);
/** @} */

/* ===================================================================== */
/** @defgroup dump Dump and load
 * Portable, versioned, checksummed, optionally compressed files; the format
 * is specified in docs/FORMAT.md. Both directions stream: memory stays
 * bounded whatever the size of the store or the file.
 * @{ */

/**
 * @brief Progress of instate_dump() and instate_load().
 *
 * Called at block granularity (a dump block holds 256 KiB of body bytes:
 * a call per block written or read), from the calling thread, inside the call; then once at
 * the end, on success only, with `done == total`. `done` never decreases
 * (a second pass of a compressed dump under max_bytes, or a load rerun
 * after the map grew, reports nothing until it passes what was reported).
 *
 * - instate_dump() counts **records**: `done` is the records walked so far
 *   (written, or left out by the caps), `total` the live records of the
 *   dumped namespaces, counted up front in the dump's snapshot (one count
 *   pass, made only when a callback is set). Records that expire during
 *   the dump make the final `total` the records walked.
 * - instate_load() counts **file bytes**: `done` is the bytes read and
 *   verified, `total` the file size.
 *
 * The callback must not use the store (the dump holds a read transaction,
 * the load a write transaction of this thread).
 *
 * @param[in] ud the options' progress_ud.
 * @return 0 to go on; any nonzero value stops the call, which cleans up
 *   (a dump removes its temporary file and leaves any old file at `path`
 *   intact; a load aborts its transaction: the store is unchanged) and
 *   returns that value as is, with `err` set to "... stopped by the
 *   progress callback". A load never retries after a stop, whatever the
 *   value (even #INSTATE_RETRY) and never applies the on_corrupt policy.
 */
typedef int (*instate_progress_fn)(void *ud, uint64_t done, uint64_t total);

/** Options of instate_dump(). Initialise with instate_dump_options_init(). */
typedef struct instate_dump_options {
	int compression;                 /**< 0 (raw) .. 9; default 1 */
	const char *const *namespaces;   /**< names to dump; NULL = all */
	size_t n_namespaces;             /**< entries in namespaces */
	uint64_t max_record_bytes;       /**< larger records are left out; 0 = no cap */
	uint64_t max_records_per_section;/**< first N records in key order; 0 = no cap */
	uint64_t max_bytes;              /**< file size cap, and the body (the bytes
	                                      the file decompresses to) is kept to
	                                      16 times it, as load bounds it; 0 = no cap */
	instate_progress_fn progress;    /**< called as records are written; NULL = none */
	void *progress_ud;               /**< passed to progress */
} instate_dump_options;

/** What to do with a corrupt file in instate_load(). */
typedef enum instate_on_corrupt {
	INSTATE_CORRUPT_ERROR = 0,  /**< return #INSTATE_CORRUPT */
	INSTATE_CORRUPT_IGNORE = 1, /**< return #INSTATE_CORRUPT, report ignored */
	INSTATE_CORRUPT_DELETE = 2  /**< remove the file, then as IGNORE */
} instate_on_corrupt;

/** Options of instate_load(). Initialise with instate_load_options_init(). */
typedef struct instate_load_options {
	int replace;                     /**< 0 merge (default), 1 replace */
	const char *const *namespaces;   /**< sections to load; NULL = all */
	size_t n_namespaces;
	uint64_t max_bytes;              /**< a larger file, or one decompressing to
	                                      more than 16 times it, is corrupt; with
	                                      it memory and bytes written are bounded
	                                      whatever the file claims; 0 = no cap
	                                      (the file is trusted: a record may be
	                                      up to 4 GiB) */
	instate_on_corrupt on_corrupt;   /**< applies to a corrupt file only, never
	                                      to an error of the store */
	instate_progress_fn progress;    /**< called as the file is read; NULL = none */
	void *progress_ud;               /**< passed to progress */
} instate_load_options;

/** Results of instate_dump(), instate_load() and instate_dump_info(). */
typedef struct instate_dump_info {
	uint64_t records;       /**< records written / loaded / in the file */
	uint64_t dropped;       /**< dump: records left out by the caps */
	uint64_t expired;       /**< load: records skipped as already expired */
	uint64_t sections;      /**< sections written / loaded / in the file */
	uint64_t bytes;         /**< file size */
	uint64_t revision;      /**< the dumped store's revision */
	int64_t created_ms;     /**< when the dump was written */
	uint32_t format;        /**< the file's format version */
	int deleted;            /**< load: the corrupt file was removed */
	int file_corrupt;       /**< load: #INSTATE_CORRUPT is the file's (the policy
	                             applied), not the store's */
} instate_dump_info;

INSTATE_API void instate_dump_options_init(instate_dump_options *o);
INSTATE_API void instate_load_options_init(instate_load_options *o);

/**
 * @brief Write a consistent snapshot of the store to `path`.
 *
 * Writes a temporary file in the same directory (`<path>.tmp-XXXXXX`, locked
 * with flock while written), fsyncs it, renames it over `path` and fsyncs
 * the directory: a failure leaves any old file intact and no temporary file
 * behind. Temporary files of `path` that dumps killed on the way left are
 * removed first (unlocked ones only; docs/FORMAT.md 3.6).
 *
 * @param[out] info results (may be NULL).
 * @param[out] err a detailed message on failure (may be NULL), at most
 *   #INSTATE_ERRMSG_MAX bytes with its NUL; it names the path and ends with
 *   the reason.
 * @return 0, #INSTATE_INVALID (compression out of range, or `path` is the
 *   store's own data or lock file), #INSTATE_LIMIT (even an empty dump
 *   exceeds max_bytes), the progress callback's nonzero value, or an errno.
 */
INSTATE_API int instate_dump(instate_store *s, const char *path, const instate_dump_options *opts,
                 instate_dump_info *info, char *err);

/**
 * @brief Load a dump into the store in one write transaction: all or nothing.
 *
 * Merge overwrites clashing keys and keeps the others; replace leaves each
 * loaded namespace holding exactly its dumped records. Records already
 * expired are skipped; others keep their absolute expiry. After a load the
 * revision is above its old value and at least the dump's.
 *
 * Memory is bounded by the block size and `max_bytes` whatever the file
 * claims (docs/FORMAT.md 3.5). Values are opaque bytes: they load exactly as
 * dumped, MessagePack or not.
 *
 * @return 0, #INSTATE_NOTFOUND (no such file; the policy is not consulted),
 *   #INSTATE_CORRUPT (the file's, info->file_corrupt set: the message in
 *   `err` names the byte offset; with IGNORE/DELETE the caller reports
 *   "ignored"; info->deleted tells; or the store's, info->file_corrupt 0:
 *   the policy is not applied), #INSTATE_VERSION (newer format, whatever the
 *   policy), #INSTATE_INVALID (`path` is the store's own data or lock file;
 *   never deleted), #INSTATE_BUSY, #INSTATE_READONLY, #INSTATE_MAP_FULL or
 *   an errno (the store's errors keep the file whatever the policy), or the
 *   progress callback's nonzero value. The store is unchanged on any error.
 */
INSTATE_API int instate_load(instate_store *s, const char *path, const instate_load_options *opts,
                 instate_dump_info *info, char *err);

/**
 * @brief Read a dump's header and section list without loading it. The
 * whole file is verified (checksums, framing, lengths), holding at most one
 * block in memory whatever the file claims.
 * @param[in] fn called per section with its name, type and record count
 *   (may be NULL); nonzero stops and is returned.
 * @return 0, #INSTATE_NOTFOUND, #INSTATE_CORRUPT, #INSTATE_VERSION or an errno.
 */
INSTATE_API int instate_dump_info_read(const char *path,
                           int (*fn)(void *ud, const char *name, size_t len,
                                     instate_ns_type type, uint64_t records),
                           void *ud, instate_dump_info *info, char *err);
/** @} */

/* ===================================================================== */
/** @defgroup writer Batches and the background writer
 *
 * A batch is a list of record writes (puts and deletes, in several
 * namespaces) applied in order in one write transaction: by the caller
 * with instate_batch_apply(), or off the caller's thread by a writer.
 *
 * A writer owns a thread that commits the batches handed to it with
 * instate_writer_submit(), one write transaction per batch, in the order
 * submitted; a batch is all or nothing, and a crash loses at most the
 * batches not yet committed, never part of one. The thread sees only the
 * batch's bytes: nothing of the caller (a Lua state) is touched there.
 *
 * Errors. A batch that fails (#INSTATE_MAP_FULL, ENOSPC, EIO...) is
 * aborted, and so is every batch submitted after it until the error is
 * reported, so the store always holds a prefix of the submitted batches.
 * The error is kept, with a message naming the batch's ticket, namespace
 * and key, and reported exactly once: by the next instate_writer_submit()
 * (which then takes nothing), instate_writer_flush() or
 * instate_writer_close(). After it is reported, batches commit again.
 *
 * Threads. Any thread may submit or flush, and several at once: tickets
 * are handed out, and batches committed, in the order the submits took
 * the writer's lock. The writer's commits take the store's writer slot
 * like any other write transaction: a write transaction begun by another
 * thread meanwhile waits for the batch being committed (it is never
 * #INSTATE_BUSY because of the writer) and may commit before batches
 * still queued; a write begun after instate_writer_flush() returned comes
 * after every batch submitted before it. Waiting for the writer from a
 * thread that holds a write transaction of the store would deadlock (the
 * writer needs the slot that thread holds): instate_writer_flush() and
 * instate_writer_close() return #INSTATE_BUSY then, while batches are
 * pending, and change nothing.
 *
 * Lifetime. A writer holds a handle of its own on the store's environment:
 * the handle it was opened on may be closed first (the environment, and the
 * namespace handles of its batches, live until the writer is closed too).
 * Other handles of the same store, and their writers, work alongside;
 * writers are not ordered with each other. Namespace handles in a batch must
 * be of the writer's store.
 *
 * fork(): the child has no writer thread (only the thread that forked is
 * copied) and, as LMDB requires, must not use the parent's environment at
 * all: after fork the child must neither use nor close a writer of the
 * parent (nor its store handles); it may exec or _exit. The parent's writer
 * goes on undisturbed.
 * @{ */

typedef struct instate_batch instate_batch;
typedef struct instate_writer instate_writer;

/**
 * @brief Create an empty batch.
 * @param[out] out the batch.
 * @return 0 or ENOMEM. Lifetime: until instate_batch_free(), or until
 *   instate_writer_submit() takes it.
 */
INSTATE_API int instate_batch_new(instate_batch **out);

/** @brief Free a batch the caller owns. NULL is ignored. */
INSTATE_API void instate_batch_free(instate_batch *b);

/** @brief Remove every operation, keeping the memory for reuse. */
INSTATE_API void instate_batch_clear(instate_batch *b);

/**
 * @brief Append a put of `key` = `val` to the batch (both copied).
 * @param[in] ns the namespace (created by the write if needed).
 * @param[in] meta expiry and version; NULL for none.
 * @param[in] flags as instate_put(): #INSTATE_IFCHANGED makes the write
 *   compare with the stored record when the batch is applied (an equal
 *   record is left untouched), #INSTATE_NOOVERWRITE skips a key that
 *   exists, #INSTATE_KEEPEXPIRY keeps the old expiry.
 * @return 0, #INSTATE_INVALID (key not 1..#INSTATE_KEY_MAX bytes, NULL ns,
 *   unknown flag) or ENOMEM; the batch is unchanged on error.
 */
INSTATE_API int instate_batch_put(instate_batch *b, instate_ns *ns, const void *key, size_t klen,
                                  const void *val, size_t vlen, const instate_meta *meta,
                                  unsigned flags);

/**
 * @brief Append a delete of `key` (copied); an absent key is no error.
 * @return 0, #INSTATE_INVALID or ENOMEM; the batch is unchanged on error.
 */
INSTATE_API int instate_batch_del(instate_batch *b, instate_ns *ns, const void *key,
                                  size_t klen);

/** @brief Keep the first `count` operations and drop the others (nothing
 * if the batch holds no more than `count`). */
INSTATE_API void instate_batch_truncate(instate_batch *b, size_t count);

/** @brief The number of operations in the batch. */
INSTATE_API size_t instate_batch_count(const instate_batch *b);

/**
 * @brief Apply the batch's operations, in order, in `txn` (a write
 * transaction of the caller's). Skipped operations (#INSTATE_IFCHANGED on
 * an equal record, #INSTATE_NOOVERWRITE on an existing key, a delete of an
 * absent key) are not errors.
 * @param[out] written the operations that changed the store (may be NULL).
 * @param[out] failed on error, the index of the failing operation (may be
 *   NULL).
 * @return 0, or the error of instate_put()/instate_del() (the transaction
 *   is then failed: abort it; #INSTATE_RETRY: it was aborted, run again).
 */
INSTATE_API int instate_batch_apply(const instate_batch *b, instate_txn *txn, size_t *written,
                                    size_t *failed);

/**
 * @brief Start a writer on store handle `s`: a thread that commits
 * submitted batches.
 * @param[out] out the writer.
 * @return 0, #INSTATE_READONLY (a read-only store), ENOMEM, or the errno
 *   of the thread's creation (EAGAIN).
 * Lifetime: until instate_writer_close(); `s` may be closed before it.
 */
INSTATE_API int instate_writer_open(instate_store *s, instate_writer **out);

/**
 * @brief Hand a batch to the writer, which commits it after every batch
 * submitted before it, in a write transaction of its own (committed only
 * if an operation changes the store; durable as the store's sync option
 * says), running it again if the map had to grow. Returns at once.
 *
 * @param[in] b the batch; on success the writer owns it (and frees it
 *   when committed): the caller must not touch it again. On error the
 *   caller still owns it.
 * @param[out] ticket the batch's number: 1 for the writer's first batch,
 *   then one more per batch (may be NULL).
 * @param[out] err on error, a message of at most #INSTATE_ERRMSG_MAX bytes
 *   naming the failed batch (may be NULL).
 * @return 0; or the kept error of an earlier batch (#INSTATE_MAP_FULL,
 *   ENOSPC, EIO, #INSTATE_CORRUPT...), now reported and cleared: `b` was
 *   not taken; #INSTATE_INVALID (NULL batch); #INSTATE_ENDED (the writer is
 *   closing).
 */
INSTATE_API int instate_writer_submit(instate_writer *w, instate_batch *b, uint64_t *ticket,
                                      char *err);

/**
 * @brief Wait until every batch submitted so far is committed (or was
 * found unchanged).
 * @param[out] revision the store's revision after them (may be NULL; set
 *   on success).
 * @param[out] err as instate_writer_submit() (may be NULL).
 * @return 0; the kept error of a batch (reported and cleared; the batches
 *   after it were not committed); #INSTATE_BUSY (batches are pending and the
 *   calling thread holds a write transaction of the store: waiting would
 *   deadlock; nothing was waited for or reported); or the error of reading
 *   the revision.
 */
INSTATE_API int instate_writer_flush(instate_writer *w, uint64_t *revision, char *err);

/** Counters of instate_writer_info(). */
typedef struct instate_writer_info {
	uint64_t submitted;  /**< tickets handed out: the last batch's ticket */
	uint64_t done;       /**< batches finished (committed, unchanged, or not
	                          committed after an error): tickets 1..done */
	int error;           /**< the kept error not yet reported, or 0 */
} instate_writer_info;

/** @brief Read the writer's counters without waiting. */
INSTATE_API void instate_writer_info_get(instate_writer *w, instate_writer_info *out);

/**
 * @brief Wait for every pending batch, stop the thread and free the writer.
 * NULL is ignored (returns 0).
 * @param[out] err as instate_writer_submit() (may be NULL).
 * @return 0, or the kept error not reported yet (the writer is closed all
 *   the same); #INSTATE_BUSY as instate_writer_flush(): then nothing is
 *   closed, call it again once the transaction has ended.
 */
INSTATE_API int instate_writer_close(instate_writer *w, char *err);
/** @defgroup codec The value codec: MessagePack writer and parser
 *
 * Values are MessagePack (docs/FORMAT.md section 1): what the Lua binding
 * stores, and what a C engine writes and reads with these calls to share
 * values with Lua exactly. A C value written here decodes in Lua to the
 * same value, and every value Lua stores reads here item by item:
 *
 * | C call                         | Lua value (instate.decode)                |
 * |--------------------------------|-------------------------------------------|
 * | instate_mp_write_nil()         | nil                                       |
 * | instate_mp_write_bool()        | false, true                               |
 * | instate_mp_write_int(), _uint()| an integer, all 64 bits (5.3, 5.4; a uint64 above 2^63-1 is the integer of the same bits); on 5.1, 5.2 and LuaJIT a number within ±2^53, beyond it see docs/FORMAT.md |
 * | instate_mp_write_double()      | a float, bit for bit (-0.0, infinities, NaN payloads; one NaN on LuaJIT) |
 * | instate_mp_write_str(), _bin(), _string() | a string                       |
 * | instate_mp_write_array(), _map() | a table (arrays index from 1)           |
 * | instate_mp_write_ref()         | the same table as an earlier one (sharing, cycles) |
 *
 * Both sides check what Lua's decoder checks: depth (#INSTATE_MP_MAX_DEPTH),
 * no nil or NaN map key, references only to tables begun, one value and
 * nothing after it. Neither allocates beyond the writer's buffer; both
 * are plain structs the caller owns (on the stack is fine, about 2 KiB), one
 * per thread at a time.
 * @{ */

/** Deepest nesting of tables (arrays and maps) in one value: the top-level
 * table is level 1; a table at level 201 is an error on encode and corrupt
 * on decode. Lua's `instate.max_depth`. */
#define INSTATE_MP_MAX_DEPTH 200

/** Extension type wrapping a value that contains references (top level
 * only). instate_mp_writer_finish() writes it; instate_mp_parser_next()
 * steps into it (setting #instate_mp_parser graph). */
#define INSTATE_MP_EXT_GRAPH 1
/** Extension type of a reference to an earlier table (inside a graph only):
 * instate_mp_write_ref(); the parser returns it as an #INSTATE_MP_EXT item. */
#define INSTATE_MP_EXT_REF 2
/** Extension type of an instance of a registered class: the class name (a
 * str of 1..#INSTATE_MP_CLASS_NAME_MAX bytes) then the instance's table
 * (an array or a map), nothing else (docs/FORMAT.md). */
#define INSTATE_MP_EXT_CLASS 3
/** Longest class name, in bytes. */
#define INSTATE_MP_CLASS_NAME_MAX 255

/** Size of the message buffers of the writer and the parser. */
#define INSTATE_MP_ERRMAX 160

/** The kind of an #instate_mp_item. */
typedef enum instate_mp_type {
	INSTATE_MP_NIL,
	INSTATE_MP_BOOL,   /**< v.b */
	INSTATE_MP_UINT,   /**< positive fixint, uint8..uint64: v.u (a Lua integer) */
	INSTATE_MP_INT,    /**< negative fixint, int8..int64: v.i (a Lua integer; the writer
	                        uses these forms for values < 0 only, other writers may not) */
	INSTATE_MP_FLOAT,  /**< float32, widened exactly: v.d (a Lua float) */
	INSTATE_MP_DOUBLE, /**< float64: v.d, its 64 bits as stored (a Lua float) */
	INSTATE_MP_STR,    /**< len bytes of text at data (not NUL-terminated) */
	INSTATE_MP_BIN,    /**< len bytes at data */
	INSTATE_MP_ARRAY,  /**< len elements follow */
	INSTATE_MP_MAP,    /**< len key/value pairs follow: 2 * len items, key first */
	INSTATE_MP_EXT     /**< extension type `ext`, len payload bytes at data;
	                        for a REF (ext #INSTATE_MP_EXT_REF) the parser
	                        also sets v.u to the table id it refers to; a
	                        class instance (#INSTATE_MP_EXT_CLASS) is one
	                        item, checked whole, its payload the class name
	                        (a str) then the instance's table */
} instate_mp_type;

/** One item: a scalar, the header of an array or map, or an extension.
 * `data` points into the parser's input: valid while that input is. */
typedef struct instate_mp_item {
	instate_mp_type type;
	int ext;                   /**< EXT: the extension type, -128..127 */
	uint32_t len;              /**< STR, BIN, EXT: bytes; ARRAY: elements; MAP: pairs */
	const unsigned char *data; /**< STR, BIN, EXT: the bytes */
	union {
		int b;
		uint64_t u;
		int64_t i;
		double d;
	} v;
} instate_mp_item;

/** @name Writer @{ */

/**
 * A MessagePack writer appending one value to an #instate_buf. Fields are
 * the writer's; read `tables` (arrays and maps written so far: the next one
 * gets that number as its id, the top-level table 0) and nothing else.
 *
 * Errors are sticky, as in mpack: after the first failed call every later
 * one returns the same code and writes nothing, so a sequence of writes
 * may be checked once, at instate_mp_writer_finish().
 */
typedef struct instate_mp_writer {
	instate_buf *buf;
	size_t start;               /**< buf->len at init: where the value begins */
	uint64_t tables;            /**< arrays and maps begun */
	uint64_t refs;              /**< references written */
	unsigned depth;             /**< open arrays and maps */
	int written;                /**< an item was written */
	int err;                    /**< first error, or 0 */
	uint64_t left[INSTATE_MP_MAX_DEPTH + 1]; /**< items still due per open table */
	unsigned char ismap[INSTATE_MP_MAX_DEPTH + 1];
	char errmsg[INSTATE_MP_ERRMAX];
} instate_mp_writer;

/**
 * @brief Start writing a value at the end of `buf` (its bytes so far are
 * kept: the value begins at buf->len).
 * @param[in] buf the buffer, owned by the caller, which frees it with
 *   instate_buf_free() when done with the bytes. The writer keeps the
 *   pointer: buf must outlive it.
 */
INSTATE_API void instate_mp_writer_init(instate_mp_writer *w, instate_buf *buf);

/** @brief Write nil (not as a map key). @return 0, #INSTATE_INVALID or the sticky error. */
INSTATE_API int instate_mp_write_nil(instate_mp_writer *w);
/** @brief Write a boolean (b nonzero: true). */
INSTATE_API int instate_mp_write_bool(instate_mp_writer *w, int b);
/** @brief Write an integer in its shortest form (a Lua integer). */
INSTATE_API int instate_mp_write_int(instate_mp_writer *w, int64_t v);
/** @brief Write a non-negative integer in its shortest form; above 2^63-1
 * it reads in Lua as the integer of the same 64 bits (negative). */
INSTATE_API int instate_mp_write_uint(instate_mp_writer *w, uint64_t v);
/** @brief Write a float (a Lua float, never an integer): float32 when that
 * is bit-exact, else float64, so every bit survives (-0.0, NaN payloads).
 * A NaN is refused as a map key. */
INSTATE_API int instate_mp_write_double(instate_mp_writer *w, double d);
/**
 * @brief Write text: a MessagePack str of len bytes, which must be valid
 * UTF-8 (strict: no overlong forms, surrogates, or code points above
 * U+10FFFF; NUL bytes are fine), as the Lua encoder writes its valid UTF-8
 * strings. @return 0, #INSTATE_INVALID (not valid UTF-8: use
 * instate_mp_write_bin() or instate_mp_write_string()), #INSTATE_LIMIT (len
 * 2^32 or more), ENOMEM or the sticky error.
 */
INSTATE_API int instate_mp_write_str(instate_mp_writer *w, const char *s, size_t len);
/** @brief Write bytes as a MessagePack bin (a Lua string). @return as instate_mp_write_str(). */
INSTATE_API int instate_mp_write_bin(instate_mp_writer *w, const void *p, size_t len);
/** @brief Write a Lua string as instate.encode does: a str if it is valid
 * UTF-8, else a bin. @return as instate_mp_write_str(), never for bad UTF-8. */
INSTATE_API int instate_mp_write_string(instate_mp_writer *w, const void *p, size_t len);
/**
 * @brief Begin an array of n elements: the next n items (each a whole
 * value) are its elements, index 1 to n in Lua. An array of 0 elements is
 * an empty table, as is a map of 0 pairs (which is what Lua writes).
 * @return 0, #INSTATE_INVALID (nested deeper than #INSTATE_MP_MAX_DEPTH),
 *   ENOMEM or the sticky error. The table's id is `tables` before the call.
 */
INSTATE_API int instate_mp_write_array(instate_mp_writer *w, uint32_t n);
/** @brief Begin a map of n pairs: the next 2n values are key, value, key,
 * value... A key may be anything but nil or NaN (#INSTATE_INVALID); a
 * float key with an integral value is an integer key in Lua. @return as
 * instate_mp_write_array(). */
INSTATE_API int instate_mp_write_map(instate_mp_writer *w, uint32_t n);
/**
 * @brief Write a reference to the table with id `id`, one begun earlier in
 * this value (0 is the first array or map written, the top-level table):
 * Lua decodes it to that same table, so values can share tables and hold
 * cycles. The value is then wrapped in a GRAPH extension by
 * instate_mp_writer_finish(), as docs/FORMAT.md says.
 * @return 0, #INSTATE_INVALID (no table `id` begun yet, or as a nil key),
 *   ENOMEM or the sticky error.
 */
INSTATE_API int instate_mp_write_ref(instate_mp_writer *w, uint64_t id);
/**
 * @brief Write an extension of another type (not 1 or 2, which are
 * instate's: #INSTATE_INVALID). instate.decode refuses extension types it
 * does not know: this is for values other MessagePack readers share.
 * @return as instate_mp_write_str().
 */
INSTATE_API int instate_mp_write_ext(instate_mp_writer *w, int8_t type, const void *p,
                                     size_t len);
/**
 * @brief End the value: check it is complete (every array and map given
 * all its items), and wrap it in a GRAPH if it holds a reference.
 * @return 0 (the value is buf->data[start .. buf->len)), #INSTATE_INVALID
 *   (nothing written, or an array or map still open: the message says how
 *   many items are missing), ENOMEM, #INSTATE_LIMIT (a value with
 *   references of 4 GiB or more) or the first error of any earlier call. On
 *   error buf->len is back at `start`: nothing half-written stays.
 */
INSTATE_API int instate_mp_writer_finish(instate_mp_writer *w);
/**
 * @brief The writer's first error as text, naming what was wrong and where
 * ("nil map key at byte 7 (depth 1)"), or "" with none.
 * @return a string valid until the writer is changed or goes away.
 */
INSTATE_API const char *instate_mp_writer_error(const instate_mp_writer *w);
/** @} */

/** @name Parser @{ */

/**
 * A pull parser over one encoded value: instate_mp_parser_next() returns
 * its items in order, depth first (an array's or map's header, then its
 * elements). Fields are the parser's; read only these:
 *  - `pos`: the offset of the next item; `item_off` that of the last one
 *    returned; `item_depth` the arrays and maps around it (0 at the top);
 *    `item_key` nonzero when it is a map key;
 *  - `tables`: arrays and maps begun, so the last one returned has id
 *    tables - 1, the id a later REF to it carries;
 *  - `graph`: the value is wrapped in a GRAPH (it holds references).
 */
typedef struct instate_mp_parser {
	const unsigned char *data;
	size_t len;
	size_t pos;
	size_t item_off;
	unsigned item_depth;
	int item_key;
	uint64_t tables;
	int graph;
	size_t graph_off;
	uint64_t refs;
	unsigned depth;             /**< open arrays and maps */
	int state;                  /**< internal: how far the value is read */
	int err;
	size_t err_off;
	uint64_t left[INSTATE_MP_MAX_DEPTH + 1];
	unsigned char ismap[INSTATE_MP_MAX_DEPTH + 1];
	char errmsg[INSTATE_MP_ERRMAX];
} instate_mp_parser;

/**
 * @brief Start parsing the value in data[0 .. len).
 * @param[in] data the bytes, e.g. from instate_get(); not copied: they must
 *   stay valid and unchanged while the parser and its items are used.
 */
INSTATE_API void instate_mp_parser_init(instate_mp_parser *p, const void *data, size_t len);

/**
 * @brief Read the next item.
 *
 * Every byte is treated as hostile: each length is checked against the
 * bytes left before it is returned (a str, bin or ext must be there in
 * full; an array of n elements needs n more bytes, a map of n pairs 2n), so
 * a caller may allocate for `len` as it is; nesting is limited to
 * #INSTATE_MP_MAX_DEPTH; a nil or NaN map key, a REF outside a GRAPH or to a
 * table not begun, a GRAPH not around the whole value or without a REF, the
 * byte 0xc1 and bytes after the value are corrupt. Extension types other
 * than 1 and 2 are returned as they are (instate.decode refuses them).
 *
 * @param[out] it the item.
 * @return 0; #INSTATE_NOTFOUND when the value has been read whole (the call
 *   after its last item, which also checks that nothing trails it: call
 *   until this comes to know the input is sound); #INSTATE_CORRUPT with
 *   the message and byte offset from instate_mp_parser_error(). Errors are
 *   sticky: later calls return the same.
 */
INSTATE_API int instate_mp_parser_next(instate_mp_parser *p, instate_mp_item *it);

/**
 * @brief Skip the elements of the array or map that the last
 * instate_mp_parser_next() returned, checking them as it would (nothing
 * for any other item): the next item is the one after that table.
 * @return 0, #INSTATE_CORRUPT or the sticky error.
 */
INSTATE_API int instate_mp_parser_skip(instate_mp_parser *p);

/**
 * @brief The parser's error: "corrupt MessagePack at byte N: <what>", the
 * text instate.decode gives for the same bytes, or "" with none.
 * @param[out] offset N, the byte at fault counting from 0 (may be NULL).
 * @return a string valid while the parser is.
 */
INSTATE_API const char *instate_mp_parser_error(const instate_mp_parser *p, size_t *offset);
/** @} */
/** @} */

#ifdef __cplusplus
}
#endif
#endif /* INSTATE_H */
