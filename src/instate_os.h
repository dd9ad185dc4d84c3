/*
 * instate_os.h - the portability layer: the one place the core calls the
 * operating system (instate_os.c). Not installed.
 *
 * POSIX (Linux/glibc, tested; macOS and the BSDs by construction) and
 * Windows (mingw-w64; Windows 8 or later, for GetSystemTimePreciseAsFileTime;
 * UTF-16 file calls). docs/DESIGN.md (Portability) lists what each system
 * gets and what is untested.
 *
 * Conventions, as in the rest of the core: every function returning int
 * returns 0 or a positive errno (Windows errors are translated to the
 * nearest errno); none sets errno for the caller to read. Paths are UTF-8
 * strings; on Windows every file call converts them to UTF-16 and calls
 * the wide API, so a non-ASCII user name in a path works. The POSIX side
 * calls the libc functions by name (open, openat, write, fsync, rename,
 * ftruncate, mkstemp...), so an LD_PRELOADed interposer such as the fault
 * shim (spec/fault/shim.c) sees every call the core makes.
 */
#ifndef INSTATE_OS_H
#define INSTATE_OS_H

#include <stddef.h>
#include <stdint.h>

#ifdef _WIN32
/* No <windows.h> here: the lock types have the layout of SRWLOCK,
 * CONDITION_VARIABLE and INIT_ONCE (one pointer each; instate_os.c
 * checks the sizes), so the core's headers stay free of it. */
typedef struct instate_os_mutex { void *p; } instate_os_mutex;
typedef struct instate_os_cond { void *p; } instate_os_cond;
typedef struct instate_os_rwlock { void *p; } instate_os_rwlock;
typedef struct instate_os_once { void *p; } instate_os_once;
typedef unsigned long instate_os_thread; /* a thread id (DWORD) */
typedef void *instate_os_thread_handle;  /* a thread to join (HANDLE) */
#define INSTATE_OS_MUTEX_INIT {0}
#define INSTATE_OS_ONCE_INIT {0}
/* A file handle: LMDB's mdb_filehandle_t (HANDLE) on each system. */
typedef void *instate_os_fd;
#define INSTATE_OS_NOFD ((void *)(intptr_t)-1) /* INVALID_HANDLE_VALUE */
#else
#include <pthread.h>
typedef pthread_mutex_t instate_os_mutex;
typedef pthread_cond_t instate_os_cond;
typedef pthread_once_t instate_os_once;
typedef pthread_t instate_os_thread;
typedef pthread_t instate_os_thread_handle;
#define INSTATE_OS_MUTEX_INIT PTHREAD_MUTEX_INITIALIZER
#define INSTATE_OS_ONCE_INIT PTHREAD_ONCE_INIT
/* glibc has a writer-preferring pthread rwlock; elsewhere (macOS, musl,
 * the BSDs) a mutex and two condition variables give the same rule.
 * -DINSTATE_OS_RWLOCK_PORTABLE forces the latter on glibc (to test it). */
#if defined(__GLIBC__) && !defined(INSTATE_OS_RWLOCK_PORTABLE)
#define INSTATE_OS_RWLOCK_PTHREAD 1
typedef pthread_rwlock_t instate_os_rwlock;
#else
typedef struct instate_os_rwlock {
	pthread_mutex_t mu;
	pthread_cond_t readers_cv, writers_cv;
	unsigned readers;        /* holding it shared */
	unsigned writers_waiting;
	int writer;              /* holding it exclusively */
} instate_os_rwlock;
#endif
typedef int instate_os_fd;
#define INSTATE_OS_NOFD (-1)
#endif

/* ===================================================================== */
/* Clock, memory pages, threads                                          */

/** @brief The wall clock: milliseconds since 1970-01-01 UTC.
 *
 * clock_gettime(CLOCK_REALTIME) on POSIX, GetSystemTimePreciseAsFileTime
 * on Windows. Not monotonic: it is what record expiry is measured in.
 * @return the time in ms (0 if the system has no clock).
 */
int64_t instate__os_clock_ms(void);

/** @brief The size of a virtual memory page in bytes (sysconf(_SC_PAGESIZE)
 * on POSIX, GetSystemInfo's dwPageSize on Windows); 4096 if unknown. */
size_t instate__os_page_size(void);

