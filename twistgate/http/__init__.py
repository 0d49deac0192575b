"""
Wire code with no gateway knowledge: L{twistgate.http.head} (the one header-block parser, which
the listener and the upstream client share, and the one writer of a response head), the chunked
coding and socket writes (more of the HTTP/1.1 layer moves here with issue 18), and
L{twistgate.http._twisted}, the one module that touches Twisted's private internals.
"""
