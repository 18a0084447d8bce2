/* dp_frame.h — the data plane's frame codec (dp_frame.c), as the socket
 * code (dataplane.c) uses it. Private to common/net/. */
#ifndef SC_DP_FRAME_H
#define SC_DP_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "sc_dataplane.h"

/* "forward", "backward" or "unknown". Static string. */
const char *dp_dir_name(int d);

/* Writes the length prefix and packed header for a tensor of payload bytes
 * into buf (4 + SC_DP_MAX_HEADER bytes); *n = bytes written. stamp: put the
 * send time in the header (the test-only link delay; else it is absent). */
sc_err dp_pack_prefix(uint8_t *buf, size_t *n, const sc_dp_tag *tag, const sc_dp_peer *from,
		      int ndim, const int64_t *shape, int wire, const void *payload_data,
		      size_t payload, int stamp);

/* *bytes = the payload of a float tensor of this shape in encoding wire
 * (enum sc_wire: rows = all dimensions but the last, cols = the last);
 * SC_EINVAL for a bad or oversized shape. */
sc_err dp_payload_size(int ndim, const int64_t *shape, int wire, size_t *bytes);

/* Checks msg against want / shape / wire (and the sender's stamp against
 * from unless NULL) and decodes the payload into data (floats). *stale = 1
 * when a well-formed header names this job's earlier step. */
sc_err dp_decode_frame(const uint8_t *msg, size_t len, const sc_dp_tag *want,
		       const sc_dp_peer *from, int ndim, const int64_t *shape, int wire,
		       float *data, int *stale);

/* The sender's clock stamp of a framed tensor (microseconds since the
 * epoch), 0 when msg does not parse. For the test-only link delay. */
uint64_t dp_frame_sent_us(const uint8_t *msg, size_t len);

#endif