/** @brief The map size a store starts with unless map_size says otherwise.
 *
 * 64 MiB on POSIX, where LMDB's file grows with its data whatever the map.
 * 1 MiB on Windows, where LMDB 0.9 makes data.mdb as large as the map when
 * it maps it (NtCreateSection): the map starts small and grows by the core's
 * map growth (doubling up to max_size), so the file stays near the data's
 * size. An explicit map_size is honoured on both (and is then the file's
 * size on Windows from the first open). */
uint64_t instate__os_default_map_size(void);

/** @brief Give the processor to another thread (sched_yield / SwitchToThread). */
void instate__os_yield(void);

/** @brief The calling thread's id, to compare with instate__os_thread_equal(). */
instate_os_thread instate__os_thread_self(void);
int instate__os_thread_equal(instate_os_thread a, instate_os_thread b);

/** @brief Run fn exactly once per `once` (pthread_once / InitOnceExecuteOnce);
 * every caller returns after it has run. */
void instate__os_once(instate_os_once *once, void (*fn)(void));

/* ===================================================================== */
/* Locks                                                                 */
/*
 * Mutexes and condition variables: pthread on POSIX; SRWLOCK (exclusive)
 * and CONDITION_VARIABLE on Windows. None of them is recursive. init
 * cannot fail on Windows; on POSIX it returns pthread's error.
 * A mutex with static storage may instead be initialised with
 * INSTATE_OS_MUTEX_INIT (and is then never destroyed).
 */
int instate__os_mutex_init(instate_os_mutex *m);
void instate__os_mutex_destroy(instate_os_mutex *m);
#ifdef _WIN32
void instate__os_mutex_lock(instate_os_mutex *m);
void instate__os_mutex_unlock(instate_os_mutex *m);
#else
/* Inline: taken around every call that touches the map. */
static inline void instate__os_mutex_lock(instate_os_mutex *m) { pthread_mutex_lock(m); }
static inline void instate__os_mutex_unlock(instate_os_mutex *m) { pthread_mutex_unlock(m); }
#endif
int instate__os_cond_init(instate_os_cond *c);
void instate__os_cond_destroy(instate_os_cond *c);
/** @brief Atomically release m and wait for a signal; m is held again on
 * return (a spurious wakeup is possible: wait in a loop). */
void instate__os_cond_wait(instate_os_cond *c, instate_os_mutex *m);
void instate__os_cond_signal(instate_os_cond *c);
/** @brief Wake every thread waiting on c. */
void instate__os_cond_broadcast(instate_os_cond *c);

/**
 * @brief Start a thread running fn(arg) (pthread_create; _beginthreadex on
 * Windows, so the C runtime is set up for it).
 * @param[out] h the thread, for instate__os_thread_join(), which must be
 *   called exactly once.
 * @return 0 or an errno (EAGAIN, ENOMEM).
 */
int instate__os_thread_start(instate_os_thread_handle *h, void (*fn)(void *), void *arg);
/** @brief Wait for the thread to return and release it. */
void instate__os_thread_join(instate_os_thread_handle h);

/*
 * A reader-writer lock that prefers writers: once a thread waits to take
 * it exclusively, new shared takers wait behind it, so a stream of readers
 * cannot starve growth. Therefore no thread may take it shared twice (the
 * second would wait behind a waiting writer that waits for the first).
 * glibc: pthread_rwlock with PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP;
 * other POSIX systems: a mutex and two condition variables; Windows:
 * SRWLOCK (which queues shared takers behind a waiting exclusive one).
 * A shared hold ends with rdunlock, an exclusive one with wrunlock (Windows
 * releases the two differently).
 */
int instate__os_rwlock_init(instate_os_rwlock *l);
void instate__os_rwlock_destroy(instate_os_rwlock *l);
#ifdef INSTATE_OS_RWLOCK_PTHREAD
static inline void instate__os_rwlock_rdlock(instate_os_rwlock *l) { pthread_rwlock_rdlock(l); }
static inline void instate__os_rwlock_wrlock(instate_os_rwlock *l) { pthread_rwlock_wrlock(l); }
static inline void instate__os_rwlock_rdunlock(instate_os_rwlock *l) { pthread_rwlock_unlock(l); }
static inline void instate__os_rwlock_wrunlock(instate_os_rwlock *l) { pthread_rwlock_unlock(l); }
#else
void instate__os_rwlock_rdlock(instate_os_rwlock *l);
void instate__os_rwlock_wrlock(instate_os_rwlock *l);
void instate__os_rwlock_rdunlock(instate_os_rwlock *l);
void instate__os_rwlock_wrunlock(instate_os_rwlock *l);
#endif

