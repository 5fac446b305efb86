"""The one way every service starts: grpc.aio server, mTLS, the guard interceptor
(authentication, authorisation, error mapping), OpenTelemetry, the stock health
servicer, reflection, and a graceful stop on SIGTERM that drains in-flight calls.

Why grpc.aio and not the thread-pool server: the coordinator's etcd client
(etcd3aio) is asyncio-native, leases must be kept alive while RPCs run, and the
server streams (WatchActions) and client streams (StreamFailure) are natural as
async iterators. bench/transport.py measured the sync server ~10% ahead on a bare
echo (aio/sync 0.91); a heal costs ~100 echo hops of latency (bench/heal_path.py), so
the transport is not what limits it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from services.common import auth, errors, tracing
from services.common.config import ServiceConfig, identity_of
from services.common.contracts import REFLECTED_NAMES, SERVICE_NAMES
from services.common.identifiers import check_identifier_lengths
from services.common.sqlite import STORAGE
from services.common.status import to_grpc_status
from services.common.tokens import Principal, TokenVerifier
from services.common.vocabulary import Role

log = logging.getLogger(__name__)

# The unary ReportFailure log limit is 4 MiB (documented in the proto); the
# transport accepts a little more so that an oversized log gets a clear
# INVALID_ARGUMENT pointing to StreamFailure instead of a bare transport error.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
STORAGE_CHECK_S = 0.5  # how often health looks at whether a store found its disk full

_OPEN_PREFIXES = ("/grpc.health.", "/grpc.reflection.")

# (method path, peer, the refusal, the call's metadata, the principal if the token verified)
AuthFailureHook = Callable[[str, str, errors.HealingGuardError, Sequence[tuple[str, Any]] | None,
                            Principal | None], None]


@dataclass(frozen=True)
class ServiceDefinition:
    """What a service contributes to the common server."""

    name: str                                  # "detector"
    register: Callable[[grpc.aio.Server], None]
    access: auth.AccessTable                   # RPC short name -> roles allowed

    @property
    def full_name(self) -> str:
        return SERVICE_NAMES[self.name]


class Guard(grpc.aio.ServerInterceptor):
    """Authenticates, authorises and maps domain errors, for every RPC.

    The only place that turns a HealingGuardError into a status; the only broad
    `except Exception` in the services, which logs and answers INTERNAL with a
    reference the operator can find in the log.
    """

    def __init__(
        self,
        verifier: TokenVerifier,
        access: auth.AccessTable,
        *,
        require_peer_identity: bool,
        on_auth_failure: AuthFailureHook | None = None,
    ) -> None:
        self._verifier = verifier
        self._access = access
        self._require_peer_identity = require_peer_identity
        self._on_auth_failure = on_auth_failure

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = await continuation(handler_call_details)
        method_path: str = handler_call_details.method
        if handler is None or method_path.startswith(_OPEN_PREFIXES):
            return handler
        method = method_path.rsplit("/", 1)[-1]
        admit = self._admitter(method, method_path)
        deserializer = _deferring(handler.request_deserializer)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, admit, method_path, self._report, streaming_request=False),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(handler.stream_unary, admit, method_path, self._report, streaming_request=True),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, admit, method_path, self._report, streaming_request=False),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            _wrap_stream(handler.stream_stream, admit, method_path, self._report, streaming_request=True),
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )

    def _admitter(self, method: str, method_path: str) -> Callable[[grpc.aio.ServicerContext], None]:
        def admit(context: grpc.aio.ServicerContext) -> None:
            auth.set_principal(None)
            principal = self._verifier.verify(auth.bearer_token(context.invocation_metadata()))
            auth.set_principal(principal)  # verified: a refusal below is attributed to it
            auth.authorize(principal, method, self._access)
            if Role.SERVICE.value in principal.roles and self._require_peer_identity:
                _check_peer_identity(principal.subject, context)
            _check_tenant_header(principal, context)
            tracing.annotate(tenant=principal.tenant, principal=principal.subject)

        return admit

    def _report(self, context: grpc.aio.ServicerContext, error: BaseException, method_path: str) -> None:
        """Tell the threat detector about a refused call (never fails the call itself)."""
        if self._on_auth_failure is None or not isinstance(error, (errors.Unauthenticated, errors.PermissionDenied)):
            return
        try:
            principal = auth.current_principal()
        except errors.Unauthenticated:
            principal = None
        try:
            self._on_auth_failure(method_path, context.peer() or "", error, context.invocation_metadata(), principal)
        except Exception:
            log.exception("reporting a refused call to %s failed", method_path)


def _check_tenant_header(principal: Principal, context: grpc.aio.ServicerContext) -> None:
    """The gateway sets x-hg-tenant from the verified claim; a different one is a forgery."""
    for key, value in context.invocation_metadata() or ():
        if key == "x-hg-tenant":
            claimed = value.decode() if isinstance(value, bytes) else value
            if claimed != principal.tenant:
                raise errors.PermissionDenied(
                    f"header x-hg-tenant {claimed[:64]!r} does not match your token's tenant {principal.tenant!r}")


def _check_peer_identity(subject: str, context: grpc.aio.ServicerContext) -> None:
    """A service token must arrive over that service's own mTLS identity."""
    sans = {value.decode() for value in context.auth_context().get("x509_subject_alternative_name", [])}
    if identity_of(subject) not in sans:
        raise errors.PermissionDenied(
            f"service token for {subject!r} presented by a peer whose certificate is not {identity_of(subject)}"
        )


