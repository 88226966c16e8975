from urllib.parse import quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from claimgate.signature import (
    AlreadySigned,
    PhpValue,
    build_query,
    candidate_canonicals,
    canonical_url,
    parse_query,
    sign,
    sign_url,
    split_url,
    verify,
    verify_url,
)

SECRET = "provider-secret"
BASE = "https://provider.example"

# docs/onoffice-protocol.md 3c; PHP's reference verifier (parse_str, ksort, http_build_query,
# hash_hmac) printed the same signature.
URL = (
    "https://provider.example/service?apiClaim=ab%2Bc%2Fd%3D&customerName=Muster+Immobilien"
    "&customerWebId=21312&estateId=4711&groupId=3&timestamp=1700000000&userId=17"
)
SIGNATURE = "0a1bdb811f9b3f872e8665f98522d15cb81b8b8938bb3aa6635ad49492adb98e"
# PHP: hash_hmac('sha256', str_replace('%2B', '+', <canonical of URL>), 'provider-secret').
PLUS_VARIANT_SIGNATURE = "0d7e9c3a9f6d4a1c2a3f6ede913c93bcc27fbc25d2dc47c67bfc76c2a79f35bf"


def test_reference_vector() -> None:
    base, path, query = split_url(URL)
    assert (base, path) == (BASE, "/service")
    assert canonical_url(base, path, parse_query(query)) == URL
    assert sign(URL, SECRET) == SIGNATURE
    assert sign_url(URL, SECRET) == f"{URL}&signature={SIGNATURE}"


def test_reference_vector_verifies_and_a_flipped_char_does_not() -> None:
    assert verify_url(f"{URL}&signature={SIGNATURE}", SECRET)
    assert verify_url(f"{URL}&signature={SIGNATURE.upper()}", SECRET)
    flipped = SIGNATURE[:10] + ("1" if SIGNATURE[10] != "1" else "2") + SIGNATURE[11:]
    assert not verify_url(f"{URL}&signature={flipped}", SECRET)
    assert not verify_url(f"{URL}&signature={SIGNATURE}", "other-secret")


def test_unsorted_query_signs_like_sorted() -> None:
    unsorted = (
        "https://provider.example/service?userId=17&timestamp=1700000000&groupId=3"
        "&estateId=4711&customerWebId=21312&customerName=Muster+Immobilien"
        "&apiClaim=ab%2Bc%2Fd%3D"
    )
    assert sign_url(unsorted, SECRET) == f"{unsorted}&signature={SIGNATURE}"
    assert verify_url(f"{unsorted}&signature={SIGNATURE}", SECRET)


# (URL as onOffice might send it, canonical URL, signature), all printed by PHP running the
# reference verifier (parse_url, parse_str, unset signature, ksort, http_build_query,
# hash_hmac with 'provider-secret').
PHP_SIGNED = [
    pytest.param(
        "https://provider.example:8443/x?apiClaim=abc&customerWebId=1&timestamp=1700000000",
        "https://provider.example:8443/x?apiClaim=abc&customerWebId=1&timestamp=1700000000",
        "6fbd909fa56ebbce45ea531f61d06ef90b8c8a84ee9386a77625145bc073c056",
        id="explicit-port",
    ),
    pytest.param(
        "https://provider.example/x?apiClaim=ab+cd&customerWebId=1&timestamp=1700000000",
        "https://provider.example/x?apiClaim=ab+cd&customerWebId=1&timestamp=1700000000",
        "a72c7b19e9ec69b577b860cc7a170d127ce203790920ad9eae5a553122b36bb5",
        id="literal-plus-in-claim",
    ),
    pytest.param(
        "https://provider.example/x?apiClaim=k&customerWebId=1&UserLanguage=DEU&timestamp=1",
        "https://provider.example/x?UserLanguage=DEU&apiClaim=k&customerWebId=1&timestamp=1",
        "5dcc22149abe2da856223880f749a8fd353c9f0f1fa7af5147be857247644608",
        id="upper-case-sorts-first",
    ),
    pytest.param(
        "https://provider.example/x?imageIds[]=1&imageIds[]=2&apiClaim=k&customerWebId=1",
        "https://provider.example/x?apiClaim=k&customerWebId=1&imageIds%5B0%5D=1&imageIds%5B1%5D=2",
        "91d2455ae65fa9d68fce334810eaf6d868b407b2c076b09def686f2893b066c6",
        id="array",
    ),
    pytest.param(
        "https://provider.example/x?customerName=M%C3%BCller+%26+S%C3%B6hne&note=~a/b=c"
        "&empty=&apiClaim=k&customerWebId=1",
        "https://provider.example/x?apiClaim=k&customerName=M%C3%BCller+%26+S%C3%B6hne"
        "&customerWebId=1&empty=&note=%7Ea%2Fb%3Dc",
        "6e83a49ee675fa8d60a29a7404d660c637a6fcf5f5e69cdaf901684413efa81f",
        id="utf8-tilde-slash-equals-empty",
    ),
    pytest.param(
        "https://provider.example/x?a.b=1&apiClaim=k&customerWebId=1",
        "https://provider.example/x?a_b=1&apiClaim=k&customerWebId=1",
        "fe5105e6241c97e52e368cf90583b7ae02c34b47e97133b59ffd053dbcfa9e3c",
        id="key-mangling",
    ),
]


