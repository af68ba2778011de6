"""The exec handler: exit-status mapping, the allow list, output tails, and that a
cancelled attempt takes its whole process group with it."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from nexus_schedd.errors import ConfigError, InvalidSpec
from nexus_schedd.handlers.exec import ExecHandler, make_handler
from tests.handlers.conftest import MakeJob

SH = "/bin/sh"


def shell(script: str) -> dict[str, object]:
    return {"argv": [SH, "-c", script]}


@pytest.fixture
def handler() -> ExecHandler:
    return make_handler({"allow": [SH, "/bin/*"], "kill_grace_s": 2})


def test_supports_only_exec(handler: ExecHandler) -> None:
    assert handler.supports("exec")
    assert not handler.supports("http")


@pytest.mark.anyio
async def test_exit_zero_is_success_with_output(handler: ExecHandler, make_job: MakeJob) -> None:
    job, ctx = make_job("exec", shell("echo out; echo err >&2"))
    result = await handler.handle(job, ctx)
    assert result.ok
    assert result.output == {"exit_code": 0, "stdout": "out\n", "stderr": "err\n"}


@pytest.mark.anyio
async def test_exit_75_is_a_retriable_failure(handler: ExecHandler, make_job: MakeJob) -> None:
    job, ctx = make_job("exec", shell("echo busy >&2; exit 75"))
    result = await handler.handle(job, ctx)
    assert not result.ok and result.should_retry
    assert result.error == "exit status 75: busy"
    # What it printed is kept in the run's output on failure too (SPEC 6).
    assert result.output == {"exit_code": 75, "stdout": "", "stderr": "busy\n"}


@pytest.mark.anyio
async def test_other_exit_is_a_permanent_failure(handler: ExecHandler, make_job: MakeJob) -> None:
    job, ctx = make_job("exec", shell("echo only-stdout; exit 3"))
    result = await handler.handle(job, ctx)
    assert not result.ok and not result.should_retry
    assert result.error == "exit status 3: only-stdout"
    assert result.output == {"exit_code": 3, "stdout": "only-stdout\n", "stderr": ""}


@pytest.mark.anyio
async def test_argv_not_allowed_is_refused_naming_the_allow_list(make_job: MakeJob) -> None:
    job, ctx = make_job("exec", {"argv": ["/bin/true"]})
    result = await make_handler({}).handle(job, ctx)
    assert not result.ok and not result.should_retry
    assert "'/bin/true' is not allowed" in (result.error or "")
    assert "no 'allow' globs set" in (result.error or "")
    restricted = make_handler({"allow": ["/usr/local/bin/*"]})
    result = await restricted.handle(job, ctx)
    assert "/usr/local/bin/*" in (result.error or "")


@pytest.mark.anyio
async def test_parent_directory_escapes_do_not_match_a_glob(make_job: MakeJob) -> None:
    job, ctx = make_job("exec", {"argv": ["/usr/local/bin/../../../bin/sh", "-c", "true"]})
    result = await make_handler({"allow": ["/usr/local/bin/*"]}).handle(job, ctx)
    assert not result.ok and "not allowed" in (result.error or "")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({}, "argv must be a non-empty list"),
        ({"argv": []}, "argv must be a non-empty list"),
        ({"argv": "/bin/true"}, "argv must be a non-empty list"),
        ({"argv": ["/bin/true"], "env": {"A": 1}}, "env must be an object"),
        ({"argv": ["/bin/true"], "cwd": 5}, "cwd must be a non-empty string"),
        ({"argv": ["/bin/true"], "shell": True}, "unknown payload key(s): shell"),
    ],
)
async def test_bad_payload_is_a_permanent_failure(
    handler: ExecHandler, make_job: MakeJob, payload: dict[str, object], message: str
) -> None:
    job, ctx = make_job("exec", payload)
    result = await handler.handle(job, ctx)
    assert not result.ok and not result.should_retry
    assert message in (result.error or "")


@pytest.mark.anyio
async def test_missing_program_is_a_permanent_failure(make_job: MakeJob) -> None:
    job, ctx = make_job("exec", {"argv": ["/bin/no-such-program-xyz"]})
    result = await make_handler({"allow": ["/bin/*"]}).handle(job, ctx)
    assert not result.ok and not result.should_retry
    assert "cannot start" in (result.error or "")


@pytest.mark.anyio
async def test_env_and_cwd_are_applied_over_a_minimal_environment(
    handler: ExecHandler, make_job: MakeJob, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAEMON_SECRET", "must-not-leak")
    script = 'echo "$GREETING|$PWD|$NEXUS_SCHEDD_IDEMPOTENCY_KEY|${DAEMON_SECRET:-unset}"'
    job, ctx = make_job(
        "exec", {"argv": [SH, "-c", script], "env": {"GREETING": "hi"}, "cwd": str(tmp_path)}
    )
    result = await handler.handle(job, ctx)
    assert result.ok
    assert result.output["stdout"] == f"hi|{tmp_path}|{job.id}:0|unset\n"


@pytest.mark.anyio
async def test_the_trace_context_is_in_the_opentelemetry_environment_carriers(
    handler: ExecHandler, make_job: MakeJob
) -> None:
    context = {
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "tracestate": "vendor=opaque",
    }
    job, ctx = make_job("exec", shell('echo "$TRACEPARENT|$TRACESTATE"'))
    result = await handler.handle(job, replace(ctx, trace_context=context))
    assert result.output["stdout"] == f"{context['traceparent']}|vendor=opaque\n"
    job, ctx = make_job("exec", shell('echo "${TRACEPARENT:-none}"'))
    assert (await handler.handle(job, ctx)).output["stdout"] == "none\n"


@pytest.mark.anyio
async def test_only_the_tail_of_long_output_is_kept(make_job: MakeJob) -> None:
    job, ctx = make_job("exec", shell("seq 1 5000; exit 2"))
    result = await ExecHandler([SH], tail_bytes=64).handle(job, ctx)
    assert not result.ok
    assert (result.error or "").endswith("4998\n4999\n5000")
    assert len((result.error or "").encode()) < 100


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        fields = stat.rsplit(")", 1)[1].split()
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def _describe_group(pgid: int) -> str:
    described = []
    for pid in _group_members(pgid):
        try:
            described.append((Path("/proc") / str(pid) / "stat").read_text().strip())
        except OSError:
            continue
    return "; ".join(described)


async def _wait_until_group_exits(pgid: int) -> None:
    """Return once every process of group ``pgid`` has exited (pidfds become
    readable at exit); a survivor makes this fail after 10 s."""
    with anyio.fail_after(10, reason=f"still running: {_describe_group(pgid)}"):
        for pid in _group_members(pgid):
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue
            try:
                await anyio.wait_readable(pidfd)
            finally:
                os.close(pidfd)
    assert _group_members(pgid) == []


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pid"
    os.mkfifo(path)
    return path


async def _read_pid(fifo: Path) -> int:
    """The pid the job's shell writes into ``fifo`` once it has started its children."""
    with anyio.fail_after(20):
        text = await anyio.to_thread.run_sync(fifo.read_text, abandon_on_cancel=True)
    return int(text)


