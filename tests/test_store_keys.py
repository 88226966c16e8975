"""The shared store's key names: in a cluster a customer's keys share one slot."""

from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from claimgate.capture import ONOFFICE_ID
from claimgate.store.keys import KeyLayout

customers = st.from_regex(ONOFFICE_ID, fullmatch=True)
prefixes = st.text(
    alphabet=st.characters(exclude_characters="{}", exclude_categories=["Cs"]), max_size=20
)
"""What ``store.prefix`` may be: a TOML or environment string, never a lone surrogate."""


@given(customers, prefixes)
def test_in_a_cluster_a_customer_s_keys_hash_to_its_id_s_slot(customer, prefix):
    keys = KeyLayout(prefix, tagged=True)
    slot = key_slot(customer.encode())
    assert key_slot(keys.claim(customer).encode()) == slot
    assert key_slot(keys.users(customer).encode()) == slot


@given(customers, customers, prefixes, st.booleans())
def test_a_claim_key_names_its_customer_and_no_other(customer, other, prefix, tagged):
    keys = KeyLayout(prefix, tagged)
    assert keys.customer_of(keys.claim(customer)) == customer
    assert (keys.claim(customer) == keys.claim(other)) == (customer == other)
    assert keys.customer_of(keys.users(customer)) is None
    assert KeyLayout(prefix + "x", tagged).customer_of(keys.claim(customer)) is None


def test_a_cluster_layout_reads_no_untagged_claim_key():
    untagged = KeyLayout("p:", tagged=False).claim("81000")
    assert KeyLayout("p:", tagged=True).customer_of(untagged) is None
