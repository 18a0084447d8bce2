/* fuzz_config.c — a model's config.json (common/model/config.c): parsed,
 * validated and described as the coordinator and the workers do. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sc_model_config mc, again;
	char text[512];

	fuzz_dir(); /* silences logging */
	if (sc_config_parse(&mc, (const char *)data, size))
		return 0;
	if (sc_config_validate(&mc))
		return 0;
	sc_config_describe(&mc, text, sizeof(text));
	again = mc;
	if (!sc_config_equal(&mc, &again))
		abort(); /* a configuration differs from its own copy */
	return 0;
}
