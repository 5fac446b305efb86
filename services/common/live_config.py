"""Live configuration: defaults in code < environment < etcd keys, applied without restart.

Keys live under `/healing-guard/config/<service>/<name>` with JSON values. A value
that does not parse, or has the wrong type for its default, is refused with a
warning and the last good value stays: a typo in etcd never takes a service down.
Keys with no default in code are kept as given (JSON), for structured settings
such as policy overrides.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

CONFIG_ROOT = "/healing-guard/config/"


def config_prefix(service: str) -> str:
    return f"{CONFIG_ROOT}{service}/"


class LiveConfig:
    def __init__(self, service: str, defaults: Mapping[str, Any], environment: Mapping[str, str] | None = None) -> None:
        self.service = service
        self._defaults = dict(defaults)
        self._values: dict[str, Any] = dict(defaults)
        self._subscribers: list[Callable[[str, Any], None]] = []
        self._task: asyncio.Task[None] | None = None
        self.revision = 0
        for key, text in (environment or {}).items():
            self._apply(key, text, source="environment")

    def get(self, key: str) -> Any:
        return self._values[key] if key in self._values else self._defaults.get(key)

    def snapshot(self) -> dict[str, Any]:
        return dict(self._values)

    def subscribe(self, callback: Callable[[str, Any], None]) -> None:
        self._subscribers.append(callback)

    def apply(self, key: str, text: str | None, source: str = "etcd") -> bool:
        """Set (or, with None, reset to default) one key from its text; True if accepted."""
        return self._apply(key, text, source)

    def _apply(self, key: str, text: str | None, source: str) -> bool:
        had, previous = key in self._values, self._values.get(key)
        if text is None:
            value = self._defaults.get(key)
            if key in self._defaults:
                self._values[key] = value
            else:
                self._values.pop(key, None)
        else:
            try:
                value = _coerce(text, self._defaults.get(key))
            except ValueError as error:
                log.warning("config %s/%s from %s refused: %s", self.service, key, source, error)
                return False
            self._values[key] = value
        heard: list[Callable[[str, Any], None]] = []
        for callback in self._subscribers:
            try:
                callback(key, value)
            except Exception as error:  # a subscriber refused the value (e.g. out of range)
                log.warning("config %s/%s = %r from %s refused: %s", self.service, key, value, source, error)
                if had:
                    self._values[key] = previous
                else:
                    self._values.pop(key, None)
                for earlier in heard:  # those that took the refused value get the last good one back
                    with contextlib.suppress(Exception):
                        earlier(key, self.get(key))
                return False
            heard.append(callback)
        log.info("config %s/%s = %r (from %s)", self.service, key, value, source)
        return True

    async def start_watching(self, etcd: Any) -> None:
        """Load the current keys, then follow changes in the background."""
        from etcd3aio.kv import prefix_range_end

        prefix = config_prefix(self.service)
        response = await etcd.kv.get(prefix, range_end=prefix_range_end(prefix))
        for kv in response.kvs:
            self._apply(kv.key.decode()[len(prefix):], kv.value.decode(), "etcd")
        self.revision = response.header.revision
        self._task = asyncio.create_task(self._follow(etcd, prefix), name=f"live-config-{self.service}")

    async def _follow(self, etcd: Any, prefix: str) -> None:
        from etcd3aio.kv import prefix_range_end

        while True:
            try:
                async for response in etcd.watch.watch(
                    prefix, range_end=prefix_range_end(prefix), start_revision=self.revision + 1
                ):
                    for event in response.events:
                        key = event.kv.key.decode()[len(prefix):]
                        deleted = event.type == 1  # mvccpb.Event.DELETE
                        self._apply(key, None if deleted else event.kv.value.decode(), "etcd")
                        self.revision = max(self.revision, event.kv.mod_revision)
            except asyncio.CancelledError:
                raise
            except Exception:  # etcd restarts must not end live config: retry, bounded pace
                log.warning("config watch for %s interrupted; retrying", self.service, exc_info=True)
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _coerce(text: str, default: Any) -> Any:
    if isinstance(default, str):
        # Plain strings are accepted with or without JSON quotes.
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return text
        return value if isinstance(value, str) else text
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        if default is None:
            return text  # a setting with no default in code (e.g. a file path): kept as given
        raise ValueError(f"not JSON: {text[:60]!r}") from error
    if default is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {text[:60]!r}")
        return value
    if isinstance(default, int | float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {text[:60]!r}")
        return type(default)(value)
    if not isinstance(value, type(default)):
        raise ValueError(f"expected {type(default).__name__}, got {type(value).__name__}")
    return value