async def _fail(context: grpc.aio.ServicerContext, error: BaseException, method_path: str) -> None:
    if isinstance(error, errors.HealingGuardError):
        status = to_grpc_status(error)
        await context.abort(status.code, status.details, status.trailing_metadata)
    if isinstance(error, NotImplementedError):  # the generated base servicer's answer
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method_path} is not implemented by this service yet")
    reference = uuid.uuid4().hex[:12]
    log.exception("internal error in %s (ref %s)", method_path, reference, exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error (ref {reference}); the service log has the cause")


@dataclass(frozen=True)
class _Undecodable:
    """A request body that did not parse: grpc.aio would answer UNKNOWN (and log a
    traceback) before any interceptor runs, so parsing failures are carried to the
    Guard as this value and refused there, after authentication."""

    message_type: str
    reason: str


def _deferring(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """Wrap a request deserializer so that a body that does not decode becomes _Undecodable."""
    if deserializer is None:
        return None
    message_class = getattr(deserializer, "__self__", None)  # the generated Message.FromString
    descriptor = getattr(message_class, "DESCRIPTOR", None)
    message_type = getattr(descriptor, "full_name", "the request message")

    def deserialize(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception as error:  # DecodeError (garbage, invalid UTF-8 in a string field...)
            reason = str(error) or type(error).__name__
            if reason.startswith("Error parsing message") and ": " in reason:
                reason = reason.split(": ", 1)[1]  # upb repeats the type name; keep what went wrong
            return _Undecodable(message_type, reason)

    return deserialize


def _decoded(request: Any, position: int = 0) -> Any:
    if isinstance(request, _Undecodable):
        which = f"message {position} of the stream" if position else "the request body"
        raise errors.InvalidArgument(
            "request",
            f"{which} does not decode as {request.message_type}: {request.reason}",
        )
    if isinstance(request, Message):
        check_identifier_lengths(request)
    return request


async def _decoding(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """The client's stream, refusing the first message that did not decode."""
    position = 0
    async for request in requests:
        position += 1
        yield _decoded(request, position)


def _wrap_unary(behavior, admit, method_path, report, *, streaming_request):  # type: ignore[no-untyped-def]
    async def wrapped(request, context):  # type: ignore[no-untyped-def]
        try:
            admit(context)
            request = _decoding(request) if streaming_request else _decoded(request)
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the one edge where everything is caught
            report(context, error, method_path)
            await _fail(context, error, method_path)

    return wrapped


def _wrap_stream(behavior, admit, method_path, report, *, streaming_request):  # type: ignore[no-untyped-def]
    async def wrapped(request, context) -> AsyncIterator:  # type: ignore[no-untyped-def]
        try:
            admit(context)
            request = _decoding(request) if streaming_request else _decoded(request)
            async for response in behavior(request, context):
                yield response
        except grpc.aio.AbortError:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as error:
            report(context, error, method_path)
            await _fail(context, error, method_path)

    return wrapped


class Server:
    """A started service: its port, its health, and how to stop it gracefully."""

    def __init__(self, config: ServiceConfig, definition: ServiceDefinition, verifier: TokenVerifier,
                 *, on_auth_failure: AuthFailureHook | None = None) -> None:
        self.config = config
        self.definition = definition
        self.health = health_aio.HealthServicer()
        interceptors = [
            tracing.server_interceptor(),
            Guard(verifier, definition.access, require_peer_identity=config.tls is not None,
                  on_auth_failure=on_auth_failure),
        ]
        self._server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ],
        )
        definition.register(self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(REFLECTED_NAMES, self._server)
        self.port = 0

    async def start(self) -> int:
        address = self.config.address
        if self.config.tls is not None:
            tls = self.config.tls
            credentials = grpc.ssl_server_credentials(
                [(tls.key.read_bytes(), tls.cert.read_bytes())],
                root_certificates=tls.ca.read_bytes(),
                require_client_auth=True,
            )
            self.port = self._server.add_secure_port(address, credentials)
        else:
            self.port = self._server.add_insecure_port(address)
        if self.port == 0:
            raise RuntimeError(f"{self.definition.name} could not bind {address}")
        await self._server.start()
        await self.set_serving(True)
        self._storage_watch = asyncio.create_task(self._watch_storage())
        log.info("%s serving on %s:%d", self.definition.name, self.config.listen_host, self.port)
        return self.port

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        await self.health.set("", status)
        await self.health.set(self.definition.full_name, status)

    async def _watch_storage(self) -> None:
        """NOT_SERVING while a store of this process finds its disk full; SERVING once it has room."""
        full_before: list[str] = []
        while True:
            await asyncio.sleep(STORAGE_CHECK_S)
            full = await asyncio.to_thread(STORAGE.full)
            if bool(full) != bool(full_before):
                if full:
                    log.error("disk full under %s: answering NOT_SERVING until there is room", ", ".join(full))
                else:
                    log.warning("disk has room again: SERVING")
                await self.set_serving(not full)
            full_before = full

    async def stop(self, grace: float | None = None) -> None:
        """Answer NOT_SERVING first, so the gateway stops routing, then drain in-flight calls."""
        watch = getattr(self, "_storage_watch", None)
        if watch is not None:
            watch.cancel()
        await self.health.enter_graceful_shutdown()
        await self._server.stop(self.config.grace_seconds if grace is None else grace)

    async def wait(self) -> None:
        await self._server.wait_for_termination()


async def run_until_signalled(
    server: Server,
    on_started: Callable[[Server], Awaitable[None]] | None = None,
    on_stop: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully and run `on_stop`."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    if on_started is not None:
        await on_started(server)
    await stop.wait()
    log.info("%s: signal received, draining", server.definition.name)
    await server.stop()
    if on_stop is not None:
        await on_stop()