@pytest.mark.parametrize(("url", "canonical", "expected"), PHP_SIGNED)
def test_matches_php_reference_verifier(url: str, canonical: str, expected: str) -> None:
    base, path, query = split_url(url)
    assert canonical_url(base, path, parse_query(query)) == canonical
    assert sign(canonical, SECRET) == expected
    assert sign_url(url, SECRET) == f"{url}&signature={expected}"
    assert verify_url(f"{url}&signature={expected}", SECRET)


def test_plus_variant_is_accepted() -> None:
    params = parse_query(split_url(URL)[2])
    assert candidate_canonicals(BASE, "/service", params) == [URL, URL.replace("%2B", "+")]
    assert verify(BASE, "/service", params, PLUS_VARIANT_SIGNATURE, SECRET)
    assert verify_url(f"{URL}&signature={PLUS_VARIANT_SIGNATURE}", SECRET)


def test_no_plus_variant_without_encoded_plus() -> None:
    params = {"apiClaim": "abc", "customerWebId": "1"}
    assert candidate_canonicals(BASE, "/x", params) == [f"{BASE}/x?apiClaim=abc&customerWebId=1"]


def test_canonical_url_leaves_out_the_signature() -> None:
    params = {"b": "2", "signature": "00", "a": "1"}
    assert canonical_url(BASE, "/x", params) == f"{BASE}/x?a=1&b=2"


def test_verify_survives_odd_signatures() -> None:
    params = {"apiClaim": "k", "customerWebId": "1"}
    for odd in ("", "zz", "ä" * 64, "\udcff", "\ud800"):
        assert not verify(BASE, "/x", params, odd, SECRET)


def test_build_query_edge_cases() -> None:
    # Printed by PHP's http_build_query for the same array.
    params: dict[str, PhpValue] = {
        "s": "a b+c~d/e=f&g",
        "u": "Müller",
        "e": "",
        "n": {"x": {"y": "1", "z": "2"}},
        "l": {"0": "p", "1": "q"},
    }
    assert build_query(params) == (
        "s=a+b%2Bc%7Ed%2Fe%3Df%26g&u=M%C3%BCller&e=&n%5Bx%5D%5By%5D=1&n%5Bx%5D%5Bz%5D=2"
        "&l%5B0%5D=p&l%5B1%5D=q"
    )


def test_build_query_omits_empty_arrays() -> None:
    assert build_query({"a": {}, "b": "1"}) == "b=1"


