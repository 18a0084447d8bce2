/* cli_links.c — `splitchain links`: the links the workers measured between
 * them and to the coordinator (Coordinator.Links), the latest of each. */
#include <stdio.h>

#include <cjson/cJSON.h>

#include "cli_conn.h"
#include "sc_rpc_pb.h"
#include "splitchain.pb-c.h"

static const char links_help[] =
    "usage: splitchain links [--json]\n\nLists the measured links: round-trip time and "
    "bandwidth from each worker to\nthe others and to the coordinator, the latest of each "
    "(workers measure them at\nregister and every --probe-every-s seconds while idle). The "
    "planner orders the\nchain and places its cuts by them.\n\n";

int cli_links(int argc, char **argv)
{
	Splitchain__Empty req = SPLITCHAIN__EMPTY__INIT;
	Splitchain__LinksReply *rep = NULL;
	cli_conn co;
	int p = cli_parse_simple("links", links_help, argc, argv, &co, NULL, 0);
	if (p)
		return p < 0 ? CLI_OK : p;
	if ((p = cli_call("links", &co, "Coordinator.Links", &req.base,
			  &splitchain__links_reply__descriptor, (ProtobufCMessage **)&rep)))
		return p;
	if (co.json) {
		cJSON *a = cJSON_CreateArray();
		for (size_t i = 0; i < rep->n_links; i++) {
			const Splitchain__LinkInfo *l = rep->links[i];
			cJSON *o = cJSON_CreateObject();
			cJSON_AddNumberToObject(o, "from_worker", (double)l->from_worker);
			cJSON_AddStringToObject(o, "from", l->from_name);
			cJSON_AddNumberToObject(o, "to_worker", (double)l->to_worker);
			cJSON_AddStringToObject(o, "to", l->to_name);
			cJSON_AddNumberToObject(o, "rtt_ms", l->rtt_ms);
			cJSON_AddNumberToObject(o, "mbit_s", l->mbit_s);
			cJSON_AddNumberToObject(o, "measured_ms", (double)l->measured_unix_ms);
			cJSON_AddNumberToObject(o, "age_s", l->age_s);
			cJSON_AddItemToArray(a, o);
		}
		cli_print_json(a);
	} else {
		printf("%-20s %-20s %10s %10s %8s\n", "FROM", "TO", "RTT MS", "MBIT/S", "AGE S");
		for (size_t i = 0; i < rep->n_links; i++) {
			const Splitchain__LinkInfo *l = rep->links[i];
			printf("%-20s %-20s %10.3f %10.0f %8.0f\n", l->from_name, l->to_name,
			       l->rtt_ms, l->mbit_s, l->age_s);
		}
		if (!rep->n_links)
			printf("(no links measured yet)\n");
	}
	splitchain__links_reply__free_unpacked(rep, NULL);
	return CLI_OK;
}
