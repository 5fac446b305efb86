from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from deploy.envoy.gateway import (
    OPEN_PREFIXES,
    SERVICE_NAMES,
    Endpoint,
    GatewaySpec,
    TokenBucket,
    render_gateway_config,
    spec_for_pki,
    spec_from_json,
)
from deploy.pki.make_pki import PkiPaths
from services.common.errors import InvalidArgument

REPO = Path(__file__).resolve().parents[3]
ENVOY = REPO / ".venv" / "bin" / "envoy"
_base_ids = itertools.count(1)


def base_id() -> int:
    # Concurrent Envoys (other engineers, other test runs) must not share a base id.
    return 40_000 + (os.getpid() % 20_000) * 10 + next(_base_ids) % 10


def make_spec(pki: PkiPaths, otlp: Endpoint | None = None, **overrides: Any) -> GatewaySpec:
    upstreams = {name: ("127.0.0.1", 50051 + i) for i, name in enumerate(SERVICE_NAMES)}
    return spec_for_pki(pki, upstreams, listen_port=18443, admin_port=19901, otlp_endpoint=otlp, **overrides)


def validate(config: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(config))
    return subprocess.run([str(ENVOY), "--mode", "validate", "-c", str(path), "--base-id", str(base_id()),
                           "-l", "error"], capture_output=True, text=True, timeout=60)


def hcm(config: dict[str, Any]) -> dict[str, Any]:
    [listener] = config["static_resources"]["listeners"]
    [chain] = listener["filter_chains"]
    [manager] = chain["filters"]
    return manager["typed_config"]


