/* auth_poke.c — raw requests for tests/integration/auth_test.sh, which the
 * CLI cannot send (it resolves paths on its own side and always presents
 * $SPLITCHAIN_TOKEN):
 *   auth_poke submit URL MODEL DATA      Coordinator.Submit naming these
 *                                        paths verbatim; prints "STATUS: message"
 *   auth_poke call URL METHOD [CRED]     an empty request, credential CRED
 *                                        (default none); prints "STATUS: message"
 *   auth_poke flood URL SECONDS          malformed bodies and submits of an
 *                                        absent file, as fast as they are
 *                                        answered, for SECONDS; prints how many
 *                                        were answered with which status
 * The credential of submit and flood is $SPLITCHAIN_TOKEN. Exit 0 when a
 * status came back (flood: always), 1 when none did. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sc_rpc_pb.h"
#include "sc_tls.h"
#include "splitchain.pb-c.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int submit(sc_rpc_client *cl, const char *model, const char *data, char *msg, size_t n)
{
	Splitchain__SubmitRequest r = SPLITCHAIN__SUBMIT_REQUEST__INIT;
	Splitchain__LoraConfig lora = SPLITCHAIN__LORA_CONFIG__INIT;
	Splitchain__TrainConfig train = SPLITCHAIN__TRAIN_CONFIG__INIT;
	ProtobufCMessage *rep = NULL;
	int status = -1;
	r.model_path = (char *)model;
	r.data_path = (char *)data;
	r.lora = &lora;
	r.train = &train;
	r.stages = 1;
	if (sc_rpc_call_pb(cl, "Coordinator.Submit", &r.base, &splitchain__submit_reply__descriptor,
			   10000, &status, msg, n, &rep))
		return -1;
	if (rep)
		protobuf_c_message_free_unpacked(rep, NULL);
	return status;
}

int main(int argc, char **argv)
{
	const char *token = getenv("SPLITCHAIN_TOKEN");
	sc_rpc_client *cl = NULL;
	char msg[512] = "";
	int status = -1;

	if (argc < 4) {
		fprintf(stderr, "usage: auth_poke submit|call|flood URL ...\n");
		return 2;
	}
	/* TLS addresses: the CLI's identity from the environment. */
	if ((sc_tls_url(argv[2]) &&
	     sc_tls_init(getenv("SPLITCHAIN_TLS_CERT"), getenv("SPLITCHAIN_TLS_KEY"),
			 getenv("SPLITCHAIN_TLS_CA"))) ||
	    sc_rpc_client_open(&cl, argv[2])) {
		fprintf(stderr, "auth_poke: %s\n", sc_err_detail());
		return 2;
	}
	if (!strcmp(argv[1], "submit") && argc == 5) {
		sc_rpc_client_set_auth(cl, token ? token : "", token ? strlen(token) : 0);
		status = submit(cl, argv[3], argv[4], msg, sizeof(msg));
	} else if (!strcmp(argv[1], "call")) {
		const char *cred = argc > 4 ? argv[4] : "";
		uint8_t *rep = NULL;
		size_t len = 0;
		sc_rpc_client_set_auth(cl, cred, strlen(cred));
		if (sc_rpc_call(cl, argv[3], NULL, 0, 10000, &status, msg, sizeof(msg), &rep, &len))
			status = -1;
		free(rep);
	} else if (!strcmp(argv[1], "flood")) {
		static const uint8_t junk[] = { 0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x12, 0x01 };
		long counts[SC_STATUS_UNAUTHENTICATED + 2] = { 0 };
		double end = now_s() + atof(argv[3]);
		sc_rpc_client_set_auth(cl, token ? token : "", token ? strlen(token) : 0);
		for (long i = 0; now_s() < end; i++) {
			uint8_t *rep = NULL;
			size_t len = 0;
			if (i % 2)
				status =
				    submit(cl, "/no/such/model", "/no/such/data", msg, sizeof(msg));
			else if (sc_rpc_call(cl, "Coordinator.Submit", junk, sizeof(junk), 10000,
					     &status, msg, sizeof(msg), &rep, &len))
				status = -1;
			free(rep);
			counts[status >= 0 && status <= SC_STATUS_UNAUTHENTICATED
				   ? status
				   : SC_STATUS_UNAUTHENTICATED + 1]++;
		}
		for (int s = 0; s <= SC_STATUS_UNAUTHENTICATED; s++)
			if (counts[s])
				printf("%s %ld\n", sc_status_name(s), counts[s]);
		if (counts[SC_STATUS_UNAUTHENTICATED + 1])
			printf("NONE %ld\n", counts[SC_STATUS_UNAUTHENTICATED + 1]);
		sc_rpc_client_close(cl);
		return 0;
	} else {
		fprintf(stderr, "usage: auth_poke submit|call|flood URL ...\n");
		return 2;
	}
	sc_rpc_client_close(cl);
	if (status < 0)
		return 1;
	printf("%s: %s\n", sc_status_name(status), msg);
	return 0;
}
