/* coord_models.h — the coordinator's model registry (coord_models.c):
 * registered models as content-addressed tensors (db_models.h), served to
 * workers by byte range. */
#ifndef SC_COORD_MODELS_H
#define SC_COORD_MODELS_H

#include "coord.h"
#include "sc_config.h"

/* The largest byte range one Coordinator.FetchTensor returns. */
#define SC_FETCH_MAX_CHUNK (16u << 20)

/* Coordinator.ModelAdd (ModelAddRequest -> ModelInfo): reads the
 * directory's config, tokenizer files and every tensor (hashing each) and
 * registers them; ALREADY_EXISTS for a name in use, INVALID_ARGUMENT for a
 * directory without a config or weights. Models (Empty -> ModelsReply),
 * ModelShow (ModelRef -> ModelInfo), ModelRemove (ModelRef -> Empty):
 * NOT_FOUND for an unknown name. FetchTensor (FetchTensorRequest ->
 * FetchTensorReply): a byte range of the tensor of that sha256, read from
 * the registered directory. */
void coord_m_model_add(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep);
void coord_m_models(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep);
void coord_m_model_show(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep);
void coord_m_model_remove(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep);
void coord_m_fetch_tensor(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep);

/* Coordinator.ReportCache (ReportCacheRequest -> Empty): replaces what a
 * registered worker's cache holds (worker_tensors). TensorSources
 * (TensorSourcesRequest -> TensorSourcesReply): for each hash, the live
 * workers but the asker whose last report holds it and whose link from the
 * asker was measured faster than the asker's to the coordinator, fastest
 * first (none while either link is unmeasured). Both take mu only to copy
 * the live workers, and query the database without it. */
void coord_m_report_cache(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep);
void coord_m_tensor_sources(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep);

/* Submit of a registered model (r->model set): sets r->model_path to its
 * directory and r->model_digest to its digest (r owns both, new strings).
 * Returns 0, or 1 with rep filled (NOT_FOUND naming an unknown model).
 * Does nothing for a job given by path. Takes no lock but the database's. */
int coord_models_resolve(coord *c, Splitchain__SubmitRequest *r, sc_rpc_reply *rep);

/* *mc = the model's configuration: the registry's copy of the registered
 * model called model when model is non-empty, else dir/config.json.
 * SC_ENOENT for a model that is not registered (any more). */
sc_err coord_model_config(coord *c, const char *model, const char *dir, sc_model_config *mc);
/* The same model's config.json text: *text new (free()), *len bytes. */
sc_err coord_model_config_text(coord *c, const char *model, const char *dir, char **text,
			       size_t *len);

/* Records the tensors worker says its cache holds (Register); a malformed
 * report is an event and is not stored. Borrows r. */
void coord_models_worker_cache(coord *c, int64_t worker, const Splitchain__RegisterRequest *r);

#endif
