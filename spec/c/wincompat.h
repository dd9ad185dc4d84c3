/*
 * wincompat.h - the two POSIX calls the C tests make for their scratch
 * directories, for the Windows build (mingw-w64, run under Wine); CMake
 * force-includes it there (-include), nowhere else.
 *
 * mkdtemp: CreateDirectoryA on a drawn name (only windows.h: io.h and
 * direct.h would declare rmdir and the like, which tests may define for
 * themselves). system("rm -rf DIR") and system("mkdir -p
 * DIR"), the tests' cleanup and set-up: done here, since cmd.exe has no rm
 * and no mkdir -p; every other command goes to the real system(). The tests' "/tmp/..." paths name \tmp on the
 * current drive, which under Wine is Z:, the Unix root: the real /tmp.
 */
#ifndef INSTATE_WINCOMPAT_H
#define INSTATE_WINCOMPAT_H
#ifdef _WIN32

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <windows.h>

static __attribute__((unused)) char *wincompat_mkdtemp(char *templ)
{
	static const char digits[] = "abcdefghijklmnopqrstuvwxyz0123456789";
	size_t n = strlen(templ);
	unsigned seed = (unsigned)GetCurrentProcessId() * 2654435761u ^ (unsigned)GetTickCount();
	int tries, i;

	if (n < 6 || strcmp(templ + n - 6, "XXXXXX") != 0)
		return NULL;
	for (tries = 0; tries < 100; tries++) {
		for (i = 0; i < 6; i++) {
			seed = seed * 1103515245u + 12345u;
			templ[n - 6 + i] = digits[(seed >> 16) % 36];
		}
		if (CreateDirectoryA(templ, NULL))
			return templ;
		if (GetLastError() != ERROR_ALREADY_EXISTS)
			return NULL;
	}
	return NULL;
}
#define mkdtemp wincompat_mkdtemp

static __attribute__((unused)) void wincompat_rmtree(const char *path)
{
	char pat[MAX_PATH], sub[MAX_PATH];
	WIN32_FIND_DATAA fd;
	HANDLE h;
	DWORD attr = GetFileAttributesA(path);

	if (attr == INVALID_FILE_ATTRIBUTES)
		return;
	if (!(attr & FILE_ATTRIBUTE_DIRECTORY)) {
		SetFileAttributesA(path, FILE_ATTRIBUTE_NORMAL);
		DeleteFileA(path);
		return;
	}
	snprintf(pat, sizeof pat, "%s\\*", path);
	h = FindFirstFileA(pat, &fd);
	if (h != INVALID_HANDLE_VALUE) {
		do {
			if (!strcmp(fd.cFileName, ".") || !strcmp(fd.cFileName, ".."))
				continue;
			snprintf(sub, sizeof sub, "%s\\%s", path, fd.cFileName);
			wincompat_rmtree(sub);
		} while (FindNextFileA(h, &fd));
		FindClose(h);
	}
	RemoveDirectoryA(path);
}

static __attribute__((unused)) int wincompat_system(const char *cmd)
{
	char path[MAX_PATH], *p;
	size_t n;
	int rm;

	if (strncmp(cmd, "rm -rf ", 7) == 0)
		rm = 1;
	else if (strncmp(cmd, "mkdir -p ", 9) == 0)
		rm = 0;
	else
		return system(cmd);
	cmd += rm ? 7 : 9;
	if (*cmd == '\'')
		cmd++;
	n = strlen(cmd);
	if (n >= sizeof path)
		return -1;
	memcpy(path, cmd, n + 1);
	if (n && path[n - 1] == '\'')
		path[n - 1] = '\0';
	if (rm) {
		wincompat_rmtree(path);
		return 0;
	}
	for (p = path + 1; *p; p++) {
		if (*p != '/' && *p != '\\')
			continue;
		*p = '\0';
		CreateDirectoryA(path, NULL);
		*p = '/';
	}
	return CreateDirectoryA(path, NULL) || GetFileAttributesA(path) != INVALID_FILE_ATTRIBUTES ? 0 : 1;
}
#define system wincompat_system

#endif /* _WIN32 */
#endif /* INSTATE_WINCOMPAT_H */
