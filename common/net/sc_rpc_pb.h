/* sc_rpc_pb.h — sc_rpc calls and replies with protobuf-c messages in place of
 * byte buffers: what the coordinator, the workers and the CLI actually use. */
#ifndef SC_RPC_PB_H
#define SC_RPC_PB_H

#include <protobuf-c/protobuf-c.h>

#include "sc_rpc.h"

/* Calls method with req packed; on SC_STATUS_OK unpacks the reply body as
 * rep_desc into *rep (new; free with protobuf_c_message_free_unpacked). A
 * reply that does not unpack gives status SC_STATUS_INTERNAL with a message.
 * Returns as sc_rpc_call. */
sc_err sc_rpc_call_pb(sc_rpc_client *cl, const char *method, const ProtobufCMessage *req,
		      const ProtobufCMessageDescriptor *rep_desc, int timeout_ms, int *status,
		      char *msg, size_t msg_size, ProtobufCMessage **rep);
/* The same with a credential for this call only (sc_rpc_call_as). */
sc_err sc_rpc_call_pb_as(sc_rpc_client *cl, const void *cred, size_t cred_len, const char *method,
			 const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rep_desc,
			 int timeout_ms, int *status, char *msg, size_t msg_size,
			 ProtobufCMessage **rep);

/* Unpacks a handler's request body as desc into *out (new; free with
 * protobuf_c_message_free_unpacked). On failure fills rep with
 * INVALID_ARGUMENT and returns NULL-result nonzero. */
int sc_rpc_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *req, size_t len,
		  ProtobufCMessage **out, sc_rpc_reply *rep);

/* Packs msg as the reply body (status OK). On allocation failure sets
 * RESOURCE_EXHAUSTED. */
void sc_rpc_reply_pb(sc_rpc_reply *rep, const ProtobufCMessage *msg);

/* Sets an error status with a printf-style message. */
void sc_rpc_reply_err(sc_rpc_reply *rep, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
