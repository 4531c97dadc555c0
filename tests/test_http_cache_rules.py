"""The response cache's rules (RFC 9111) and its stored form, as plain functions: no server, no running event loop."""

from __future__ import annotations

import asyncio
import email.utils

import pytest
from aiohttp import hdrs
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_parser import HttpResponseParser
from hypothesis import given
from hypothesis import strategies as st
from multidict import istr
from yarl import URL

from authsession._http_cache._entry import (
    _KNOWN_NAMES,
    StoredResponse,
    decode_variants,
    encode_variants,
    header_block,
    header_pairs,
    vary_value,
)
from authsession._http_cache._response_cache import _address
from authsession._http_cache._rules import (
    MAX_DELTA_SECONDS,
    Verdict,
    conditional_headers,
    current_age,
    delta_seconds,
    forbids_storing,
    freshness_lifetime,
    http_date,
    parse_cache_control,
    refreshed_headers,
    same_etag,
    selects,
    storable,
    vary_names,
    verdict,
)

NOW = 1_800_000_000.0


def date(seconds: float) -> str:
    return email.utils.formatdate(seconds, usegmt=True)


# --- Cache-Control -----------------------------------------------------------------------


def test_cache_control_names_lowercased_arguments_unquoted() -> None:
    """Directive names are case-insensitive; quoted arguments lose their quotes, and commas inside them do not split."""
    assert parse_cache_control('Max-Age=60, PRIVATE, no-cache="Set-Cookie, X-Foo", must-revalidate') == {
        "max-age": "60",
        "private": None,
        "no-cache": "Set-Cookie, X-Foo",
        "must-revalidate": None,
    }


def test_cache_control_over_several_field_lines_and_empty_items() -> None:
    """Several Cache-Control lines are one list; empty items and spaces are ignored."""
    assert parse_cache_control(["no-store,, ", " max-age = 5"]) == {"no-store": None, "max-age": "5"}
    assert parse_cache_control(None) == {}
    assert parse_cache_control("") == {}


def test_conflicting_max_age_values_make_a_response_stale() -> None:
    """RFC 9111 4.2.1: with two different max-age values, the response is considered stale (the first value
    would be the other choice; either could be the one the server meant). The same value twice is no conflict."""
    for text in ("max-age=60, max-age=10", "max-age=10, max-age=60", "max-age=60, max-age", "max-age=5,max-age=x"):
        directives = parse_cache_control(text)
        assert freshness_lifetime(directives, {}, response_time=0.0, override=3600) == 0.0, text
    assert parse_cache_control(["max-age=60", "max-age=060"])["max-age"] == "60"
    assert freshness_lifetime(parse_cache_control("max-age=60, max-age=60"), {}, response_time=0.0) == 60.0


def test_conflicting_request_max_stale_values_accept_nothing_stale() -> None:
    """A request that says max-stale twice, with a number and without, is served nothing stale without asking."""
    directives = parse_cache_control("max-stale, max-stale=500")
    assert verdict(directives, {}, age=70, lifetime=60, has_validator=True) is Verdict.REVALIDATE
    assert verdict(parse_cache_control("max-stale=500"), {}, age=70, lifetime=60, has_validator=True) is Verdict.FRESH


directive_names = st.sampled_from(["max-age", "no-cache", "no-store", "private", "must-revalidate", "x-ext"])
arguments = st.one_of(st.none(), st.text(alphabet="abcXYZ019 ,=-", max_size=12))


@given(st.lists(st.tuples(directive_names, arguments), max_size=6, unique_by=lambda pair: pair[0]))
def test_quoted_arguments_round_trip(directives: list[tuple[str, str | None]]) -> None:
    """Whatever the arguments hold (commas, equals signs, spaces), quoting them gives them back exactly."""
    text = ", ".join(name if arg is None else f'{name}="{arg}"' for name, arg in directives)
    assert parse_cache_control(text) == dict(directives)


@given(st.text())
def test_cache_control_never_raises(text: str) -> None:
    """Any header text parses to a mapping of lowercase names (a bad header is no reason to fail a request)."""
    parsed = parse_cache_control(text)
    assert all(name == name.lower() and name for name in parsed)


def test_delta_seconds() -> None:
    """Only digits are delta-seconds; huge values are capped at 2**31."""
    assert delta_seconds("60") == 60
    assert delta_seconds(" 0 ") == 0
    assert delta_seconds("99999999999999") == MAX_DELTA_SECONDS
    for bad in (None, "", "-1", "1.5", "abc", "٣"):
        assert delta_seconds(bad) is None


