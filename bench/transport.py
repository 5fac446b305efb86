"""Why grpc.aio: sync thread-pool server vs grpc.aio server, same echo, same client.

    .venv/bin/python -m bench.transport [--seconds 5] [--concurrency 8]

A generic unary echo (raw bytes) on loopback, plaintext, no interceptors: the cost of
the transport alone. The baseline (sync) and the choice (aio) are measured in the same
run; each server runs in its own process so the client does not share its GIL.
Writes bench/results/transport.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import statistics
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc

METHOD = "/bench.Echo/Echo"
RESULTS = Path(__file__).parent / "results" / "transport.json"


def _identity(data: bytes) -> bytes:
    return data


def _handler(behavior):  # type: ignore[no-untyped-def]
    return grpc.method_handlers_generic_handler("bench.Echo", {
        "Echo": grpc.unary_unary_rpc_method_handler(behavior, request_deserializer=_identity,
                                                    response_serializer=_identity)})


def _serve_sync(port_queue, stop) -> None:  # type: ignore[no-untyped-def]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((_handler(lambda request, context: request),))
    port_queue.put(server.add_insecure_port("127.0.0.1:0"))
    server.start()
    stop.wait()
    server.stop(0)


def _serve_aio(port_queue, stop) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return request

        server = grpc.aio.server()
        server.add_generic_rpc_handlers((_handler(echo),))
        port_queue.put(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        while not stop.is_set():
            await asyncio.sleep(0.1)
        await server.stop(0)

    asyncio.run(main())


def _measure(port: int, seconds: float, concurrency: int) -> dict[str, float]:
    payload = os.urandom(512)
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker() -> None:
        local: list[float] = []
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(METHOD, request_serializer=_identity, response_deserializer=_identity)
            call(payload, timeout=10)  # connect before timing
            while time.monotonic() < deadline:
                started = time.perf_counter()
                call(payload, timeout=10)
                local.append(time.perf_counter() - started)
        with lock:
            latencies.extend(local)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies.sort()
    return {"calls_per_s": round(len(latencies) / seconds, 1),
            "p50_ms": round(statistics.median(latencies) * 1000, 3),
            "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 3)}


def run(kind: str, seconds: float, concurrency: int) -> dict[str, float]:
    context = multiprocessing.get_context("spawn")
    ports, stop = context.Queue(), context.Event()
    process = context.Process(target=_serve_sync if kind == "sync" else _serve_aio, args=(ports, stop))
    process.start()
    try:
        return _measure(ports.get(timeout=30), seconds, concurrency)
    finally:
        stop.set()
        process.join(10)
        if process.is_alive():
            process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    sync = run("sync", args.seconds, args.concurrency)
    aio = run("aio", args.seconds, args.concurrency)
    ratio = round(aio["calls_per_s"] / sync["calls_per_s"], 3)
    print(f"{'server':8} {'calls/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for name, figures in (("sync", sync), ("aio", aio)):
        print(f"{name:8} {figures['calls_per_s']:>10} {figures['p50_ms']:>8} {figures['p99_ms']:>8}")
    print(f"aio / sync calls per second: {ratio}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({
        "command": "python -m bench.transport", "seconds": args.seconds, "concurrency": args.concurrency,
        "sync": sync, "aio": aio, "aio_over_sync": ratio, "nproc": os.cpu_count(),
        "python": platform.python_version(), "grpcio": grpc.__version__,
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
