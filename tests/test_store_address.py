"""Reading claims.store: one Redis, the sentinels of a monitored primary, or a cluster's nodes."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from claimgate.store.address import (
    MAX_NODES,
    NODE_PORT,
    SENTINEL_PORT,
    BadStoreUrl,
    StoreAddress,
    parse_store_url,
)


@pytest.mark.parametrize(
    ("url", "tls"), [("redis://redis:6379/0", False), ("rediss://redis.internal:6380/2", True)]
)
def test_a_single_server_is_left_to_redis_py_as_given(url, tls):
    assert parse_store_url(url) == StoreAddress(url, tls=tls)


def test_sentinels_name_their_service_database_and_ports():
    address = parse_store_url("rediss+sentinel://s1:26380,s2,[::1]:26381/my-master/3")
    assert address.sentinel and address.tls
    assert address.nodes == (("s1", 26380), ("s2", SENTINEL_PORT), ("::1", 26381))
    assert (address.service, address.db) == ("my-master", 3)
    assert parse_store_url("redis+sentinel://s1/mymaster").db == 0
    assert not address.cluster


@pytest.mark.parametrize("path", ["", "/"])
def test_a_cluster_names_the_nodes_to_start_from(path):
    address = parse_store_url(f"rediss+cluster://n1:7000,n2,[::1]:7002{path}")
    assert address.cluster and address.tls and not address.sentinel
    assert address.nodes == (("n1", 7000), ("n2", NODE_PORT), ("::1", 7002))
    assert address.db == 0
    assert not parse_store_url("redis+cluster://n1/").tls


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgres://db", "expected memory or a redis://"),
        ("redis://", "with a host"),
        ("rediss://:secret@redis:6380", "do not put a password in the URL"),
        ("redis+sentinel://:secret@s1/mymaster", "do not put a password in the URL"),
        ("redis://redis:6379/0?password=secret", "do not put a password in the URL"),
        ("redis+sentinel://s1/mymaster?password=secret", "takes no query"),
        ("redis+sentinel://s1,s2", "service's name"),
        ("redis+sentinel:///mymaster", "sentinels as host[:port]"),
        ("redis+sentinel://s1:0/mymaster", "port between 1 and 65535"),
        ("redis+sentinel://s_1/mymaster", "sentinel as host[:port]"),
        ("redis+sentinel://[nope]/mymaster", "sentinel as host[:port]"),
        ("redis+sentinel://s1/mymaster/x", "database number"),
        ("redis+sentinel://" + ",".join(["s"] * (MAX_NODES + 1)) + "/m", "1 to 16 sentinels"),
        ("redis+cluster://:secret@n1:7000/", "set claims.store_password"),
        ("redis+cluster://n1:7000/?password=secret", "a node URL takes no query"),
        ("redis+cluster://n1:7000/1", "names no database"),
        ("redis+cluster:///", "1 to 16 nodes"),
        ("redis+cluster://n1:70000/", "a node's port between 1 and 65535"),
        ("redis+cluster://n_1/", "a node as host[:port]"),
    ],
)
def test_what_cannot_be_reached_is_refused_saying_why(url, says):
    with pytest.raises(BadStoreUrl, match=None) as refused:
        parse_store_url(url)
    assert says in str(refused.value)
    assert "secret" not in str(refused.value)


@given(
    st.one_of(
        st.text(max_size=200),
        st.text(max_size=200).map("redis+sentinel://".__add__),
        st.text(max_size=200).map("rediss+cluster://".__add__),
    )
)
def test_any_text_is_read_or_refused_never_anything_else(text):
    try:
        address = parse_store_url(text)
    except BadStoreUrl:
        return
    assert address.url == text
    assert len(address.nodes) <= MAX_NODES
    assert all(0 < port < 65536 for _, port in address.nodes)
    assert address.cluster == (not address.sentinel and bool(address.nodes))