def test_http_date() -> None:
    """HTTP-dates read as Unix seconds; anything else is None."""
    assert http_date(date(NOW)) == NOW
    assert http_date("Sunday, 06-Nov-94 08:49:37 GMT") is not None  # the obsolete RFC 850 form
    for bad in (None, "", "0", "yesterday", "Mon, 99 Foo 2020 99:99:99 GMT"):
        assert http_date(bad) is None


# --- freshness and age -------------------------------------------------------------------


def test_lifetime_from_max_age_first() -> None:
    """max-age wins over Expires (RFC 9111 4.2.1)."""
    headers = {"Expires": date(NOW + 500), "Date": date(NOW)}
    assert freshness_lifetime({"max-age": "60"}, headers, NOW) == 60


def test_lifetime_from_expires_minus_date() -> None:
    """Expires counts from the server's Date, so the two clocks' skew cancels out."""
    headers = {"Expires": date(NOW + 300), "Date": date(NOW - 1000)}
    assert freshness_lifetime({}, headers, NOW) == 1300


def test_invalid_freshness_means_stale() -> None:
    """An invalid max-age or Expires (e.g. ``Expires: 0``) makes the response stale, not fresh forever."""
    assert freshness_lifetime({"max-age": "soon"}, {}, NOW) == 0
    assert freshness_lifetime({}, {"Expires": "0"}, NOW) == 0
    assert freshness_lifetime({}, {"Expires": date(NOW - 10), "Date": date(NOW)}, NOW) == 0


def test_override_only_without_freshness_information() -> None:
    """The per-URL lifetime applies to responses that say nothing; explicit freshness wins."""
    assert freshness_lifetime({}, {}, NOW, override=30) == 30
    assert freshness_lifetime({"max-age": "5"}, {}, NOW, override=30) == 5
    assert freshness_lifetime({}, {}, NOW) == 0


def test_age() -> None:
    """Age adds the Age header, the round trip and the time spent stored (RFC 9111 4.2.3)."""
    headers = {"Age": "10", "Date": date(NOW)}
    assert current_age(headers, NOW - 2, NOW, NOW + 5) == 10 + 2 + 5
    # A server clock behind ours makes the response older (apparent age).
    assert current_age({"Date": date(NOW - 30)}, NOW, NOW, NOW) == 30
    # No Date, no Age: only the time stored.
    assert current_age({}, NOW, NOW, NOW + 7) == 7


def test_current_age_reads_the_first_of_several_age_values() -> None:
    """RFC 9111 5.1: an Age that lists values counts the first; an invalid one is ignored (0)."""
    assert current_age({"Age": "50, 100"}, NOW, NOW, NOW) == 50
    assert current_age({"Age": " 50 ,"}, NOW, NOW, NOW) == 50
    assert current_age({"Age": "soon, 50"}, NOW, NOW, NOW) == 0


# --- storing ------------------------------------------------------------------------------


def test_storable() -> None:
    """GET/HEAD with a cacheable status, fresh for a while or revalidatable, and no no-store on either side."""
    assert storable("GET", 200, {}, {"max-age": "60"}, lifetime=60, has_validator=False)
    assert storable("HEAD", 404, {}, {}, lifetime=0, has_validator=True)
    assert storable("GET", 200, {}, {"private": None}, lifetime=60, has_validator=False)
    assert not storable("POST", 200, {}, {}, lifetime=60, has_validator=True)
    assert not storable("GET", 206, {}, {}, lifetime=60, has_validator=True)
    assert not storable("GET", 500, {}, {}, lifetime=60, has_validator=True)
    assert not storable("GET", 200, {}, {"no-store": None}, lifetime=60, has_validator=True)
    assert not storable("GET", 200, {"no-store": None}, {}, lifetime=60, has_validator=True)
    assert not storable("GET", 200, {}, {}, lifetime=0, has_validator=False)


def test_vary_names() -> None:
    """Vary names are lowercased and sorted; ``*`` matches no request; Authorization is covered by the identity."""
    assert vary_names(["Accept, accept-Language", "X-Tenant"]) == ("accept", "accept-language", "x-tenant")
    assert vary_names(["Accept, *"]) is None
    assert vary_names(["Authorization"]) == ()
    assert vary_names([]) == ()


