"""
Aggregation: one client request, several upstream calls, one JSON answer (SPEC 5a).

An ``[aggregate:NAME]`` stands beside the routes in the walk: the router matches its ``path``
first (paths.py), its filter chain runs as a route's would, and the chain's terminal is the
aggregate's run instead of the proxy:

- template.py: a part's ``fetch.NAME`` path template, and the one way to fill it, so that no
  request path or part answer can change which upstream path is called;
- paths.py: which aggregate, if any, a request path is, and the values of its placeholders;
- body.py: a part's answer read whole, up to ``max_part_body``;
- part.py: one part's call: a GET through its upstream's pool (and its own breaker), its answer
  read and parsed, every failure turned into a reason;
- run.py: the parts of one request, in parallel where they can be, within ``timeout``;
- answer.py: the merged JSON answer, or the error answer when it cannot be given.

This module imports nothing, so that the configuration (which parses templates with
template.py) and the run (which reads the configuration) never import each other in a circle.
"""
