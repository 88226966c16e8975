"""Which hosts claimgate intercepts: ``proxy.api_hosts`` (docs/design.md 2.1), per connection.

An entry ``host`` matches that host on any port; ``host:port`` only on that port. Names are
compared case-insensitively and without a trailing dot, as DNS does.
"""

from collections.abc import Iterable


class ApiHosts:
    """The set of intercepted hosts, parsed once from settings."""

    def __init__(self, entries: Iterable[str]) -> None:
        self._any_port: set[str] = set()
        self._with_port: set[tuple[str, int]] = set()
        for entry in entries:
            host, separator, port = entry.rpartition(":")
            if separator and port.isdigit() and "]" not in port:
                self._with_port.add((_normal(host), int(port)))
            else:
                self._any_port.add(_normal(entry))

    def __contains__(self, address: tuple[str, int]) -> bool:
        host, port = address
        if host in self._any_port or address in self._with_port:
            return True  # named as configured: the usual case, without normalising
        name = _normal(host)
        return name in self._any_port or (name, port) in self._with_port

    def tls_port(self, address: tuple[str, int]) -> int:
        """Where a plain-HTTP request to this API host goes over TLS instead: the port of a
        ``host:port`` entry it matched, else 443."""
        host, port = address
        return port if (_normal(host), port) in self._with_port else 443


def _normal(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()
