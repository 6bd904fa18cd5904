/* The thin C shim: only what is a macro or a static inline in httpd's headers. */
#ifndef SHIELD_SHIM_H
#define SHIELD_SHIM_H
#include <httpd.h>

/* ap_rputs is a static APR_INLINE in http_protocol.h: no symbol to bind. */
int shield_shim_rputs(const char *str, request_rec *r);

/* The MMN this shim was compiled against, to cross-check the bindgen constants. */
int shield_shim_mmn_major(void);
int shield_shim_mmn_minor(void);
#endif
