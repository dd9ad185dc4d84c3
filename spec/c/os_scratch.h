/* The scratch root of the C tests that run on Windows as well as POSIX:
 * made through the portability layer (a fresh temp file's name, made a
 * directory), under TMPDIR, else TEMP on Windows, else /tmp. Include after
 * check.h and instate_os.h. */
#ifndef OS_SCRATCH_H
#define OS_SCRATCH_H

/* Make a fresh directory named `tmp`/instate-`what`-XXXXXX into check.h's
 * root. Return 0, or 2 (the tests' "could not start") with the reason on
 * stderr. */
static int os_scratch_root(const char *what)
{
	const char *tmp = getenv("TMPDIR");
	char made[sizeof root];
	instate_os_fd fd;

	(void)ns_of; /* check.h's, for the store tests */
#ifdef _WIN32
	if (!tmp)
		tmp = getenv("TEMP");
	if (!tmp || strlen(tmp) > 40) /* root is 64 bytes (check.h) */
		tmp = ".";
#else
	if (!tmp)
		tmp = "/tmp";
#endif
	snprintf(made, sizeof made, "%s/instate-%s-XXXXXX", tmp, what);
	if (strlen(made) + 1 >= sizeof made || instate__os_temp_create(made, &fd) != 0) {
		fprintf(stderr, "cannot make a scratch name under %s\n", tmp);
		return 2;
	}
	instate__os_close(fd);
	instate__os_unlink(made);
	if (instate__os_mkdir(made, 0700) != 0) {
		fprintf(stderr, "cannot make %s\n", made);
		return 2;
	}
	snprintf(root, sizeof root, "%s", made);
	return 0;
}

#endif