@pytest.mark.anyio
async def test_cancelled_attempt_kills_the_whole_process_group(
    handler: ExecHandler, make_job: MakeJob, tmp_path: Path
) -> None:
    fifo = _fifo(tmp_path)
    script = f"sleep 100 & sleep 100 & echo $$ > {fifo}; wait"
    job, ctx = make_job("exec", shell(script))
    async with anyio.create_task_group() as tg:
        tg.start_soon(handler.handle, job, ctx)
        pgid = await _read_pid(fifo)
        assert len(_group_members(pgid)) == 3  # sh and both (forked) sleeps
        tg.cancel_scope.cancel()
    await _wait_until_group_exits(pgid)


@pytest.mark.anyio
async def test_a_group_that_ignores_sigterm_is_killed_after_the_grace(
    make_job: MakeJob, tmp_path: Path
) -> None:
    fifo = _fifo(tmp_path)
    script = f"trap '' TERM; sleep 100 & echo $$ > {fifo}; wait"
    job, ctx = make_job("exec", shell(script))
    handler = ExecHandler([SH], kill_grace_s=0.2)
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(handler.handle, job, ctx)
            pgid = await _read_pid(fifo)
            scope.cancel()
    await _wait_until_group_exits(pgid)


@pytest.mark.anyio
async def test_children_left_behind_after_a_normal_exit_are_ended(
    handler: ExecHandler, make_job: MakeJob, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    job, ctx = make_job("exec", shell(f"sleep 100 & echo $$ > {pid_file}; echo started"))
    result = await handler.handle(job, ctx)
    assert result.ok and result.output["stdout"] == "started\n"
    await _wait_until_group_exits(int(pid_file.read_text()))


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"allow": "/bin/*"}, "handlers.exec.allow"),
        ({"allow": [""]}, "handlers.exec.allow"),
        ({"kill_grace_s": 0}, "handlers.exec.kill_grace_s"),
        ({"shell": True}, "handlers.exec.shell"),
    ],
)
def test_bad_handler_config_is_refused(config: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_handler(config)
    assert caught.value.key == key


def test_process_group_helper_sees_this_process() -> None:
    assert os.getpid() in _group_members(os.getpgid(0))


def test_add_time_check_names_the_field() -> None:
    handler = ExecHandler(["/bin/*"])
    handler.validate("exec", {"argv": ["/bin/true"]})
    with pytest.raises(InvalidSpec) as refused:
        handler.validate("exec", {"argv": ["/usr/bin/python3"]})
    assert refused.value.field == "payload.argv"
    with pytest.raises(InvalidSpec) as unknown:
        handler.validate("exec", {"argv": ["/bin/true"], "shell": True})
    assert unknown.value.field == "payload" and "shell" in unknown.value.reason
