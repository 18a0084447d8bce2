/* sc_wire.h — engine structures on the wire: filling an sc_adapter from the
 * NamedTensor lists of protobuf messages (Worker.Restore, Coordinator.Export),
 * with every name, shape and size checked; the training configuration both
 * ways. */
#ifndef SC_WIRE_H
#define SC_WIRE_H

#include <stddef.h>

#include "sc_adapter.h"
#include "sc_tokenizer.h"
#include "sc_train.h"
#include "splitchain.pb-c.h"

/* Copies ts[0..n) into the matrices of layers [first, last) of ad (names as
 * sc_adapter_tensors gives them). Every matrix of those layers must come
 * exactly once with its shape and byte size; tensors of ad's other layers
 * are skipped. A name ad does not have, a wrong shape, a duplicate or a
 * missing matrix gives SC_EFORMAT whose detail starts with what (e.g.
 * "lora") and names the tensor. Borrows ts; ad may be partly written on
 * error. */
sc_err sc_wire_to_adapter(sc_adapter *ad, int first, int last, Splitchain__NamedTensor *const *ts,
			  size_t n, const char *what);

/* The training configuration of a message, field by field (unchecked: see
 * sc_train_config_validate), and back. */
void sc_wire_train_config(sc_train_config *tc, const Splitchain__TrainConfig *t);
void sc_wire_train_message(Splitchain__TrainConfig *t, const sc_train_config *tc);
/* tc = the defaults with r's frozen base (base_quant, double_quant,
 * precision) for sc_train_base_format, which checks them. */
void sc_wire_gen_base(sc_train_config *tc, const Splitchain__GenOpenRequest *r);

/* The tokenizer among a registered model's files (Coordinator.ModelShow
 * with files): written to a private temporary directory, loaded as
 * sc_dataset_tokenizer loads a model directory's, and removed. *out NULL
 * when the model has none (text is read as bytes). */
sc_err sc_wire_model_tokenizer(const Splitchain__ModelInfo *info, sc_tokenizer **out);

#endif
