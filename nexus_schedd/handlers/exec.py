"""The built-in ``exec`` handler: run a program, no shell (SPEC section 6).

Payload: ``{"argv": ["/usr/local/bin/cleanup", "--days", "7"], "env": {...}, "cwd": "..."}``.
Only an ``argv[0]`` matching one of the ``allow`` globs of ``[handlers.exec]``
may run (none by default). Exit 0 is success, 75 (``EX_TEMPFAIL``) a retriable
failure, anything else a permanent one. The program runs in its own process
group; when the attempt is cancelled (timeout, job cancel, shutdown) the whole
group gets SIGTERM, then SIGKILL after ``kill_grace_s``, so nothing it started
outlives it. Processes it leaves behind after a normal exit are ended the same
way, as systemd does with a unit's cgroup.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc

from nexus_schedd.errors import ConfigError, InvalidSpec
from nexus_schedd.handlers.base import HandlerContext, payload_error
from nexus_schedd.model import Job, JobResult

EX_TEMPFAIL = 75
TAIL_BYTES = 4096
DEFAULT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
_PAYLOAD_KEYS = frozenset({"argv", "env", "cwd"})
_CONFIG_KEYS = frozenset({"allow", "kill_grace_s"})
# After the main process exits, how long its output pipes may stay open before
# whatever still holds them is treated as left behind.
_PIPE_SETTLE_S = 0.05


@dataclass(frozen=True, slots=True)
class ExecPayload:
    """A validated ``exec`` payload."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: str | None

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> ExecPayload:
        """Check the payload; raises ValueError with a message for the job's error."""
        unknown = set(payload) - _PAYLOAD_KEYS
        if unknown:
            raise ValueError(f"unknown payload key(s): {', '.join(sorted(unknown))}")
        argv = payload.get("argv")
        if (
            not isinstance(argv, list)
            or not argv
            or not all(isinstance(arg, str) for arg in argv)
            or not argv[0]
        ):
            raise ValueError("payload.argv must be a non-empty list of strings")
        env = payload.get("env", {})
        if not isinstance(env, dict) or not all(
            isinstance(k, str) and k and "=" not in k and isinstance(v, str) for k, v in env.items()
        ):
            raise ValueError("payload.env must be an object of string names to string values")
        cwd = payload.get("cwd")
        if cwd is not None and (not isinstance(cwd, str) or not cwd):
            raise ValueError("payload.cwd must be a non-empty string")
        if any("\0" in arg for arg in argv):
            raise ValueError("payload.argv must not contain NUL characters")
        return cls(tuple(argv), dict(env), cwd)


class _Tail:
    """The last ``limit`` bytes written to a stream."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self.data += chunk
        if len(self.data) > self.limit:
            del self.data[: len(self.data) - self.limit]

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


class ExecHandler:
    """Runs ``exec`` jobs: one program per attempt, in its own process group."""

    def __init__(
        self,
        allow: Sequence[str] = (),
        *,
        kill_grace_s: float = 5.0,
        tail_bytes: int = TAIL_BYTES,
    ) -> None:
        self.allow = tuple(allow)
        self.kill_grace_s = kill_grace_s
        self.tail_bytes = tail_bytes

    def supports(self, job_type: str) -> bool:
        """Only the ``exec`` job type."""
        return job_type == "exec"

    def allowed(self, program: str) -> bool:
        """True if ``program`` (argv[0] as given) matches an ``allow`` glob."""
        if ".." in program.split("/"):
            # "/usr/local/bin/../../bin/sh" would match "/usr/local/bin/*".
            return False
        return any(fnmatch.fnmatchcase(program, pattern) for pattern in self.allow)

    def validate(self, job_type: str, payload: Mapping[str, Any]) -> None:
        """Add-time check: a well-formed payload whose argv[0] the ``allow`` globs permit."""
        try:
            parsed = ExecPayload.parse(payload)
        except ValueError as exc:
            raise payload_error(str(exc)) from None
        if not self.allowed(parsed.argv[0]):
            raise InvalidSpec("payload.argv", self._refusal(parsed.argv[0]))

    def _refusal(self, program: str) -> str:
        allow = ", ".join(self.allow) if self.allow else "nothing (no 'allow' globs set)"
        return f"{program!r} is not allowed: [handlers.exec] allow permits {allow}"

    async def handle(self, job: Job, ctx: HandlerContext) -> JobResult:
        """Run the payload's argv and map its exit status to a result."""
        try:
            payload = ExecPayload.parse(job.payload)
        except ValueError as exc:
            return JobResult.failure(f"bad exec payload: {exc}", should_retry=False)
        program = payload.argv[0]
        if not self.allowed(program):
            return JobResult.failure(self._refusal(program), should_retry=False)
        env = {
            **DEFAULT_ENV,
            "NEXUS_SCHEDD_JOB_ID": job.id,
            "NEXUS_SCHEDD_IDEMPOTENCY_KEY": ctx.idempotency_key,
            "NEXUS_SCHEDD_ATTEMPT": str(ctx.attempt),
            # OpenTelemetry's environment carriers: TRACEPARENT, TRACESTATE.
            **{key.upper(): value for key, value in (ctx.trace_context or {}).items()},
            **payload.env,
        }
        try:
            # Shielded: a cancellation while the child is being spawned would
            # leave it running unsupervised; it is honoured in _supervise instead.
            with anyio.CancelScope(shield=True):
                process = await anyio.open_process(
                    list(payload.argv),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd=payload.cwd,
                    env=env,
                    start_new_session=True,
                )
        except OSError as exc:
            # A missing program or cwd will not fix itself by retrying.
            return JobResult.failure(
                f"cannot start {program!r}: {exc.strerror or exc}", should_retry=False
            )
        ctx.log.debug("exec_started", pid=process.pid, argv=list(payload.argv))
        stdout, stderr = _Tail(self.tail_bytes), _Tail(self.tail_bytes)
        _live_groups.add(process.pid)
        try:
            returncode = await self._supervise(process, stdout, stderr)
        finally:
            with anyio.CancelScope(shield=True):
                await process.aclose()
            _live_groups.discard(process.pid)
        return _result(returncode, stdout, stderr)

    async def _supervise(self, process: anyio.abc.Process, stdout: _Tail, stderr: _Tail) -> int:
        pipes_closed = anyio.Event()
        # The readers are shielded so that, on cancellation, they keep collecting
        # output until the group is gone; _end_group bounds how long that takes.
        readers = anyio.CancelScope(shield=True)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_collect, process, stdout, stderr, pipes_closed, readers)
            try:
                returncode = await process.wait()
                with anyio.move_on_after(_PIPE_SETTLE_S):
                    await pipes_closed.wait()
            finally:
                await self._end_group(process, pipes_closed, readers)
        return returncode

    async def _end_group(
        self,
        process: anyio.abc.Process,
        pipes_closed: anyio.Event,
        readers: anyio.CancelScope,
    ) -> None:
        """SIGTERM the process group, SIGKILL it after the grace, never interrupted."""
        with anyio.CancelScope(shield=True):
            if process.returncode is not None and pipes_closed.is_set():
                return
            _signal_group(process.pid, signal.SIGTERM)
            with anyio.move_on_after(self.kill_grace_s):
                await process.wait()
                await pipes_closed.wait()
                return
            _signal_group(process.pid, signal.SIGKILL)
            await process.wait()
            # A process that left the group (setsid) may still hold the pipes.
            with anyio.move_on_after(1.0):
                await pipes_closed.wait()
            readers.cancel()


