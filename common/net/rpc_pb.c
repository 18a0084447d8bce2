/* rpc_pb.c — protobuf-c messages over sc_rpc. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "sc_rpc_pb.h"

sc_err sc_rpc_call_pb(sc_rpc_client *cl, const char *method, const ProtobufCMessage *req,
		      const ProtobufCMessageDescriptor *rep_desc, int timeout_ms, int *status,
		      char *msg, size_t msg_size, ProtobufCMessage **rep)
{
	size_t n = protobuf_c_message_get_packed_size(req), rlen = 0;
	uint8_t *buf = malloc(n ? n : 1), *body = NULL;
	sc_err rc;

	*rep = NULL;
	if (!buf)
		return sc_errf(SC_ENOMEM, "out of memory packing %s", method);
	protobuf_c_message_pack(req, buf);
	rc = sc_rpc_call(cl, method, buf, n, timeout_ms, status, msg, msg_size, &body, &rlen);
	free(buf);
	if (rc || *status != SC_STATUS_OK) {
		free(body);
		return rc;
	}
	*rep = protobuf_c_message_unpack(rep_desc, NULL, rlen, body);
	free(body);
	if (!*rep) {
		*status = SC_STATUS_INTERNAL;
		if (msg)
			snprintf(msg, msg_size, "%s: the reply does not decode as %s", method,
				 rep_desc->name);
	}
	return SC_OK;
}

int sc_rpc_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *req, size_t len,
		  ProtobufCMessage **out, sc_rpc_reply *rep)
{
	*out = protobuf_c_message_unpack(desc, NULL, len, req);
	if (*out)
		return 0;
	sc_rpc_reply_err(rep, SC_STATUS_INVALID_ARGUMENT, "request does not decode as %s",
			 desc->name);
	return 1;
}

void sc_rpc_reply_pb(sc_rpc_reply *rep, const ProtobufCMessage *msg)
{
	size_t n = protobuf_c_message_get_packed_size(msg);
	rep->body = malloc(n ? n : 1);
	if (!rep->body) {
		sc_rpc_reply_err(rep, SC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	protobuf_c_message_pack(msg, rep->body);
	rep->len = n;
	rep->status = SC_STATUS_OK;
}

void sc_rpc_reply_err(sc_rpc_reply *rep, int status, const char *fmt, ...)
{
	va_list ap;
	rep->status = status;
	va_start(ap, fmt);
	vsnprintf(rep->message, sizeof(rep->message), fmt, ap);
	va_end(ap);
	free(rep->body);
	rep->body = NULL;
	rep->len = 0;
}
