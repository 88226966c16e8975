"""httpx through claimgate: POST the request body on stdin to URL, print the answer.

Usage: ``python_httpx.py URL`` takes HTTPS_PROXY and SSL_CERT_FILE from the environment;
``python_httpx.py URL PROXY CA_FILE`` sets both in code.
"""

import ssl
import sys

import httpx


def post(url: str, body: bytes, proxy: str | None = None, ca: str | None = None) -> str:
    if proxy and ca:
        # In code: the proxy, and an SSL context that trusts claimgate's CA.
        context = ssl.create_default_context(cafile=ca)
        with httpx.Client(proxy=proxy, verify=context, timeout=30) as client:
            response = client.post(url, content=body)
    else:
        # No code change: with trust_env=True (the default) httpx reads HTTPS_PROXY,
        # NO_PROXY and SSL_CERT_FILE.
        response = httpx.post(url, content=body, timeout=30)
    response.raise_for_status()
    return response.text


if __name__ == "__main__":
    print(post(sys.argv[1], sys.stdin.buffer.read(), *sys.argv[2:4]))
