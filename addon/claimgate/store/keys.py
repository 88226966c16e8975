"""The names of the shared store's keys, in each mode (docs/design.md 2.4).

The newest-wins scripts touch a customer's ``claim:`` and ``users:`` keys together. Redis
Cluster runs a script only when all its keys hash to one slot, so there the customer id is
the keys' hash tag: ``claim:{<customer>}``, ``users:{<customer>}``. Customer ids are onOffice
ids (``capture.ONOFFICE_ID``: letters, digits, ``-``, ``_``), never empty and without braces,
so the tag is the whole id and a customer's two keys always share a slot. One server and
Sentinel keep the untagged names, which earlier versions wrote: an upgrade finds its claims.

Keys of single values (``owner:``, ``token:``) are read and written alone, so they need no
tag. The prefix comes first; in cluster mode it must hold no brace (settings refuse one),
since a brace there would become the hash tag instead.
"""

import re
from dataclasses import dataclass

_GLOB = re.compile(r"([*?\[\]\\])")


@dataclass(frozen=True, slots=True)
class KeyLayout:
    prefix: str
    tagged: bool
    """Cluster mode: a customer's keys carry its id as their hash tag."""

    def claim(self, customer_web_id: str) -> str:
        return f"{self.prefix}claim:{self._customer(customer_web_id)}"

    def users(self, customer_web_id: str) -> str:
        return f"{self.prefix}users:{self._customer(customer_web_id)}"

    def owner(self, claim_digest: str) -> str:
        return f"{self.prefix}owner:{claim_digest}"

    def token(self, token_digest: str) -> str:
        return f"{self.prefix}token:{token_digest}"

    @property
    def channel(self) -> str:
        return f"{self.prefix}events"

    @property
    def claim_pattern(self) -> str:
        """SCAN's MATCH for every customer's claim key (the prefix's glob characters escaped)."""
        return _GLOB.sub(r"\\\1", self.prefix) + "claim:*"

    def customer_of(self, claim_key: str) -> str | None:
        """The customer a key found by :attr:`claim_pattern` belongs to; None if it is no
        claim key of this layout."""
        start = f"{self.prefix}claim:"
        if not claim_key.startswith(start):
            return None
        name = claim_key[len(start) :]
        if not self.tagged:
            return name
        if len(name) > 2 and name[0] == "{" and name[-1] == "}":
            return name[1:-1]
        return None

    def _customer(self, customer_web_id: str) -> str:
        return "{" + customer_web_id + "}" if self.tagged else customer_web_id
