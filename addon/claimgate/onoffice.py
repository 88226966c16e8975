"""Facts of the onOffice API wire format that claimgate relies on (pure, no I/O).

The sources for every rule here are cited in ``docs/onoffice-protocol.md``: the two
action HMAC versions (sections 2.1 and 2.2), the per-action error codes that mean "claim
rejected" (section 4.1) and the response shape (section 1.3), used when claimgate itself
must answer in ``enforce`` mode so that the integration's existing error path runs.
"""

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

ACTION_PREFIX = "urn:onoffice-de-ns:smart:2.5:smartml:action:"
UNLOCK_PROVIDER = "unlockProvider"

CLAIM_REQUIRED = 193
CLAIM_OUTDATED = 201
CLAIM_NOT_MATCHING = 248
CLAIM_REJECTION_CODES = frozenset({CLAIM_REQUIRED, CLAIM_OUTDATED, CLAIM_NOT_MATCHING})
HMAC_INVALID = 137
ERROR_IN_ACTION = 97
INVALID_JSON = 4
UNKNOWN_ERROR = 1
EMPTY_REQUEST = 9
INVALID_TOKEN_ELEMENT = 13
INVALID_REQUEST_ELEMENT = 14
INVALID_ACTIONS_ELEMENT = 15
NOT_AUTHENTICATED = 22
INVALID_ACTION_ELEMENT = 247

ERROR_MESSAGES: Mapping[int, str] = {
    UNKNOWN_ERROR: "Unknown error",
    INVALID_JSON: "Invalid or malformed JSON",
    EMPTY_REQUEST: "Empty request",
    INVALID_TOKEN_ELEMENT: "Missing or invalid element: token",
    INVALID_REQUEST_ELEMENT: "Missing or invalid element: request",
    INVALID_ACTIONS_ELEMENT: "Missing or invalid element: actions",
    NOT_AUTHENTICATED: "Not authenticated",
    INVALID_ACTION_ELEMENT: "Missing or invalid element: action",
    ERROR_IN_ACTION: "Error in action",
    HMAC_INVALID: "The HMAC is invalid.",
    CLAIM_REQUIRED: "Parameter extendedclaim is required, but missing, empty or invalid",
    CLAIM_OUTDATED: 'Parameter "extendedclaim" is outdated',
    CLAIM_NOT_MATCHING: "No matching extendedclaim",
}


def is_hmac_v2(hmac_version: object) -> bool:
    """True for the current HMAC method; clients send ``2`` or ``"2"``."""
    return hmac_version == 2 or hmac_version == "2"


def hmac_v2(secret: str, timestamp: int | str, token: str, resourcetype: str, actionid: str) -> str:
    """base64(HMAC-SHA256(secret, timestamp + token + resourcetype + actionid)).

    It covers neither ``parameters`` nor anything else, which is why claimgate may add
    ``extendedclaim`` to a version-2 action without the API secret.
    """
    message = f"{timestamp}{token}{resourcetype}{actionid}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def php_json_encode(value: Any) -> str:
    """``json_encode`` with PHP's default flags: compact, ``\\/`` and ``\\uXXXX`` escapes.

    JSON objects that PHP would hold as empty arrays encode as ``[]``, as PHP does.
    """
    return json.dumps(_as_php(value), separators=(",", ":"), ensure_ascii=True).replace("/", "\\/")


def _as_php(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _as_php(v) for k, v in value.items()} if value else []
    if isinstance(value, list):
        return [_as_php(v) for v in value]
    return value


def php_string(value: object) -> str:
    """How PHP's ``implode`` prints a scalar: null and false as empty, true as ``1``."""
    if value is None or value is False:
        return ""
    if value is True:
        return "1"
    return str(value)


def hmac_v1(
    secret: str,
    token: str,
    action: Mapping[str, Any],
) -> str:
    """The legacy action HMAC: md5(secret + md5(json(ksorted parameters) + "," + fields)).

    ``fields`` are, in this order, token, actionid, identifier, resourceid, secret,
    timestamp and resourcetype, joined by commas. Unlike version 2 it covers the
    parameters, so an injected claim breaks it.
    """
    parameters = action.get("parameters") or {}
    if isinstance(parameters, dict):
        parameters = dict(sorted(parameters.items(), key=lambda item: item[0].encode()))
    fields = [
        token,
        action.get("actionid"),
        action.get("identifier"),
        action.get("resourceid"),
        secret,
        action.get("timestamp"),
        action.get("resourcetype"),
    ]
    bundled = php_json_encode(parameters) + "," + ",".join(php_string(f) for f in fields)
    inner = hashlib.md5(bundled.encode()).hexdigest()
    return hashlib.md5((secret + inner).encode()).hexdigest()


def action_error_result(action: Mapping[str, Any], errorcode: int) -> dict[str, Any]:
    """One per-action result carrying ``errorcode``, shaped like the API's own results."""
    return {
        "actionid": action.get("actionid", ""),
        "resourceid": action.get("resourceid", ""),
        "resourcetype": action.get("resourcetype", ""),
        "cacheable": False,
        "identifier": action.get("identifier", ""),
        "data": {"meta": {"cntabsolute": None}, "records": []},
        "status": {"errorcode": errorcode, "message": ERROR_MESSAGES.get(errorcode, "")},
    }


def response_body(results: Sequence[Mapping[str, Any]], errorcode: int = 0) -> bytes:
    """A whole API response: top-level status 97 when any action failed."""
    failed = any(r["status"]["errorcode"] for r in results)
    top = ERROR_IN_ACTION if failed and not errorcode else errorcode
    status = {"code": 200, "errorcode": top, "message": ERROR_MESSAGES.get(top, "OK")}
    if not top:
        status["message"] = "OK"
    return json.dumps({"status": status, "response": {"results": list(results)}}).encode()


def request_error_body(errorcode: int, code: int = 400) -> bytes:
    """A response for a request whose actions could not be read at all."""
    status = {"code": code, "errorcode": errorcode, "message": ERROR_MESSAGES.get(errorcode, "")}
    return json.dumps({"status": status, "response": {"results": []}}).encode()


def rejected_claim_codes(response: Any) -> list[tuple[int, int]]:
    """(action index, errorcode) for each result whose error means the claim was refused."""
    try:
        results = response["response"]["results"]
    except (KeyError, TypeError):
        return []
    rejected = []
    for index, result in enumerate(results if isinstance(results, list) else []):
        try:
            code = int(result["status"]["errorcode"])
        except (KeyError, TypeError, ValueError, OverflowError):  # 1e999 reads as infinity
            continue
        if code in CLAIM_REJECTION_CODES:
            rejected.append((index, code))
    return rejected


_REJECTING_CODE = re.compile(
    rb'"errorcode"[ \t\n\r]*:[ \t\n\r]*"?0*(?:'
    + b"|".join(str(code).encode() for code in sorted(CLAIM_REJECTION_CODES))
    + rb")(?![0-9])"
)
"""An ``errorcode`` member whose value, quoted or not, reads as one of those codes."""


def may_reject_claim(body: bytes) -> bool:
    """Whether any ``errorcode`` in a response body is one that refuses a claim.

    A cheap test before decoding the body, which can be megabytes of records: the three
    codes themselves turn up in almost any large body (ids, prices, postcodes), the key with
    such a value almost never. One search in C, from one ``"errorcode"`` to the next.
    """
    return _REJECTING_CODE.search(body) is not None
