"""Schemathesis hooks for ckrv-api: one check of ours in place of `status_code_conformance`.

The contract documents few error statuses. A status it does not document for an operation is
accepted only when it is one the API's error model uses, and its body is that model:
`{"error": <code>, "error_description": <text>}` as JSON; a 401 also names its scheme
(RFC 6750 §3), a 405 its allowed methods and a 429 how long to wait.
"""

import json

import schemathesis

# 400 invalid request, 401 no session, 404 unknown id or name, 405 wrong method, 409 conflict,
# 413 too large, 415 not JSON, 429 rate-limited.
ERROR_STATUSES = {400, 401, 404, 405, 409, 413, 415, 429}


def _documented(case, status):
    codes = set(case.operation.responses.status_codes)
    return "default" in codes or str(status) in codes or f"{str(status)[0]}XX" in codes


@schemathesis.check
def undocumented_statuses_are_api_errors(ctx, response, case):
    status = response.status_code
    if status < 400 or _documented(case, status):
        return None
    if status not in ERROR_STATUSES:
        raise AssertionError(
            f"status {status} is neither documented by the contract nor one of the API's "
            f"error statuses {sorted(ERROR_STATUSES)}"
        )
    content_type = response.headers.get("content-type", [""])
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    if not content_type.startswith("application/json"):
        raise AssertionError(f"error {status} is {content_type!r}, not JSON")
    try:
        body = json.loads(response.content)
    except ValueError as error:
        raise AssertionError(f"error {status} has a body that is not JSON: {error}") from None
    if not (
        isinstance(body, dict)
        and isinstance(body.get("error"), str)
        and isinstance(body.get("error_description"), str)
        and body["error_description"]
    ):
        raise AssertionError(f"error {status} is not {{error, error_description}}: {body!r}")
    if status == 401 and not response.headers.get("www-authenticate"):
        raise AssertionError("a 401 must name its scheme in WWW-Authenticate (RFC 6750)")
    if status == 405 and not response.headers.get("allow"):
        raise AssertionError("a 405 must list the allowed methods in Allow")
    if status == 429 and not response.headers.get("retry-after"):
        raise AssertionError("a 429 must say how long to wait in Retry-After")
    return None
