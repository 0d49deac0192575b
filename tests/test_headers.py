"""Header rules: hop-by-hop removal, request ids, trusted forwarding headers."""

from __future__ import annotations

import ipaddress

from twisted.web.http_headers import Headers

from twistgate.headers import (
    HOP_BY_HOP,
    TrustedProxies,
    clean_request_headers,
    copy_end_to_end,
    remove_hop_by_hop,
    request_id_for,
)


def message():
    return Headers(
        {
            b"Connection": [b"keep-alive, X-Secret"],
            b"Keep-Alive": [b"timeout=5"],
            b"Transfer-Encoding": [b"chunked"],
            b"TE": [b"trailers"],
            b"Upgrade": [b"websocket"],
            b"Proxy-Authorization": [b"Basic x"],
            b"X-Secret": [b"1"],
            b"Accept": [b"application/json"],
            b"Set-Cookie": [b"a=1", b"b=2"],
        }
    )


def lowered(headers):
    return {name.lower(): values for name, values in headers.getAllRawHeaders()}


def test_copies_drop_hop_by_hop_and_connection_named_headers():
    copy = Headers()
    copy_end_to_end(message(), copy, HOP_BY_HOP)
    assert lowered(copy) == {b"accept": [b"application/json"], b"set-cookie": [b"a=1", b"b=2"]}


def test_removal_in_place_drops_hop_by_hop_and_connection_named_headers():
    headers = message()
    remove_hop_by_hop(headers, HOP_BY_HOP)
    assert lowered(headers) == {
        b"accept": [b"application/json"], b"set-cookie": [b"a=1", b"b=2"]
    }


def test_copies_also_drop_the_callers_names():
    copy = Headers()
    copy_end_to_end(Headers({b"Host": [b"x"], b"Accept": [b"*/*"]}), copy,
                    HOP_BY_HOP | {b"host"})
    assert lowered(copy) == {b"accept": [b"*/*"]}


def test_a_sane_request_id_is_kept_and_an_odd_one_replaced():
    assert request_id_for(Headers({b"X-Request-ID": [b"abc-123"]})) == b"abc-123"
    for odd in [b"", b"a b", b"x" * 200, b"<script>"]:
        generated = request_id_for(Headers({b"X-Request-ID": [odd]}))
        assert generated != odd and len(generated) == 32
    assert request_id_for(Headers()) != request_id_for(Headers())


def networks(*texts):
    return TrustedProxies([ipaddress.ip_network(t) for t in texts])


def test_forwarded_for_from_an_untrusted_peer_is_ignored():
    trusted = networks("10.0.0.0/8")
    assert trusted.client_address("203.0.113.9", [b"1.2.3.4"]) == "203.0.113.9"
    assert trusted.forwarded_for("203.0.113.9", [b"1.2.3.4"]) == b"203.0.113.9"
    assert networks().client_address("127.0.0.1", [b"1.2.3.4"]) == "127.0.0.1"


def test_forwarded_for_from_a_trusted_peer_names_the_first_untrusted_hop():
    trusted = networks("10.0.0.0/8", "127.0.0.1/32")
    chain = [b"6.6.6.6, 198.51.100.7", b"10.1.1.1"]
    assert trusted.client_address("127.0.0.1", chain) == "198.51.100.7"
    expected = b"6.6.6.6, 198.51.100.7, 10.1.1.1, 127.0.0.1"
    assert trusted.forwarded_for("127.0.0.1", chain) == expected


def test_garbage_forwarded_for_from_a_trusted_peer_falls_back_to_the_peer():
    trusted = networks("127.0.0.1")
    assert trusted.client_address("127.0.0.1", [b"not-an-ip"]) == "127.0.0.1"


def test_ipv4_mapped_ipv6_peers_match_ipv4_networks():
    assert networks("127.0.0.0/8").trusts("::ffff:127.0.0.1")
    assert not networks("127.0.0.0/8").trusts("::1")


def client_headers():
    return Headers(
        {
            b"Connection": [b"X-User-Id, X-Forwarded-For, Host, Content-Length, X-Hop"],
            b"Host": [b"gw"],
            b"Content-Length": [b"3"],
            b"X-Hop": [b"1"],
            b"X-User-Id": [b"admin"],
            b"X-Forwarded-For": [b"10.0.0.1"],
            b"X_User_Id": [b"admin"],
            b"X_Forwarded_For": [b"10.0.0.2"],
            b"Content_Length": [b"99"],
            b"X_Trace_Tag": [b"t"],
            b"Accept": [b"*/*"],
        }
    )


def test_cleaning_drops_connection_named_reserved_and_underscored_names():
    headers = client_headers()
    clean_request_headers(headers, frozenset([b"x-user-id"]), drop_underscores=True)
    # Connection cannot take away the listener's framing or Host.
    assert sorted(lowered(headers)) == [b"accept", b"content-length", b"host"]


def test_with_underscores_passed_only_those_spelling_a_protected_name_are_dropped():
    headers = client_headers()
    clean_request_headers(headers, frozenset([b"x-user-id"]), drop_underscores=False)
    assert sorted(lowered(headers)) == [b"accept", b"content-length", b"host", b"x_trace_tag"]


def test_cleaning_a_plain_request_changes_nothing():
    headers = Headers({b"Host": [b"gw"], b"Accept": [b"*/*"], b"X-Request-Id": [b"abc"]})
    clean_request_headers(headers, frozenset([b"x-user-id"]), drop_underscores=True)
    assert lowered(headers) == {b"host": [b"gw"], b"accept": [b"*/*"], b"x-request-id": [b"abc"]}
