"""The engine's processes live and die with the server that started them.

vLLM 0.32 spawns its engine core as a plain child process: nothing ends it when the server's
process is killed (SIGKILL, the kernel's OOM killer), and an orphaned core keeps the GPU's
memory, so that the restarted server cannot load. And the core shares the server's process
group, so a signal to the group (Ctrl-C in a terminal, `kill -- -PGID`, a supervisor that
signals groups) reaches it directly and its own handler stops it while the server is still
draining the streams it serves.

So the core is started through `run_engine_core`, a narrow wrapper around vLLM's entry point
(vLLM has no hook for either): it puts the core in a process group of its own (its workers,
spawned later, join it; they already watch the core through vLLM's death pipe) and asks the
kernel for SIGKILL when its parent goes (`PR_SET_PDEATHSIG`). The kernel sends that signal when
the *thread* that started the process exits, so the engine is started from a thread that lasts
as long as the process (`in_lasting_thread`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

T = TypeVar("T")


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when the process (thread) that spawned it exits.

    For processes started by `multiprocessing` with spawn; Linux only (a no-op elsewhere)."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    parent = multiprocessing.parent_process()
    # The parent may have died before the request above: then no signal will come.
    if parent is not None and os.getppid() != parent.pid:
        os._exit(1)


def run_engine_core(*args: Any, **kwargs: Any) -> None:
    """vLLM's engine-core entry point, in a process group of its own and tied to its parent."""
    os.setpgid(0, 0)
    die_with_parent()
    from .vllm_seam import EngineCoreProc

    EngineCoreProc.run_engine_core(*args, **kwargs)


@contextlib.contextmanager
def tied_engine_cores() -> Iterator[None]:
    """Engine cores that vLLM starts within this block start through `run_engine_core`.

    vLLM hands `EngineCoreProc.run_engine_core` to `multiprocessing` as the process's target
    when it starts the core; spawn pickles the target by name, so the child runs this module's
    function, which calls vLLM's own (unpatched in the child)."""
    from .vllm_seam import EngineCoreProc

    original = EngineCoreProc.__dict__["run_engine_core"]
    EngineCoreProc.run_engine_core = staticmethod(run_engine_core)
    try:
        yield
    finally:
        EngineCoreProc.run_engine_core = original


def in_lasting_thread(work: Callable[[], T], name: str = "engine-start") -> asyncio.Future[T]:
    """Run `work` in a thread that then stays until the process exits, and await its result.

    The processes it starts are tied to that thread (see the module's docstring): a pool's
    thread could exit, and kill them, while the server still needs them."""
    done: concurrent.futures.Future[T] = concurrent.futures.Future()

    def body() -> None:
        try:
            done.set_result(work())
        except BaseException as exc:  # handed to the awaiting task
            done.set_exception(exc)
        threading.Event().wait()

    threading.Thread(target=body, name=name, daemon=True).start()
    return asyncio.wrap_future(done)
