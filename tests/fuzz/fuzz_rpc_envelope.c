/* fuzz_rpc_envelope.c — a whole RPC request as it arrives on a daemon's
 * socket: the Envelope (magic, version, method, request id, deadline, body)
 * taken apart by the server's own handle() (common/net/rpc_server.c is
 * compiled into this harness to reach it, without a socket), which then
 * runs the method's handler: here fuzz_requests.h's unpack-and-check of the
 * method's request. Every reply the server makes must be an envelope. */
#include "../../common/net/rpc_server.c"

#include "fuzz_requests.h"

/* One handler per method: the server passes no method name to a handler. */
#define H(i)                                                                                       \
	static void h##i(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)             \
	{                                                                                          \
		(void)arg;                                                                         \
		(void)rep;                                                                         \
		fuzz_request(i, req, len);                                                         \
	}
/* clang-format off */
H(0) H(1) H(2) H(3) H(4) H(5) H(6) H(7) H(8) H(9) H(10) H(11) H(12) H(13) H(14) H(15)
H(16) H(17) H(18) H(19) H(20) H(21) H(22) H(23) H(24) H(25) H(26) H(27) H(28) H(29) H(30) H(31)
H(32)
    /* clang-format on */
    static const sc_rpc_handler handlers[] = { h0,  h1,  h2,  h3,  h4,  h5,  h6,  h7,  h8,
					       h9,  h10, h11, h12, h13, h14, h15, h16, h17,
					       h18, h19, h20, h21, h22, h23, h24, h25, h26,
					       h27, h28, h29, h30, h31, h32 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static sc_rpc_method methods[FUZZ_N_SERVED + 1];
	static const char *const idem[] = { "Coordinator.FetchTensor", "Worker.FetchTensor", NULL };
	static atomic_ullong calls[FUZZ_N_SERVED + 1], failures[FUZZ_N_SERVED + 1];
	sc_rpc_server srv = { .methods = methods,
			      .nmethods = FUZZ_N_SERVED,
			      .calls = calls,
			      .failures = failures,
			      .idempotent = idem };
	nng_msg *msg, *rep;

	_Static_assert(sizeof(handlers) / sizeof(handlers[0]) == FUZZ_N_SERVED,
		       "one handler per served method");
	fuzz_dir(); /* silences logging */
	for (int i = 0; i < FUZZ_N_SERVED; i++)
		methods[i] = (sc_rpc_method){ fuzz_methods[i].name, handlers[i] };
	/* A fresh retry memory per input, so that each run depends on its input alone. */
	if (!(srv.memo.e = calloc(MEMO_CAP, sizeof(memo_entry))))
		abort();
	pthread_mutex_init(&srv.memo.mu, NULL);
	if (nng_msg_alloc(&msg, size) != 0)
		abort();
	if (size)
		memcpy(nng_msg_body(msg), data, size);
	/* Twice: the second run of a request id is answered from the retry memory. */
	for (int k = 0; k < 2; k++) {
		if ((rep = handle(&srv, msg)) != NULL) {
			Splitchain__Envelope *e =
			    splitchain__envelope__unpack(NULL, nng_msg_len(rep), nng_msg_body(rep));
			if (!e || e->magic != SC_RPC_MAGIC || e->version != SC_RPC_VERSION)
				abort(); /* the server's reply is not a valid envelope */
			splitchain__envelope__free_unpacked(e, NULL);
			nng_msg_free(rep);
		}
	}
	nng_msg_free(msg);
	memo_free(&srv.memo);
	return 0;
}
