/* Headers bindgen reads. Only what the allowlist in build.rs names is emitted. */
#include <httpd.h>
#include <http_config.h>
#include <http_core.h>
#include <http_protocol.h>
#include <http_request.h>
#include <http_log.h>
#include <http_main.h>
#include <ap_socache.h>
#include <ap_provider.h>
#include <ap_mpm.h>
#include <scoreboard.h>
#include <util_mutex.h>
#include <apr_shm.h>
#include <apr_global_mutex.h>
#include <apr_strings.h>
#include <apr_tables.h>
