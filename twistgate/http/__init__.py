"""
Wire code with no gateway knowledge: the chunked coding and socket writes (more of the
HTTP/1.1 layer moves here with issue 18), and L{twistgate.http._twisted}, the one module that
touches Twisted's private internals.
"""
