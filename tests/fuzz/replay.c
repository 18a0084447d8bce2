/* replay.c — runs a harness of tests/fuzz without libFuzzer: each file
 * named on the command line, or each file in a directory named there, once
 * through LLVMFuzzerTestOneInput. The ordinary build runs the committed
 * corpora this way (ctest -R fuzz_corpus), so a regression seed fails the
 * unit tests, under ASan too, on a machine without clang. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Runs the file at path; 0, or 1 when it cannot be read. */
static int run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *b = NULL;
	long n;
	int rc = 1;
	if (f && fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (b = malloc((size_t)n + 1)) != NULL && fread(b, 1, (size_t)n, f) == (size_t)n) {
		LLVMFuzzerTestOneInput(b, (size_t)n);
		rc = 0;
	} else {
		perror(path);
	}
	free(b);
	if (f)
		fclose(f);
	return rc;
}

int main(int argc, char **argv)
{
	int files = 0, bad = 0;
	for (int i = 1; i < argc; i++) {
		struct stat st;
		DIR *d;
		struct dirent *e;
		char p[4096];
		if (stat(argv[i], &st) || !S_ISDIR(st.st_mode)) {
			bad += run_file(argv[i]), files++;
			continue;
		}
		if (!(d = opendir(argv[i]))) {
			perror(argv[i]);
			return 1;
		}
		while ((e = readdir(d)) != NULL) {
			if (e->d_name[0] == '.')
				continue;
			snprintf(p, sizeof(p), "%s/%s", argv[i], e->d_name);
			bad += run_file(p), files++;
		}
		closedir(d);
	}
	printf("%d inputs run, %d unreadable\n", files, bad);
	return files == 0 || bad ? 1 : 0;
}
