/*
 * test_os.c - the portability layer (src/instate_os.h) on its own: file
 * identity, atomic replace of an existing file, temp files and their locks,
 * UTF-8 paths with non-ASCII names, reading and writing, the clock and page
 * size. Portable C: the same program runs on Linux and, cross-built with
 * mingw-w64, under Wine.
 */
#include "check.h"
#include "instate_os.h"
#include "os_scratch.h"

#include <errno.h>

#ifdef _WIN32
#include <windows.h>
#else
#include <unistd.h>
#endif

/* A name with Latin, Greek and CJK letters: a Windows call that took the
 * bytes as the ANSI code page would make another name of it. */
#define NONASCII "sauvegarde-\xc3\xa9-\xce\xb1\xce\xb2-\xe6\x97\xa5\xe6\x9c\xac"

static int write_file(const instate_os_dir *d, const char *name, const char *text)
{
	instate_os_fd fd;
	int rc = instate__os_openat(d, name, INSTATE_OS_O_RDWR | INSTATE_OS_O_CREATE, 0600, &fd);

	if (rc)
		return rc;
	if ((rc = instate__os_truncate(fd, 0)) == 0 &&
	    (rc = instate__os_write_all(fd, text, strlen(text))) == 0)
		rc = instate__os_sync(fd);
	instate__os_close(fd);
	return rc;
}

/* The whole (short) file at path into buf, NUL-terminated; "" on error. */
static const char *read_path(const char *path, char *buf, size_t cap)
{
	instate_os_fd fd;
	size_t got = 0;

	buf[0] = '\0';
	if (instate__os_open_read(path, &fd) != 0)
		return buf;
	if (instate__os_read(fd, buf, cap - 1, &got) != 0)
		got = 0;
	buf[got] = '\0';
	instate__os_close(fd);
	return buf;
}

static int count_scan;
static void scan_fn(void *ud, const instate_os_dir *d, const char *name)
{
	(void)d;
	if (strcmp(name, (const char *)ud) == 0)
		count_scan++;
}

static void test_clock_page(void)
{
	int64_t now = instate__os_clock_ms();
	size_t pg = instate__os_page_size();

	CHECK(now > (int64_t)1577836800000);  /* after 2020-01-01 */
	CHECK(now < (int64_t)4102444800000);  /* before 2100-01-01 */
	CHECK(pg >= 4096 && (pg & (pg - 1)) == 0);
#ifdef _WIN32
	CHECK(instate__os_default_map_size() == (uint64_t)1 << 20);
#else
	CHECK(instate__os_default_map_size() == (uint64_t)64 << 20);
#endif
	CHECK(strcmp(instate__os_path_base("a/b/c.dump"), "c.dump") == 0);
	CHECK(strcmp(instate__os_path_base("c.dump"), "c.dump") == 0);
#ifdef _WIN32
	CHECK(strcmp(instate__os_path_base("C:\\x\\c.dump"), "c.dump") == 0);
#endif
}

