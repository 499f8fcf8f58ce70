/*
 * validate.h - request field checks shared by the endpoint files (server-internal).
 *
 * Every function reads r->json; on failure it has already queued the 400 reply and
 * returns false, so handlers read `if (!v_int(...)) return;`. Absent or null optional
 * fields leave *out untouched.
 */
#ifndef PV_SERVER_VALIDATE_H
#define PV_SERVER_VALIDATE_H

#include "server/http.h"

bool v_string(struct http_req *r, const char *key, bool required, const char **out);
bool v_bool(struct http_req *r, const char *key, bool *out);
/* Integers; a float with no fraction is accepted. *present tells whether it was given. */
bool v_int(struct http_req *r, const char *key, bool required, long min, long max, long *out,
           bool *present);
bool v_number(struct http_req *r, const char *key, double min, double max, double *out);
bool v_array(struct http_req *r, const char *key, bool required, json_t **out);
/* A list of at most max_n non-empty strings (or one string when allow_string); out has
 * room for max_n. Empty strings are dropped. */
bool v_stop_list(struct http_req *r, const char *key, bool allow_string, int max_n,
                 const char **out, int *n_out);
/* The "model" field: records it for the log and 404s a name --alias does not allow. */
bool v_model(struct http_req *r, bool required, const char **out);

#endif /* PV_SERVER_VALIDATE_H */
