"""Crash recovery for runs executed in process, such as those of `foxreviews run-day`.

A run that dies (kill -9, lost host, lost database) cannot report its own end: it stays
STARTED in the run history and keeps any concurrency-pool slot it held, so every later run
needing that pool would wait for ever. Runs launched by a run launcher are watched by the
daemon's run monitoring (`dagster.yaml`); in-process runs have no such watcher, so:

- each in-process run carries the pid, host and start time of the process executing it
  (`process_tags`);
- `sweep_dead_runs`, called before each `run-day`, marks failed the runs of this host whose
  process is gone and frees their slots (and those still held by finished runs);
- a run needing a pool waits for it with a bound (`wait_for_pools`, then `PoolWatchdog`
  while it executes), saying which run holds it.

Stop signals: `StopOnSignal` ends `run-day`; `stoppable_executor` makes a launched run whose
run worker gets SIGTERM or SIGINT end CANCELED (never retried) instead of FAILED.

Dagster's public API only: `DagsterInstance` run methods and its event log storage's
concurrency methods.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import dagster as dg
import psutil

log = logging.getLogger(__name__)

PID_TAG = "foxreviews/pid"
HOST_TAG = "foxreviews/host"
PROCESS_START_TAG = "foxreviews/process_started"

# Statuses of a run that has not reported its end.
_UNFINISHED = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
_FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}

Say = Callable[[str], None]


def _stderr(message: str) -> None:
    print(f"foxreviews: {message}", file=sys.stderr, flush=True)


class PoolWaitTimeout(RuntimeError):
    """A run waited longer than the configured bound for a concurrency-pool slot."""


def process_tags() -> dict[str, str]:
    """Tags identifying the process that executes a run in process."""
    me = psutil.Process()
    return {
        PID_TAG: str(me.pid),
        HOST_TAG: socket.gethostname(),
        PROCESS_START_TAG: f"{me.create_time():.2f}",
    }


def process_is_gone(tags: dict[str, str]) -> bool:
    """Whether the process named by `process_tags` no longer runs on this host (a reused pid
    is told apart by its start time). Runs of other hosts or without the tags are never
    judged gone: nothing here can see their process."""
    if tags.get(HOST_TAG) != socket.gethostname() or PID_TAG not in tags:
        return False
    try:
        pid = int(tags[PID_TAG])
        started = float(tags[PROCESS_START_TAG]) if PROCESS_START_TAG in tags else None
    except ValueError:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return True
        return started is not None and abs(proc.create_time() - started) > 1.0
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:
        return False


def sweep_dead_runs(instance: dg.DagsterInstance, say: Say = _stderr) -> list[str]:
    """Mark failed the unfinished runs whose process is gone and free their pool slots; free
    the slots still held by runs that have finished. Returns the run ids marked failed."""
    failed: list[str] = []
    runs = instance.get_runs(
        filters=dg.RunsFilter(statuses=_UNFINISHED, tags={HOST_TAG: socket.gethostname()})
    )
    for run in runs:
        if not process_is_gone(dict(run.tags)):
            continue
        message = (
            f"The process running this run (pid {run.tags.get(PID_TAG)} on {run.tags.get(HOST_TAG)}) "
            "is gone: it was killed or lost its database. Marked failed, pool slots freed."
        )
        instance.report_run_failed(run, message=message)
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        say(f"run {run.run_id} of an earlier process (pid {run.tags.get(PID_TAG)}) was left "
            "unfinished; marked failed and its pool slots freed")
        failed.append(run.run_id)
    _free_slots_of_finished_runs(instance, say)
    return failed


def _free_slots_of_finished_runs(instance: dg.DagsterInstance, say: Say) -> None:
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return
    holders = {
        slot.run_id
        for pool in storage.get_concurrency_keys()
        for slot in storage.get_concurrency_info(pool).claimed_slots
    } | set(storage.get_concurrency_run_ids())
    for run_id in holders:
        run = instance.get_run_by_id(run_id)
        if run is None or run.status in _FINISHED:
            storage.free_concurrency_slots_for_run(run_id)
            say(f"freed the pool slots still held by finished run {run_id}")


def pool_holders(instance: dg.DagsterInstance, pool: str, *, besides: str | None = None) -> list[str]:
    """`run_id (step)` of each slot of `pool` held by a run other than `besides`, when every
    slot is taken; empty when a slot is free (or the pool has no limit)."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    info = storage.get_concurrency_info(pool)
    if info.limit is None:
        return []
    others = [s for s in info.claimed_slots if s.run_id != besides]
    if len(others) < max(info.slot_count, info.limit or 0):
        return []
    return [f"{s.run_id} ({s.step_key})" for s in others]


