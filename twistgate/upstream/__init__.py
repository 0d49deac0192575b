"""
The upstream side of the walk: forwarding (L{twistgate.upstream.forward}), target pools and
their health, and the HTTP/1.1 client with its connection pools (L{twistgate.upstream.http1}).
"""