async def _collect(
    process: anyio.abc.Process,
    stdout: _Tail,
    stderr: _Tail,
    done: anyio.Event,
    scope: anyio.CancelScope,
) -> None:
    with scope:
        async with anyio.create_task_group() as tg:
            if process.stdout is not None:
                tg.start_soon(_drain, process.stdout, stdout)
            if process.stderr is not None:
                tg.start_soon(_drain, process.stderr, stderr)
    done.set()


async def _drain(stream: anyio.abc.ByteReceiveStream, tail: _Tail) -> None:
    async for chunk in stream:
        tail.feed(chunk)


_live_groups: set[int] = set()
"""Process groups of the commands running now (each child leads its own session)."""


def kill_running_commands() -> None:
    """SIGKILL every command still running, with its group, at once.

    For a daemon that must exit without draining (a second SIGTERM): its
    commands would otherwise outlive it, and run again after the restart while
    the old ones still work. Safe to call from a signal handler.
    """
    for pgid in list(_live_groups):
        _signal_group(pgid, signal.SIGKILL)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    # ProcessLookupError: the whole group is gone already.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _result(returncode: int, stdout: _Tail, stderr: _Tail) -> JobResult:
    # The tails of stdout and stderr are kept in the run's output either way (SPEC 6).
    output = {"exit_code": returncode, "stdout": stdout.text(), "stderr": stderr.text()}
    if returncode == 0:
        return JobResult.success(output)
    if returncode < 0:
        try:
            status = f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            status = f"killed by signal {-returncode}"
    else:
        status = f"exit status {returncode}"
    detail = stderr.text().strip() or stdout.text().strip()
    error = f"{status}: {detail}" if detail else status
    return JobResult.failure(error, should_retry=returncode == EX_TEMPFAIL, output=output)


def make_handler(config: Mapping[str, Any]) -> ExecHandler:
    """Entry point ``exec``: ``[handlers.exec]`` takes ``allow`` (globs) and ``kill_grace_s``."""
    unknown = set(config) - _CONFIG_KEYS
    if unknown:
        raise ConfigError(
            "<config>",
            f"handlers.exec.{sorted(unknown)[0]}",
            "unknown key (use allow, kill_grace_s)",
        )
    allow = config.get("allow", [])
    if not isinstance(allow, list) or not all(isinstance(p, str) and p for p in allow):
        raise ConfigError("<config>", "handlers.exec.allow", "must be a list of path globs")
    grace = config.get("kill_grace_s", 5.0)
    if isinstance(grace, bool) or not isinstance(grace, int | float) or not 0 < grace <= 3600:
        raise ConfigError(
            "<config>", "handlers.exec.kill_grace_s", "must be a number of seconds in (0, 3600]"
        )
    return ExecHandler(allow, kill_grace_s=float(grace))


__all__ = ["EX_TEMPFAIL", "ExecHandler", "ExecPayload", "kill_running_commands", "make_handler"]
