/*
 * wincompat.h - the two POSIX calls the C tests make for their scratch
 * directories, for the Windows build (mingw-w64, run under Wine); CMake
 * force-includes it there (-include), nowhere else.
 *
 * mkdtemp: _mktemp and _mkdir. system("rm -rf DIR"), the tests' cleanup:
 * a recursive delete here, since cmd.exe has no rm; every other command
 * goes to the real system(). The tests' "/tmp/..." paths name \tmp on the
 * current drive, which under Wine is Z:, the Unix root: the real /tmp.
 */
#ifndef INSTATE_WINCOMPAT_H
#define INSTATE_WINCOMPAT_H
#ifdef _WIN32

#include <direct.h>
#include <io.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <windows.h>

static char *wincompat_mkdtemp(char *templ)
{
	if (!_mktemp(templ) || _mkdir(templ) != 0)
		return NULL;
	return templ;
}
#define mkdtemp wincompat_mkdtemp

static void wincompat_rmtree(const char *path)
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

static int wincompat_system(const char *cmd)
{
	char path[MAX_PATH];
	size_t n;

	if (strncmp(cmd, "rm -rf ", 7) != 0)
		return system(cmd);
	cmd += 7;
	if (*cmd == '\'')
		cmd++;
	n = strlen(cmd);
	if (n >= sizeof path)
		return -1;
	memcpy(path, cmd, n + 1);
	if (n && path[n - 1] == '\'')
		path[n - 1] = '\0';
	wincompat_rmtree(path);
	return 0;
}
#define system wincompat_system

#endif /* _WIN32 */
#endif /* INSTATE_WINCOMPAT_H */
