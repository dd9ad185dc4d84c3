/*
 * instate_os.c - the portability layer (instate_os.h): every call the core
 * makes to the operating system. POSIX first, then Windows.
 *
 * POSIX: the libc functions are called by name, never through syscall() or
 * a cached pointer, so an LD_PRELOADed interposer (the fault shim) sees the
 * same calls it did before this layer existed, one for one.
 */
#ifndef _WIN32
#define _GNU_SOURCE /* pthread_rwlockattr_setkind_np, fallocate, flock */
#endif
#include "instate_os.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

const char *instate__os_path_base(const char *path)
{
	const char *slash = strrchr(path, '/');
#ifdef _WIN32
	const char *bs = strrchr(path, '\\');
	if (bs && (!slash || bs > slash))
		slash = bs;
#endif
	return slash ? slash + 1 : path;
}

#define DEFAULT_MAP_POSIX ((uint64_t)64 << 20)
#define DEFAULT_MAP_WINDOWS ((uint64_t)1 << 20)

#ifndef _WIN32
/* ===================================================================== */
/* POSIX                                                                  */

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#ifndef O_CLOEXEC
#define O_CLOEXEC 0 /* set with FD_CLOEXEC after the open instead */
#endif
#ifndef O_NOFOLLOW
#define O_NOFOLLOW 0 /* the type is checked after the open instead */
#endif
#ifndef O_DIRECTORY
#define O_DIRECTORY 0
#endif

