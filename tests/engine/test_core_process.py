"""The wrapper that starts vLLM's engine core in a group of its own, tied to its parent: it is
what multiprocessing hands the spawned process, by name, only while an engine starts."""

from __future__ import annotations

import asyncio
import pickle
import threading

from vllm.v1.engine.core import EngineCoreProc

from deepinfra_serve.engine import core_process


def test_engine_cores_start_through_the_wrapper_only_within_the_block() -> None:
    original = EngineCoreProc.run_engine_core
    with core_process.tied_engine_cores():
        target = EngineCoreProc.run_engine_core  # what vLLM gives its Process
        assert target is core_process.run_engine_core
        # Spawn pickles the target by name: the child imports the wrapper, not a copy of it.
        assert pickle.loads(pickle.dumps(target)) is core_process.run_engine_core
    assert EngineCoreProc.run_engine_core is original


async def test_the_starting_thread_outlives_the_start() -> None:
    def work() -> threading.Thread:
        return threading.current_thread()

    thread = await core_process.in_lasting_thread(work)
    assert thread is not threading.main_thread()
    await asyncio.sleep(0.05)
    assert thread.is_alive()  # the engine's parent-death signal is tied to it
