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
 * into buf (4 + SC_DP_MAX_HEADER bytes); *n = bytes written. */
sc_err dp_pack_prefix(uint8_t *buf, size_t *n, const sc_dp_tag *tag, const sc_dp_peer *from,
		      int ndim, const int64_t *shape, const float *data, size_t payload);

/* *bytes = the payload of a float tensor of this shape; SC_EINVAL for a
 * bad or oversized shape. */
sc_err dp_payload_size(int ndim, const int64_t *shape, size_t *bytes);

/* Checks msg against want / shape (and the sender's stamp against from
 * unless NULL) and copies the payload into data. *stale = 1 when a
 * well-formed header names this job's earlier step. */
sc_err dp_decode_frame(const uint8_t *msg, size_t len, const sc_dp_tag *want,
		       const sc_dp_peer *from, int ndim, const int64_t *shape, float *data,
		       int *stale);

#endif
