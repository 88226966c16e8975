"""parameters_members: a large body's parameters members as sent, or None for the walker."""

import pytest

from claimgate.parameters_members import parameters_members


def test_each_action_s_parameters_members_as_sent_in_order():
    body = (
        b'{"token":"t","request":{"actions":['
        b'{"actionid":"a","parameters":{"data": ["Id", "f1"] ,"n":10}},'
        b'{"parameters":[]},{"parameters":null},{"actionid":"b"}]},"x":1}'
    )
    members = parameters_members(body)
    assert members == [{"data": b'["Id", "f1"]', "n": b"10"}, None, None, None]
    assert list(members[0]) == ["data", "n"]


def test_an_escaped_name_is_named_as_decoded():
    body = b'{"request":{"actions":[{"parameters":{"extendedcl\\u0061im":"c"}}]}}'
    assert parameters_members(body) == [{"extendedclaim": b'"c"'}]


@pytest.mark.parametrize(
    "body",
    [
        b'{"request":{"actions":[{"parameters":{"a":NaN}}]}}',  # no JSON
        b'{"request":{"actions":[{"parameters":{"a":[1,]}}]}}',
        b'{"request":{"actions":[{"parameters":{"a":1}}]}} x',
        b'{"request":{"actions":[{"parameters":"text"}]}}',  # not a request's shape
        b'{"request":{"actions":{}}}',
        b'{"token":"t"}',
        b"[]",
        b'{"request":{"actions":[{"parameters":{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}}]}}",
    ],
)
def test_what_is_no_valid_request_is_left_to_the_walker(body):
    assert parameters_members(body) is None
