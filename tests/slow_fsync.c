/* slow_fsync.c — an LD_PRELOAD shim that plays a slow disk: while the file
 * named by $SC_SLOW_FSYNC holds a number of milliseconds, every fsync and
 * fdatasync of the process sleeps that long before syncing. Used by
 * slowdisk_test.sh to check that a coordinator whose database stalls on the
 * disk still answers its workers' heartbeats. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long delay_ms(void)
{
	const char *path = getenv("SC_SLOW_FSYNC");
	long ms = 0;
	FILE *f;

	if (!path || !(f = fopen(path, "r")))
		return 0;
	if (fscanf(f, "%ld", &ms) != 1)
		ms = 0;
	fclose(f);
	return ms > 0 ? ms : 0;
}

static void stall(void)
{
	long ms = delay_ms();
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	if (ms)
		while (nanosleep(&ts, &ts) != 0)
			;
}

int fsync(int fd)
{
	static int (*real)(int);
	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
	stall();
	return real(fd);
}

int fdatasync(int fd)
{
	static int (*real)(int);
	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
	stall();
	return real(fd);
}
