"""Helpers to test an onOffice integration with claimgate in front of it, on loopback.

Shipped with claimgate, so that you can test your own integration without the real API and
without a Marketplace account; ``claimgate demo``, claimgate's own tests and its benchmarks
use the same kit:

* :class:`ApiDouble` is a local stand-in for ``https://api.onoffice.de/api/stable/api.php``.
  It serves HTTPS with a certificate from a throw-away CA (:attr:`ApiDouble.ca_path`), checks
  every action's HMAC (versions 1 and 2) against the credentials you give it, checks
  ``parameters.extendedclaim``, answers the way the API does (error 137 for a bad HMAC, 193
  for a missing claim, 201 for one you marked outdated) and records each request byte for byte
  (:class:`ReceivedRequest`).
* :func:`service_call_url`, :func:`webhook_url` and :func:`activation_url` build the signed
  links onOffice opens on the provider side; feed them to claimgate's capture listener (or
  ``POST /claims``) so that it learns a claim.
* :func:`make_claim`, :func:`make_token` and :func:`make_secret` make realistic values;
  :func:`signed_request` a signed API request as legacy code sends it, without a claim.
* :class:`ClaimgateProcess` runs ``claimgate run`` as a child process, waits until it is
  ready, collects its JSON log lines and stops it; :func:`free_port` and
  :func:`stop_process` go with it. :func:`make_certificates` makes a CA and a server
  certificate for any other TLS server a test needs.

A typical test::

    from claimgate.testing import ApiDouble, make_claim, make_secret, make_token

    token, secret = make_token(), make_secret()
    with ApiDouble({token: secret}) as api:
        # Point claimgate at the double: proxy.api_hosts = [f"localhost:{api.port}"] (forward
        # listener) or api.upstream = f"https://localhost:{api.port}" (API listener), with
        # proxy.upstream_ca = api.ca_path; send your integration's request through it, then:
        (request,) = api.wait_for_requests(1)
        assert request.results == (0,)  # every action accepted
        assert request.claims() == [expected_claim]

What the double does not model: data (every accepted action returns one empty record), the
±120 s action timestamp window (error 136), whether a claim belongs to the token's customer
(error 248), rate limits and HTTP/2. The rules it does model are cited in
docs/onoffice-protocol.md (sections 1 to 4).

Besides claimgate's own pure modules, only the standard library and ``cryptography`` are
used, so the kit can be imported in any test process, with or without mitmproxy.
"""

from claimgate.testing.api_double import ApiDouble, ReceivedRequest
from claimgate.testing.certificates import make_certificates
from claimgate.testing.links import activation_url, service_call_url, webhook_url
from claimgate.testing.process import ClaimgateProcess, free_port, stop_process
from claimgate.testing.values import make_claim, make_secret, make_token, signed_request

__all__ = [
    "ApiDouble",
    "ClaimgateProcess",
    "ReceivedRequest",
    "activation_url",
    "free_port",
    "make_certificates",
    "make_claim",
    "make_secret",
    "make_token",
    "service_call_url",
    "signed_request",
    "stop_process",
    "webhook_url",
]
