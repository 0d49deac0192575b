"""
``workers = N``: one parent process holding the listening sockets, N worker processes serving them.

With C{workers = 1} none of this runs: tap.py starts the L{twistgate.gateway.Gateway} in the
twistd process, as always. With more, tap.py starts the L{Supervisor} (parent.py) instead, which
binds the public listeners once (sockets.py), starts N copies of worker.py handing each the
listening file descriptors, and talks to each over a control channel (channel.py): readiness,
reload, cache purges and the figures the parent's status listener (status.py, merge.py) sums.
"""
