"""Executors: carry out one healing action at a CI provider, idempotently.

The coordinator builds them with `registry.executors_from_environment(env)` and calls
`Executor.execute(ActionRequest) -> ActionResult` in a worker thread; see `base`.
"""
