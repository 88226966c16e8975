"""Name secrets without revealing them.

Claims, API tokens, provider secrets and signatures never appear in logs, metrics or admin
output (docs/design.md 2.9). Wherever one must be referred to, its fingerprint stands in: the first
12 hex digits of its SHA-256, enough to tell values apart and to match them against a value
an operator holds, useless for recovering the value.
"""

import hashlib
from functools import lru_cache

FINGERPRINT_LENGTH = 12


def secret_bytes(secret: str) -> bytes:
    """The bytes a secret is hashed as, here and in the stores' keys: UTF-8, and a lone
    surrogate (a link's %FF, JSON's \\ud800, both from the network) passed through, since
    such a value still needs a name."""
    return secret.encode("utf-8", "surrogatepass")


@lru_cache(maxsize=4096)  # the same token and claim are named on every request of a customer
def fingerprint(secret: str | bytes) -> str:
    """Return the short public name of ``secret``."""
    data = secret_bytes(secret) if isinstance(secret, str) else secret
    return hashlib.sha256(data).hexdigest()[:FINGERPRINT_LENGTH]