static void test_files(void)
{
	instate_os_dir d;
	instate_os_stat a, b, c;
	instate_os_fd fd, fd2, rd;
	const char *dir = tpath(NONASCII);
	char buf[512], *lp = NULL;
	size_t got;
	uint64_t fb;

	CHECK_RC(instate__os_mkdir(dir, 0700), 0);
	CHECK_RC(instate__os_mkdir(dir, 0700), EEXIST);
	CHECK_RC(instate__os_dir_open(dir, INSTATE_OS_O_NOFOLLOW, &d), 0);
	CHECK(instate__os_dir_valid(&d));
	CHECK_RC(instate__os_dir_stat(&d, &a), 0);
	CHECK(a.type == INSTATE_OS_DIR);
	CHECK_RC(instate__os_dir_open(tpath("no-such-dir"), 0, &(instate_os_dir){0}), ENOENT);
	/* POSIX: the descriptor follows a renamed directory (and LMDB is given
	 * /proc/self/fd/N on Linux). Windows: the handle does not share delete,
	 * which is to keep the directory from being renamed; Wine does not
	 * enforce that, so it is not checked here. */
#ifndef _WIN32
	CHECK_RC(instate__os_rename(dir, tpath("moved")), 0);
	CHECK_RC(instate__os_rename(tpath("moved"), dir), 0);
#endif

	/* Identity: one file by two routes is one id; two files, two ids. */
	CHECK_RC(write_file(&d, "a", "hello"), 0);
	CHECK_RC(write_file(&d, NONASCII ".dump", "old"), 0);
	CHECK_RC(instate__os_statat(&d, "a", &a), 0);
	CHECK(a.type == INSTATE_OS_REG && a.size == 5 && a.nlink == 1);
	CHECK(a.owner == INSTATE_OS_OWNER_SELF);
	CHECK(a.id.dev != 0 || a.id.ino != 0);
	snprintf(buf, sizeof buf, "%s", tpath(NONASCII "/a"));
	CHECK_RC(instate__os_stat(buf, &b), 0);
	CHECK(instate__os_id_equal(a.id, b.id));
	CHECK_RC(instate__os_statat(&d, NONASCII ".dump", &c), 0);
	CHECK(!instate__os_id_equal(a.id, c.id));
	CHECK_RC(instate__os_statat(&d, "missing", &c), ENOENT);
	CHECK_RC(instate__os_openat(&d, "missing", INSTATE_OS_O_READ, 0, &fd), ENOENT);
	CHECK_RC(instate__os_stat(tpath(NONASCII "/missing"), &c), ENOENT);

	/* Atomic replace of an existing file, the dump's last step. */
	CHECK_RC(instate__os_rename(tpath(NONASCII "/a"), tpath(NONASCII "/" NONASCII ".dump")), 0);
	CHECK(strcmp(read_path(tpath(NONASCII "/" NONASCII ".dump"), buf, sizeof buf), "hello") == 0);
	CHECK_RC(instate__os_stat(tpath(NONASCII "/a"), &c), ENOENT);
	CHECK_RC(instate__os_stat(tpath(NONASCII "/" NONASCII ".dump"), &c), 0);
	CHECK(instate__os_id_equal(a.id, c.id)); /* the file moved, and kept its id */

	/* ...while a reader holds the old file open: POSIX replaces it and the
	 * reader keeps reading the old one; Windows (MoveFileExW) refuses with
	 * EACCES and leaves both files as they were (docs/DESIGN.md). */
	CHECK_RC(write_file(&d, "b", "newer"), 0);
	CHECK_RC(instate__os_open_read(tpath(NONASCII "/" NONASCII ".dump"), &rd), 0);
#ifdef _WIN32
	CHECK_RC(instate__os_rename(tpath(NONASCII "/b"), tpath(NONASCII "/" NONASCII ".dump")),
	         EACCES);
#else
	CHECK_RC(instate__os_rename(tpath(NONASCII "/b"), tpath(NONASCII "/" NONASCII ".dump")), 0);
#endif
	CHECK_RC(instate__os_read(rd, buf, sizeof buf - 1, &got), 0);
	CHECK(got == 5 && memcmp(buf, "hello", 5) == 0);
	CHECK_RC(instate__os_pread(rd, buf, 3, 2, &got), 0);
	CHECK(got == 3 && memcmp(buf, "llo", 3) == 0);
	CHECK_RC(instate__os_close(rd), 0);
#ifdef _WIN32
	CHECK_RC(instate__os_rename(tpath(NONASCII "/b"), tpath(NONASCII "/" NONASCII ".dump")), 0);
#endif
	CHECK(strcmp(read_path(tpath(NONASCII "/" NONASCII ".dump"), buf, sizeof buf), "newer") == 0);

	/* Temp files: made from the template, locked once at a time; the lock
	 * lives while a second descriptor of the open file does. */
	snprintf(buf, sizeof buf, "%s", tpath(NONASCII "/x.tmp-XXXXXX"));
	CHECK_RC(instate__os_temp_create(buf, &fd), 0);
	CHECK(strstr(buf, "XXXXXX") == NULL);
	CHECK_RC(instate__os_trylock(fd), 0);
	CHECK_RC(instate__os_open_read(buf, &fd2), 0);
	CHECK_RC(instate__os_trylock(fd2), -1);
	CHECK_RC(instate__os_dup(fd, &rd), 0);
	CHECK_RC(instate__os_close(fd), 0);
	CHECK_RC(instate__os_trylock(fd2), -1);
	CHECK_RC(instate__os_close(rd), 0);
	CHECK_RC(instate__os_trylock(fd2), 0);
	CHECK_RC(instate__os_close(fd2), 0);
	count_scan = 0;
	instate__os_dir_scan(tpath(NONASCII), scan_fn, (void *)instate__os_path_base(buf));
	CHECK(count_scan == 1);
	count_scan = 0;
	instate__os_dir_scan(tpath(NONASCII), scan_fn, NONASCII ".dump");
	CHECK(count_scan == 1);
	CHECK_RC(instate__os_unlink(buf), 0);
	CHECK_RC(instate__os_unlink(buf), ENOENT);

	/* Write, rewind, truncate, the free space. */
	CHECK_RC(instate__os_openat(&d, "w", INSTATE_OS_O_RDWR | INSTATE_OS_O_CREATE |
	                            INSTATE_OS_O_NOFOLLOW, 0600, &fd), 0);
	CHECK_RC(instate__os_write_all(fd, "0123456789", 10), 0);
	CHECK_RC(instate__os_rewind(fd), 0);
	CHECK_RC(instate__os_read(fd, buf, 4, &got), 0);
	CHECK(got == 4 && memcmp(buf, "0123", 4) == 0);
	CHECK_RC(instate__os_truncate(fd, 0), 0);
	CHECK_RC(instate__os_fstat(fd, &a), 0);
	CHECK(a.size == 0);
	CHECK_RC(instate__os_sync(fd), 0);
	fb = instate__os_free_bytes(fd);
	CHECK(fb != UINT64_MAX && fb > 0);
	CHECK_RC(instate__os_close(fd), 0);
	CHECK_RC(instate__os_sync_dir_of(tpath(NONASCII "/w")), 0);

	/* The path LMDB is given leads to the directory opened. */
	CHECK_RC(instate__os_dir_lmdb_path(&d, "data.mdb", dir, &lp), 0);
#ifdef __linux__
	CHECK(lp && strncmp(lp, "/proc/self/fd/", 14) == 0 && strstr(lp, "/data.mdb"));
#else
	CHECK(lp && strcmp(lp, dir) == 0);
#endif
	free(lp);

	CHECK_RC(instate__os_unlinkat(&d, "w"), 0);
	CHECK_RC(instate__os_unlinkat(&d, NONASCII ".dump"), 0);
	CHECK_RC(instate__os_unlinkat(&d, "w"), ENOENT);
	instate__os_dir_close(&d);
	CHECK(!instate__os_dir_valid(&d));
	instate__os_dir_close(&d); /* safe twice */
}

