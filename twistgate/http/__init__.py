"""
Wire code with no gateway knowledge: L{twistgate.http.head} (the head parser that the listener
and the upstream client share, and the writer of a response head's lines), the chunked coding,
socket writes, and L{twistgate.http._twisted}, the one module that touches Twisted's private
internals.
"""
