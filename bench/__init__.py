"""The benchmark of issue 13: twistgate beside reference gateways, driven by wrk."""