def test_parse_query_shapes() -> None:
    assert parse_query("imageIds[]=1&imageIds[]=2") == {"imageIds": {"0": "1", "1": "2"}}
    assert parse_query("a[x][y]=1&a[x][z]=2&a[w][]=3") == {
        "a": {"x": {"y": "1", "z": "2"}, "w": {"0": "3"}}
    }
    assert parse_query("k=1&k=2") == {"k": "2"}
    assert parse_query("c=a+b%2Bc%7e&d=&e") == {"c": "a b+c~", "d": "", "e": ""}
    assert parse_query("a.b=1&c+d=2&%20e=3") == {"a_b": "1", "c_d": "2", "e": "3"}


# parse_str then http_build_query, both as PHP 8.2 printed them.
PHP_ROUND_TRIPS = [
    ("imageIds[]=1&imageIds[]=2", "imageIds%5B0%5D=1&imageIds%5B1%5D=2"),
    ("a=", "a="),
    ("b=1&&c&=5&d==x", "b=1&c=&d=%3Dx"),
    ("a.b=1&a b=2&+c=3&%20d=4", "a_b=2&c=3&d=4"),
    ("a[x]=1&a[x][y]=2", "a%5Bx%5D%5By%5D=2"),
    ("a[x][y]=2&a[x]=1", "a%5Bx%5D=1"),
    ("a=1&a[]=2", "a%5B0%5D=2"),
    ("a[]=1&a=2", "a=2"),
    ("a[=1", "a_=1"),
    ("a[b=1&x.y[z=2", "a_b=1&x_y_z=2"),
    ("a[b c.d=1&q", "a_b_c_d=1&q="),
    ("a.b[c.d]=1", "a_b%5Bc.d%5D=1"),
    ("a [x]=1", "a_%5Bx%5D=1"),
    ("a[ x]=1&a[x ]=2", "a%5B+x%5D=1&a%5Bx+%5D=2"),
    ("a[ ]=1&a[\t]=2", "a%5B0%5D=1&a%5B1%5D=2"),
    ("a[  ]=1", "a%5B++%5D=1"),
    ("a[x]y=1", "a%5Bx%5D=1"),
    ("a[b]c[d]=1", "a%5Bb%5D=1"),
    ("a[b][=1", "a%5Bb%5D=1"),
    ("a[b[c]=1", "a%5Bb%5Bc%5D=1"),
    ("a]b=1", "a%5Db=1"),
    ("[x]=1", ""),
    ("%00a=1", ""),
    ("a%00b=1&c=x%00y", "a=1&c=x%00y"),
    ("a%5Bx%5D=1&a%2Eb=2", "a%5Bx%5D=1&a_b=2"),
    ("a[5]=x&a[]=y", "a%5B5%5D=x&a%5B6%5D=y"),
    ("a[-5]=x&a[]=y", "a%5B-5%5D=x&a%5B-4%5D=y"),
    ("a[05]=x&a[]=y", "a%5B05%5D=x&a%5B0%5D=y"),
    ("a[x]=1&a[]=2&a[3]=q&a[]=z", "a%5Bx%5D=1&a%5B0%5D=2&a%5B3%5D=q&a%5B4%5D=z"),
    ("a[][]=1&a[][]=2", "a%5B0%5D%5B0%5D=1&a%5B1%5D%5B0%5D=2"),
    ("a[9223372036854775807]=1&a[]=2", "a%5B9223372036854775807%5D=1"),
    ("a[9223372036854775808]=1&a[]=2", "a%5B9223372036854775808%5D=1&a%5B0%5D=2"),
    ("a=%zz&b=%4", "a=%25zz&b=%254"),
    ("a=%e4%FC", "a=%E4%FC"),
    ("a=1;b=2", "a=1%3Bb%3D2"),
    ("a=0&b=1&a" + "[x]" * 64 + "=1", "a" + "%5Bx%5D" * 64 + "=1&b=1"),
    ("a=0&b=1&a" + "[x]" * 65 + "=1&a[y]=2", "b=1&a%5By%5D=2"),
]


