/* coord_users.c — `splitchain-coordinator --db FILE users ...`: the users
 * table from the coordinator's host, beside a running daemon or not (the
 * database is WAL with a busy timeout, so both may write). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coord.h"
#include "db_users.h"

static int users_usage(void)
{
	fprintf(stderr, "usage: splitchain-coordinator --db FILE users add NAME [--admin]\n"
			"       splitchain-coordinator --db FILE users list\n"
			"       splitchain-coordinator --db FILE users revoke NAME\n");
	return 2;
}

static void when(int64_t ms, char *out, size_t size)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	if (!ms || !gmtime_r(&t, &tm) || !strftime(out, size, "%Y-%m-%d %H:%M:%SZ", &tm))
		snprintf(out, size, "-");
}

int coord_users_main(const char *dbpath, int argc, char **argv)
{
	const char *verb = argc > 0 ? argv[0] : "";
	int admin = 0, code = 1;
	sc_db *db = NULL;

	if (!strcmp(verb, "add")) {
		if (argc < 2 || argc > 3 || (argc == 3 && strcmp(argv[2], "--admin")))
			return users_usage();
		admin = argc == 3;
	} else if (!strcmp(verb, "revoke")) {
		if (argc != 2)
			return users_usage();
	} else if (!strcmp(verb, "list")) {
		if (argc != 1)
			return users_usage();
	} else {
		return users_usage();
	}
	if (sc_db_open(&db, dbpath)) {
		fprintf(stderr, "splitchain-coordinator: %s\n", sc_err_detail());
		return 1;
	}
	if (!strcmp(verb, "add")) {
		char token[SC_TOKEN_MAX];
		if (sc_db_user_add(db, argv[1], admin, token, NULL)) {
			fprintf(stderr, "splitchain-coordinator: users add: %s\n", sc_err_detail());
			goto out;
		}
		sc_db_event(db, 0, 0, SC_LOG_INFO, "user_added", "user %s%s", argv[1],
			    admin ? " (admin)" : "");
		/* The token is shown this once: only its hash is kept. */
		printf("%s\n", token);
		fprintf(stderr,
			"user %s%s added; the token above is shown only now: give it to them\n"
			"(SPLITCHAIN_TOKEN, or ~/.config/splitchain/token with mode 600)\n",
			argv[1], admin ? " (admin)" : "");
		memset(token, 0, sizeof(token));
	} else if (!strcmp(verb, "revoke")) {
		if (sc_db_user_revoke(db, argv[1])) {
			fprintf(stderr, "splitchain-coordinator: users revoke: %s\n",
				sc_err_detail());
			goto out;
		}
		sc_db_event(db, 0, 0, SC_LOG_INFO, "user_revoked", "user %s", argv[1]);
		printf("user %s revoked\n", argv[1]);
	} else {
		sc_db_user *u = NULL;
		int n = 0;
		char made[32], gone[32];
		if (sc_db_users_list(db, &u, &n)) {
			fprintf(stderr, "splitchain-coordinator: users list: %s\n",
				sc_err_detail());
			goto out;
		}
		printf("%-5s %-24s %-5s %-21s %s\n", "ID", "NAME", "ADMIN", "CREATED", "REVOKED");
		for (int i = 0; i < n; i++) {
			when(u[i].created_ms, made, sizeof(made));
			when(u[i].revoked_ms, gone, sizeof(gone));
			printf("%-5lld %-24s %-5s %-21s %s\n", (long long)u[i].id, u[i].name,
			       u[i].admin ? "yes" : "no", made, gone);
		}
		free(u);
	}
	code = 0;
out:
	sc_db_close(db);
	return code;
}
