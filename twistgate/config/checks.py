"""
What each section type may say, how sections refer to each other, and what is valid but unwise.

build.py hands every section of gw.ini to one method here, which reads it through a
``_Section``, reports its problems there and returns the parsed object from model.py, or None
when the section has a problem.  References between sections (a route's upstream, a chain's
filters) are checked against every section declared in the file, so that a section with a problem
of its own is never reported a second time by the sections that name it.

``config_warnings`` looks at a config that passed: what it finds (a method no registry knows, a
short HMAC key) is worth a line in ``check`` and in the start-up log, but is no reason to refuse
the file, since a private method or a test key may be meant.
"""

from __future__ import annotations

import os
import re

import attrs

from twistgate import units
from twistgate.aggregate.template import parse_template
from twistgate.config.model import (
    AggregateConfig,
    Fetch,
    FilterConfig,
    FilterFactories,
    FilterSection,
    GatewayConfig,
    GatewaySettings,
    RouteConfig,
    SectionError,
    StatusSettings,
    StoreSettings,
    UpstreamConfig,
)
from twistgate.config.section import _Section
from twistgate.config.values import (
    _BACKENDS,
    _BALANCES,
    _DIGITS,
    _NAME,
    _NAMED_SECTIONS,
    _check_endpoint,
    _parse_count,
    _parse_method,
    _parse_network,
    _parse_prefix,
    _parse_route_template,
    _parse_underscores,
    _parse_workers,
    _suggest,
    parse_target,
)
from twistgate.stores.address import parse_redis_url
from twistgate.units import parse_positive_duration as _positive_duration

#: The IANA HTTP Method Registry (RFC 9110 §16.1): RFC 9110's methods, PATCH (RFC 5789), WebDAV
#: and its extensions (RFC 4918, 3253, 3648, 3744, 4437, 4791, 5323, 5842), LINK/UNLINK, and QUERY.
#: PRI is left out: it is HTTP/2's connection preface, never a request a route could take.
REGISTERED_METHODS = frozenset(
    """GET HEAD POST PUT DELETE CONNECT OPTIONS TRACE PATCH QUERY
    PROPFIND PROPPATCH MKCOL COPY MOVE LOCK UNLOCK SEARCH ACL BIND UNBIND REBIND
    LINK UNLINK ORDERPATCH MKCALENDAR MKREDIRECTREF UPDATEREDIRECTREF
    BASELINE-CONTROL CHECKIN CHECKOUT UNCHECKOUT LABEL MERGE MKACTIVITY MKWORKSPACE REPORT
    UPDATE VERSION-CONTROL""".split()
)


def _parse_nodes(text: str) -> int:
    """[store] nodes: how many gateway processes share the store, 1 or more."""
    if not _DIGITS.match(text) or int(text) < 1:
        raise ValueError(f"'{text}' is not a whole number of 1 or more")
    return int(text)


def config_warnings(config: GatewayConfig) -> list[str]:
    """
    One line per thing in a valid C{config} that is allowed but probably a mistake, formatted as
    the problems are with ``warning:`` before the text:
    ``gw.ini: [route:users] methods: warning: 'GTE' is not a registered HTTP method (did you
    mean 'GET'?)``. Filter sections report theirs through their settings' C{warnings}.
    """
    lines: list[str] = []

    def warn(section: str, key: str, text: str) -> None:
        lines.append(f"{config.path}: [{section}] {key}: warning: {text}")

    for filter_config in config.filters.values():
        for key, text in getattr(filter_config.settings, "warnings", ()):
            warn(f"filter:{filter_config.name}", key, text)
    for route in config.routes:
        for method in sorted(route.methods or ()):
            if method not in REGISTERED_METHODS:
                warn(f"route:{route.name}", "methods",
                     f"'{method}' is not a registered HTTP method"
                     + _suggest(method, REGISTERED_METHODS))
    return lines