@pytest.mark.parametrize(("query", "expected"), PHP_ROUND_TRIPS)
def test_parse_and_build_match_php(query: str, expected: str) -> None:
    assert build_query(parse_query(query)) == expected


def test_ksort_matches_php() -> None:
    # PHP: parse_str($q, $r); ksort($r); echo http_build_query($r);
    query = (
        "b=1&B=1&10=1&9=1&_=1&a=1&Z=1&1e1=1&abc=1&ab=1&%C3%A4=1&~=1&-1=1&x10=1&x9=1"
        "&UserLanguage=1&apiClaim=1"
    )
    assert canonical_url(BASE, "", parse_query(query)) == (
        f"{BASE}?-1=1&9=1&10=1&1e1=1&B=1&UserLanguage=1&Z=1&_=1&a=1&ab=1&abc=1&apiClaim=1"
        "&b=1&x10=1&x9=1&%7E=1&%C3%A4=1"
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://provider.example/x?a=1", (BASE, "/x", "a=1")),
        ("https://provider.example:8443/x", (f"{BASE}:8443", "/x", "")),
        ("https://provider.example:443/x", (f"{BASE}:443", "/x", "")),
        ("https://user:pw@provider.example:8443/x?a", (f"{BASE}:8443", "/x", "a")),
        ("https://provider.example:/x", (BASE, "/x", "")),
        ("https://provider.example/a%2Fb?c#frag", (BASE, "/a%2Fb", "c")),
    ],
)
def test_split_url(url: str, expected: tuple[str, str, str]) -> None:
    assert split_url(url) == expected


def test_sign_url_appends_where_it_belongs() -> None:
    signature = sign(f"{BASE}/x?", SECRET)
    assert sign_url(f"{BASE}/x", SECRET) == f"{BASE}/x?signature={signature}"
    assert sign_url(f"{BASE}/x?", SECRET) == f"{BASE}/x?signature={signature}"
    with_query = sign(f"{BASE}/x?a=1", SECRET)
    assert sign_url(f"{BASE}/x?a=1&", SECRET) == f"{BASE}/x?a=1&signature={with_query}"
    assert sign_url(f"{BASE}/x?a=1#top", SECRET) == f"{BASE}/x?a=1&signature={with_query}#top"


def test_sign_url_refuses_a_signed_url() -> None:
    with pytest.raises(AlreadySigned, match="already carries") as raised:
        sign_url(f"{URL}&signature={SIGNATURE}", SECRET)
    assert SIGNATURE not in str(raised.value)


def test_verify_url_needs_a_string_signature() -> None:
    assert not verify_url(URL, SECRET)
    assert not verify_url(f"{URL}&signature[]={SIGNATURE}", SECRET)


# --- properties (hypothesis) ------------------------------------------------------------


def reference_canonical(base: str, path: str, params: dict[str, str]) -> str:
    """PHP's ksort + http_build_query for flat string parameters, written independently:
    byte-order keys, RFC 1738 (space as '+'), only A-Z a-z 0-9 - _ . left as they are."""

    def encode(text: str) -> str:
        return quote_plus(text, safe="-_.").replace("~", "%7E")

    ordered = sorted(params.items(), key=lambda item: item[0].encode())
    return f"{base}{path}?" + "&".join(f"{encode(k)}={encode(v)}" for k, v in ordered)


@given(
    st.dictionaries(
        st.text(
            alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=10
        ).filter(lambda key: key != "signature"),  # never part of what is signed
        st.text(max_size=30),
        max_size=8,
    )
)
def test_canonical_url_matches_a_reference_http_build_query(params):
    base, path = "https://provider.example:8443", "/service"
    assert canonical_url(base, path, params) == reference_canonical(base, path, params)


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_signing_then_verifying_round_trips_for_any_values(claim, customer):
    from urllib.parse import urlencode

    url = "https://provider.example/service?" + urlencode(
        {"apiClaim": claim, "customerWebId": customer}
    )
    signed = sign_url(url, "secret")
    assert verify_url(signed, "secret")
    assert not verify_url(signed, "other secret")