static void test_errors(void)
{
#ifdef _WIN32
	CHECK(instate__os_lmdb_errno(ERROR_DISK_FULL) == ENOSPC);
	CHECK(instate__os_lmdb_errno(ERROR_HANDLE_DISK_FULL) == ENOSPC);
	CHECK(instate__os_lmdb_errno(ERROR_SHARING_VIOLATION) == EACCES);
	CHECK(instate__os_lmdb_errno(ERROR_USER_MAPPED_FILE) == EBUSY);
	CHECK(instate__os_lmdb_errno(EIO) == EIO);
	CHECK(instate__os_lmdb_errno(ENOMEM) == ENOMEM);
	CHECK(instate__os_lmdb_errno(ELOOP) == ELOOP);
#else
	CHECK(instate__os_lmdb_errno(ENOSPC) == ENOSPC);
	CHECK(instate__os_lmdb_errno(EIO) == EIO);
#endif
}

int main(void)
{
	if (os_scratch_root("os") != 0)
		return 2;

	test_clock_page();
	test_files();
	test_errors();

#ifdef _WIN32
	{
		wchar_t w[512];
		MultiByteToWideChar(CP_UTF8, 0, tpath(NONASCII), -1, w, 512);
		RemoveDirectoryW(w);
		MultiByteToWideChar(CP_UTF8, 0, root, -1, w, 512);
		RemoveDirectoryW(w);
	}
#else
	rmdir(tpath(NONASCII));
	rmdir(root);
#endif
	printf("test_os: %d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