def filter_config(config: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [f["typed_config"] for f in hcm(config)["http_filters"] if f["name"] == name]
    return found


def jwt_requirement(config: dict[str, Any], path: str) -> dict[str, Any] | None:
    """What jwt_authn requires for `path`: its rules are first-match by prefix."""
    for rule in filter_config(config, "envoy.filters.http.jwt_authn")["rules"]:
        if path.startswith(rule["match"]["prefix"]):
            return rule.get("requires")
    return None


def route_for(config: dict[str, Any], path: str, headers: dict[str, str] | None = None) -> str | None:
    headers = headers or {}
    [vhost] = hcm(config)["route_config"]["virtual_hosts"]
    for route in vhost["routes"]:
        match = route["match"]
        if "path" in match and path != match["path"] or "prefix" in match and not path.startswith(match["prefix"]):
            continue
        if all(headers.get(h["name"]) == h["string_match"]["exact"] for h in match.get("headers", [])):
            return route["route"]["cluster"]
    return None


@pytest.mark.parametrize("with_otlp", [False, True])
def test_rendered_config_passes_envoy_validation(pki: PkiPaths, tmp_path: Path, with_otlp: bool) -> None:
    otlp = Endpoint("127.0.0.1", 4317) if with_otlp else None
    result = validate(render_gateway_config(make_spec(pki, otlp=otlp)), tmp_path)
    assert result.returncode == 0, result.stderr + result.stdout


def test_validation_fails_on_a_broken_config(pki: PkiPaths, tmp_path: Path) -> None:
    # The check above can fail: a config pointing at a missing key is refused.
    config = render_gateway_config(make_spec(pki))
    config["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]["common_tls_context"][
        "tls_certificates"][0]["private_key"]["filename"] = str(tmp_path / "missing-key.pem")
    assert validate(config, tmp_path).returncode != 0


def test_one_cluster_per_service_plus_otel_when_configured(pki: PkiPaths) -> None:
    plain = render_gateway_config(make_spec(pki))
    assert sorted(c["name"] for c in plain["static_resources"]["clusters"]) == sorted(SERVICE_NAMES)
    assert "tracing" not in hcm(plain)
    traced = render_gateway_config(make_spec(pki, otlp=Endpoint("127.0.0.1", 4317)))
    traced_names = sorted(c["name"] for c in traced["static_resources"]["clusters"])
    assert traced_names == sorted([*SERVICE_NAMES, "otel"])
    provider = hcm(traced)["tracing"]["provider"]
    assert provider["name"] == "envoy.tracers.opentelemetry"
    assert provider["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"] == "otel"
    assert provider["typed_config"]["service_name"] == "healing-guard-gateway"
    [otel] = [c for c in traced["static_resources"]["clusters"] if c["name"] == "otel"]
    assert "transport_socket" not in otel and "http2_protocol_options" in json.dumps(otel)


def test_upstreams_use_mtls_h2_san_and_strict_health(pki: PkiPaths) -> None:
    config = render_gateway_config(make_spec(pki))
    for cluster in config["static_resources"]["clusters"]:
        name = cluster["name"]
        tls = cluster["transport_socket"]["typed_config"]["common_tls_context"]
        assert tls["tls_certificates"][0]["certificate_chain"]["filename"] == str(pki.cert("gateway"))
        assert tls["validation_context"]["trusted_ca"]["filename"] == str(pki.ca)
        assert tls["validation_context"]["match_typed_subject_alt_names"] == [
            {"san_type": "DNS", "matcher": {"exact": f"{name}.healing-guard.local"}}]
        assert tls["alpn_protocols"] == ["h2"]
        assert "http2_protocol_options" in cluster["typed_extension_protocol_options"][
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicit_http_config"]
        [check] = cluster["health_checks"]
        assert "grpc_health_check" in check and check["interval"] == check["no_traffic_interval"] == "1s"
        assert cluster["common_lb_config"]["healthy_panic_threshold"]["value"] == 0


def test_downstream_requires_a_client_certificate(pki: PkiPaths) -> None:
    config = render_gateway_config(make_spec(pki))
    tls = config["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"]["typed_config"]
    assert tls["require_client_certificate"] is True
    assert tls["common_tls_context"]["validation_context"]["trusted_ca"]["filename"] == str(pki.ca)
    assert tls["common_tls_context"]["alpn_protocols"] == ["h2"]
    assert config["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 19901}


def test_jwt_required_for_apis_and_open_for_health_and_reflection(pki: PkiPaths) -> None:
    config = render_gateway_config(make_spec(pki))
    for service in SERVICE_NAMES:
        assert jwt_requirement(config, f"/healing_guard.{service}.v1.Anything/Call") == {
            "provider_name": "healing_guard"}
    assert jwt_requirement(config, "/some.other.Service/Call") is not None
    for path in ("/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch",
                 "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                 "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"):
        assert jwt_requirement(config, path) is None, path
    provider = filter_config(config, "envoy.filters.http.jwt_authn")["providers"]["healing_guard"]
    assert provider["issuer"] == "healing-guard" and provider["audiences"] == ["healing-guard"]
    assert provider["forward"] is True
    assert provider["local_jwks"]["filename"] == str(pki.jwks)
    assert provider["claim_to_headers"] == [{"header_name": "x-hg-tenant", "claim_name": "tenant"}]


def test_filter_order_strips_spoofed_tenant_then_jwt_then_rate_limit(pki: PkiPaths) -> None:
    config = render_gateway_config(make_spec(pki))
    names = [f["name"] for f in hcm(config)["http_filters"]]
    assert names == ["envoy.filters.http.header_mutation", "envoy.filters.http.jwt_authn",
                     "envoy.filters.http.local_ratelimit", "envoy.filters.http.router"]
    limit = filter_config(config, "envoy.filters.http.local_ratelimit")
    assert limit["rate_limited_as_resource_exhausted"] is True
    assert limit["descriptors"][0]["entries"] == [{"key": "tenant"}]
    assert limit["rate_limits"][0]["actions"][0]["request_headers"]["header_name"] == "x-hg-tenant"


def test_rate_limit_numbers_come_from_the_spec(pki: PkiPaths) -> None:
    spec = make_spec(pki, tenant_rate_limit=TokenBucket(7, 3, 2.5), max_tenants=42)
    limit = filter_config(render_gateway_config(spec), "envoy.filters.http.local_ratelimit")
    assert limit["descriptors"][0]["token_bucket"] == {"max_tokens": 7, "tokens_per_fill": 3,
                                                       "fill_interval": "2.5s"}
    assert limit["max_dynamic_descriptors"] == 42


def test_routes(pki: PkiPaths) -> None:
    config = render_gateway_config(make_spec(pki))
    for service in SERVICE_NAMES:
        assert route_for(config, f"/healing_guard.{service}.v1.X/Y") == service
        for prefix in OPEN_PREFIXES:
            assert route_for(config, prefix + "Method", {"x-hg-service": service}) == service
    for prefix in OPEN_PREFIXES:
        assert route_for(config, prefix + "Method") == "coordinator"
    reflection = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    assert route_for(config, reflection) == "coordinator"
    assert route_for(config, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                     {"x-hg-service": "audit"}) == "audit"
    assert route_for(config, "/healing_guard.billing.v1.X/Y") is None
    [vhost] = hcm(config)["route_config"]["virtual_hosts"]
    assert {route["route"]["timeout"] for route in vhost["routes"]} == {"0s"}


def test_the_heal_is_retried_on_another_coordinator_and_nothing_else_is(pki: PkiPaths) -> None:
    config = render_gateway_config(make_spec(pki))
    [vhost] = hcm(config)["route_config"]["virtual_hosts"]
    heal = "/healing_guard.coordinator.v1.Coordinator/HealFailure"
    assert route_for(config, heal) == "coordinator"
    retried = [r for r in vhost["routes"] if "retry_policy" in r["route"]]
    assert [r["match"] for r in retried] == [{"path": heal}]
    policy = retried[0]["route"]["retry_policy"]
    assert "unavailable" in policy["retry_on"] and "reset" in policy["retry_on"]
    assert policy["retry_host_predicate"][0]["name"] == "envoy.retry_host_predicates.previous_hosts"
    # The client stream is not replayable: it takes the coordinator's plain route.
    assert route_for(config, "/healing_guard.coordinator.v1.Coordinator/StreamHealFailure") == "coordinator"


@pytest.mark.parametrize(("change", "field"), [
    ({"upstreams": {}}, "upstreams"),
    ({"listen_port": 70000}, "listen_port"),
    ({"admin_port": 18443}, "admin_port"),
    ({"tenant_rate_limit": TokenBucket(10, 1, 0.01)}, "tenant_rate_limit.fill_interval_seconds"),
    ({"tenant_rate_limit": TokenBucket(0, 1, 1)}, "tenant_rate_limit.max_tokens"),
])
def test_bad_specs_name_the_field(pki: PkiPaths, change: dict[str, Any], field: str) -> None:
    spec = make_spec(pki)
    spec = GatewaySpec(**{**spec.__dict__, **change})
    with pytest.raises(InvalidArgument) as caught:
        render_gateway_config(spec)
    assert caught.value.field == field


def test_missing_service_is_named(pki: PkiPaths) -> None:
    spec = make_spec(pki)
    upstreams = dict(spec.upstreams)
    del upstreams["planner"]
    with pytest.raises(InvalidArgument, match="missing planner"):
        render_gateway_config(GatewaySpec(**{**spec.__dict__, "upstreams": upstreams}))


def test_cli_renders_a_spec_file(pki: PkiPaths, tmp_path: Path) -> None:
    spec = {"pki_dir": str(pki.out_dir), "listen_port": 18443, "admin_port": 19901,
            "otlp": ["127.0.0.1", 4317],
            "tenant_rate_limit": {"max_tokens": 5, "tokens_per_fill": 5, "fill_interval_seconds": 1},
            "upstreams": {name: ["127.0.0.1", 50051 + i] for i, name in enumerate(SERVICE_NAMES)}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    run = [sys.executable, "-m", "deploy.envoy.gateway", "--spec", str(tmp_path / "spec.json"),
           "--out", str(tmp_path / "out" / "envoy.json")]
    result = subprocess.run(run, cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "out" / "envoy.json").read_text())
    assert config == render_gateway_config(spec_from_json(spec))
    spec["upstreams"].pop("audit")
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    failed = subprocess.run(run, cwd=REPO, capture_output=True, text=True, timeout=30)
    assert failed.returncode == 1 and "missing audit" in failed.stderr and failed.stderr.count("\n") == 1
    usage = subprocess.run(run[:3], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert usage.returncode == 2


def test_replicas_and_hostnames(pki: PkiPaths, tmp_path: Path) -> None:
    # The mesh launcher's form: lists of (host, port), several coordinators, a DNS name.
    upstreams: dict[str, Any] = {name: [("127.0.0.1", 50051 + i)] for i, name in enumerate(SERVICE_NAMES)}
    upstreams["coordinator"] = [("127.0.0.1", 50070), ("127.0.0.1", 50071)]
    upstreams["audit"] = ("localhost", 50072)
    spec = GatewaySpec(listen_port=18443, admin_port=19901, upstreams=upstreams, ca=pki.ca,
                       cert=pki.cert("gateway"), key=pki.key("gateway"), jwks_path=pki.jwks,
                       otlp_endpoint=("127.0.0.1", 4317))
    config = render_gateway_config(spec)
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    ports = [e["endpoint"]["address"]["socket_address"]["port_value"]
             for e in clusters["coordinator"]["load_assignment"]["endpoints"][0]["lb_endpoints"]]
    assert ports == [50070, 50071]
    assert clusters["audit"]["type"] == "STRICT_DNS" and clusters["planner"]["type"] == "STATIC"
    result = validate(config, tmp_path)
    assert result.returncode == 0, result.stderr + result.stdout


@pytest.mark.parametrize("bad", [[], [("127.0.0.1", 0)], ("127.0.0.1", "50051"), 5])
def test_bad_upstream_forms_name_the_service(pki: PkiPaths, bad: Any) -> None:
    spec = make_spec(pki)
    upstreams = {**spec.upstreams, "tenancy": bad}
    with pytest.raises(InvalidArgument, match="upstreams.tenancy"):
        render_gateway_config(GatewaySpec(**{**spec.__dict__, "upstreams": upstreams}))
