"""Where the shared store is: ``claims.store`` (other than ``memory``) read as one Redis,
Redis behind Sentinel, or a Redis Cluster.

Pure, so settings can check the URL at start-up and the Redis store can connect from the same
reading (docs/design.md 3.2):

- ``redis://host[:port][/db]`` or ``rediss://`` (TLS): one server, as redis-py reads the URL;
- ``redis+sentinel://h1[:port],h2[:port],.../<service>[/db]`` or ``rediss+sentinel://``: the
  sentinels to ask for the primary of ``service`` (port 26379 unless given);
- ``redis+cluster://h1[:port],h2[:port],.../`` or ``rediss+cluster://``: nodes of a cluster
  (port 6379 unless given), any one of which, answering, tells where the others are. A cluster
  has only database 0, so the path names none.

A password never sits in the URL (it would show wherever the URL is printed): it comes from
``claims.store_password`` and ``claims.sentinel_password``.
"""

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

SENTINEL_PORT = 26379
NODE_PORT = 6379
SINGLE_SCHEMES = ("redis", "rediss")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_SERVICE = re.compile(r"[A-Za-z0-9._-]{1,128}")
MAX_NODES = 16
"""Sentinels or cluster nodes listed at most: three or six is the usual, this bounds what is
tried."""


class BadStoreUrl(ValueError):
    """The URL is not a store claimgate can reach; the message says why, without the URL."""


@dataclass(frozen=True, slots=True)
class StoreAddress:
    url: str
    """As given: redis-py reads a single server's URL itself."""
    tls: bool
    nodes: tuple[tuple[str, int], ...] = ()
    """The sentinels, for a Sentinel-managed store; the nodes to start from, for a cluster."""
    service: str | None = None
    """The name the sentinels monitor the primary under."""
    db: int = 0
    cluster: bool = False

    @property
    def sentinel(self) -> bool:
        return self.service is not None


def parse_store_url(text: str) -> StoreAddress:
    """Read a Redis store URL or raise ``BadStoreUrl``."""
    scheme, _, rest = text.partition("://")
    scheme = scheme.lower()
    if scheme in SINGLE_SCHEMES:
        return _single(text, scheme)
    if scheme in SENTINEL_SCHEMES:
        return _sentinel(text, scheme, rest)
    if scheme in CLUSTER_SCHEMES:
        return _cluster(text, scheme, rest)
    raise BadStoreUrl(
        "expected memory or a redis://, rediss://, redis+sentinel://, rediss+sentinel://, "
        "redis+cluster:// or rediss+cluster:// URL"
    )


def _single(text: str, scheme: str) -> StoreAddress:
    try:
        parts = urlsplit(text)
        # redis-py also reads ?password=... from the query
        has_password = parts.password is not None or "password" in parse_qs(parts.query)
        valid = bool(parts.hostname) and parts.port != 0
    except ValueError:
        has_password, valid = False, False
    if has_password:
        raise BadStoreUrl("do not put a password in the URL; set claims.store_password")
    if not valid:
        raise BadStoreUrl("expected memory or a redis:// or rediss:// URL with a host")
    return StoreAddress(text, tls=scheme == "rediss")


def _sentinel(text: str, scheme: str, rest: str) -> StoreAddress:
    netloc, _, path = rest.partition("/")
    nodes = _nodes(netloc, rest, "sentinel", SENTINEL_PORT)
    service, _, db = path.strip("/").partition("/")
    if not _SERVICE.fullmatch(service):
        raise BadStoreUrl("expected the monitored service's name after the sentinels: /<service>")
    if db and not (db.isascii() and db.isdigit() and int(db) < 2**16):
        raise BadStoreUrl("expected a database number after the service: /<service>/<db>")
    return StoreAddress(
        text, tls=scheme == "rediss+sentinel", nodes=nodes, service=service, db=int(db or 0)
    )


def _cluster(text: str, scheme: str, rest: str) -> StoreAddress:
    netloc, _, path = rest.partition("/")
    nodes = _nodes(netloc, rest, "node", NODE_PORT)
    if path.strip("/"):
        raise BadStoreUrl("a cluster URL names no database (a cluster has only 0): end it at /")
    return StoreAddress(text, tls=scheme == "rediss+cluster", nodes=nodes, cluster=True)


def _nodes(netloc: str, rest: str, noun: str, default_port: int) -> tuple[tuple[str, int], ...]:
    """The comma-separated ``host[:port]`` list of a sentinel or cluster URL."""
    if "?" in rest or "#" in rest:
        raise BadStoreUrl(f"a {noun} URL takes no query: set claims.* keys instead")
    if "@" in netloc:
        passwords = "claims.store_password" + (
            " and claims.sentinel_password" if noun == "sentinel" else ""
        )
        raise BadStoreUrl(f"do not put a password in the URL; set {passwords}")
    hosts = netloc.split(",")
    if not netloc or len(hosts) > MAX_NODES:
        raise BadStoreUrl(f"expected 1 to {MAX_NODES} {noun}s as host[:port],host[:port]")
    return tuple(_node(host, noun, default_port) for host in hosts)


def _node(text: str, noun: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):
        host, closed, port = text[1:].partition("]")
        port = port.removeprefix(":")
        if not closed or not is_ipv6(host):
            raise BadStoreUrl(f"expected a {noun} as host[:port] or [ipv6][:port]")
    else:
        host, _, port = text.partition(":")
        if not _HOST.fullmatch(host):
            raise BadStoreUrl(f"expected a {noun} as host[:port] or [ipv6][:port]")
    if not port:
        return host, default_port
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise BadStoreUrl(f"expected a {noun}'s port between 1 and 65535")
    return host, int(port)


def is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True
