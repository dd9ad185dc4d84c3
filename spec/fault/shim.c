/*
 * shim.c - test-only fault injector, loaded with LD_PRELOAD (never installed).
 *
 * It interposes the calls a store, a dump and a load make to the system and
 * the allocator, counts the ones of a chosen set while armed, and fails the
 * Nth (or, in persistent mode, every one from the Nth on, as a full disk
 * does) with a chosen errno. Configuration is read from the environment when
 * the test arms the shim, so nothing the process does before the operation
 * under test (starting Lua, opening the store) is counted:
 *
 *   FAULT_CALLS    comma-separated names, or the groups "io", "alloc", "all"
 *                  (default "io"). Names: open openat mkstemp write pwrite
 *                  writev pwritev fsync fdatasync rename renameat ftruncate
 *                  mmap malloc calloc realloc posix_memalign.
 *   FAULT_N        the first call to fail, counted from 1 after arming
 *                  (0: count only, fail nothing).
 *   FAULT_ERRNO    "EIO" (default) or "ENOSPC"; the allocators always fail
 *                  with ENOMEM (returning NULL).
 *   FAULT_PERSIST  "1": fail every counted call from the Nth on.
 *   FAULT_SHORT    "1": a faulting write of more than one byte writes half
 *                  of its bytes and returns that short count instead of
 *                  failing (a filling disk); with FAULT_PERSIST the calls
 *                  after it fail with the errno. From that write on,
 *                  statvfs/fstatvfs report no free block.
 *   FAULT_REPORT   a file: the first hit appends "hit NAME N\n", disarming
 *                  appends "calls COUNT hits HITS\n". Written with the real
 *                  calls, so a child that dies still leaves the evidence.
 *
 * Writes to descriptors 0-2 are never counted: the test's own output is not
 * under test.
 *
 * The switch is instate_fault_arm() / instate_fault_disarm(), which
 * spec/fault/lfault.c exposes to Lua. glibc only: the allocator hooks call
 * __libc_malloc and friends, so resolving the real functions never recurses.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum {
	F_OPEN, F_OPENAT, F_MKSTEMP, F_WRITE, F_PWRITE, F_WRITEV, F_PWRITEV,
	F_FSYNC, F_FDATASYNC, F_RENAME, F_RENAMEAT, F_FTRUNCATE, F_MMAP,
	F_MALLOC, F_CALLOC, F_REALLOC, F_MEMALIGN, F_COUNT
};

static const char *const names[F_COUNT] = {
	"open", "openat", "mkstemp", "write", "pwrite", "writev", "pwritev",
	"fsync", "fdatasync", "rename", "renameat", "ftruncate", "mmap",
	"malloc", "calloc", "realloc", "posix_memalign"
};

#define IO_MASK ((1u << F_MALLOC) - 1)
#define ALLOC_MASK (((1u << F_COUNT) - 1) & ~IO_MASK)

static volatile int armed;
static unsigned mask;
static long fail_at, persist, short_write, fault_errno = EIO;
static long calls, hits;
static char report[4096];

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);

/* The next definition of a symbol: the real call. */
#define REAL(type, name, args) \
	static type (*real) args; \
	if (!real) real = (type (*) args)dlsym(RTLD_NEXT, name)

static ssize_t raw_write(int fd, const void *buf, size_t n)
{
	REAL(ssize_t, "write", (int, const void *, size_t));
	return real(fd, buf, n);
}

static int raw_open(const char *path, int flags, mode_t mode)
{
	REAL(int, "open", (const char *, int, ...));
	return real(path, flags, mode);
}

static int raw_close(int fd)
{
	REAL(int, "close", (int));
	return real(fd);
}