/* ===================================================================== */
/* Files                                                                 */

/** The identity of a file: the registry key of an environment and the
 * test of "the same file". POSIX: st_dev and st_ino. Windows: the volume
 * serial number and the 64-bit file index of GetFileInformationByHandle
 * (unique on a volume while the file exists; NTFS and ReFS keep it across
 * renames). Both zero: no identity (a file that does not exist). */
typedef struct instate_os_id {
	uint64_t dev;
	uint64_t ino;
} instate_os_id;

static inline int instate__os_id_equal(instate_os_id a, instate_os_id b)
{
	return a.dev == b.dev && a.ino == b.ino;
}

#define INSTATE_OS_REG 1
#define INSTATE_OS_DIR 2
#define INSTATE_OS_LNK 3   /* a symlink (Windows: any reparse point) */
#define INSTATE_OS_OTHER 4

#define INSTATE_OS_OWNER_SELF 0  /* the effective user (always on Windows) */
#define INSTATE_OS_OWNER_ROOT 1
#define INSTATE_OS_OWNER_OTHER 2

/** What the core looks at in a file's status (struct stat on POSIX;
 * BY_HANDLE_FILE_INFORMATION on Windows). */
typedef struct instate_os_stat {
	instate_os_id id;
	uint64_t size;      /* bytes */
	uint64_t allocated; /* bytes with disk blocks (st_blocks * 512); Windows: size */
	unsigned nlink;     /* hard links */
	unsigned mode;      /* permission bits (07777); Windows: 0 (no POSIX modes) */
	int type;           /* INSTATE_OS_REG, _DIR, _LNK or _OTHER */
	int owner;          /* INSTATE_OS_OWNER_*; Windows: SELF (not checked) */
} instate_os_stat;

#define INSTATE_OS_S_ISVTX 01000 /* the sticky bit in mode */

/** A directory the core keeps open: files are then named relative to it,
 * so the directory checked is the one used whatever its parents do. POSIX:
 * a descriptor (O_DIRECTORY), and openat and friends. Windows: a handle on
 * the directory that does not share delete (so it cannot be renamed or
 * removed while open) and its UTF-8 path, which names are joined to. */
typedef struct instate_os_dir {
#ifdef _WIN32
	void *h;
	char *path;
#else
	int fd;
#endif
} instate_os_dir;

/* Flags of instate__os_openat() and instate__os_dir_open(). */
#define INSTATE_OS_O_READ 0x0      /* read only */
#define INSTATE_OS_O_RDWR 0x1      /* read and write */
#define INSTATE_OS_O_CREATE 0x2    /* create if missing, with the mode given */
#define INSTATE_OS_O_NOFOLLOW 0x4  /* a symlink (reparse point) is ELOOP */
#define INSTATE_OS_O_NONBLOCK 0x8  /* O_NONBLOCK: a FIFO does not block the open */

/** @brief The last component of path: what follows its last separator
 * ('/'; '/' or '\\' on Windows), or path itself when it has none. */
const char *instate__os_path_base(const char *path);

/** @brief Create a directory (mkdir; CreateDirectoryW, the mode ignored).
 * @return 0, EEXIST if something exists at path, or another errno. */
int instate__os_mkdir(const char *path, unsigned mode);

/**
 * @brief Open a directory to keep (O_RDONLY | O_DIRECTORY | O_CLOEXEC).
 * @param[in] path the directory
 * @param[in] flags 0 or INSTATE_OS_O_NOFOLLOW (a symlink is ELOOP or ENOTDIR)
 * @param[out] d the directory, to close with instate__os_dir_close()
 * @return 0, ENOTDIR when path is not a directory, ELOOP, or another errno.
 */
int instate__os_dir_open(const char *path, int flags, instate_os_dir *d);

/** @brief Close a directory of instate__os_dir_open() (safe on an
 * invalidated one, see instate__os_dir_none()). */
void instate__os_dir_close(instate_os_dir *d);

/** @brief Mark d as holding nothing (instate__os_dir_valid() is then 0). */
void instate__os_dir_none(instate_os_dir *d);
int instate__os_dir_valid(const instate_os_dir *d);

/** @brief The status of an open directory (fstat). */
int instate__os_dir_stat(const instate_os_dir *d, instate_os_stat *st);

/** @brief The status of `name` in d, a symlink not followed
 * (fstatat(AT_SYMLINK_NOFOLLOW)). ENOENT when absent. */
