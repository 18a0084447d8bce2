/* rpc_pb.c — protobuf-c messages over sc_rpc. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "sc_rpc_pb.h"

/* Nonzero when m or a message inside it kept an unknown field numbered 0.
 * No field has that number; protobuf-c reads one from an overlong tag
 * (0x80 0x00) and keeps it, but packs it back in a form its own unpack
 * refuses: a request stored as it came (a job's spec) would no longer read
 * back. Other unknown fields stay allowed (newer peers' fields). */
static int has_field_zero(const ProtobufCMessage *m)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;

	for (unsigned i = 0; i < m->n_unknown_fields; i++)
		if (m->unknown_fields[i].tag == 0)
			return 1;
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		const char *at = (const char *)m + f->offset;
		if (f->type != PROTOBUF_C_TYPE_MESSAGE)
			continue;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
			ProtobufCMessage *const *v = *(ProtobufCMessage *const *const *)at;
			for (size_t k = 0; k < n; k++)
				if (v[k] && has_field_zero(v[k]))
					return 1;
		} else {
			const ProtobufCMessage *v = *(const ProtobufCMessage *const *)at;
			if (v && has_field_zero(v))
				return 1;
		}
	}
	return 0;
}

/* protobuf_c_message_unpack, refusing what has_field_zero finds. */
static ProtobufCMessage *unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *b,
				size_t len)
{
	ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, len, b);
	if (m && has_field_zero(m)) {
		protobuf_c_message_free_unpacked(m, NULL);
		return NULL;
	}
	return m;
}

/* cred NULL: the client's own credential. */
static sc_err call_pb(sc_rpc_client *cl, const void *cred, size_t cred_len, const char *method,
		      const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rep_desc,
		      int timeout_ms, int *status, char *msg, size_t msg_size,
		      ProtobufCMessage **rep)
{
	size_t n = protobuf_c_message_get_packed_size(req), rlen = 0;
	uint8_t *buf = malloc(n ? n : 1), *body = NULL;
	sc_err rc;

	*rep = NULL;
	if (!buf)
		return sc_errf(SC_ENOMEM, "out of memory packing %s", method);
	protobuf_c_message_pack(req, buf);
	rc = cred
		 ? sc_rpc_call_as(cl, cred, cred_len, method, buf, n, timeout_ms, status, msg,
				  msg_size, &body, &rlen)
		 : sc_rpc_call(cl, method, buf, n, timeout_ms, status, msg, msg_size, &body, &rlen);
	free(buf);
	if (rc || *status != SC_STATUS_OK) {
		free(body);
		return rc;
	}
	*rep = unpack(rep_desc, body, rlen);
	free(body);
	if (!*rep) {
		*status = SC_STATUS_INTERNAL;
		if (msg)
			snprintf(msg, msg_size, "%s: the reply does not decode as %s", method,
				 rep_desc->name);
	}
	return SC_OK;
}

sc_err sc_rpc_call_pb(sc_rpc_client *cl, const char *method, const ProtobufCMessage *req,
		      const ProtobufCMessageDescriptor *rep_desc, int timeout_ms, int *status,
		      char *msg, size_t msg_size, ProtobufCMessage **rep)
{
	return call_pb(cl, NULL, 0, method, req, rep_desc, timeout_ms, status, msg, msg_size, rep);
}

sc_err sc_rpc_call_pb_as(sc_rpc_client *cl, const void *cred, size_t cred_len, const char *method,
			 const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rep_desc,
			 int timeout_ms, int *status, char *msg, size_t msg_size,
			 ProtobufCMessage **rep)
{
	return call_pb(cl, cred ? cred : "", cred_len, method, req, rep_desc, timeout_ms, status,
		       msg, msg_size, rep);
}

int sc_rpc_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *req, size_t len,
		  ProtobufCMessage **out, sc_rpc_reply *rep)
{
	*out = unpack(desc, req, len);
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