def test_vary_value_normalises_whitespace_and_joins_lines() -> None:
    """Two requests with the same header value, spaced differently, select the same variant."""
    from multidict import CIMultiDict

    assert vary_value({"accept": "a,  b"}, "accept") == "a, b"
    assert vary_value(CIMultiDict([("Accept", "a"), ("Accept", "b")]), "accept") == "a, b"
    assert vary_value({"Accept": "x"}, "accept") == "x"


def test_vary_value_tells_an_absent_header_from_an_empty_one() -> None:
    """RFC 9111 4.1: a header absent from one request matches only its absence in the other."""
    from multidict import CIMultiDict

    absent = {vary_value(None, "accept"), vary_value({}, "accept"), vary_value(CIMultiDict(), "accept")}
    empty = {vary_value({"Accept": ""}, "accept"), vary_value(CIMultiDict([("Accept", "  ")]), "accept")}
    assert len(absent) == 1
    assert len(empty) == 1
    assert absent != empty


# --- reuse --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_cc", "response_cc", "age", "lifetime", "validator", "expected"),
    [
        ({}, {}, 10, 60, False, Verdict.FRESH),
        ({}, {}, 60, 60, True, Verdict.REVALIDATE),
        ({}, {}, 61, 60, False, Verdict.UNUSABLE),
        ({}, {"no-cache": None}, 0, 60, True, Verdict.REVALIDATE),
        ({"no-cache": None}, {}, 0, 60, True, Verdict.REVALIDATE),
        ({"max-age": "5"}, {}, 10, 60, True, Verdict.REVALIDATE),
        ({"max-age": "50"}, {}, 10, 60, True, Verdict.FRESH),
        ({"min-fresh": "55"}, {}, 10, 60, True, Verdict.REVALIDATE),
        ({"max-stale": None}, {}, 1000, 60, False, Verdict.FRESH),
        ({"max-stale": "10"}, {}, 65, 60, False, Verdict.FRESH),
        ({"max-stale": "10"}, {}, 75, 60, True, Verdict.REVALIDATE),
        ({"max-stale": None}, {"must-revalidate": None}, 61, 60, True, Verdict.REVALIDATE),
        ({"max-stale": None}, {"no-cache": None}, 61, 60, False, Verdict.UNUSABLE),
    ],
)
def test_verdict(
    request_cc: dict[str, str | None],
    response_cc: dict[str, str | None],
    age: float,
    lifetime: float,
    validator: bool,
    expected: Verdict,
) -> None:
    """Fresh responses are served; stale ones revalidated (if they can be); max-stale is refused by must-revalidate."""
    assert verdict(request_cc, response_cc, age=age, lifetime=lifetime, has_validator=validator) is expected


def test_conditional_headers() -> None:
    """ETag becomes If-None-Match, Last-Modified becomes If-Modified-Since."""
    assert conditional_headers({"ETag": '"v1"', "Last-Modified": date(NOW)}) == {
        "If-None-Match": '"v1"',
        "If-Modified-Since": date(NOW),
    }
    assert conditional_headers({}) == {}


def test_a_304_updates_headers_but_not_those_describing_the_body() -> None:
    """The 304's fields replace the stored ones by name; Content-Length and Content-Type stay the stored body's."""
    stored = (("Content-Type", "application/json"), ("Content-Length", "12"), ("Cache-Control", "max-age=0"))
    update = (("cache-control", "max-age=60"), ("Content-Length", "0"), ("Content-Type", "text/plain"), ("X-New", "1"))
    assert refreshed_headers(stored, update) == (
        ("Content-Type", "application/json"),
        ("Content-Length", "12"),
        ("cache-control", "max-age=60"),
        ("X-New", "1"),
    )


def test_a_304_replaces_the_stored_age_even_without_one_of_its_own() -> None:
    """The stored Age told how old the first message was; the renewed response is as old as the 304 says (none: 0)."""
    stored = (("Age", "50"), ("ETag", '"a"'))
    assert refreshed_headers(stored, (("ETag", '"a"'),)) == (("ETag", '"a"'),)
    assert refreshed_headers(stored, (("Age", "3"),)) == (("ETag", '"a"'), ("Age", "3"))


def test_same_etag_compares_strongly_when_the_304s_etag_is_strong() -> None:
    """A 304's weak ETag confirms a stored response with that opaque tag, weak or strong (W/"a" and "a"); a strong
    one only a stored response with that strong ETag (RFC 9111 4.3.4); a 304 without an ETag confirms ours."""
    assert same_etag('"a"', 'W/"a"')
    assert same_etag('W/"a"', 'W/"a"')
    assert same_etag('"a"', '"a"')
    assert not same_etag('W/"a"', '"a"')
    assert same_etag('"a"', None)
    assert not same_etag('"a"', '"b"')
    assert not same_etag(None, '"b"')


