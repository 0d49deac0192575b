"""
The summary that ``python -m twistgate check`` prints for a valid config.

It shows what the gateway will do with the file: each route's full filter chain, each upstream's
targets and health settings, so that a reader can check the config without reading the INI.
"""

from __future__ import annotations

from twistgate import units
from twistgate.config.model import GatewayConfig


def format_summary(config: GatewayConfig) -> str:
    """
    Describe a valid config for a human: listeners, then each route with its upstream and full
    filter chain (global filters first), each upstream with its targets and health settings, each
    filter section and each aggregate.
    """
    yn = {True: "yes", False: "no"}
    gw = config.gateway
    out = [f"listen: {' '.join(gw.listen)}"]
    if config.status is not None:
        out.append(f"status: {' '.join(config.status.listen)}")
    store = config.store
    # The parsed address, not the URL: a password in the URL is not for the terminal.
    where = str(store.address) if store.address is not None else store.url
    line = f"store: {store.backend}" + (f" {where}" if where else "")
    if store.backend == "redis":
        line += f" (store_timeout {units.format_duration(store.store_timeout)}" + (
            f", nodes {store.nodes})" if store.nodes else ")"
        )
    out.append(line)

    out.append(f"routes ({len(config.routes)}):")
    for route in config.routes:
        out.append(
            f"  {route.prefix} -> {route.upstream}  [route:{route.name}]"
            + ("  (public)" if route.public else "")
        )
        methods = " ".join(sorted(route.methods)) if route.methods else "any"
        out.append(
            f"    methods: {methods}; strip_prefix: {yn[route.strip_prefix]};"
            f" preserve_host: {yn[route.preserve_host]}"
        )
        chain = [f"{name} (global)" for name in gw.filters] + list(route.filters)
        line = f"    chain: {' -> '.join(chain) if chain else '(none)'}"
        if route.public and gw.filters:
            line += "  (public: the global chain's auth filters are skipped)"
        out.append(line)

    out.append(f"upstreams ({len(config.upstreams)}):")
    for upstream in config.upstreams.values():
        out.append(f"  {upstream.name}: {upstream.balance}")
        for target, weight in zip(upstream.targets, upstream.weights):
            out.append(f"    {target.url} (weight {weight})")
        health = (
            f"GET {upstream.health_check} every {units.format_duration(upstream.health_interval)}"
            if upstream.health_check
            else "no active check"
        )
        passive = (
            f"{upstream.max_fails} failures take a target out for"
            f" {units.format_duration(upstream.fail_timeout)}"
            if upstream.max_fails
            else "passive health off"
        )
        out.append(f"    health: {health}; {passive}; retries: {upstream.retries}")
        if any(t.scheme == "https" for t in upstream.targets):
            tls = f"    tls_verify: {yn[upstream.tls_verify]}"
            if upstream.ca_file:
                tls += f"; ca_file: {upstream.ca_file}"
            if upstream.client_cert:
                tls += f"; client_cert: {upstream.client_cert}"
            out.append(tls)

    out.append(f"filters ({len(config.filters)}):")
    for filter_config in config.filters.values():
        out.append(f"  {filter_config.name}: {filter_config.use}")

    if config.aggregates:
        out.append(f"aggregates ({len(config.aggregates)}):")
        for aggregate in config.aggregates:
            chain = " -> ".join(gw.filters + aggregate.filters) or "(none)"
            out.append(
                f"  {aggregate.path}  [aggregate:{aggregate.name}]"
                f"  timeout {units.format_duration(aggregate.timeout)}; chain: {chain}"
            )
            out.append(
                f"    required: {' '.join(aggregate.required) or '(none)'};"
                f" breaker: {aggregate.breaker or '(none)'}"
                + (" (one state per part)" if aggregate.breaker else "")
                + f"; max_part_body: {units.format_size(aggregate.max_part_body)}"
            )
            for fetch in aggregate.fetches:
                after = f"  (after {', '.join(fetch.after)})" if fetch.after else ""
                out.append(f"    {fetch.name} <- {fetch.upstream} {fetch.path}{after}")
    return "\n".join(out)
