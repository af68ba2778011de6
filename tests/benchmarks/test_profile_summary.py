"""The profile summary of ``benchmarks.profile_daemon`` counts only samples on the CPU."""

from __future__ import annotations

from pathlib import Path

from benchmarks.profile_daemon import summarize

_MAIN = "thread (1): MainThread;main (nexus_schedd/daemon/main.py:91)"
_WRITER = "thread (2): MainThread;serve (nexus_schedd/store/sqlite_writer.py:10)"


def test_summary_leaves_out_samples_blocked_in_the_kernel(tmp_path: Path) -> None:
    collapsed = tmp_path / "daemon.txt"
    collapsed.write_text(
        "\n".join(
            [
                f"{_MAIN};Engine._finish (nexus_schedd/engine/engine.py:700);job_row (rows.py:3) 6",
                f"{_MAIN};Engine._finish (nexus_schedd/engine/engine.py:701) 2",
                f"{_MAIN};uv_run (core.c:1);epoll_pwait (libc.so.6) 5",
                "thread (3): AnyIO worker thread;Queue.get (queue.py:171);"
                "PyThread_acquire_lock_timed (libpython3.11.so.1.0);0x7f41 (libc.so.6) 7",
                f"{_WRITER};commit_segments (nexus_schedd/store/sqlite_writer.py:40);"
                "fdatasync (libc.so.6) 3",
                f"{_WRITER};read_message (nexus_schedd/store/sqlite_writer.py:20);recv (libc.so.6) 4",
            ]
        )
        + "\n"
    )

    summary = summarize(collapsed, top=5)

    assert summary["cpu_samples"] == 8
    assert dict(summary["wall"]) == {
        "CPU, thread MainThread": 8,
        "epoll/poll (idle loop)": 5,
        "lock or queue wait (idle thread)": 7,
        "fsync (I/O wait)": 3,
        "reading the next request (writer idle)": 4,
    }
    # Line numbers are merged: one function, whatever line the sample was on.
    assert dict(summary["self"]) == {
        "job_row (rows.py)": 6,
        "Engine._finish (nexus_schedd/engine/engine.py)": 2,
    }
    assert dict(summary["inclusive"])["Engine._finish (nexus_schedd/engine/engine.py)"] == 8