int instate__os_statat(const instate_os_dir *d, const char *name, instate_os_stat *st);

/**
 * @brief Open (and with INSTATE_OS_O_CREATE create) `name` in d, close-on-exec
 * (openat; CreateFileW sharing read, write and delete, so LMDB, readers and
 * renames coexist with it).
 * @param[in] flags INSTATE_OS_O_*
 * @param[in] mode the permission bits of a created file (ignored on Windows)
 * @param[out] fd the file, to close with instate__os_close()
 * @return 0, ELOOP for a symlink with INSTATE_OS_O_NOFOLLOW, or an errno.
 */
int instate__os_openat(const instate_os_dir *d, const char *name, int flags, unsigned mode,
                       instate_os_fd *fd);

/** @brief Remove `name` from d (unlinkat; DeleteFileW). */
int instate__os_unlinkat(const instate_os_dir *d, const char *name);

/**
 * @brief The path LMDB is to open for the store kept in d (mdb_env_open
 * takes a path, not a descriptor), malloc'ed into *out.
 *
 * Linux: /proc/self/fd/N (plus "/" name when name is not NULL), once /proc
 * is checked to lead to d itself, so LMDB opens the directory checked.
 * Elsewhere (no /proc: macOS, the BSDs; Windows, where LMDB converts the
 * UTF-8 path to UTF-16 itself): `given`, the store's path as the caller
 * gave it.
 * @return 0 or ENOMEM.
 */
int instate__os_dir_lmdb_path(const instate_os_dir *d, const char *name, const char *given,
                              char **out);

/**
 * @brief Call fn for every entry of directory `path` but "." and "..",
 * with the directory itself for instate__os_statat/openat/unlinkat
 * (opendir/readdir; FindFirstFileW, names converted to UTF-8). Best effort:
 * a directory that cannot be read calls nothing.
 */
void instate__os_dir_scan(const char *path, void (*fn)(void *ud, const instate_os_dir *d,
                                                       const char *name), void *ud);

/** @brief The status of path, symlinks followed (stat), or not (lstat).
 * ENOENT when absent. */
int instate__os_stat(const char *path, instate_os_stat *st);
int instate__os_lstat(const char *path, instate_os_stat *st);

/** @brief The status of an open file (fstat; GetFileInformationByHandle). */
int instate__os_fstat(instate_os_fd fd, instate_os_stat *st);

/** @brief Open a file to read (open(O_RDONLY); Windows shares read, write
 * and delete, so a dump may replace it meanwhile). ENOENT when absent. */
int instate__os_open_read(const char *path, instate_os_fd *fd);

/** @brief Close a file. The error of close(2) (a write-back failure on
 * some filesystems) is returned; the descriptor is gone either way. */
int instate__os_close(instate_os_fd fd);

/** @brief A second descriptor of the same open file, close-on-exec
 * (F_DUPFD_CLOEXEC; DuplicateHandle): a lock of instate__os_trylock()
 * stays held while either is open. */
int instate__os_dup(instate_os_fd fd, instate_os_fd *out);

/** @brief Read up to n bytes at the file position; *got 0 at the end.
 * EINTR is retried. */
int instate__os_read(instate_os_fd fd, void *buf, size_t n, size_t *got);

/** @brief Read up to n bytes at offset off (pread; on Windows the file
 * position moves too). */
int instate__os_pread(instate_os_fd fd, void *buf, size_t n, uint64_t off, size_t *got);

/** @brief Write all n bytes at the file position (write, EINTR retried,
 * short writes continued). */
int instate__os_write_all(instate_os_fd fd, const void *buf, size_t n);

/** @brief Cut the file to `size` bytes (ftruncate; SetEndOfFile). */
int instate__os_truncate(instate_os_fd fd, uint64_t size);

/** @brief Move the file position to the start (lseek; SetFilePointerEx). */
int instate__os_rewind(instate_os_fd fd);

/**
 * @brief Make the file's data and size durable.
 *
 * Linux and the other POSIX systems: fsync. Apple: fcntl(F_FULLFSYNC),
 * which also empties the drive's cache (fsync does not on macOS), falling
 * back to fsync where the filesystem refuses it. Windows: FlushFileBuffers.
 */
int instate__os_sync(instate_os_fd fd);

