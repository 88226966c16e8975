"""The signed links onOffice opens on the provider's side: service calls, webhooks, activations.

Signed as onOffice signs them (docs/onoffice-protocol.md 3a, 3b, 3c, 3d), with claimgate's own
canonicalisation, so that a link built here passes claimgate's capture listener.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from claimgate.signature import build_query, parse_query, sign_url

DEFAULT_CUSTOMER_NAME = "Muster Immobilien"
DEFAULT_PARAMETER_CACHE_ID = "3f1c2b7a-9d4e-4c1a-8b6f-0e5d2a7c9b41"


def service_call_url(
    base_url: str,
    secret: str,
    *,
    customer_web_id: str,
    user_id: str,
    claim: str,
    timestamp: int | None = None,
    customer_name: str = DEFAULT_CUSTOMER_NAME,
    extra: Mapping[str, str] | None = None,
) -> str:
    """The signed URL onOffice opens for a service call (the provider's iframe).

    ``base_url`` is the service URL registered with onOffice, ``secret`` the provider
    secret. The query holds ``customerName``, ``customerWebId``, ``userId``, ``apiClaim``
    (= ``claim``), ``timestamp`` (default: now) and ``extra`` (macro parameters such as
    ``estateId``, or ``groupId``, ``parameterCacheId``, ``imageIds``), sorted by name and
    encoded like PHP's ``http_build_query``, followed by ``signature``.
    """
    parameters = {
        "customerName": customer_name,
        "customerWebId": customer_web_id,
        "userId": user_id,
        "apiClaim": claim,
        "timestamp": _timestamp(timestamp),
    }
    return _signed_link(base_url, secret, parameters, extra)


def webhook_url(
    base_url: str,
    secret: str,
    *,
    customer_web_id: str,
    user_id: str,
    claim: str,
    timestamp: int | None = None,
    customer_name: str = DEFAULT_CUSTOMER_NAME,
    extra: Mapping[str, str] | None = None,
) -> str:
    """The signed URL of a webhook call: the same parameters as :func:`service_call_url`.

    onOffice calls a webhook service with GET on the registered webhook URL, carrying the
    same signed parameters as a service call, including a fresh ``apiClaim``
    (docs/onoffice-protocol.md 3d). The separate name keeps tests readable.
    """
    return service_call_url(
        base_url,
        secret,
        customer_web_id=customer_web_id,
        user_id=user_id,
        claim=claim,
        timestamp=timestamp,
        customer_name=customer_name,
        extra=extra,
    )


def activation_url(
    base_url: str,
    secret: str,
    *,
    customer_web_id: str,
    user_id: str,
    claim: str,
    api_token: str,
    parameter_cache_id: str = DEFAULT_PARAMETER_CACHE_ID,
    timestamp: int | None = None,
    customer_name: str = DEFAULT_CUSTOMER_NAME,
    extra: Mapping[str, str] | None = None,
) -> str:
    """The signed activation (unlock) URL onOffice opens when a customer activates you.

    Besides the service-call parameters it carries ``apiToken`` (the token of the
    customer's Marketplace API user) and ``parameterCacheId``; its ``apiClaim`` is good
    only for ``unlockProvider`` (docs/onoffice-protocol.md 3a).
    """
    parameters = {
        "customerName": customer_name,
        "customerWebId": customer_web_id,
        "userId": user_id,
        "apiToken": api_token,
        "parameterCacheId": parameter_cache_id,
        "apiClaim": claim,
        "timestamp": _timestamp(timestamp),
    }
    return _signed_link(base_url, secret, parameters, extra)


def _timestamp(timestamp: int | None) -> str:
    return str(int(time.time()) if timestamp is None else int(timestamp))


def _signed_link(
    base_url: str,
    secret: str,
    parameters: Mapping[str, str],
    extra: Mapping[str, str] | None,
) -> str:
    """``base_url`` with the parameters in ``http_build_query`` form, sorted, then signed.

    Parameters already in ``base_url``'s query are kept and sorted in with the others.
    """
    parts = urlsplit(base_url)
    if parts.fragment:
        raise ValueError("base_url must not have a fragment")
    merged = parse_query(parts.query)
    for source in (parameters, extra or {}):
        for name, value in source.items():
            if name == "signature" or name in merged:
                raise ValueError(f"parameter {name!r} is given twice or reserved")
            merged[name] = str(value)
    # Byte order of the names, as PHP's ksort sorts them (numeric names aside); the
    # signature is computed over the canonical order whatever the order here.
    ordered = dict(sorted(merged.items(), key=lambda item: item[0].encode()))
    query = build_query(ordered)
    return sign_url(urlunsplit((parts.scheme, parts.netloc, parts.path, query, "")), secret)
