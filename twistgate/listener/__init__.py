"""
The public side of the walk: the client connection (L{twistgate.listener.connection}), the
request it makes (L{twistgate.listener.request}), its streaming body and the site that counts
requests in flight. L{twistgate.listener.interfaces} declares what the rest of the gateway may
use of a request (L{IGatewayRequest}) and what the site calls to handle one.
"""