def test_a_304_selects_the_stored_response_only_by_its_own_validators() -> None:
    """RFC 9111 4.3.4: a strong ETag match selects; otherwise a Last-Modified the 304 sends must be the stored one's
    (the same instant in another date format counts); a 304 with no validator selects the one it answered."""
    stored = {"ETag": '"a"', "Last-Modified": "Sun, 06 Nov 1994 08:49:37 GMT"}
    assert selects(stored, {"ETag": '"a"', "Last-Modified": "Mon, 07 Nov 1994 08:49:37 GMT"})
    assert selects(stored, {"ETag": 'W/"a"', "Last-Modified": "Sunday, 06-Nov-94 08:49:37 GMT"})
    older = {"ETag": 'W/"a"', "Last-Modified": "Sat, 05 Nov 1994 08:49:37 GMT"}
    assert not selects(stored, {**older, "Date": "Mon, 07 Nov 1994 08:49:37 GMT"})
    assert not selects(stored, {"ETag": '"b"'})
    assert selects(stored, {"Last-Modified": "Sun, 06 Nov 1994 08:49:37 GMT"})
    assert not selects(stored, {"Last-Modified": "Sat, 05 Nov 1994 08:49:37 GMT"})
    assert not selects({"ETag": '"a"'}, {"Last-Modified": "Sat, 05 Nov 1994 08:49:37 GMT"})
    assert not selects(stored, {"Last-Modified": "0"})
    # Beside a matching weak ETag, a Last-Modified less than a minute before the 304's Date (or with no Date to
    # tell) is weak: it says nothing of the version.
    now = "Mon, 07 Nov 1994 08:49:37 GMT"
    assert selects(stored, {"ETag": 'W/"a"', "Last-Modified": now, "Date": now})
    assert selects(stored, {"ETag": 'W/"a"', "Last-Modified": now, "Date": "Mon, 07 Nov 1994 08:50:36 GMT"})
    assert not selects(stored, {"ETag": 'W/"a"', "Last-Modified": now, "Date": "Mon, 07 Nov 1994 08:50:37 GMT"})
    assert selects(stored, older)
    assert selects(stored, {})


# --- the stored form ------------------------------------------------------------------------

header_text = st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), max_size=20)
stored_responses = st.builds(
    StoredResponse,
    method=st.sampled_from(["GET", "HEAD"]),
    status=st.integers(100, 599),
    reason=st.text(max_size=10),
    headers=st.lists(st.tuples(header_text, header_text), max_size=5).map(tuple),
    body=st.binary(max_size=200),
    request_time=st.floats(0, 2e9),
    response_time=st.floats(0, 2e9),
    lifetime=st.floats(0, 1e6),
    vary=st.lists(st.tuples(header_text, header_text), max_size=3).map(tuple),
    keep_until=st.floats(0, 2e9),
)


@given(st.lists(stored_responses, max_size=4))
def test_stored_form_round_trips(variants: list[StoredResponse]) -> None:
    """What a SQLite or Redis store writes reads back equal, bodies and all."""
    assert decode_variants(encode_variants(variants)) == tuple(variants)


@given(st.binary(max_size=300))
def test_anything_else_decodes_to_nothing(data: bytes) -> None:
    """Bytes that are not a stored entry (or a damaged one) read as a miss, never as an error."""
    decode_variants(data)  # must not raise
    good = encode_variants([StoredResponse("GET", 200, "OK", (("A", "b"),), b"body", 1.0, 2.0, 3.0, (), 4.0)])
    assert decode_variants(good[:-1]) == ()
    assert decode_variants(good + b"x") == ()
    assert decode_variants(good.replace(b'"A"', b'"A\\r\\nX"')) == ()


# --- the keys and forms the memory store uses ----------------------------------------------

_HOSTS = st.sampled_from(
    ["api.example.com", "API.Example.COM", "127.0.0.1", "[::1]", "[::80]", "h.", "xn--bcher-kva.example"]
)
_PORTS = st.sampled_from(["", ":", ":80", ":080", ":443", ":0443", ":8080", ":21", ":9"])
_SCHEMES = st.sampled_from(["http", "https", "HTTPS", "ws", "wss"])
_PART = st.text(alphabet="abcAZ09-._~%/?=&;:@!$'()*+, #[]é\u00a0", max_size=12)


