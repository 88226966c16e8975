"""requests through claimgate: POST the request body on stdin to URL, print the answer.

Usage: ``python_requests.py URL`` takes HTTPS_PROXY and REQUESTS_CA_BUNDLE from the
environment; ``python_requests.py URL PROXY CA_FILE`` sets both in code.
"""

import sys

import requests


def post(url: str, body: bytes, proxy: str | None = None, ca: str | None = None) -> str:
    if proxy and ca:
        # In code: the proxy for https:// URLs, and the CA bundle that verifies the API host.
        response = requests.post(url, data=body, proxies={"https": proxy}, verify=ca, timeout=30)
    else:
        # No code change: requests reads HTTPS_PROXY, NO_PROXY and REQUESTS_CA_BUNDLE.
        response = requests.post(url, data=body, timeout=30)
    response.raise_for_status()
    return response.text


if __name__ == "__main__":
    print(post(sys.argv[1], sys.stdin.buffer.read(), *sys.argv[2:4]))
