/*
 * instate_owner.c - the owner lock of a store (instate_store_lock_owner):
 * one process writes a store as its program's state, others may still open
 * it. The lock is the OS's advisory file lock (instate_os.h), so the
 * system releases it when the owner dies, however it dies: no stale lock
 * to break by hand, which a pid file alone would leave.
 */
#include "instate_store_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Guards owner_refs and owner_fd of every environment. Its own, not the
 * environment's mutex: taking the lock may wait up to a second for a
 * new owner to write its pid, which must not stall namespace lookups. */
static instate_os_mutex owner_mu = INSTATE_OS_MUTEX_INIT;

/* How long to wait for the owner's pid to appear (see instate.h). */
#define OWNER_PID_TRIES 100
#define OWNER_PID_WAIT_MS 10

/* The lock file's name in the environment's directory. */
static char *owner_name(const instate_env *e, const char *path)
{
	const char *base;
	size_t n;
	char *name;

	if (!(e->flags & MDB_NOSUBDIR))
		return strdup("owner.lock");
	base = instate__os_path_base(path);
	n = strlen(base);
	if ((name = malloc(n + sizeof "-owner")))
		memcpy(name, base, n), memcpy(name + n, "-owner", sizeof "-owner");
	return name;
}

/* Open (creating) the lock file: a regular file with one link, as every
 * file of the store (instate_store_open's checks). */
static int owner_open(instate_env *e, const char *path, instate_os_fd *fd)
{
	instate_os_stat st;
	char *name = owner_name(e, path);
	int rc;

	if (!name)
		return ENOMEM;
	rc = instate__os_openat(&e->dir, name,
	                        INSTATE_OS_O_RDWR | INSTATE_OS_O_CREATE | INSTATE_OS_O_NOFOLLOW,
	                        e->file_mode, fd);
	free(name);
	if (rc)
		return rc == ELOOP ? INSTATE_ACCESS : rc;
	if ((rc = instate__os_fstat(*fd, &st)) == 0 &&
	    (st.type != INSTATE_OS_REG || st.nlink != 1 || st.owner == INSTATE_OS_OWNER_OTHER))
		rc = INSTATE_ACCESS;
	if (rc)
		instate__os_close(*fd);
	return rc;
}

/* The pid the file holds (decimal digits up to a newline), 0 if none. */
static uint64_t owner_read_pid(instate_os_fd fd)
{
	char buf[32];
	size_t got = 0, i;
	uint64_t pid = 0;

	if (instate__os_pread(fd, buf, sizeof buf - 1, 0, &got) != 0)
		return 0;
	for (i = 0; i < got && buf[i] >= '0' && buf[i] <= '9'; i++) {
		if (pid > UINT64_MAX / 10 - 1)
			return 0;
		pid = pid * 10 + (uint64_t)(buf[i] - '0');
	}
	return i < got && buf[i] == '\n' ? pid : 0;
}

static int owner_write_pid(instate_os_fd fd, uint64_t pid)
{
	char buf[24];
	size_t n = sizeof buf;
	int rc = instate__os_truncate(fd, 0);

	buf[--n] = '\n';
	do
		buf[--n] = (char)('0' + pid % 10);
	while ((pid /= 10) != 0);
	if (rc == 0)
		rc = instate__os_rewind(fd);
	if (rc == 0)
		rc = instate__os_write_all(fd, buf + n, sizeof buf - n);
	return rc;
}

int instate_store_lock_owner(instate_store *s, uint64_t *owner_pid)
{
	instate_env *e;
	instate_os_fd fd;
	uint64_t self = instate__os_getpid(), pid = 0;
	int rc, i;

	if (owner_pid)
		*owner_pid = 0;
	if (!s)
		return INSTATE_INVALID;
	if (s->readonly)
		return INSTATE_READONLY;
	e = s->env;
	instate__os_mutex_lock(&owner_mu);
	if (s->owner || e->owner_refs > 0) {
		/* this process owns it already */
		if (!s->owner)
			e->owner_refs++, s->owner = 1;
		instate__os_mutex_unlock(&owner_mu);
		if (owner_pid)
			*owner_pid = self;
		return 0;
	}
	if ((rc = owner_open(e, s->path, &fd)) != 0) {
		instate__os_mutex_unlock(&owner_mu);
		return rc;
	}
	for (i = 0;; i++) {
		rc = instate__os_trylock(fd);
		if (rc == 0) {
			/* Ours. The pid is for the message of those refused; a
			 * failure to write it leaves them "unknown", not the lock. */
			(void)owner_write_pid(fd, self);
			e->owner_fd = fd;
			e->owner_refs = 1;
			s->owner = 1;
			instate__os_mutex_unlock(&owner_mu);
			if (owner_pid)
				*owner_pid = self;
			return 0;
		}
		if (rc > 0)
			break;
		/* Held elsewhere: the file names the holder once it has written
		 * its pid; until then it may hold nothing or a dead owner's. */
		pid = owner_read_pid(fd);
		if ((pid && pid != self && instate__os_pid_alive(pid)) || i == OWNER_PID_TRIES) {
			rc = INSTATE_LOCKED;
			break;
		}
		instate__os_sleep_ms(OWNER_PID_WAIT_MS);
	}
	instate__os_close(fd);
	instate__os_mutex_unlock(&owner_mu);
	if (rc == INSTATE_LOCKED && owner_pid)
		*owner_pid = pid != self ? pid : 0;
	return rc;
}

void instate__owner_release(instate_store *s)
{
	instate_env *e = s->env;

	instate__os_mutex_lock(&owner_mu);
	if (s->owner && --e->owner_refs == 0) {
		/* Emptied while still held: the next one refused never reads a
		 * pid that is no longer the owner's (a kill -9 leaves it; the
		 * next owner overwrites it). */
		(void)instate__os_truncate(e->owner_fd, 0);
		instate__os_close(e->owner_fd);
	}
	s->owner = 0;
	instate__os_mutex_unlock(&owner_mu);
}
