"""Realistic inputs: claims, tokens and secrets shaped like onOffice's, and signed API requests.

Realistic on purpose: a claim holds ``+``, ``/`` and ``=``, the characters that trip up URL
and JSON handling, so a test with a made-up value cannot pass where a real one would fail.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import string
import time
from collections.abc import Mapping
from typing import Any

from claimgate import onoffice

_CLAIM_BYTES = 191  # encodes to 256 base64 characters, the last one "="
_TOKEN_ALPHABET = string.ascii_letters + string.digits

DEFAULT_PARAMETERS: Mapping[str, Any] = {"data": ["Id", "ort"], "listlimit": 10}


def make_claim(seed: str | None = None) -> str:
    """A realistic opaque ``apiClaim``: 256 characters of standard base64.

    It always contains ``+``, ``/`` and ``=``. The same ``seed`` gives the same claim;
    without one it is random.
    """
    counter = 0
    while True:
        if seed is None:
            raw = secrets.token_bytes(_CLAIM_BYTES)
        else:
            raw = hashlib.shake_256(f"claimgate-claim:{seed}:{counter}".encode()).digest(
                _CLAIM_BYTES
            )
        claim = base64.b64encode(raw).decode("ascii")
        if "+" in claim and "/" in claim:
            return claim
        counter += 1


def make_token() -> str:
    """A random API token: 32 letters and digits, like onOffice's."""
    return "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(32))


def make_secret() -> str:
    """A random API secret: 64 letters and digits, like onOffice's."""
    return "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(64))


def signed_request(
    token: str,
    secret: str,
    *resourcetypes: str,
    parameters: Mapping[str, Any] | None = None,
    version: int | None = 2,
    claim: str | None = None,
    timestamp: int | None = None,
) -> bytes:
    """A correctly signed read request, one action per resource type (default ``estate``).

    Without ``claim`` it carries no ``extendedclaim``: what legacy code sends and claimgate
    completes. ``version=None`` signs with the old HMAC (version 1), which covers the
    parameters (docs/onoffice-protocol.md 2.1, 2.2).
    """
    timestamp = int(time.time()) if timestamp is None else int(timestamp)
    actionid = onoffice.ACTION_PREFIX + "read"
    actions = []
    for resourcetype in resourcetypes or ("estate",):
        action: dict[str, Any] = {
            "actionid": actionid,
            "identifier": "",
            "resourceid": "",
            "resourcetype": resourcetype,
            "timestamp": timestamp,
            "parameters": dict(DEFAULT_PARAMETERS if parameters is None else parameters),
        }
        if claim is not None:
            action["parameters"]["extendedclaim"] = claim
        if version == 2:
            action["hmac_version"] = 2
            action["hmac"] = onoffice.hmac_v2(secret, timestamp, token, resourcetype, actionid)
        else:
            action["hmac"] = onoffice.hmac_v1(secret, token, action)
        actions.append(action)
    return json.dumps({"token": token, "request": {"actions": actions}}).encode()