@given(_SCHEMES, st.sampled_from(["", "user@", "u:p@"]), _HOSTS, _PORTS, _PART, st.one_of(st.none(), _PART))
def test_the_address_is_the_url_as_str_writes_it_without_its_fragment(
    scheme: str, userinfo: str, host: str, port: str, rest: str, fragment: str | None
) -> None:
    """Joined from yarl's parts, the key is what ``str(url)`` writes (a default port dropped, case normalised...)."""
    text = f"{scheme}://{userinfo}{host}{port}/{rest}" + ("" if fragment is None else f"#{fragment}")
    try:
        url = URL(text)
    except ValueError:
        return  # not a URL yarl takes
    assert _address(url) == str(url.with_fragment(None))
    with_query = url.extend_query({"page": "2", "q": "a b&c"})
    assert _address(with_query) == str(with_query.with_fragment(None))


def test_the_address_of_a_url_without_a_path() -> None:
    """No path: none is added, unless a query follows (as str() writes it)."""
    assert _address(URL("https://h")) == "https://h"
    assert _address(URL("https://h?a=1")) == "https://h/?a=1"
    assert _address(URL("https://h:443?a=1#f")) == "https://h/?a=1"


_NAMES = st.binary(min_size=0, max_size=12).filter(
    lambda b: b": " not in b and b"\r\n" not in b and b.decode("utf-8", "replace").lower() not in _KNOWN_NAMES
)
_VALUES = st.binary(max_size=20).filter(lambda b: b"\r\n" not in b)


@given(st.lists(st.tuples(_NAMES, _VALUES), max_size=8))
def test_a_header_block_reads_back_as_its_fields(pairs: list[tuple[bytes, bytes]]) -> None:
    """Any fields without a line break (and names without ': ') survive the block, decoded as aiohttp decodes them."""
    decoded = tuple((n.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape")) for n, v in pairs)
    assert header_pairs(header_block(pairs)) == decoded


# aiohttp's header names, but those its parser refuses here (a second length, a framing, a WebSocket request's key).
_REFUSED = {"content-length", "transfer-encoding", "sec-websocket-key1"}
_KNOWN = sorted(str(name) for name in vars(hdrs).values() if isinstance(name, istr) and name.lower() not in _REFUSED)
_SENT_NAMES = st.one_of(
    st.sampled_from(_KNOWN).flatmap(lambda n: st.sampled_from([n, n.lower(), n.upper(), n.swapcase()])),
    st.text("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789-_", min_size=1, max_size=12),
)
_SENT_VALUES = st.text("abc XYZ019=;,/\"'", max_size=20).map(str.strip)


@given(st.lists(st.tuples(_SENT_NAMES, _SENT_VALUES), max_size=8))
def test_a_header_block_reads_back_as_aiohttp_parsed_the_response(fields: list[tuple[str, str]]) -> None:
    """What the memory store keeps of a response (its raw fields) reads back as aiohttp's ``headers`` gave them:
    the same names in the same case (aiohttp's own for those it knows, under its compiled parser), the same values."""
    fields = [(name, value) for name, value in fields if name.lower() not in _REFUSED]
    head = "".join(f"{name}: {value}\r\n" for name, value in fields)
    loop = asyncio.new_event_loop()
    try:
        parser = HttpResponseParser(BaseProtocol(loop), loop, 2**16)
        messages, _, _ = parser.feed_data(f"HTTP/1.1 200 OK\r\n{head}Content-Length: 0\r\n\r\n".encode())
    finally:
        loop.close()
    message = messages[0][0]
    assert header_pairs(header_block(message.raw_headers)) == tuple(message.headers.items())


def test_a_header_block_is_one_bytes_object() -> None:
    """No headers make an empty block; fields keep their order, case and repeats."""
    assert header_block([]) == b""
    assert header_pairs(b"") == ()
    pairs = [(b"Set-Thing", b"a"), (b"set-thing", b"b: c"), (b"X", b"")]
    assert header_block(pairs) == b"Set-Thing: a\r\nset-thing: b: c\r\nX: "
    assert header_pairs(header_block(pairs)) == (("Set-Thing", "a"), ("set-thing", "b: c"), ("X", ""))


def test_must_understand_lifts_no_store() -> None:
    """no-store forbids storing, unless must-understand is beside it (RFC 9111 5.2.2.3)."""
    assert forbids_storing(parse_cache_control("no-store"))
    assert not forbids_storing(parse_cache_control("must-understand, no-store"))
    assert not forbids_storing(parse_cache_control("max-age=60"))