static void report_line(const char *line)
{
	if (!report[0])
		return;
	int fd = raw_open(report, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	raw_write(fd, line, strlen(line));
	raw_close(fd);
}

/*
 * 0: let the call through; 1: fail it; 2: a short write (FAULT_SHORT, the
 * first failing write only). Counting is atomic so a thread of the process
 * does not lose a count, though the operations tested are single-threaded.
 */
static int should_fail(int which, int is_write)
{
	if (!armed || !(mask & (1u << which)))
		return 0;
	long n = __atomic_add_fetch(&calls, 1, __ATOMIC_SEQ_CST);
	if (fail_at <= 0 || n < fail_at || (n > fail_at && !persist))
		return 0;
	long h = __atomic_add_fetch(&hits, 1, __ATOMIC_SEQ_CST);
	if (h == 1) {
		char line[64];
		snprintf(line, sizeof line, "hit %s %ld\n", names[which], n);
		report_line(line);
	}
	return (is_write && short_write && h == 1) ? 2 : 1;
}

static int parse_mask(const char *s)
{
	unsigned m = 0;
	while (s && *s) {
		size_t len = strcspn(s, ",");
		if (len == 2 && !strncmp(s, "io", 2))
			m |= IO_MASK;
		else if (len == 5 && !strncmp(s, "alloc", 5))
			m |= ALLOC_MASK;
		else if (len == 3 && !strncmp(s, "all", 3))
			m |= IO_MASK | ALLOC_MASK;
		else {
			int i;
			for (i = 0; i < F_COUNT; i++)
				if (strlen(names[i]) == len && !strncmp(s, names[i], len))
					break;
			if (i == F_COUNT)
				return -1;
			m |= 1u << i;
		}
		s += len;
		if (*s == ',')
			s++;
	}
	mask = m ? m : IO_MASK;
	return 0;
}

/* Read the configuration and start counting. 0, or -1 on a bad setting. */
int instate_fault_arm(void)
{
	const char *s;
	armed = 0;
	if (parse_mask(getenv("FAULT_CALLS")) != 0)
		return -1;
	fail_at = (s = getenv("FAULT_N")) ? strtol(s, NULL, 10) : 0;
	persist = (s = getenv("FAULT_PERSIST")) && *s == '1';
	short_write = (s = getenv("FAULT_SHORT")) && *s == '1';
	s = getenv("FAULT_ERRNO");
	if (!s || !strcmp(s, "EIO"))
		fault_errno = EIO;
	else if (!strcmp(s, "ENOSPC"))
		fault_errno = ENOSPC;
	else
		return -1;
	s = getenv("FAULT_REPORT");
	snprintf(report, sizeof report, "%s", s ? s : "");
	calls = hits = 0;
	armed = 1;
	return 0;
}

/* Stop counting; the counted calls and the failed ones. */
void instate_fault_disarm(long *ncalls, long *nhits)
{
	char line[64];
	armed = 0;
	snprintf(line, sizeof line, "calls %ld hits %ld\n", calls, hits);
	report_line(line);
	if (ncalls) *ncalls = calls;
	if (nhits) *nhits = hits;
}

/* --------------------------------------------------------------------- */
/* Files                                                                  */
/* --------------------------------------------------------------------- */

#define FAIL(which, value) \
	do { if (should_fail(which, 0)) { errno = (int)fault_errno; return value; } } while (0)

static mode_t mode_arg(int flags, va_list ap)
{
	return ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = mode_arg(flags, ap);
	va_end(ap);
	REAL(int, "open", (const char *, int, ...));
	FAIL(F_OPEN, -1);
	return real(path, flags, mode);
}

int open64(const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = mode_arg(flags, ap);
	va_end(ap);
	REAL(int, "open64", (const char *, int, ...));
	FAIL(F_OPEN, -1);
	return real(path, flags, mode);
}

int openat(int dir, const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = mode_arg(flags, ap);
	va_end(ap);
	REAL(int, "openat", (int, const char *, int, ...));
	FAIL(F_OPENAT, -1);
	return real(dir, path, flags, mode);
}

int openat64(int dir, const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = mode_arg(flags, ap);
	va_end(ap);
	REAL(int, "openat64", (int, const char *, int, ...));
	FAIL(F_OPENAT, -1);
	return real(dir, path, flags, mode);
}

int mkstemp(char *tmpl)
{
	REAL(int, "mkstemp", (char *));
	FAIL(F_MKSTEMP, -1);
	return real(tmpl);
}

int mkstemp64(char *tmpl)
{
	REAL(int, "mkstemp64", (char *));
	FAIL(F_MKSTEMP, -1);
	return real(tmpl);
}

/* A write that fails, or, for a short one, writes half of what it was given. */
#define WRITE_FAULT(which, fd, n, short_call) \
	do { \
		int f_ = (fd) > 2 ? should_fail(which, 1) : 0; \
		if (f_ == 2 && (n) > 1) return short_call; \
		if (f_) { errno = (int)fault_errno; return -1; } \
	} while (0)

ssize_t write(int fd, const void *buf, size_t n)
{
	REAL(ssize_t, "write", (int, const void *, size_t));
	WRITE_FAULT(F_WRITE, fd, n, real(fd, buf, n / 2));
	return real(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	REAL(ssize_t, "pwrite", (int, const void *, size_t, off_t));
	WRITE_FAULT(F_PWRITE, fd, n, real(fd, buf, n / 2, off));
	return real(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
	REAL(ssize_t, "pwrite64", (int, const void *, size_t, off_t));
	WRITE_FAULT(F_PWRITE, fd, n, real(fd, buf, n / 2, off));
	return real(fd, buf, n, off);
}

/*
 * A filling disk is full once its short write has happened: statvfs then
 * reports no free block, as the kernel would (the core tells ENOSPC from
 * EIO after a short write by the space left).
 */
static void full_disk(struct statvfs *sv)
{
	if (short_write && __atomic_load_n(&hits, __ATOMIC_SEQ_CST) > 0)
		sv->f_bfree = sv->f_bavail = 0;
}

int fstatvfs(int fd, struct statvfs *sv)
{
	REAL(int, "fstatvfs", (int, struct statvfs *));
	int rc = real(fd, sv);
	if (rc == 0)
		full_disk(sv);
	return rc;
}

int statvfs(const char *path, struct statvfs *sv)
{
	REAL(int, "statvfs", (const char *, struct statvfs *));
	int rc = real(path, sv);
	if (rc == 0)
		full_disk(sv);
	return rc;
}

/* The first half of the bytes of iov[0..cnt), in at most 64 pieces. */
static int half_iov(const struct iovec *iov, int cnt, struct iovec *out)
{
	size_t total = 0, want;
	int i, k = 0;
	for (i = 0; i < cnt; i++)
		total += iov[i].iov_len;
	want = total / 2;
	for (i = 0; i < cnt && k < 64 && want > 0; i++) {
		out[k] = iov[i];
		if (out[k].iov_len > want)
			out[k].iov_len = want;
		want -= out[k].iov_len;
		k++;
	}
	return k;
}

static size_t iov_total(const struct iovec *iov, int cnt)
{
	size_t total = 0;
	for (int i = 0; i < cnt; i++)
		total += iov[i].iov_len;
	return total;
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
	struct iovec half[64];
	REAL(ssize_t, "writev", (int, const struct iovec *, int));
	WRITE_FAULT(F_WRITEV, fd, iov_total(iov, cnt), real(fd, half, half_iov(iov, cnt, half)));
	return real(fd, iov, cnt);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
	struct iovec half[64];
	REAL(ssize_t, "pwritev", (int, const struct iovec *, int, off_t));
	WRITE_FAULT(F_PWRITEV, fd, iov_total(iov, cnt), real(fd, half, half_iov(iov, cnt, half), off));
	return real(fd, iov, cnt, off);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
{
	struct iovec half[64];
	REAL(ssize_t, "pwritev64", (int, const struct iovec *, int, off_t));
	WRITE_FAULT(F_PWRITEV, fd, iov_total(iov, cnt), real(fd, half, half_iov(iov, cnt, half), off));
	return real(fd, iov, cnt, off);
}

int fsync(int fd)
{
	REAL(int, "fsync", (int));
	FAIL(F_FSYNC, -1);
	return real(fd);
}

int fdatasync(int fd)
{
	REAL(int, "fdatasync", (int));
	FAIL(F_FDATASYNC, -1);
	return real(fd);
}

int rename(const char *from, const char *to)
{
	REAL(int, "rename", (const char *, const char *));
	FAIL(F_RENAME, -1);
	return real(from, to);
}

int renameat(int fromdir, const char *from, int todir, const char *to)
{
	REAL(int, "renameat", (int, const char *, int, const char *));
	FAIL(F_RENAMEAT, -1);
	return real(fromdir, from, todir, to);
}

int ftruncate(int fd, off_t len)
{
	REAL(int, "ftruncate", (int, off_t));
	FAIL(F_FTRUNCATE, -1);
	return real(fd, len);
}

int ftruncate64(int fd, off_t len)
{
	REAL(int, "ftruncate64", (int, off_t));
	FAIL(F_FTRUNCATE, -1);
	return real(fd, len);
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	REAL(void *, "mmap", (void *, size_t, int, int, int, off_t));
	FAIL(F_MMAP, MAP_FAILED);
	return real(addr, len, prot, flags, fd, off);
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	REAL(void *, "mmap64", (void *, size_t, int, int, int, off_t));
	FAIL(F_MMAP, MAP_FAILED);
	return real(addr, len, prot, flags, fd, off);
}

/* --------------------------------------------------------------------- */
/* Allocators: ENOMEM whatever FAULT_ERRNO says                           */
/* --------------------------------------------------------------------- */

#define FAIL_ALLOC(which) \
	do { if (should_fail(which, 0)) { errno = ENOMEM; return NULL; } } while (0)

void *malloc(size_t n)
{
	FAIL_ALLOC(F_MALLOC);
	return __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
	FAIL_ALLOC(F_CALLOC);
	return __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
	/* realloc(p, 0) frees (Lua's allocator frees through it): not a fault point. */
	if (n > 0)
		FAIL_ALLOC(F_REALLOC);
	return __libc_realloc(p, n);
}

int posix_memalign(void **out, size_t align, size_t n)
{
	REAL(int, "posix_memalign", (void **, size_t, size_t));
	if (should_fail(F_MEMALIGN, 0))
		return ENOMEM;
	return real(out, align, n);
}
