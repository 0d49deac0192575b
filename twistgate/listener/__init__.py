"""
The public side of the walk: the client connection (L{twistgate.listener.connection}), the
request it makes (L{twistgate.listener.request}), its streaming body and the site that counts
requests in flight.
"""
