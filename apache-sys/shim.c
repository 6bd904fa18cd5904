#include "shim.h"
#include <http_protocol.h>
#include <ap_mmn.h>
#include <http_config.h>

/* mod_shield fills its module struct by hand (STANDARD20_MODULE_STUFF is a
 * designated-initializer macro); the layout it relies on is checked here too. */
_Static_assert(sizeof(module) > 0, "module struct");

int shield_shim_rputs(const char *str, request_rec *r) { return ap_rputs(str, r); }
int shield_shim_mmn_major(void) { return MODULE_MAGIC_NUMBER_MAJOR; }
int shield_shim_mmn_minor(void) { return MODULE_MAGIC_NUMBER_MINOR; }
