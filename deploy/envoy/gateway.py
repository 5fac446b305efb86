"""The Envoy edge gateway's configuration, rendered from one table of upstreams.

    .venv/bin/python -m deploy.envoy.gateway --spec spec.json --out envoy.json

Envoy reads JSON as YAML, so the output is plain JSON (no PyYAML needed). What the
gateway does, in request order:

1. TLS with a *required* client certificate signed by the dev CA, ALPN h2 only.
2. `header_mutation` drops any client-sent `x-hg-tenant`, so only the verified claim
   can ever pick a rate-limit bucket. (Envoy 1.40's jwt_authn was seen to clear its
   claim_to_headers names itself, on open paths too; this keeps that guarantee explicit
   and independent of the filter's version.)
3. `jwt_authn`: every path needs a valid JWT (issuer/audience "healing-guard", local
   JWKS) except gRPC health and server reflection, which stay open so operators can
   `grpcurl list` and check health. The token is forwarded: services re-verify it
   (zero trust). The `tenant` claim becomes `x-hg-tenant`.
4. `local_ratelimit`: one token bucket per tenant (keyed on `x-hg-tenant`), AFTER
   jwt_authn so rejected requests spend nothing and a spoofed header picks nothing.
   Requests without a tenant (the open paths) share one default bucket.
5. Routes: `/healing_guard.<service>.v1.` → that service. Health and reflection go to
   the service named by the `x-hg-service` request header, else to the coordinator.
   The heal (`Coordinator/HealFailure`, the entry point of the main flow) has its own
   route that retries on another coordinator replica when one dies or refuses the
   stream: a heal is idempotent and resumes from its last recorded step. (Not the
   client-streaming StreamHealFailure: Envoy cannot replay a stream it forwarded.)
   Route timeout 0 = none: server streams (coordinator WatchActions) stay open as long
   as the client wants; a client's own `grpc-timeout` is still honoured.
6. Upstreams: HTTP/2 over mTLS (gateway cert as client cert, CA + SAN
   `<service>.healing-guard.local` checked), active gRPC health checks every second,
   panic threshold 0 (no healthy host → UNAVAILABLE, never a call to a sick one).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from deploy.pki.make_pki import PkiPaths
from services.common.errors import InvalidArgument

SERVICE_NAMES: tuple[str, ...] = ("detector", "predictor", "planner", "tenancy", "audit", "coordinator")
DEFAULT_SERVICE = "coordinator"
TENANT_HEADER = "x-hg-tenant"
SERVICE_HEADER = "x-hg-service"
JWT_PROVIDER = "healing_guard"
OTEL_CLUSTER = "otel"
TRACING_SERVICE_NAME = "healing-guard-gateway"
# Paths open without a JWT; each is routed by x-hg-service, defaulting to the coordinator.
OPEN_PREFIXES: tuple[str, ...] = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
# jwt_authn rules are coarser than routes: the whole reflection namespace is open.
OPEN_JWT_PREFIXES: tuple[str, ...] = ("/grpc.health.v1.Health/", "/grpc.reflection.")
PROTECTED_PREFIX = "/healing_guard."

_TLS = "envoy.transport_sockets.tls"
_TYPE = "type.googleapis.com/"


class Endpoint(NamedTuple):
    host: str
    port: int


# One service's upstream: a (host, port) or several (replicas, e.g. coordinators).
Upstream = tuple[str, int] | Sequence[tuple[str, int]]


def upstream_endpoints(upstream: Upstream) -> tuple[Endpoint, ...]:
    """The endpoints of one upstream, whichever form it was given in."""
    if len(upstream) == 2 and isinstance(upstream[0], str):
        return (Endpoint(upstream[0], upstream[1]),)  # type: ignore[arg-type]
    return tuple(Endpoint(*endpoint) for endpoint in upstream)  # type: ignore[misc]


@dataclass(frozen=True)
class TokenBucket:
    max_tokens: int
    tokens_per_fill: int
    fill_interval_seconds: float

    def validate(self, name: str) -> None:
        if self.max_tokens < 1:
            raise InvalidArgument(f"{name}.max_tokens", f"must be >= 1, got {self.max_tokens}")
        if self.tokens_per_fill < 1:
            raise InvalidArgument(f"{name}.tokens_per_fill", f"must be >= 1, got {self.tokens_per_fill}")
        # Envoy refuses fill intervals under 50 ms.
        if self.fill_interval_seconds < 0.05:
            raise InvalidArgument(f"{name}.fill_interval_seconds",
                                  f"must be >= 0.05, got {self.fill_interval_seconds}")

    def render(self) -> dict[str, Any]:
        return {"max_tokens": self.max_tokens, "tokens_per_fill": self.tokens_per_fill,
                "fill_interval": _duration(self.fill_interval_seconds)}


@dataclass(frozen=True)
class GatewaySpec:
    """Everything that varies between gateway deployments.

    `upstreams` maps each of the six services to (host, port) or to a list of them.
    `ca` is the dev CA (checks clients and upstreams); `cert`/`key` the gateway's own.
    """

    upstreams: Mapping[str, Upstream]
    ca: Path
    cert: Path
    key: Path
    jwks_path: Path
    listen_host: str = "127.0.0.1"
    listen_port: int = 8443
    admin_port: int = 9901
    otlp_endpoint: tuple[str, int] | None = None
    tenant_rate_limit: TokenBucket = TokenBucket(max_tokens=200, tokens_per_fill=100,
                                                 fill_interval_seconds=1.0)
    # Shared by requests that carry no tenant: health and reflection (no JWT needed there).
    open_rate_limit: TokenBucket = TokenBucket(max_tokens=1000, tokens_per_fill=500,
                                               fill_interval_seconds=1.0)
    max_tenants: int = 10_000
    service_suffix: str = "healing-guard.local"
    issuer: str = "healing-guard"
    audience: str = "healing-guard"
    health_check_interval_seconds: float = 1.0
    connect_timeout_seconds: float = 2.0
    admin_host: str = "127.0.0.1"

    def validate(self) -> None:
        names = set(self.upstreams)
        if names != set(SERVICE_NAMES):
            missing = sorted(set(SERVICE_NAMES) - names)
            unknown = sorted(names - set(SERVICE_NAMES))
            detail = "; ".join(part for part in (
                f"missing {', '.join(missing)}" if missing else "",
                f"unknown {', '.join(unknown)}" if unknown else "") if part)
            raise InvalidArgument("upstreams", f"need exactly {', '.join(SERVICE_NAMES)}: {detail}")
        for name, upstream in self.upstreams.items():
            try:
                endpoints = upstream_endpoints(upstream)
            except TypeError:
                raise InvalidArgument(f"upstreams.{name}", f"must be (host, port) or a list of them, "
                                                           f"got {upstream!r}") from None
            if not endpoints:
                raise InvalidArgument(f"upstreams.{name}", "needs at least one (host, port)")
            for endpoint in endpoints:
                _check_endpoint(f"upstreams.{name}", endpoint)
        if self.otlp_endpoint is not None:
            _check_endpoint("otlp_endpoint", Endpoint(*self.otlp_endpoint))
        for name, port in (("listen_port", self.listen_port), ("admin_port", self.admin_port)):
            if not 1 <= port <= 65535:
                raise InvalidArgument(name, f"must be 1..65535, got {port}")
        if self.listen_port == self.admin_port:
            raise InvalidArgument("admin_port", f"must differ from listen_port ({self.listen_port})")
        self.tenant_rate_limit.validate("tenant_rate_limit")
        self.open_rate_limit.validate("open_rate_limit")
        if self.max_tenants < 1:
            raise InvalidArgument("max_tenants", f"must be >= 1, got {self.max_tenants}")
        if self.health_check_interval_seconds < 0.1:
            raise InvalidArgument("health_check_interval_seconds",
                                  f"must be >= 0.1, got {self.health_check_interval_seconds}")

    def identity(self, service: str) -> str:
        return f"{service}.{self.service_suffix}"


def _check_endpoint(name: str, endpoint: Endpoint) -> None:
    if not isinstance(endpoint.host, str) or not endpoint.host:
        raise InvalidArgument(f"{name}.host", "must not be empty")
    port = endpoint.port
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidArgument(f"{name}.port", f"must be 1..65535, got {port!r}")


def _duration(seconds: float) -> str:
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def _socket_address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _load_assignment(name: str, endpoints: Sequence[Endpoint]) -> dict[str, Any]:
    return {"cluster_name": name, "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": _socket_address(endpoint.host, endpoint.port)}} for endpoint in endpoints]}]}


def _discovery(endpoints: Sequence[Endpoint]) -> dict[str, Any]:
    if all(_is_ip(endpoint.host) for endpoint in endpoints):
        return {"type": "STATIC"}
    return {"type": "STRICT_DNS", "dns_lookup_family": "V4_PREFERRED"}


def _http2_cluster_options(keepalive: bool) -> dict[str, Any]:
    http2: dict[str, Any] = {}
    if keepalive:
        # Notice a dead upstream connection even while a long stream sits idle.
        http2["connection_keepalive"] = {"interval": "30s", "timeout": "10s"}
    return {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": _TYPE + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": http2}}}


def _tls_certificate(spec: GatewaySpec) -> dict[str, Any]:
    return {"certificate_chain": {"filename": str(spec.cert)},
            "private_key": {"filename": str(spec.key)}}


def _service_cluster(spec: GatewaySpec, service: str) -> dict[str, Any]:
    endpoints = upstream_endpoints(spec.upstreams[service])
    interval = _duration(spec.health_check_interval_seconds)
    return {
        "name": service,
        **_discovery(endpoints),
        "connect_timeout": _duration(spec.connect_timeout_seconds),
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": _load_assignment(service, endpoints),
        "typed_extension_protocol_options": _http2_cluster_options(keepalive=True),
        "transport_socket": {"name": _TLS, "typed_config": {
            "@type": _TYPE + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": spec.identity(service),
            "common_tls_context": {
                "tls_certificates": [_tls_certificate(spec)],
                "validation_context": {
                    "trusted_ca": {"filename": str(spec.ca)},
                    "match_typed_subject_alt_names": [
                        {"san_type": "DNS", "matcher": {"exact": spec.identity(service)}}],
                },
                "alpn_protocols": ["h2"],
            },
        }},
        "health_checks": [{
            "timeout": interval, "interval": interval, "no_traffic_interval": interval,
            "unhealthy_threshold": 2, "healthy_threshold": 1,
            "grpc_health_check": {},  # overall server health (service name "")
        }],
        # With the default 50 % panic threshold a lone NOT_SERVING host would still get traffic.
        "common_lb_config": {"healthy_panic_threshold": {"value": 0}},
    }


def _otel_cluster(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "name": OTEL_CLUSTER,
        **_discovery([endpoint]),
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": _load_assignment(OTEL_CLUSTER, [endpoint]),
        "typed_extension_protocol_options": _http2_cluster_options(keepalive=False),
    }


def _route(prefix: str, cluster: str, service_header: str | None = None) -> dict[str, Any]:
    match: dict[str, Any] = {"prefix": prefix}
    if service_header is not None:
        match["headers"] = [{"name": SERVICE_HEADER, "string_match": {"exact": service_header}}]
    return {
        "match": match,
        "route": {
            "cluster": cluster,
            # No route timeout: server streams stay open; the client's grpc-timeout still applies.
            "timeout": "0s",
            "max_stream_duration": {"grpc_timeout_header_max": "0s"},
        },
    }


HEAL_PATH = "/healing_guard.coordinator.v1.Coordinator/HealFailure"
HEAL_RETRIES = 2


def _heal_route() -> dict[str, Any]:
    route = _route(HEAL_PATH, "coordinator")
    route["match"] = {"path": HEAL_PATH}
    route["route"]["retry_policy"] = {
        "retry_on": "reset,connect-failure,refused-stream,unavailable",
        "num_retries": HEAL_RETRIES,
        # Another replica, not the one that just failed.
        "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {
            "@type": _TYPE + "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}],
        "host_selection_retry_max_attempts": 3,
    }
    return route


def _routes() -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = []
    for prefix in OPEN_PREFIXES:
        routes += [_route(prefix, service, service_header=service) for service in SERVICE_NAMES]
        routes.append(_route(prefix, DEFAULT_SERVICE))
    routes.append(_heal_route())
    routes += [_route(f"/healing_guard.{service}.v1.", service) for service in SERVICE_NAMES]
    return routes


def _strip_tenant_header_filter() -> dict[str, Any]:
    return {"name": "envoy.filters.http.header_mutation", "typed_config": {
        "@type": _TYPE + "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
        "mutations": {"request_mutations": [{"remove": TENANT_HEADER}]}}}


def _jwt_filter(spec: GatewaySpec) -> dict[str, Any]:
    open_rules: list[dict[str, Any]] = [{"match": {"prefix": prefix}} for prefix in OPEN_JWT_PREFIXES]
    requires = {"provider_name": JWT_PROVIDER}
    return {"name": "envoy.filters.http.jwt_authn", "typed_config": {
        "@type": _TYPE + "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {JWT_PROVIDER: {
            "issuer": spec.issuer,
            "audiences": [spec.audience],
            "local_jwks": {"filename": str(spec.jwks_path)},
            # Services verify the token again themselves.
            "forward": True,
            "claim_to_headers": [{"header_name": TENANT_HEADER, "claim_name": "tenant"}],
            "clock_skew_seconds": 5,
        }},
        # First match wins: open paths, then our APIs, then anything else also needs a JWT.
        "rules": [*open_rules,
                  {"match": {"prefix": PROTECTED_PREFIX}, "requires": requires},
                  {"match": {"prefix": "/"}, "requires": requires}],
    }}


def _rate_limit_filter(spec: GatewaySpec) -> dict[str, Any]:
    always = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
    return {"name": "envoy.filters.http.local_ratelimit", "typed_config": {
        "@type": _TYPE + "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        "stat_prefix": "tenant_rate_limit",
        "token_bucket": spec.open_rate_limit.render(),
        # A tenant's request spends only its own bucket; without this Envoy also spends
        # the default (open) bucket on it, capping all tenants together.
        "always_consume_default_token_bucket": False,
        "filter_enabled": {"runtime_key": "tenant_rate_limit_enabled", **always},
        "filter_enforced": {"runtime_key": "tenant_rate_limit_enforced", **always},
        "rate_limited_as_resource_exhausted": True,
        "rate_limits": [{"actions": [{"request_headers": {
            "header_name": TENANT_HEADER, "descriptor_key": "tenant"}}]}],
        # An entry without a value is a wildcard: one bucket per distinct tenant.
        "descriptors": [{"entries": [{"key": "tenant"}], "token_bucket": spec.tenant_rate_limit.render()}],
        "max_dynamic_descriptors": spec.max_tenants,
    }}


def _router_filter() -> dict[str, Any]:
    return {"name": "envoy.filters.http.router", "typed_config": {
        "@type": _TYPE + "envoy.extensions.filters.http.router.v3.Router"}}


def _tracing(spec: GatewaySpec) -> dict[str, Any]:
    return {"provider": {"name": "envoy.tracers.opentelemetry", "typed_config": {
        "@type": _TYPE + "envoy.config.trace.v3.OpenTelemetryConfig",
        "grpc_service": {"envoy_grpc": {"cluster_name": OTEL_CLUSTER}, "timeout": "1s"},
        "service_name": TRACING_SERVICE_NAME,
    }}}


def _connection_manager(spec: GatewaySpec) -> dict[str, Any]:
    manager: dict[str, Any] = {
        "@type": _TYPE + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "gateway",
        "codec_type": "HTTP2",
        "use_remote_address": True,
        "http2_protocol_options": {
            "max_concurrent_streams": 1000,
            "connection_keepalive": {"interval": "30s", "timeout": "10s"},
        },
        "common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST"},
        # Tell services which client certificate called (for audit), never trust the client's.
        "forward_client_cert_details": "SANITIZE_SET",
        "set_current_client_cert_details": {"subject": True, "dns": True, "uri": True},
        "route_config": {"name": "healing_guard", "virtual_hosts": [
            {"name": "healing_guard", "domains": ["*"], "routes": _routes()}]},
        "http_filters": [_strip_tenant_header_filter(), _jwt_filter(spec), _rate_limit_filter(spec),
                         _router_filter()],
    }
    if spec.otlp_endpoint is not None:
        manager["tracing"] = _tracing(spec)
    return manager


def _listener(spec: GatewaySpec) -> dict[str, Any]:
    return {
        "name": "gateway",
        "address": _socket_address(spec.listen_host, spec.listen_port),
        "filter_chains": [{
            "transport_socket": {"name": _TLS, "typed_config": {
                "@type": _TYPE + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "require_client_certificate": True,
                "common_tls_context": {
                    "tls_certificates": [_tls_certificate(spec)],
                    "validation_context": {"trusted_ca": {"filename": str(spec.ca)}},
                    "alpn_protocols": ["h2"],
                },
            }},
            "filters": [{"name": "envoy.filters.network.http_connection_manager",
                         "typed_config": _connection_manager(spec)}],
        }],
    }


def render_gateway_config(spec: GatewaySpec) -> dict[str, Any]:
    """The complete Envoy bootstrap (v3) for `spec`, as a JSON-ready dict."""
    spec.validate()
    clusters = [_service_cluster(spec, service) for service in SERVICE_NAMES]
    if spec.otlp_endpoint is not None:
        clusters.append(_otel_cluster(Endpoint(*spec.otlp_endpoint)))
    return {
        "node": {"id": "healing-guard-gateway", "cluster": "healing-guard-gateway"},
        "admin": {"address": _socket_address(spec.admin_host, spec.admin_port)},
        "static_resources": {"listeners": [_listener(spec)], "clusters": clusters},
    }


# --- spec files -----------------------------------------------------------------------


def _upstream(name: str, value: Any) -> Upstream:
    if isinstance(value, list) and value and isinstance(value[0], list | Mapping):
        return [_endpoint(f"{name}[{index}]", item) for index, item in enumerate(value)]
    return _endpoint(name, value)


def _endpoint(name: str, value: Any) -> Endpoint:
    if isinstance(value, Mapping):
        value = (value.get("host"), value.get("port"))
    if not isinstance(value, list | tuple) or len(value) != 2 or not isinstance(value[0], str) \
            or isinstance(value[1], bool) or not isinstance(value[1], int):
        raise InvalidArgument(name, f'must be ["host", port] or {{"host": ..., "port": ...}}, got {value!r}')
    return Endpoint(value[0], value[1])


def _bucket(name: str, value: Any, default: TokenBucket) -> TokenBucket:
    if value is None:
        return default
    if not isinstance(value, Mapping):
        raise InvalidArgument(name,
                              "must be an object with max_tokens, tokens_per_fill, fill_interval_seconds")
    try:
        return TokenBucket(int(value["max_tokens"]), int(value["tokens_per_fill"]),
                           float(value["fill_interval_seconds"]))
    except KeyError as error:
        raise InvalidArgument(f"{name}.{error.args[0]}", "is required") from None


def spec_from_json(data: Mapping[str, Any], base_dir: Path | None = None) -> GatewaySpec:
    """A spec from its JSON form. TLS/JWKS paths come from `pki_dir` (make_pki's layout)
    or from `ca`, `cert`, `key`, `jwks`; relative paths are taken from `base_dir`."""
    base = base_dir or Path.cwd()

    def path(key: str, default_name: str) -> Path:
        value = data.get(key)
        if value is None:
            pki_dir = data.get("pki_dir")
            if pki_dir is None:
                raise InvalidArgument(key, "is required when pki_dir is not given")
            value = Path(pki_dir) / default_name
        return (base / Path(value)).resolve()

    upstreams = data.get("upstreams")
    if not isinstance(upstreams, Mapping):
        raise InvalidArgument("upstreams", f"must map each of {', '.join(SERVICE_NAMES)} to [host, port]")
    defaults = GatewaySpec({}, Path(), Path(), Path(), Path())
    otlp = data.get("otlp_endpoint", data.get("otlp"))
    spec = GatewaySpec(
        upstreams={name: _upstream(f"upstreams.{name}", value) for name, value in upstreams.items()},
        ca=path("ca", "ca.pem"), cert=path("cert", "gateway.pem"),
        key=path("key", "gateway-key.pem"), jwks_path=path("jwks", "jwks.json"),
        listen_host=str(data.get("listen_host", defaults.listen_host)),
        listen_port=int(data.get("listen_port", defaults.listen_port)),
        admin_port=int(data.get("admin_port", defaults.admin_port)),
        otlp_endpoint=None if otlp is None else _endpoint("otlp_endpoint", otlp),
        tenant_rate_limit=_bucket("tenant_rate_limit", data.get("tenant_rate_limit"),
                                  defaults.tenant_rate_limit),
        open_rate_limit=_bucket("open_rate_limit", data.get("open_rate_limit"), defaults.open_rate_limit),
        max_tenants=int(data.get("max_tenants", defaults.max_tenants)),
        service_suffix=str(data.get("service_suffix", defaults.service_suffix)),
        issuer=str(data.get("issuer", defaults.issuer)),
        audience=str(data.get("audience", defaults.audience)),
        health_check_interval_seconds=float(data.get("health_check_interval_seconds",
                                                     defaults.health_check_interval_seconds)),
    )
    spec.validate()
    return spec


def spec_for_pki(pki: PkiPaths, upstreams: Mapping[str, Upstream], **options: Any) -> GatewaySpec:
    """A spec using make_pki's files (dev CA, gateway cert/key, jwks.json); `options` are
    any other GatewaySpec fields (listen_port, admin_port, otlp_endpoint, tenant_rate_limit...)."""
    return GatewaySpec(upstreams=upstreams, ca=pki.ca, cert=pki.cert("gateway"), key=pki.key("gateway"),
                       jwks_path=pki.jwks, **options)


def write_gateway_config(spec: GatewaySpec, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(render_gateway_config(spec), indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.envoy.gateway",
                                     description="Render the Envoy gateway config from a spec JSON file.")
    parser.add_argument("--spec", type=Path, required=True, help="spec JSON (see spec_from_json)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the Envoy config (JSON)")
    args = parser.parse_args(argv)
    try:
        data = json.loads(args.spec.read_text())
        if not isinstance(data, dict):
            raise InvalidArgument("spec", "must be a JSON object")
        spec = spec_from_json(data, base_dir=args.spec.resolve().parent)
        write_gateway_config(spec, args.out)
    except FileNotFoundError as error:
        print(f"gateway: {error.filename} not found", file=sys.stderr)
        return 1
    except json.JSONDecodeError as error:
        print(f"gateway: {args.spec} is not valid JSON: {error}", file=sys.stderr)
        return 1
    except (OSError, ValueError, InvalidArgument) as error:
        print(f"gateway: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