class _SectionChecks:
    """One method per section type, and the state they share; one instance per parse."""

    def __init__(self, factories: FilterFactories, base_dir: str):
        self.factories = factories
        self.base_dir = base_dir
        self.implicit: dict[str, UpstreamConfig] = {}
        # Every [kind:NAME] section present, also the broken ones: a reference to a section with a
        # problem of its own is not a second problem.
        self.declared: dict[str, set[str]] = {kind: set() for kind in _NAMED_SECTIONS}
        # The ``use =`` of every [filter:NAME] as written: an aggregate's breaker must name a
        # circuit_breaker, whether its section comes before or after the aggregate's.
        self.filter_uses: dict[str, str] = {}

    # -- helpers shared by the sections

    def _file(self, s: _Section, key: str) -> str | None:
        """A file that must exist, relative to the config file's directory; its absolute path."""
        value = s.text(key)
        if value is None:
            return None
        full = os.path.join(self.base_dir, os.path.expanduser(value))
        try:
            with open(full, "rb"):
                pass
        except OSError as e:
            s.problem(key, f"cannot read '{value}': {e.strerror or e}")
            return None
        return full

    def _filter_names(
        self, s: _Section, key: str, already: tuple[str, ...] = ()
    ) -> tuple[str, ...]:
        names = s.words(key)
        seen: set[str] = set()
        for name in names:
            if name not in self.declared["filter"]:
                s.problem(
                    key, f"no section [filter:{name}]" + _suggest(name, self.declared["filter"])
                )
            elif name in seen:
                s.problem(key, f"'{name}' is listed twice")
            elif name in already:
                s.problem(
                    key, f"'{name}' is already in [gateway] filters, which run on every route"
                )
            seen.add(name)
        return names

    def _upstream_ref(self, s: _Section, key: str, value: str) -> str | None:
        """An upstream name, or a URL that becomes an implicit single-target upstream."""
        if "://" in value:
            try:
                target = parse_target(value)
            except ValueError as e:
                s.problem(key, str(e))
                return None
            self.implicit.setdefault(
                target.url, UpstreamConfig(name=target.url, targets=(target,), weights=(1,))
            )
            return target.url
        if value not in self.declared["upstream"]:
            s.problem(
                key, f"no section [upstream:{value}]" + _suggest(value, self.declared["upstream"])
            )
            return None
        return value

    def gateway(self, s: _Section, env_file: str | None) -> GatewaySettings:
        defaults = GatewaySettings()
        s.values.pop("env_file", None)  # substituted and read already, from the environment alone
        s.allow(attrs.fields_dict(GatewaySettings))
        listen = self._listen(s) or defaults.listen
        workers = s.get("workers", _parse_workers, defaults.workers)
        if workers == 0:
            s.problem("workers", "must be at least 1")
        access_log = s.text("access_log") or defaults.access_log
        if access_log not in ("-", "off"):
            access_log = os.path.join(self.base_dir, os.path.expanduser(access_log))
            if not os.path.isdir(os.path.dirname(access_log)):
                s.problem("access_log", f"directory '{os.path.dirname(access_log)}' does not exist")
        return GatewaySettings(
            listen=listen,
            env_file=env_file,
            filters=self._filter_names(s, "filters"),
            trusted_proxies=s.words("trusted_proxies", _parse_network),
            request_timeout=s.get("request_timeout", _positive_duration, defaults.request_timeout),
            connect_timeout=s.get("connect_timeout", _positive_duration, defaults.connect_timeout),
            max_body=s.get("max_body", units.parse_size, defaults.max_body),
            drain_timeout=s.get("drain_timeout", units.parse_duration, defaults.drain_timeout),
            header_timeout=s.get("header_timeout", _positive_duration, defaults.header_timeout),
            idle_timeout=s.get("idle_timeout", _positive_duration, defaults.idle_timeout),
            access_log=access_log,
            workers=workers,
            underscores_in_headers=s.get(
                "underscores_in_headers", _parse_underscores, defaults.underscores_in_headers
            ),
        )

    def _listen(self, s: _Section, required: bool = False) -> tuple[str, ...]:
        if required:
            s.text("listen", required=True)
        listen = s.words("listen", _check_endpoint)
        for i, endpoint in enumerate(listen):
            if endpoint in listen[:i]:
                s.problem("listen", f"'{endpoint}' is listed twice")
        return listen

    def status(self, s: _Section, gateway_listen: tuple[str, ...]) -> StatusSettings:
        s.allow(["listen"])
        listen = self._listen(s, required=True)
        for endpoint in listen:
            if endpoint in gateway_listen:
                s.problem("listen", f"'{endpoint}' is also a [gateway] listen endpoint")
        return StatusSettings(listen=listen)

    def store(self, s: _Section) -> StoreSettings:
        s.allow(["backend", "url", "store_timeout", "nodes"])
        backend = s.text("backend") or "memory"
        if backend not in _BACKENDS:
            s.problem(
                "backend", f"'{backend}' is not one of memory, redis" + _suggest(backend, _BACKENDS)
            )
        url = s.text("url", required=backend == "redis")
        address = s.get("url", parse_redis_url)
        store_timeout = s.get("store_timeout", _positive_duration, 0.05)
        nodes = s.get("nodes", _parse_nodes)
        return StoreSettings(backend=backend, url=url, address=address,
                             store_timeout=store_timeout, nodes=nodes)

    def upstream(self, s: _Section, name: str) -> UpstreamConfig | None:
        defaults = UpstreamConfig(name=name, targets=(), weights=())
        s.allow([a.name for a in attrs.fields(UpstreamConfig) if a.name != "name"])
        s.text("targets", required=True)
        targets = s.words("targets", parse_target)
        targets_ok = len(targets) == len((s.text("targets") or "").split())
        for i, target in enumerate(targets):
            if target in targets[:i]:
                s.problem(
                    "targets", f"'{target.url}' is listed twice (give it a larger weight instead)"
                )
        weights = s.words("weights", _parse_count)
        weights_ok = len(weights) == len((s.text("weights") or "").split())
        if any(w < 1 for w in weights):
            s.problem("weights", "each weight must be at least 1")
        elif weights and targets_ok and weights_ok and len(weights) != len(targets):
            s.problem(
                "weights",
                f"{len(weights)} weights for {len(targets)} targets (give one per target)",
            )
        balance = s.text("balance") or defaults.balance
        if balance not in _BALANCES:
            s.problem(
                "balance",
                f"'{balance}' is not one of {', '.join(_BALANCES)}" + _suggest(balance, _BALANCES),
            )
        health_check = s.text("health_check")
        if health_check is not None and (
            not health_check.startswith("/") or re.search(r"\s", health_check)
        ):
            s.problem("health_check", f"'{health_check}' must be a path starting with '/'")
        client_cert = self._file(s, "client_cert")
        client_key = self._file(s, "client_key")
        if s.text("client_cert") and not s.text("client_key"):
            s.problem("client_key", "required with client_cert")
        if s.text("client_key") and not s.text("client_cert"):
            s.problem("client_cert", "required with client_key")
        upstream = UpstreamConfig(
            name=name,
            targets=targets,
            weights=weights or (1,) * len(targets),
            balance=balance,
            health_check=health_check,
            health_interval=s.get("health_interval", _positive_duration, defaults.health_interval),
            max_fails=s.get("max_fails", _parse_count, defaults.max_fails),
            fail_timeout=s.get("fail_timeout", units.parse_duration, defaults.fail_timeout),
            retries=s.get("retries", _parse_count, defaults.retries),
            keepalive=s.get("keepalive", _parse_count, defaults.keepalive),
            keepalive_timeout=s.get(
                "keepalive_timeout", _positive_duration, defaults.keepalive_timeout
            ),
            tls_verify=s.get("tls_verify", units.parse_bool, defaults.tls_verify),
            ca_file=self._file(s, "ca_file"),
            client_cert=client_cert,
            client_key=client_key,
        )
        return upstream if s.ok else None

    def route(
        self, s: _Section, name: str, global_filters: tuple[str, ...], prefixes: dict[str, str]
    ) -> RouteConfig | None:
        s.allow(
            ["prefix", "upstream", "methods", "strip_prefix", "preserve_host", "filters", "public",
             "stream_idle_timeout"]
        )
        prefix = s.get("prefix", _parse_prefix, required=True)
        if prefix is not None:
            if prefix in prefixes:
                s.problem(
                    "prefix", f"'{prefix}' is already the prefix of [route:{prefixes[prefix]}]"
                )
            else:
                prefixes[prefix] = name
        upstream = s.text("upstream", required=True)
        if upstream is not None:
            if re.search(r"\s", upstream):
                s.problem("upstream", f"'{upstream}' must be one upstream name or URL")
                upstream = None
            else:
                upstream = self._upstream_ref(s, "upstream", upstream)
        methods = s.words("methods", _parse_method)
        route = RouteConfig(
            name=name,
            prefix=prefix or "/",
            upstream=upstream or "",
            methods=frozenset(methods) if methods else None,
            strip_prefix=s.get("strip_prefix", units.parse_bool, False),
            preserve_host=s.get("preserve_host", units.parse_bool, False),
            filters=self._filter_names(s, "filters", global_filters),
            public=s.get("public", units.parse_bool, False),
            stream_idle_timeout=s.get(
                "stream_idle_timeout",
                _positive_duration,
                attrs.fields(RouteConfig).stream_idle_timeout.default,
            ),
        )
        return route if s.ok else None

    def filter(self, s: _Section, name: str) -> FilterConfig | None:
        use = s.text("use", required=True)
        if use is None:
            return None
        factory = self.factories.get(use)
        if factory is None:
            s.problem("use", f"unknown filter '{use}'" + _suggest(use, self.factories))
            # The filter may live in a plugin module that failed to import: name it and why.
            from twistgate.plugins import import_failures

            for module, error in sorted(import_failures().items()):
                s.problem("use", f"the plugin module '{module}' failed to import: {error}")
            return None
        settings_keys = {k: v for k, v in s.values.items() if k != "use"}
        try:
            settings = factory(FilterSection(settings_keys, self.base_dir))
        except SectionError as e:
            for key, problem in e.problems:
                if key not in s.unsubstituted:  # already reported: its ${NAME} is not set
                    s.problem(key, problem)
            return None
        except ValueError as e:
            s.problem("use", str(e))
            return None
        # A filter that sends to another upstream (a circuit breaker's fallback) names it in
        # its settings; only the configuration as a whole knows which upstreams exist.
        for key, upstream in getattr(settings, "upstream_references", ()):
            if upstream not in self.declared["upstream"]:
                s.problem(
                    key,
                    f"no section [upstream:{upstream}]"
                    + _suggest(upstream, self.declared["upstream"]),
                )
        return FilterConfig(name=name, use=use, settings=settings) if s.ok else None

    def aggregate(
        self, s: _Section, name: str, paths: dict[tuple[str, ...], tuple[str, str]]
    ) -> AggregateConfig | None:
        s.allow(
            ["path", "filters", "timeout", "required", "max_part_body", "breaker", "fetch.NAME"],
            extra=lambda key: key.startswith("fetch."),
        )
        template = s.get("path", _parse_route_template, required=True)
        path, placeholders = template if template is not None else ("", None)
        if path:
            shape = path_shape(path)
            if shape in paths:
                other, other_path = paths[shape]
                if other_path == path:
                    s.problem("path", f"'{path}' is already the path of [aggregate:{other}]")
                else:
                    s.problem("path", f"'{path}' takes the same requests as '{other_path}', the"
                                      f" path of [aggregate:{other}]")
            else:
                paths[shape] = (name, path)
        keys = [k for k in list(s.values) + sorted(s.unsubstituted) if k.startswith("fetch.")]
        if not keys:
            s.problem(None, "needs at least one fetch.NAME = UPSTREAM /path key")
        part_names = {key[len("fetch."):] for key in keys}
        fetches = []
        for key in keys:
            fetch = self._fetch(s, key, placeholders, part_names)
            if fetch is not None:
                fetches.append(fetch)
        _check_waits(s, fetches)
        required = s.words("required")
        for i, part in enumerate(required):
            if part not in part_names:
                s.problem("required", f"'{part}' is not a part of this aggregate (a fetch.NAME)"
                                      + _suggest(part, part_names))
            elif part in required[:i]:
                s.problem("required", f"'{part}' is listed twice")
        breaker = s.text("breaker")
        if breaker is not None:
            if breaker not in self.declared["filter"]:
                s.problem("breaker", f"no section [filter:{breaker}]"
                                     + _suggest(breaker, self.declared["filter"]))
            elif self.filter_uses.get(breaker) != "circuit_breaker":
                s.problem("breaker", f"[filter:{breaker}] is a '{self.filter_uses.get(breaker)}'"
                                     " filter, not a circuit_breaker")
        max_part_body = s.get("max_part_body", units.parse_size, 1024 * 1024)
        if max_part_body is not None and max_part_body < 1:
            s.problem("max_part_body", "must be more than 0")
        aggregate = AggregateConfig(
            name=name,
            path=path,
            filters=self._filter_names(s, "filters"),
            fetches=tuple(fetches),
            timeout=s.get("timeout", _positive_duration, 5.0),
            required=required,
            max_part_body=max_part_body,
            breaker=breaker,
        )
        return aggregate if s.ok else None

    def _fetch(
        self, s: _Section, key: str, placeholders: set[str] | None, part_names: set[str]
    ) -> Fetch | None:
        fetch_name = key[len("fetch."):]
        if not _NAME.match(fetch_name):
            s.problem(
                key, f"'{fetch_name}' is not a valid name (use letters, digits, '_', '-', '.')"
            )
            return None
        if fetch_name == ERRORS_KEY:
            s.problem(key, f"'{ERRORS_KEY}' is the answer's key for the parts that failed:"
                           " give this part another name")
            return None
        value = s.text(key, required=True)
        if value is None:
            return None
        words = value.split()
        if len(words) != 2:
            s.problem(key, f"'{value}' must be 'UPSTREAM /path' (e.g. 'users /users/{{id}}')")
            return None
        upstream = self._upstream_ref(s, key, words[0])
        path = words[1]
        try:
            template = parse_template(path)
        except ValueError as e:
            s.problem(key, str(e))
            return None
        after: list[str] = []
        for slot in template.slots:
            head = slot.reference[0]
            bare = len(slot.reference) == 1
            if bare and placeholders is not None and head in placeholders:
                continue
            if head == fetch_name:
                s.problem(key, f"{slot.text} would be this part's own answer")
            elif head in part_names:
                if head not in after:
                    after.append(head)
            elif placeholders is None:
                continue  # the path has a problem of its own: its placeholders are unknown
            elif head in placeholders:
                s.problem(key, f"{slot.text}: {{{head}}} of path '{path_text(s)}' is a text,"
                               " with no fields")
            elif bare:
                s.problem(key, f"{slot.text} is not in path '{path_text(s)}', nor the name of a"
                               " part" + _suggest(head, placeholders | part_names))
            else:
                s.problem(key, f"{slot.text}: no part '{head}' in this aggregate"
                               + _suggest(head, part_names))
        if upstream is None:
            return None
        return Fetch(name=fetch_name, upstream=upstream, path=path, after=tuple(after),
                     template=template)