int64_t instate__os_clock_ms(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
		return 0;
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

size_t instate__os_page_size(void)
{
	long pg = sysconf(_SC_PAGESIZE);

	return pg > 0 ? (size_t)pg : 4096;
}

uint64_t instate__os_default_map_size(void)
{
	return DEFAULT_MAP_POSIX;
}

void instate__os_yield(void)
{
	sched_yield();
}

instate_os_thread instate__os_thread_self(void)
{
	return pthread_self();
}

int instate__os_thread_equal(instate_os_thread a, instate_os_thread b)
{
	return pthread_equal(a, b);
}

void instate__os_once(instate_os_once *once, void (*fn)(void))
{
	pthread_once(once, fn);
}

int instate__os_mutex_init(instate_os_mutex *m) { return pthread_mutex_init(m, NULL); }
void instate__os_mutex_destroy(instate_os_mutex *m) { pthread_mutex_destroy(m); }
int instate__os_cond_init(instate_os_cond *c) { return pthread_cond_init(c, NULL); }
void instate__os_cond_destroy(instate_os_cond *c) { pthread_cond_destroy(c); }
void instate__os_cond_wait(instate_os_cond *c, instate_os_mutex *m) { pthread_cond_wait(c, m); }
void instate__os_cond_signal(instate_os_cond *c) { pthread_cond_signal(c); }
void instate__os_cond_broadcast(instate_os_cond *c) { pthread_cond_broadcast(c); }

/* pthread's start routine returns a pointer; the core's threads return
 * nothing. */
struct thread_start { void (*fn)(void *); void *arg; };

static void *thread_main(void *p)
{
	struct thread_start ts = *(struct thread_start *)p;

	free(p);
	ts.fn(ts.arg);
	return NULL;
}

int instate__os_thread_start(instate_os_thread_handle *h, void (*fn)(void *), void *arg)
{
	struct thread_start *ts = malloc(sizeof *ts);
	int rc;

	if (!ts)
		return ENOMEM;
	ts->fn = fn;
	ts->arg = arg;
	rc = pthread_create(h, NULL, thread_main, ts);
	if (rc)
		free(ts);
	return rc;
}

void instate__os_thread_join(instate_os_thread_handle h)
{
	pthread_join(h, NULL);
}

#ifdef INSTATE_OS_RWLOCK_PTHREAD
int instate__os_rwlock_init(instate_os_rwlock *l)
{
	pthread_rwlockattr_t ra;
	int rc;

	if ((rc = pthread_rwlockattr_init(&ra)) != 0)
		return rc;
	/* glibc's default prefers readers: growth would starve behind them. */
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	rc = pthread_rwlock_init(l, &ra);
	pthread_rwlockattr_destroy(&ra);
	return rc;
}
void instate__os_rwlock_destroy(instate_os_rwlock *l) { pthread_rwlock_destroy(l); }
#else
/* POSIX leaves the preference of pthread_rwlock open (macOS documents
 * none), so the rule is built from a mutex and two condition variables:
 * a shared taker waits while a writer holds the lock or waits for it. */
int instate__os_rwlock_init(instate_os_rwlock *l)
{
	int rc;

	memset(l, 0, sizeof *l);
	if ((rc = pthread_mutex_init(&l->mu, NULL)) != 0)
		return rc;
	if ((rc = pthread_cond_init(&l->readers_cv, NULL)) != 0) {
		pthread_mutex_destroy(&l->mu);
		return rc;
	}
	if ((rc = pthread_cond_init(&l->writers_cv, NULL)) != 0) {
		pthread_cond_destroy(&l->readers_cv);
		pthread_mutex_destroy(&l->mu);
	}
	return rc;
}

void instate__os_rwlock_destroy(instate_os_rwlock *l)
{
	pthread_cond_destroy(&l->writers_cv);
	pthread_cond_destroy(&l->readers_cv);
	pthread_mutex_destroy(&l->mu);
}

void instate__os_rwlock_rdlock(instate_os_rwlock *l)
{
	pthread_mutex_lock(&l->mu);
	while (l->writer || l->writers_waiting)
		pthread_cond_wait(&l->readers_cv, &l->mu);
	l->readers++;
	pthread_mutex_unlock(&l->mu);
}

void instate__os_rwlock_wrlock(instate_os_rwlock *l)
{
	pthread_mutex_lock(&l->mu);
	l->writers_waiting++;
	while (l->writer || l->readers)
		pthread_cond_wait(&l->writers_cv, &l->mu);
	l->writers_waiting--;
	l->writer = 1;
	pthread_mutex_unlock(&l->mu);
}

void instate__os_rwlock_rdunlock(instate_os_rwlock *l)
{
	pthread_mutex_lock(&l->mu);
	if (--l->readers == 0 && l->writers_waiting)
		pthread_cond_signal(&l->writers_cv);
	pthread_mutex_unlock(&l->mu);
}

void instate__os_rwlock_wrunlock(instate_os_rwlock *l)
{
	pthread_mutex_lock(&l->mu);
	l->writer = 0;
	if (l->writers_waiting)
		pthread_cond_signal(&l->writers_cv);
	else
		pthread_cond_broadcast(&l->readers_cv);
	pthread_mutex_unlock(&l->mu);
}
#endif

/* ---- files ----------------------------------------------------------- */

static void from_stat(const struct stat *s, instate_os_stat *st)
{
	uid_t me = geteuid();

	st->id.dev = (uint64_t)s->st_dev;
	st->id.ino = (uint64_t)s->st_ino;
	st->size = s->st_size > 0 ? (uint64_t)s->st_size : 0;
	st->allocated = s->st_blocks > 0 ? (uint64_t)s->st_blocks * 512 : 0;
	st->nlink = (unsigned)s->st_nlink;
	st->mode = (unsigned)(s->st_mode & 07777);
	st->type = S_ISREG(s->st_mode) ? INSTATE_OS_REG
	         : S_ISDIR(s->st_mode) ? INSTATE_OS_DIR
	         : S_ISLNK(s->st_mode) ? INSTATE_OS_LNK : INSTATE_OS_OTHER;
	st->owner = s->st_uid == me ? INSTATE_OS_OWNER_SELF
	          : s->st_uid == 0 ? INSTATE_OS_OWNER_ROOT : INSTATE_OS_OWNER_OTHER;
}

/* Where O_CLOEXEC is missing, close-on-exec right after the open. */
static int cloexec(int fd)
{
	if (O_CLOEXEC == 0 && fd >= 0)
		(void)fcntl(fd, F_SETFD, FD_CLOEXEC);
	return fd;
}

int instate__os_mkdir(const char *path, unsigned mode)
{
	return mkdir(path, (mode_t)mode) == 0 ? 0 : errno;
}

int instate__os_dir_open(const char *path, int flags, instate_os_dir *d)
{
	int of = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
	struct stat s;
	int rc;

	if (flags & INSTATE_OS_O_NOFOLLOW)
		of |= O_NOFOLLOW;
	d->fd = cloexec(open(path, of));
	if (d->fd < 0)
		return errno;
	/* O_DIRECTORY and O_NOFOLLOW say it already where they exist. */
	if ((O_DIRECTORY == 0 || O_NOFOLLOW == 0) && fstat(d->fd, &s) == 0 && !S_ISDIR(s.st_mode)) {
		rc = ENOTDIR;
		close(d->fd);
		d->fd = -1;
		return rc;
	}
	return 0;
}

void instate__os_dir_close(instate_os_dir *d)
{
	if (d->fd >= 0)
		close(d->fd);
	d->fd = -1;
}

void instate__os_dir_none(instate_os_dir *d)
{
	d->fd = -1;
}

int instate__os_dir_valid(const instate_os_dir *d)
{
	return d->fd >= 0;
}

int instate__os_dir_stat(const instate_os_dir *d, instate_os_stat *st)
{
	struct stat s;

	if (fstat(d->fd, &s) != 0)
		return errno;
	from_stat(&s, st);
	return 0;
}

int instate__os_statat(const instate_os_dir *d, const char *name, instate_os_stat *st)
{
	struct stat s;

	if (fstatat(d->fd, name, &s, AT_SYMLINK_NOFOLLOW) != 0)
		return errno;
	from_stat(&s, st);
	return 0;
}

int instate__os_openat(const instate_os_dir *d, const char *name, int flags, unsigned mode,
                       instate_os_fd *fd)
{
	int of = O_CLOEXEC;
	struct stat s;

	of |= flags & INSTATE_OS_O_RDWR ? O_RDWR : O_RDONLY;
	if (flags & INSTATE_OS_O_CREATE)
		of |= O_CREAT;
	if (flags & INSTATE_OS_O_NOFOLLOW)
		of |= O_NOFOLLOW;
	if (flags & INSTATE_OS_O_NONBLOCK)
		of |= O_NONBLOCK;
	*fd = cloexec(openat(d->fd, name, of, (mode_t)mode));
	if (*fd < 0)
		return errno;
	/* Without O_NOFOLLOW a planted symlink is followed: refuse what it
	 * led to unless the name itself is the file opened. */
	if (O_NOFOLLOW == 0 && (flags & INSTATE_OS_O_NOFOLLOW) &&
	    fstatat(d->fd, name, &s, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(s.st_mode)) {
		close(*fd);
		*fd = -1;
		return ELOOP;
	}
	return 0;
}

int instate__os_unlinkat(const instate_os_dir *d, const char *name)
{
	return unlinkat(d->fd, name, 0) == 0 ? 0 : errno;
}

int instate__os_dir_lmdb_path(const instate_os_dir *d, const char *name, const char *given,
                              char **out)
{
	char proc[64];
	struct stat ps, ds;
	size_t n;

	/* LMDB opens the files by name: through our directory descriptor
	 * where /proc/self/fd leads back to it. */
	snprintf(proc, sizeof proc, "/proc/self/fd/%d", d->fd);
	if (stat(proc, &ps) != 0 || fstat(d->fd, &ds) != 0 || ps.st_ino != ds.st_ino ||
	    ps.st_dev != ds.st_dev) {
		*out = strdup(given); /* no /proc: the path as given (DESIGN.md) */
		return *out ? 0 : ENOMEM;
	}
	n = strlen(proc) + (name ? strlen(name) + 1 : 0) + 1;
	if (!(*out = malloc(n)))
		return ENOMEM;
	snprintf(*out, n, "%s%s%s", proc, name ? "/" : "", name ? name : "");
	return 0;
}

void instate__os_dir_scan(const char *path, void (*fn)(void *ud, const instate_os_dir *d,
                                                       const char *name), void *ud)
{
	DIR *dir = opendir(path);
	struct dirent *de;
	instate_os_dir d;

	if (!dir)
		return;
	d.fd = dirfd(dir);
	while ((de = readdir(dir)) != NULL) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		fn(ud, &d, de->d_name);
	}
	closedir(dir);
}

int instate__os_stat(const char *path, instate_os_stat *st)
{
	struct stat s;

	if (stat(path, &s) != 0)
		return errno;
	from_stat(&s, st);
	return 0;
}

int instate__os_lstat(const char *path, instate_os_stat *st)
{
	struct stat s;

	if (lstat(path, &s) != 0)
		return errno;
	from_stat(&s, st);
	return 0;
}

int instate__os_fstat(instate_os_fd fd, instate_os_stat *st)
{
	struct stat s;

	if (fstat(fd, &s) != 0)
		return errno;
	from_stat(&s, st);
	return 0;
}

int instate__os_open_read(const char *path, instate_os_fd *fd)
{
	*fd = cloexec(open(path, O_RDONLY | O_CLOEXEC));
	return *fd < 0 ? errno : 0;
}

int instate__os_close(instate_os_fd fd)
{
	return close(fd) == 0 ? 0 : errno;
}

int instate__os_dup(instate_os_fd fd, instate_os_fd *out)
{
#ifdef F_DUPFD_CLOEXEC
	*out = fcntl(fd, F_DUPFD_CLOEXEC, 0);
#else
	*out = cloexec(dup(fd));
#endif
	return *out < 0 ? errno : 0;
}

int instate__os_read(instate_os_fd fd, void *buf, size_t n, size_t *got)
{
	ssize_t k;

	do
		k = read(fd, buf, n);
	while (k < 0 && errno == EINTR);
	*got = k > 0 ? (size_t)k : 0;
	return k < 0 ? errno : 0;
}

int instate__os_pread(instate_os_fd fd, void *buf, size_t n, uint64_t off, size_t *got)
{
	ssize_t k;

	do
		k = pread(fd, buf, n, (off_t)off);
	while (k < 0 && errno == EINTR);
	*got = k > 0 ? (size_t)k : 0;
	return k < 0 ? errno : 0;
}

int instate__os_write_all(instate_os_fd fd, const void *buf, size_t n)
{
	const char *p = buf;

	while (n) {
		ssize_t k = write(fd, p, n);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return errno;
		}
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

int instate__os_truncate(instate_os_fd fd, uint64_t size)
{
	return ftruncate(fd, (off_t)size) == 0 ? 0 : errno;
}

int instate__os_rewind(instate_os_fd fd)
{
	return lseek(fd, 0, SEEK_SET) == 0 ? 0 : errno;
}

int instate__os_sync(instate_os_fd fd)
{
#if defined(__APPLE__) && defined(F_FULLFSYNC)
	/* fsync on macOS leaves the data in the drive's cache. */
	if (fcntl(fd, F_FULLFSYNC) == 0)
		return 0;
#endif
	return fsync(fd) == 0 ? 0 : errno;
}

int instate__os_sync_dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir;
	int fd, rc = 0;

	if (!slash)
		dir = strdup(".");
	else if (slash == path)
		dir = strdup("/");
	else if ((dir = malloc((size_t)(slash - path) + 1)) != NULL) {
		memcpy(dir, path, (size_t)(slash - path));
		dir[slash - path] = '\0';
	}
	if (!dir)
		return ENOMEM;
	fd = open(dir, O_RDONLY);
	if (fd < 0)
		rc = errno;
	else {
		/* Some filesystems cannot sync a directory: nothing to wait for. */
		if (fsync(fd) != 0 && errno != EINVAL)
			rc = errno;
		close(fd);
	}
	free(dir);
	return rc;
}

int instate__os_rename(const char *from, const char *to)
{
	return rename(from, to) == 0 ? 0 : errno;
}

int instate__os_unlink(const char *path)
{
	return unlink(path) == 0 ? 0 : errno;
}

int instate__os_temp_create(char *tmpl, instate_os_fd *fd)
{
	if ((*fd = mkstemp(tmpl)) < 0)
		return errno;
	(void)fcntl(*fd, F_SETFD, FD_CLOEXEC);
	return 0;
}

int instate__os_trylock(instate_os_fd fd)
{
	if (flock(fd, LOCK_EX | LOCK_NB) == 0)
		return 0;
	return errno == EWOULDBLOCK || errno == EINTR ? -1 : errno;
}

int instate__os_unlocked_byte0(instate_os_fd fd)
{
	struct flock fl;

	memset(&fl, 0, sizeof fl);
	fl.l_type = F_WRLCK;
	fl.l_whence = SEEK_SET;
	fl.l_len = 1;
	return fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type == F_UNLCK;
}

int instate__os_preallocate(instate_os_fd fd, uint64_t size, int alone)
{
	int rc = 0;

#if defined(__APPLE__)
	/* No posix_fallocate; F_PREALLOCATE is untested here: as LMDB alone. */
	(void)fd; (void)size; (void)alone;
#else
	if (alone)
		rc = posix_fallocate(fd, 0, (off_t)size);
#ifdef __linux__
	else
		rc = fallocate(fd, 0, 0, (off_t)size) == 0 ? 0 : errno;
#endif
#endif
	if (rc == EOPNOTSUPP || rc == EINVAL || rc == ENOSYS)
		rc = 0; /* no way to preallocate here: as LMDB alone */
	return rc;
}

uint64_t instate__os_free_bytes(instate_os_fd fd)
{
	struct statvfs sv;

	if (fstatvfs(fd, &sv) != 0)
		return UINT64_MAX;
	return (uint64_t)(geteuid() == 0 ? sv.f_bfree : sv.f_bavail) * sv.f_frsize;
}

int instate__os_lmdb_errno(int rc)
{
	return rc;
}

/* ---- processes (the owner lock) ---------------------------------------- */

uint64_t instate__os_getpid(void)
{
	return (uint64_t)getpid();
}

int instate__os_pid_alive(uint64_t pid)
{
	if (pid == 0 || pid > (uint64_t)INT32_MAX)
		return 0;
	/* EPERM: it exists, owned by another user */
	return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

void instate__os_sleep_ms(unsigned ms)
{
	struct timespec ts;

	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (long)(ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

#else /* _WIN32 */
/* ===================================================================== */
/* Windows                                                                */

#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
#include <process.h> /* _beginthreadex */

/* The lock types of instate_os.h stand for these. */
typedef char instate__os_check_srw[sizeof(instate_os_mutex) == sizeof(SRWLOCK) ? 1 : -1];
typedef char instate__os_check_cv[sizeof(instate_os_cond) == sizeof(CONDITION_VARIABLE) ? 1 : -1];
typedef char instate__os_check_once[sizeof(instate_os_once) == sizeof(INIT_ONCE) ? 1 : -1];

/* The errno nearest a Windows error. */
static int win_errno(DWORD e)
{
	switch (e) {
	case ERROR_FILE_NOT_FOUND: case ERROR_PATH_NOT_FOUND: case ERROR_INVALID_NAME:
	case ERROR_INVALID_DRIVE: case ERROR_BAD_NETPATH: case ERROR_BAD_PATHNAME:
		return ENOENT;
	case ERROR_ACCESS_DENIED: case ERROR_SHARING_VIOLATION: case ERROR_LOCK_VIOLATION:
	case ERROR_CURRENT_DIRECTORY: case ERROR_NETWORK_ACCESS_DENIED:
		return EACCES;
	case ERROR_FILE_EXISTS: case ERROR_ALREADY_EXISTS:
		return EEXIST;
	case ERROR_DISK_FULL: case ERROR_HANDLE_DISK_FULL:
		return ENOSPC;
	case ERROR_NOT_ENOUGH_MEMORY: case ERROR_OUTOFMEMORY: case ERROR_COMMITMENT_LIMIT:
		return ENOMEM;
	case ERROR_WRITE_PROTECT:
		return EROFS;
	case ERROR_DIRECTORY:
		return ENOTDIR;
	case ERROR_FILENAME_EXCED_RANGE:
		return ENAMETOOLONG;
	case ERROR_INVALID_PARAMETER: case ERROR_INVALID_HANDLE: case ERROR_NEGATIVE_SEEK:
		return EINVAL;
	case ERROR_NOT_SUPPORTED: case ERROR_INVALID_FUNCTION:
		return EOPNOTSUPP;
	case ERROR_DIR_NOT_EMPTY:
		return ENOTEMPTY;
	case ERROR_USER_MAPPED_FILE: case ERROR_BUSY: case ERROR_PATH_BUSY:
		return EBUSY;
	default:
		return EIO;
	}
}

static int last_errno(void)
{
	return win_errno(GetLastError());
}

/* UTF-8 to a malloc'ed UTF-16 string: NULL with *rc EINVAL for bytes
 * that are not UTF-8, ENOMEM. */
static wchar_t *wide(const char *s, int *rc)
{
	int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, NULL, 0);
	wchar_t *w;

	if (n <= 0) {
		*rc = EINVAL;
		return NULL;
	}
	if (!(w = malloc((size_t)n * sizeof *w))) {
		*rc = ENOMEM;
		return NULL;
	}
	MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, w, n);
	*rc = 0;
	return w;
}

/* dir "\\" name as UTF-16 (name alone when dir is NULL). */
static wchar_t *wide_join(const char *dir, const char *name, int *rc)
{
	size_t dn, nn;
	char *p;
	wchar_t *w;

	if (!dir)
		return wide(name, rc);
	dn = strlen(dir);
	nn = strlen(name);
	if (!(p = malloc(dn + nn + 2))) {
		*rc = ENOMEM;
		return NULL;
	}
	memcpy(p, dir, dn);
	p[dn] = '\\';
	memcpy(p + dn + 1, name, nn + 1);
	w = wide(p, rc);
	free(p);
	return w;
}

int64_t instate__os_clock_ms(void)
{
	FILETIME ft;
	ULARGE_INTEGER u;

	GetSystemTimePreciseAsFileTime(&ft);
	u.LowPart = ft.dwLowDateTime;
	u.HighPart = ft.dwHighDateTime;
	/* 100 ns units since 1601-01-01 */
	return (int64_t)((u.QuadPart - 116444736000000000ULL) / 10000);
}

size_t instate__os_page_size(void)
{
	SYSTEM_INFO si;

	GetSystemInfo(&si);
	return si.dwPageSize ? (size_t)si.dwPageSize : 4096;
}

uint64_t instate__os_default_map_size(void)
{
	return DEFAULT_MAP_WINDOWS;
}

void instate__os_yield(void)
{
	SwitchToThread();
}

instate_os_thread instate__os_thread_self(void)
{
	return GetCurrentThreadId();
}

int instate__os_thread_equal(instate_os_thread a, instate_os_thread b)
{
	return a == b;
}

static BOOL CALLBACK once_call(PINIT_ONCE once, PVOID param, PVOID *ctx)
{
	void (*fn)(void);

	(void)once;
	(void)ctx;
	memcpy(&fn, &param, sizeof fn);
	fn();
	return TRUE;
}

void instate__os_once(instate_os_once *once, void (*fn)(void))
{
	PVOID param;

	memcpy(&param, &fn, sizeof param);
	InitOnceExecuteOnce((PINIT_ONCE)once, once_call, param, NULL);
}

int instate__os_mutex_init(instate_os_mutex *m) { InitializeSRWLock((PSRWLOCK)m); return 0; }
void instate__os_mutex_destroy(instate_os_mutex *m) { (void)m; }
void instate__os_mutex_lock(instate_os_mutex *m) { AcquireSRWLockExclusive((PSRWLOCK)m); }
void instate__os_mutex_unlock(instate_os_mutex *m) { ReleaseSRWLockExclusive((PSRWLOCK)m); }
int instate__os_cond_init(instate_os_cond *c)
{
	InitializeConditionVariable((PCONDITION_VARIABLE)c);
	return 0;
}
void instate__os_cond_destroy(instate_os_cond *c) { (void)c; }
void instate__os_cond_wait(instate_os_cond *c, instate_os_mutex *m)
{
	SleepConditionVariableSRW((PCONDITION_VARIABLE)c, (PSRWLOCK)m, INFINITE, 0);
}
void instate__os_cond_signal(instate_os_cond *c) { WakeConditionVariable((PCONDITION_VARIABLE)c); }
void instate__os_cond_broadcast(instate_os_cond *c)
{
	WakeAllConditionVariable((PCONDITION_VARIABLE)c);
}

/* _beginthreadex's start routine is __stdcall and returns unsigned. */
struct thread_start { void (*fn)(void *); void *arg; };

static unsigned __stdcall thread_main(void *p)
{
	struct thread_start ts = *(struct thread_start *)p;

	free(p);
	ts.fn(ts.arg);
	return 0;
}

int instate__os_thread_start(instate_os_thread_handle *h, void (*fn)(void *), void *arg)
{
	struct thread_start *ts = malloc(sizeof *ts);
	uintptr_t t;

	if (!ts)
		return ENOMEM;
	ts->fn = fn;
	ts->arg = arg;
	t = _beginthreadex(NULL, 0, thread_main, ts, 0, NULL);
	if (!t) {
		int rc = errno ? errno : EAGAIN;
		free(ts);
		return rc;
	}
	*h = (void *)t;
	return 0;
}

void instate__os_thread_join(instate_os_thread_handle h)
{
	WaitForSingleObject((HANDLE)h, INFINITE);
	CloseHandle((HANDLE)h);
}

int instate__os_rwlock_init(instate_os_rwlock *l) { InitializeSRWLock((PSRWLOCK)l); return 0; }
void instate__os_rwlock_destroy(instate_os_rwlock *l) { (void)l; }
void instate__os_rwlock_rdlock(instate_os_rwlock *l) { AcquireSRWLockShared((PSRWLOCK)l); }
void instate__os_rwlock_wrlock(instate_os_rwlock *l) { AcquireSRWLockExclusive((PSRWLOCK)l); }
void instate__os_rwlock_rdunlock(instate_os_rwlock *l) { ReleaseSRWLockShared((PSRWLOCK)l); }
void instate__os_rwlock_wrunlock(instate_os_rwlock *l) { ReleaseSRWLockExclusive((PSRWLOCK)l); }

/* ---- files ----------------------------------------------------------- */

#define SHARE_ALL (FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE)

static void from_info(const BY_HANDLE_FILE_INFORMATION *fi, instate_os_stat *st)
{
	memset(st, 0, sizeof *st);
	st->id.dev = fi->dwVolumeSerialNumber;
	st->id.ino = (uint64_t)fi->nFileIndexHigh << 32 | fi->nFileIndexLow;
	st->size = (uint64_t)fi->nFileSizeHigh << 32 | fi->nFileSizeLow;
	st->allocated = st->size;
	st->nlink = (unsigned)fi->nNumberOfLinks;
	st->mode = 0;
	st->owner = INSTATE_OS_OWNER_SELF;
	if (fi->dwFileAttributes & FILE_ATTRIBUTE_REPARSE_POINT)
		st->type = INSTATE_OS_LNK;
	else if (fi->dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY)
		st->type = INSTATE_OS_DIR;
	else
		st->type = INSTATE_OS_REG;
}

static int handle_stat(HANDLE h, instate_os_stat *st)
{
	BY_HANDLE_FILE_INFORMATION fi;

	if (!GetFileInformationByHandle(h, &fi))
		return last_errno();
	from_info(&fi, st);
	return 0;
}

/* Open w for its status only (no data access: never a sharing conflict). */
static int wide_stat(const wchar_t *w, int follow, instate_os_stat *st)
{
	DWORD fl = FILE_FLAG_BACKUP_SEMANTICS | (follow ? 0 : FILE_FLAG_OPEN_REPARSE_POINT);
	HANDLE h = CreateFileW(w, FILE_READ_ATTRIBUTES, SHARE_ALL, NULL, OPEN_EXISTING, fl, NULL);
	int rc;

	if (h == INVALID_HANDLE_VALUE)
		return last_errno();
	rc = handle_stat(h, st);
	CloseHandle(h);
	return rc;
}

static int path_stat(const char *dir, const char *name, int follow, instate_os_stat *st)
{
	int rc;
	wchar_t *w = wide_join(dir, name, &rc);

	if (!w)
		return rc;
	rc = wide_stat(w, follow, st);
	free(w);
	return rc;
}

int instate__os_mkdir(const char *path, unsigned mode)
{
	int rc;
	wchar_t *w = wide(path, &rc);

	(void)mode; /* no POSIX modes: the directory inherits its parent's ACL */
	if (!w)
		return rc;
	rc = CreateDirectoryW(w, NULL) ? 0 : last_errno();
	free(w);
	return rc;
}

int instate__os_dir_open(const char *path, int flags, instate_os_dir *d)
{
	DWORD fl = FILE_FLAG_BACKUP_SEMANTICS;
	instate_os_stat st;
	wchar_t *w;
	int rc;

	d->h = INVALID_HANDLE_VALUE;
	d->path = NULL;
	if (flags & INSTATE_OS_O_NOFOLLOW)
		fl |= FILE_FLAG_OPEN_REPARSE_POINT;
	if (!(w = wide(path, &rc)))
		return rc;
	/* Not sharing delete: while the store is open its directory cannot
	 * be renamed or removed (nor, Windows refusing to rename a directory
	 * with open files inside, its parents), so the path LMDB is given
	 * keeps leading to the directory checked. */
	d->h = CreateFileW(w, FILE_READ_ATTRIBUTES, FILE_SHARE_READ | FILE_SHARE_WRITE, NULL,
	                   OPEN_EXISTING, fl, NULL);
	free(w);
	if (d->h == INVALID_HANDLE_VALUE)
		return last_errno();
	rc = handle_stat(d->h, &st);
	if (rc == 0 && st.type == INSTATE_OS_LNK)
		rc = ELOOP;
	else if (rc == 0 && st.type != INSTATE_OS_DIR)
		rc = ENOTDIR;
	else if (rc == 0 && !(d->path = strdup(path)))
		rc = ENOMEM;
	if (rc)
		instate__os_dir_close(d);
	return rc;
}

void instate__os_dir_close(instate_os_dir *d)
{
	if (d->h != INVALID_HANDLE_VALUE && d->h != NULL)
		CloseHandle(d->h);
	free(d->path);
	instate__os_dir_none(d);
}

void instate__os_dir_none(instate_os_dir *d)
{
	d->h = INVALID_HANDLE_VALUE;
	d->path = NULL;
}

int instate__os_dir_valid(const instate_os_dir *d)
{
	return d->path != NULL;
}

int instate__os_dir_stat(const instate_os_dir *d, instate_os_stat *st)
{
	if (d->h == INVALID_HANDLE_VALUE)
		return path_stat(NULL, d->path, 1, st);
	return handle_stat(d->h, st);
}

int instate__os_statat(const instate_os_dir *d, const char *name, instate_os_stat *st)
{
	return path_stat(d->path, name, 0, st);
}

int instate__os_openat(const instate_os_dir *d, const char *name, int flags, unsigned mode,
                       instate_os_fd *fd)
{
	DWORD acc = GENERIC_READ, disp = OPEN_EXISTING, fl = FILE_ATTRIBUTE_NORMAL;
	instate_os_stat st;
	wchar_t *w;
	HANDLE h;
	int rc;

	(void)mode; /* files inherit the directory's ACL */
	*fd = INVALID_HANDLE_VALUE;
	if (flags & INSTATE_OS_O_RDWR)
		acc |= GENERIC_WRITE;
	if (flags & INSTATE_OS_O_CREATE)
		disp = OPEN_ALWAYS;
	if (flags & INSTATE_OS_O_NOFOLLOW)
		fl |= FILE_FLAG_OPEN_REPARSE_POINT;
	if (!(w = wide_join(d->path, name, &rc)))
		return rc;
	h = CreateFileW(w, acc, SHARE_ALL, NULL, disp, fl, NULL);
	free(w);
	if (h == INVALID_HANDLE_VALUE)
		return last_errno();
	if ((flags & INSTATE_OS_O_NOFOLLOW) && handle_stat(h, &st) == 0 &&
	    st.type == INSTATE_OS_LNK) {
		CloseHandle(h);
		return ELOOP;
	}
	*fd = h;
	return 0;
}

int instate__os_unlinkat(const instate_os_dir *d, const char *name)
{
	int rc;
	wchar_t *w = wide_join(d->path, name, &rc);

	if (!w)
		return rc;
	rc = DeleteFileW(w) ? 0 : last_errno();
	free(w);
	return rc;
}

int instate__os_dir_lmdb_path(const instate_os_dir *d, const char *name, const char *given,
                              char **out)
{
	(void)d;
	(void)name;
	/* LMDB converts a UTF-8 path to UTF-16 itself (mdb_fname_init). */
	*out = strdup(given);
	return *out ? 0 : ENOMEM;
}

void instate__os_dir_scan(const char *path, void (*fn)(void *ud, const instate_os_dir *d,
                                                       const char *name), void *ud)
{
	WIN32_FIND_DATAW fd;
	HANDLE h;
	instate_os_dir d;
	char name[MAX_PATH * 4];
	wchar_t *w;
	int rc;

	if (!(w = wide_join(path, "*", &rc)))
		return;
	h = FindFirstFileW(w, &fd);
	free(w);
	if (h == INVALID_HANDLE_VALUE)
		return;
	d.h = INVALID_HANDLE_VALUE;
	d.path = (char *)path;
	do {
		if (!WideCharToMultiByte(CP_UTF8, 0, fd.cFileName, -1, name, (int)sizeof name,
		                         NULL, NULL))
			continue;
		if (!strcmp(name, ".") || !strcmp(name, ".."))
			continue;
		fn(ud, &d, name);
	} while (FindNextFileW(h, &fd));
	FindClose(h);
}

int instate__os_stat(const char *path, instate_os_stat *st)
{
	return path_stat(NULL, path, 1, st);
}

int instate__os_lstat(const char *path, instate_os_stat *st)
{
	return path_stat(NULL, path, 0, st);
}

int instate__os_fstat(instate_os_fd fd, instate_os_stat *st)
{
	return handle_stat(fd, st);
}

int instate__os_open_read(const char *path, instate_os_fd *fd)
{
	int rc;
	wchar_t *w = wide(path, &rc);

	*fd = INVALID_HANDLE_VALUE;
	if (!w)
		return rc;
	*fd = CreateFileW(w, GENERIC_READ, SHARE_ALL, NULL, OPEN_EXISTING,
	                  FILE_ATTRIBUTE_NORMAL | FILE_FLAG_BACKUP_SEMANTICS, NULL);
	free(w);
	return *fd == INVALID_HANDLE_VALUE ? last_errno() : 0;
}

int instate__os_close(instate_os_fd fd)
{
	return CloseHandle(fd) ? 0 : last_errno();
}

int instate__os_dup(instate_os_fd fd, instate_os_fd *out)
{
	HANDLE self = GetCurrentProcess();

	if (!DuplicateHandle(self, fd, self, out, 0, FALSE, DUPLICATE_SAME_ACCESS)) {
		*out = INVALID_HANDLE_VALUE;
		return last_errno();
	}
	return 0;
}

/* ReadFile and WriteFile count in DWORDs. */
#define IO_MAX ((size_t)1 << 30)

int instate__os_read(instate_os_fd fd, void *buf, size_t n, size_t *got)
{
	DWORD k = 0;

	*got = 0;
	if (!ReadFile(fd, buf, (DWORD)(n < IO_MAX ? n : IO_MAX), &k, NULL)) {
		DWORD e = GetLastError();
		return e == ERROR_HANDLE_EOF || e == ERROR_BROKEN_PIPE ? 0 : win_errno(e);
	}
	*got = k;
	return 0;
}

int instate__os_pread(instate_os_fd fd, void *buf, size_t n, uint64_t off, size_t *got)
{
	OVERLAPPED ov;
	DWORD k = 0;

	*got = 0;
	memset(&ov, 0, sizeof ov);
	ov.Offset = (DWORD)off;
	ov.OffsetHigh = (DWORD)(off >> 32);
	if (!ReadFile(fd, buf, (DWORD)(n < IO_MAX ? n : IO_MAX), &k, &ov)) {
		DWORD e = GetLastError();
		return e == ERROR_HANDLE_EOF ? 0 : win_errno(e);
	}
	*got = k;
	return 0;
}

int instate__os_write_all(instate_os_fd fd, const void *buf, size_t n)
{
	const char *p = buf;

	while (n) {
		DWORD k = 0;
		if (!WriteFile(fd, p, (DWORD)(n < IO_MAX ? n : IO_MAX), &k, NULL))
			return last_errno();
		if (k == 0)
			return EIO;
		p += k;
		n -= k;
	}
	return 0;
}

int instate__os_truncate(instate_os_fd fd, uint64_t size)
{
	LARGE_INTEGER at, cur, zero;

	zero.QuadPart = 0;
	at.QuadPart = (LONGLONG)size;
	/* SetEndOfFile cuts at the file position: keep the caller's. */
	if (!SetFilePointerEx(fd, zero, &cur, FILE_CURRENT) ||
	    !SetFilePointerEx(fd, at, NULL, FILE_BEGIN) || !SetEndOfFile(fd))
		return last_errno();
	return SetFilePointerEx(fd, cur, NULL, FILE_BEGIN) ? 0 : last_errno();
}

int instate__os_rewind(instate_os_fd fd)
{
	LARGE_INTEGER zero;

	zero.QuadPart = 0;
	return SetFilePointerEx(fd, zero, NULL, FILE_BEGIN) ? 0 : last_errno();
}

int instate__os_sync(instate_os_fd fd)
{
	return FlushFileBuffers(fd) ? 0 : last_errno();
}

int instate__os_sync_dir_of(const char *path)
{
	/* No directory flush on Windows; MOVEFILE_WRITE_THROUGH made the
	 * rename durable (instate_os.h). */
	(void)path;
	return 0;
}

int instate__os_rename(const char *from, const char *to)
{
	int rc;
	wchar_t *wf = wide(from, &rc), *wt = NULL;

	if (wf && (wt = wide(to, &rc)))
		rc = MoveFileExW(wf, wt, MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH)
		         ? 0 : last_errno();
	free(wf);
	free(wt);
	return rc;
}

int instate__os_unlink(const char *path)
{
	int rc;
	wchar_t *w = wide(path, &rc);

	if (!w)
		return rc;
	rc = DeleteFileW(w) ? 0 : last_errno();
	free(w);
	return rc;
}

int instate__os_temp_create(char *tmpl, instate_os_fd *fd)
{
	static const char letters[] =
		"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
	static volatile LONG counter;
	size_t n = strlen(tmpl);
	char *x;
	LARGE_INTEGER t;
	uint64_t v;
	int attempt, i, rc = EEXIST;
	wchar_t *w;

	*fd = INVALID_HANDLE_VALUE;
	if (n < 6 || strcmp(tmpl + n - 6, "XXXXXX") != 0)
		return EINVAL;
	x = tmpl + n - 6;
	for (attempt = 0; attempt < 100; attempt++) {
		/* Unpredictable enough to avoid collisions; CREATE_NEW makes a
		 * collision an EEXIST and another name, never a shared file. */
		QueryPerformanceCounter(&t);
		v = (uint64_t)t.QuadPart * 6364136223846793005ULL ^
		    (uint64_t)GetCurrentProcessId() << 20 ^
		    (uint64_t)InterlockedIncrement(&counter) * 0x9E3779B97F4A7C15ULL;
		for (i = 0; i < 6; i++, v /= 62)
			x[i] = letters[v % 62];
		if (!(w = wide(tmpl, &rc)))
			return rc;
		*fd = CreateFileW(w, GENERIC_READ | GENERIC_WRITE, SHARE_ALL, NULL, CREATE_NEW,
		                  FILE_ATTRIBUTE_NORMAL, NULL);
		free(w);
		if (*fd != INVALID_HANDLE_VALUE)
			return 0;
		if ((rc = last_errno()) != EEXIST)
			return rc;
	}
	return rc;
}

/* Windows locks are mandatory for the bytes they cover: lock one byte no
 * file reaches, so reading and writing the file are never affected. */
#define LOCK_OFFSET_HIGH 0x7fffffffu
#define LOCK_OFFSET_LOW 0xfffffff0u

int instate__os_trylock(instate_os_fd fd)
{
	OVERLAPPED ov;
	DWORD e;

	memset(&ov, 0, sizeof ov);
	ov.Offset = LOCK_OFFSET_LOW;
	ov.OffsetHigh = LOCK_OFFSET_HIGH;
	if (LockFileEx(fd, LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &ov))
		return 0;
	e = GetLastError();
	return e == ERROR_LOCK_VIOLATION || e == ERROR_IO_PENDING ? -1 : win_errno(e);
}

int instate__os_unlocked_byte0(instate_os_fd fd)
{
	(void)fd;
	return 0;
}

int instate__os_preallocate(instate_os_fd fd, uint64_t size, int alone)
{
	(void)fd;
	(void)size;
	(void)alone;
	return 0;
}

uint64_t instate__os_free_bytes(instate_os_fd fd)
{
	wchar_t path[MAX_PATH + 8];
	ULARGE_INTEGER avail;
	DWORD n = GetFinalPathNameByHandleW(fd, path, MAX_PATH, FILE_NAME_NORMALIZED);
	wchar_t *slash;

	if (n == 0 || n >= MAX_PATH)
		return UINT64_MAX;
	if ((slash = wcsrchr(path, L'\\')) != NULL)
		slash[1] = L'\0'; /* the file's directory */
	if (!GetDiskFreeSpaceExW(path, &avail, NULL, NULL))
		return UINT64_MAX;
	return avail.QuadPart;
}

int instate__os_lmdb_errno(int rc)
{
	/* The Windows codes of LMDB's file and map calls that share no number
	 * with an errno this layer or LMDB produces here (mingw's errnos end
	 * at 140; 8, 14, 19, 32, 33, 39, 80, 87 and 112 are errnos nothing on
	 * Windows returns), translated; anything else is an errno already.
	 * ERROR_ACCESS_DENIED (5) and ERROR_FILE_NOT_FOUND (2) are EIO and
	 * ENOENT by number: the latter is right, the former is LMDB's own EIO
	 * for a short write more often than a denied access after open. */
	switch (rc) {
	case ERROR_NOT_ENOUGH_MEMORY: case ERROR_OUTOFMEMORY: case ERROR_WRITE_PROTECT:
	case ERROR_SHARING_VIOLATION: case ERROR_LOCK_VIOLATION: case ERROR_HANDLE_DISK_FULL:
	case ERROR_FILE_EXISTS: case ERROR_INVALID_PARAMETER: case ERROR_DISK_FULL:
		return win_errno((DWORD)rc);
	default:
		return rc > 140 ? win_errno((DWORD)rc) : rc;
	}
}

/* ---- processes (the owner lock) ---------------------------------------- */

uint64_t instate__os_getpid(void)
{
	return (uint64_t)GetCurrentProcessId();
}

int instate__os_pid_alive(uint64_t pid)
{
	HANDLE h;
	DWORD w;

	if (pid == 0 || pid > 0xffffffffu)
		return 0;
	h = OpenProcess(SYNCHRONIZE, FALSE, (DWORD)pid);
	if (!h)
		/* access denied: it exists, another user's */
		return GetLastError() == ERROR_ACCESS_DENIED;
	w = WaitForSingleObject(h, 0);
	CloseHandle(h);
	return w == WAIT_TIMEOUT;
}

void instate__os_sleep_ms(unsigned ms)
{
	Sleep(ms);
}

#endif /* _WIN32 */
