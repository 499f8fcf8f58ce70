/*
 * validate.c - type and range checks of request fields, with the API's own wording.
 *
 * Each check reads one field of the request body; on a wrong type, a missing required
 * field or a value out of range it queues a 400 in the request's envelope, worded like
 * Anthropic's validator ("max_tokens: Field required", "...: Input should be a valid
 * integer") with `param` set for OpenAI, and returns false. Unknown fields are never an
 * error: clients send many that a local server ignores.
 */
#include <math.h>
#include <string.h>

#include "server/validate.h"

static bool fail(struct http_req *r, const char *key, const char *what)
{
    http_reply_errorf(r, PV_ERR_INVALID, key, "%s: %s", key, what);
    return false;
}

bool v_string(struct http_req *r, const char *key, bool required, const char **out)
{
    json_t *v = json_object_get(r->json, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return required ? fail(r, key, "Field required") : true;
    if (!json_is_string(v))
        return fail(r, key, "Input should be a valid string");
    *out = json_string_value(v);
    return true;
}

bool v_bool(struct http_req *r, const char *key, bool *out)
{
    json_t *v = json_object_get(r->json, key);
    if (!v || json_is_null(v))
        return true;
    if (!json_is_boolean(v))
        return fail(r, key, "Input should be a valid boolean");
    *out = json_is_true(v);
    return true;
}

bool v_int(struct http_req *r, const char *key, bool required, long min, long max, long *out,
           bool *present)
{
    json_t *v = json_object_get(r->json, key);
    char msg[128];
    if (present)
        *present = false;
    if (!v || json_is_null(v))
        return required ? fail(r, key, "Field required") : true;
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d != floor(d) || !isfinite(d) || fabs(d) > 9e15)
            return fail(r, key, "Input should be a valid integer");
        v = NULL;
        if (d < (double)min) {
            snprintf(msg, sizeof(msg), "Input should be greater than or equal to %ld", min);
            return fail(r, key, msg);
        }
        if (d > (double)max) {
            snprintf(msg, sizeof(msg), "Input should be less than or equal to %ld", max);
            return fail(r, key, msg);
        }
        *out = (long)d;
    } else if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        if (x < min) {
            snprintf(msg, sizeof(msg), "Input should be greater than or equal to %ld", min);
            return fail(r, key, msg);
        }
        if (x > max) {
            snprintf(msg, sizeof(msg), "Input should be less than or equal to %ld", max);
            return fail(r, key, msg);
        }
        *out = (long)x;
    } else {
        return fail(r, key, "Input should be a valid integer");
    }
    if (present)
        *present = true;
    return true;
}

bool v_number(struct http_req *r, const char *key, double min, double max, double *out)
{
    json_t *v = json_object_get(r->json, key);
    char msg[128];
    if (!v || json_is_null(v))
        return true;
    if (!json_is_number(v))
        return fail(r, key, "Input should be a valid number");
    double d = json_number_value(v);
    if (!(d >= min)) {
        snprintf(msg, sizeof(msg), "Input should be greater than or equal to %g", min);
        return fail(r, key, msg);
    }
    if (!(d <= max)) {
        snprintf(msg, sizeof(msg), "Input should be less than or equal to %g", max);
        return fail(r, key, msg);
    }
    *out = d;
    return true;
}

bool v_array(struct http_req *r, const char *key, bool required, json_t **out)
{
    json_t *v = json_object_get(r->json, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return required ? fail(r, key, "Field required") : true;
    if (!json_is_array(v))
        return fail(r, key, "Input should be a valid list");
    *out = v;
    return true;
}

bool v_stop_list(struct http_req *r, const char *key, bool allow_string, int max_n,
                 const char **out, int *n_out)
{
    json_t *v = json_object_get(r->json, key);
    char msg[128];
    *n_out = 0;
    if (!v || json_is_null(v))
        return true;
    if (allow_string && json_is_string(v)) {
        out[0] = json_string_value(v);
        *n_out = json_string_length(v) ? 1 : 0;
        return true;
    }
    if (!json_is_array(v))
        return fail(r, key, allow_string ? "Input should be a valid string or list of strings"
                                         : "Input should be a valid list");
    if (json_array_size(v) > (size_t)max_n) {
        snprintf(msg, sizeof(msg), "List should have at most %d items", max_n);
        return fail(r, key, msg);
    }
    size_t i;
    json_t *s;
    json_array_foreach(v, i, s) {
        if (!json_is_string(s)) {
            snprintf(msg, sizeof(msg), "%s.%zu: Input should be a valid string", key, i);
            http_reply_error(r, PV_ERR_INVALID, key, msg);
            return false;
        }
        if (json_string_length(s) > 0)
            out[(*n_out)++] = json_string_value(s);
    }
    return true;
}

bool v_model(struct http_req *r, bool required, const char **out)
{
    if (!v_string(r, "model", required, out))
        return false;
    if (*out) {
        snprintf(r->model, sizeof(r->model), "%s", *out);
        if (!http_model_allowed(r->srv, *out)) {
            http_reply_errorf(r, PV_ERR_NOT_FOUND, "model", "model: %s", *out);
            return false;
        }
    }
    return true;
}