/**
 * @brief Make the entries of the directory holding `path` durable (a
 * rename or a creation in it), after instate__os_rename().
 *
 * POSIX: open the directory and fsync it (EINVAL, from filesystems that
 * cannot sync a directory, is success). Windows: nothing to do and 0:
 * NTFS journals the rename itself and MoveFileExW's
 * MOVEFILE_WRITE_THROUGH returns once it is on disk; a directory cannot
 * be flushed there.
 */
int instate__os_sync_dir_of(const char *path);

/**
 * @brief Put `from` in place of `to` in one step: `to` is the old file or
 * the new one, never missing (rename; MoveFileExW with
 * MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH, which fails with
 * EACCES while another program holds `to` open without sharing delete).
 */
int instate__os_rename(const char *from, const char *to);

/** @brief Remove a file (unlink; DeleteFileW: a file still open elsewhere
 * with delete sharing goes when its last handle closes). */
int instate__os_unlink(const char *path);

/**
 * @brief Create a new file from a template ending in six X, replaced by
 * letters and digits (mkstemp, mode 0600, then close-on-exec; Windows:
 * random names created with CREATE_NEW until one is free, sharing read,
 * write and delete so that it can be renamed while open).
 * @param[in,out] tmpl the template, the name made on return
 * @param[out] fd the file, open for reading and writing
 */
int instate__os_temp_create(char *tmpl, instate_os_fd *fd);

/**
 * @brief Take an exclusive advisory lock on the whole file without waiting
 * (flock(LOCK_EX | LOCK_NB); Windows: LockFileEx on one byte far past any
 * data, LOCKFILE_FAIL_IMMEDIATELY, which other processes' reads and writes
 * do not meet). Released when the last descriptor of the open file closes.
 * @return 0 when taken, -1 when another open file holds it, or an errno
 * (a filesystem without such locks: ENOLCK, EOPNOTSUPP...).
 */
int instate__os_trylock(instate_os_fd fd);

/**
 * @brief Whether no process holds a lock on byte 0 of the file (LMDB keeps
 * a shared one there per open environment, on POSIX), asked without taking
 * one (fcntl(F_GETLK)). Windows: always 0 ("maybe held": LMDB there locks
 * the lock file otherwise, and the only use, preallocation, does not apply).
 */
int instate__os_unlocked_byte0(instate_os_fd fd);

/**
 * @brief Give the first `size` bytes of the file disk blocks (the file
 * grows to size if smaller). alone: no other process uses the file, so
 * glibc's emulation (writing a zero per block) is safe; otherwise only the
 * real call is used (Linux fallocate), and nothing where there is none.
 *
 * Linux: posix_fallocate alone, fallocate(2) otherwise. Other POSIX:
 * posix_fallocate alone, nothing otherwise. Apple (no posix_fallocate)
 * and Windows (NTFS files are not sparse unless asked; LMDB sets the
 * lock file's size with SetEndOfFile): nothing.
 * @return 0 (also when the filesystem cannot preallocate: EOPNOTSUPP,
 * EINVAL, ENOSYS), ENOSPC, or another errno.
 */
int instate__os_preallocate(instate_os_fd fd, uint64_t size, int alone);

/**
 * @brief Bytes free for this user on the filesystem holding fd, or
 * UINT64_MAX when unknown (fstatvfs: f_bavail, f_bfree for root; Windows:
 * GetDiskFreeSpaceExW of the file's directory).
 */
uint64_t instate__os_free_bytes(instate_os_fd fd);

/**
 * @brief An error LMDB returned, as an errno. POSIX: rc itself. Windows:
 * LMDB returns GetLastError() codes for its file and map calls and errnos
 * for the rest (ENOMEM, EINVAL, EACCES, EIO...); the Windows codes that
 * share no number with an errno produced on Windows (a full disk, sharing
 * and lock violations, write protection, memory, existing files, and every
 * code above 140) are translated, the others pass as the errno of their
 * number. Safe on a value that is already an errno of the core.
 */
int instate__os_lmdb_errno(int rc);

/* ===================================================================== */
/* Processes                                                             */

/** @brief This process's id (getpid; GetCurrentProcessId). */
uint64_t instate__os_getpid(void);

/** @brief Whether a process with this id exists (kill(pid, 0), EPERM
 * counting as alive; OpenProcess and a zero wait on Windows). 0 for pid 0.
 * An id may be reused after its process dies: a hint, never a proof. */
int instate__os_pid_alive(uint64_t pid);

/** @brief Sleep for ms milliseconds (nanosleep, EINTR resumed; Sleep). */
void instate__os_sleep_ms(unsigned ms);

#endif /* INSTATE_OS_H */
