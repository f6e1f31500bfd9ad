"""Thread bodies on their own (``task_worker._threads``): the pool, interruption and
abandoned bodies, without a worker."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from task_worker import ThreadInterrupted
from task_worker._threads import AbandonedThreads, BodyThreads, ThreadBodies, ThreadRun


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    # Only to own futures: the thread side posts to it, a test runs it when it needs the outcome.
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()


def test_a_pool_runs_bodies_in_named_threads_and_refuses_them_once_shut_down() -> None:
    pool = BodyThreads("test_pool")
    names: list[str] = []
    ran = threading.Event()
    pool.submit(lambda: (names.append(threading.current_thread().name), ran.set()))
    assert ran.wait(10)
    pool.shutdown()
    assert names[0].startswith("test_pool_")
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(print)


def test_an_abandoned_body_holds_its_slot_until_its_thread_returns(
        loop: asyncio.AbstractEventLoop) -> None:
    released = threading.Event()
    counter = AbandonedThreads(released.set)
    gate, inside = threading.Event(), threading.Event()
    run = ThreadRun(loop.create_future())

    def body() -> str:
        inside.set()
        gate.wait(10)
        return "late"

    thread = threading.Thread(target=run.main, args=(loop, body, (), {}))
    thread.start()
    assert inside.wait(10)
    assert run.abandon(counter) is True and counter.count == 1
    assert run.abandon(counter) is False  # counted once
    gate.set()
    thread.join(10)
    assert released.is_set() and counter.count == 0
    assert not run.done.done()  # nobody waits for an abandoned body's outcome


def test_a_body_that_already_returned_is_not_counted_when_abandoned(
        loop: asyncio.AbstractEventLoop) -> None:
    counter = AbandonedThreads(lambda: None)
    run = ThreadRun(loop.create_future())
    run.main(loop, lambda: 1, (), {})
    assert run.abandon(counter) is False and counter.count == 0
    assert loop.run_until_complete(run.done) == (True, 1)


def test_inject_interrupts_a_pure_python_loop_and_stop_before_start_never_runs_it(
        loop: asyncio.AbstractEventLoop) -> None:
    spinning = threading.Event()

    def spin() -> None:
        spinning.set()
        while True:
            pass

    run = ThreadRun(loop.create_future())
    thread = threading.Thread(target=run.main, args=(loop, spin, (), {}))
    thread.start()
    assert spinning.wait(10)
    run.inject()
    ok, exc = loop.run_until_complete(asyncio.wait_for(run.done, 30))
    assert not ok and isinstance(exc, ThreadInterrupted)
    thread.join(10)

    never = ThreadRun(loop.create_future())
    never.request_stop()
    never.main(loop, pytest.fail, ("must not run",), {})
    ok, exc = loop.run_until_complete(never.done)
    assert not ok and isinstance(exc, ThreadInterrupted)


def test_thread_bodies_run_in_a_pool_opened_on_first_use_and_closed_repeatably(
        loop: asyncio.AbstractEventLoop) -> None:
    bodies = ThreadBodies("test_bodies", lambda: None)
    run = bodies.start(loop, lambda x: x * 2, (21,), {})
    assert loop.run_until_complete(bodies.wait(run)) == (True, 42)
    bodies.close()
    bodies.close()
    run = bodies.start(loop, threading.current_thread, (), {})  # a new pool
    ok, thread = loop.run_until_complete(bodies.wait(run))
    assert ok and thread.name.startswith("test_bodies_")
    bodies.close()


def test_a_cancelled_wait_interrupts_the_body_and_a_second_cancel_abandons_it(
        loop: asyncio.AbstractEventLoop) -> None:
    released = threading.Event()
    bodies = ThreadBodies("test_bodies", released.set)
    inside, gate = threading.Event(), threading.Event()

    def c_call() -> None:
        inside.set()
        gate.wait(30)  # a C call: the injected interruption waits for it

    async def main() -> None:
        run = bodies.start(loop, c_call, (), {})
        waiter = asyncio.ensure_future(bodies.wait(run, inject_after=0.0))
        await asyncio.to_thread(inside.wait, 10)
        waiter.cancel()  # first cancel: keeps waiting for the thread
        await asyncio.sleep(0)
        assert not waiter.done()
        waiter.cancel()  # second cancel: gives up, the body is abandoned
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert bodies.abandoned.count == 1

    loop.run_until_complete(main())
    gate.set()
    assert released.wait(10)
    assert bodies.abandoned.count == 0
    bodies.close()