#: The key of the merged answer that lists the parts that failed: no part may have its name.
ERRORS_KEY = "errors"


def path_text(s: _Section) -> str:
    return s.text("path") or ""


def path_shape(path: str) -> tuple[str, ...]:
    """The segments of an aggregate path with every placeholder alike: the requests it takes."""
    return tuple("{}" if segment.startswith("{") else segment for segment in path.split("/"))


def _check_waits(s: _Section, fetches: list[Fetch]) -> None:
    """Report each cycle of parts waiting for each other's answers, once, at its first part."""
    waits = {fetch.name: fetch.after for fetch in fetches}
    reported: set[str] = set()
    for fetch in fetches:
        if fetch.name in reported:
            continue
        cycle = _cycle_from(fetch.name, waits)
        if cycle is not None:
            reported.update(cycle)
            s.problem(f"fetch.{fetch.name}",
                      "parts wait for each other's answers in a cycle: " + " -> ".join(cycle))


def _cycle_from(start: str, waits: dict[str, tuple[str, ...]]) -> list[str] | None:
    """A path C{start} -> ... -> C{start} along C{waits}, or None."""
    stack = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, trail = stack.pop()
        for other in waits.get(node, ()):
            if other == start:
                return trail + [start]
            if other not in seen:
                seen.add(other)
                stack.append((other, trail + [other]))
    return None