def wait_for_pools(
    instance: dg.DagsterInstance,
    pools: Iterable[str],
    *,
    timeout_s: float,
    poll_s: float = 2.0,
    say: Say = _stderr,
) -> None:
    """Return once each pool has a free slot, sweeping dead holders meanwhile; raise
    `PoolWaitTimeout` naming the holders after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    for pool in pools:
        announced: list[str] | None = None
        while holders := pool_holders(instance, pool):
            if holders != announced:
                say(f"waiting for pool {pool}, held by run {', '.join(holders)} "
                    f"(giving up after {timeout_s:g} s)")
                announced = holders
            if time.monotonic() >= deadline:
                raise PoolWaitTimeout(
                    f"gave up after {timeout_s:g} s waiting for pool {pool}, "
                    f"held by run {', '.join(holders)} (if that run is not really running, "
                    "free its slots in the web UI: Deployment > Concurrency)"
                )
            time.sleep(poll_s)
            sweep_dead_runs(instance, say)


class PoolWatchdog(threading.Thread):
    """Bounds the wait of an executing in-process run for a pool slot.

    The pool may be taken between `wait_for_pools` and the step's claim. Dagster's in-process
    executor then waits for the slot without a bound, deaf to signals, so past the bound this
    thread records the run as failed, frees its claims, and ends the process with the error.
    """

    def __init__(
        self,
        instance: dg.DagsterInstance,
        run_id: str,
        pools: Iterable[str],
        *,
        timeout_s: float,
        poll_s: float = 2.0,
        say: Say = _stderr,
        give_up: Callable[[], None] = lambda: os._exit(3),
    ):
        super().__init__(name=f"pool-watchdog-{run_id[:8]}", daemon=True)
        self._instance = instance
        self._run_id = run_id
        self._pools = list(pools)
        self._timeout_s = timeout_s
        self._poll_s = poll_s
        self._say = say
        self._give_up = give_up
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=30)

    def run(self) -> None:
        waiting_since: float | None = None
        announced: list[str] | None = None
        storage = self._instance.event_log_storage
        while not self._stopping.wait(self._poll_s):
            try:
                pending = [
                    pool for pool in self._pools
                    if self._run_id in storage.get_concurrency_info(pool).pending_run_ids
                ]
                if not pending:
                    waiting_since, announced = None, None
                    continue
                waiting_since = waiting_since or time.monotonic()
                holders = [h for pool in pending for h in pool_holders(self._instance, pool, besides=self._run_id)]
                if holders and holders != announced:
                    self._say(f"waiting for pool {', '.join(pending)}, held by run {', '.join(holders)} "
                              f"(giving up after {self._timeout_s:g} s)")
                    announced = holders
                if time.monotonic() - waiting_since < self._timeout_s:
                    sweep_dead_runs(self._instance, self._say)
                    continue
                reason = (f"gave up after {self._timeout_s:g} s waiting for pool "
                          f"{', '.join(pending)}, held by run {', '.join(holders) or 'unknown'}")
                run = self._instance.get_run_by_id(self._run_id)
                if run is not None:
                    self._instance.report_run_failed(run, message=reason)
                storage.free_concurrency_slots_for_run(self._run_id)
                self._say(reason)
            except Exception:  # a watchdog must not die of a hiccup (e.g. a lost database)
                log.debug("pool watchdog check failed", exc_info=True)
                continue
            sys.stdout.flush()
            self._give_up()
            return


STOPPED_MESSAGE = (
    "stopped by a signal to its run worker (SIGTERM or SIGINT: a service stop, a pod eviction); "
    "canceled, not retried"
)


class _CancelWhenInterrupted(dg.Executor):
    """Dagster's executor, except that an interrupt of the run worker cancels the run.

    A run worker (`dagster api execute_run`, or the process a code server starts for a
    launched run) turns SIGTERM and SIGINT into an interrupt: its executor forwards it to the
    steps' processes, waits for them, and raises. Dagster then records the run CANCELED if it
    was CANCELING, and otherwise FAILURE for an "unexpected termination", which run retries
    (`dagster.yaml`) re-launch, because they only spare runs that failed in a step. So the
    interrupt, on its way out, marks the run CANCELING first: Dagster then ends it CANCELED,
    with its pool slots freed, and nothing retries a canceled run. A run already CANCELING (a
    termination asked in the UI) or finished is left as it is.
    """

    def __init__(self, inner: dg.Executor):
        self._inner = inner

    @property
    def retries(self) -> Any:
        return self._inner.retries

    @property
    def step_dependency_config(self) -> Any:
        return self._inner.step_dependency_config

    def execute(self, plan_context: Any, execution_plan: Any) -> Any:
        try:
            yield from self._inner.execute(plan_context, execution_plan)
        except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError):
            _mark_canceling(plan_context.instance, plan_context.run_id)
            raise


def _mark_canceling(instance: dg.DagsterInstance, run_id: str) -> None:
    try:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.status not in (*_FINISHED, dg.DagsterRunStatus.CANCELING):
            instance.report_run_canceling(run, message=STOPPED_MESSAGE)
    except Exception:  # the interrupt goes on either way: the run then ends as Dagster decides
        log.warning("could not mark run %s canceling after a stop signal", run_id, exc_info=True)


def stoppable(executor_def: dg.ExecutorDefinition) -> dg.ExecutorDefinition:
    """`executor_def`, with the same name and configuration, whose runs a stop signal to their
    run worker cancels (see `_CancelWhenInterrupted`)."""
    create = executor_def.executor_creation_fn
    if create is None:
        raise ValueError(f"executor {executor_def.name} has no creation function")

    def create_stoppable(init_context: dg.InitExecutorContext) -> dg.Executor:
        return _CancelWhenInterrupted(create(init_context))

    return dg.ExecutorDefinition(
        name=executor_def.name,
        config_schema=executor_def.config_schema.as_field(),
        requirements=executor_def.get_requirements,
        executor_creation_fn=create_stoppable,
        description=executor_def.description,
    )


# The executor of every job of the code location (`Definitions(executor=...)`): Dagster's
# default, multiprocess unless a run asks for in-process, stoppable.
stoppable_executor = stoppable(dg.multi_or_in_process_executor)


class StopOnSignal(threading.Thread):
    """SIGTERM or SIGINT ends `run-day` at once, whatever it is doing.

    During a run Dagster turns both signals into an error inside the running step, which its
    retry policy then retries: a stop would be undone 30 s later. So this process does not
    rely on that. Every signal is also written to a wakeup pipe by the interpreter's own C
    handler (`signal.set_wakeup_fd`), whichever Python handler is installed. A thread
    reading that pipe marks the current run CANCELED, frees its pool slots and ends the
    process. PostgreSQL rolls back the open transaction when the connection closes, so
    nothing of the interrupted day is published. The landing zone's spool of a killed
    writer is removed by the next start (`remove_stale_spools`).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, instance: dg.DagsterInstance, say: Say = _stderr):
        super().__init__(name="foxreviews-stop", daemon=True)
        self._instance = instance
        self._say = say
        self.run_id: str | None = None  # the run being executed, set by the caller
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._previous_fd = -1
        self._previous_handlers: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        # A Python-level handler must exist for the pipe to be written: SIGTERM's default
        # would end the process without a word. Outside a run, both act as Ctrl-C.
        for signum in self.SIGNALS:
            self._previous_handlers[signum] = signal.signal(signum, signal.default_int_handler)
        self._previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        signal.set_wakeup_fd(self._previous_fd)
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        os.close(self._write)  # the thread reads the end of the pipe and ends

    def run(self) -> None:
        while data := os.read(self._read, 16):
            stops = [b for b in data if b in self.SIGNALS]
            if stops:
                self._stop(signal.Signals(stops[0]))
        os.close(self._read)

    def _stop(self, signum: signal.Signals) -> None:
        run_id = self.run_id
        note = ""
        if run_id is not None:
            try:
                run = self._instance.get_run_by_id(run_id)
                if run is not None and run.status not in _FINISHED:
                    self._instance.report_run_canceled(run, message=f"stopped by {signum.name}")
                self._instance.event_log_storage.free_concurrency_slots_for_run(run_id)
                note = f"; run {run_id} canceled, its pool slots freed"
            except Exception as exc:  # noqa: BLE001 - the process ends either way; say why the run was not marked
                note = f"; run {run_id} not marked canceled ({type(exc).__name__}: {exc})"
        self._say(f"stopped by {signum.name}, nothing of the interrupted step published{note}")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(128 + int(signum))
