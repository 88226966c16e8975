"""raw_values: a large body's token and each action's members as sent, or None for the walker."""

import pytest

from claimgate.raw_values import raw_values


def test_the_token_and_each_action_s_members_as_sent_in_order():
    body = (
        b'{"token":"t","request":{"actions":['
        b'{"resourcetype":"r","parameters":{"data": ["Id", "f1"] ,"n":10},"actionid":"a"},'
        b"{}]}}"
    )
    token, actions = raw_values(body)
    assert bytes(token) == b'"t"'
    assert [{name: bytes(value) for name, value in a.items()} for a in actions] == [
        {
            "resourcetype": b'"r"',
            "parameters": b'{"data": ["Id", "f1"] ,"n":10}',
            "actionid": b'"a"',
        },
        {},
    ]
    assert list(actions[0]) == ["resourcetype", "parameters", "actionid"]


def test_a_name_given_twice_keeps_the_last_value():
    _, actions = raw_values(b'{"token":"t","request":{"actions":[{"a":1,"a":22}]}}')
    assert bytes(actions[0]["a"]) == b"22"


@pytest.mark.parametrize(
    "body",
    [
        b'{"token":"t","request":{"actions":[{"a":NaN}]}}',  # no JSON
        b'{"token":"t","request":{"actions":[{"a":[1,]}]}}',
        b'{"token":"t","request":{"actions":[{"a":1}]}} x',
        b'{"token":"t","request":{"actions":[{"a":"\\ud800"}]}}',  # a lone surrogate
        b'{"token":"t","request":{"actions":{}}}',  # not a request's shape
        b'{"token":"t","request":{"actions":[[]]}}',
        b'{"request":{"actions":[]}}',
        b"[]",
        b'{"token":"t","request":{"actions":[{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}]}}",
    ],
)
def test_what_is_no_valid_request_is_left_to_the_walker(body):
    assert raw_values(body) is None
