"""A real worker process for the crash, signal, exit and fork tests (and ``benchmarks/crash.py``).

    python tests/reliability/_worker.py MODE PROGRESS_FILE [N]

The ledger comes from ``BUDGETCLIENT_LEDGER``. Every model call goes through ``bc.Anthropic`` over
``FakeAnthropic``'s transport (the real SDK, a fake wire); after each call returns, one line
``<response id> <time.time()>`` is appended to PROGRESS_FILE with a single unbuffered ``write``, so
the test knows exactly which calls were made when it kills the process.

Modes:
- ``loop``: call until killed (``N`` ms between calls, default 2).
- ``loop-own-handler``: the same, after installing the application's own SIGTERM handler, which
  appends ``handler`` to PROGRESS_FILE and exits with status 3.
- ``abandoned-stream``: one streamed call, broken out of after the first event, never closed.
- ``one-call``: one call, then a normal exit.
- ``calls``: ``N`` calls, then a normal exit.
- ``zygote``: warm up (one call into ``memory://``), then fork ``N`` children that each run
  ``loop`` into PROGRESS_FILE's directory ``t<i>/`` (``progress.txt``, ``ledger.db``), print
  ``pid <pid> <i>`` per child, wait for them all and print ``status <pid> <wait status>`` each.
  Forked children start in milliseconds, warm, where a fresh interpreter takes seconds on a busy
  machine: so a test can run many kill trials quickly. The children are real processes with the
  SIGTERM handler a worker would have.
- ``fork``: the parent writes continuously from a thread and forks ``N`` children at random
  moments; each child makes 10 calls and exits through ``os._exit`` after ``bc.flush``. The
  children's ids go to PROGRESS_FILE like the parent's.

``BUDGETCLIENT_TEST_MAX_QUEUED`` sets the writer's in-memory bound (`writer.MAX_QUEUED`), so a
test can make it spill with a few records.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import budgetclient as bc
from budgetclient.ledger import writer as ledger_writer
from budgetclient.testing import FakeAnthropic

MODEL = "claude-sonnet-4-5"
CHILD_CALLS = 10


def _client() -> Any:
    fake = FakeAnthropic(output_tokens=7, reply_text="one two three four five six seven")
    return bc.Anthropic(api_key="sk-ant-test", http_client=fake.http_client())


def _note(fd: int, text: str) -> None:
    os.write(fd, f"{text}\n".encode())


def _call(client: Any, fd: int) -> None:
    message = client.messages.create(
        model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "hello"}]
    )
    _note(fd, f"{message.id} {time.time():.6f}")


def loop(fd: int, pause_ms: float, own_handler: bool) -> None:
    if own_handler:

        def handler(signum: int, frame: Any) -> None:
            _note(fd, "handler")
            os._exit(3)

        signal.signal(signal.SIGTERM, handler)
    client = _client()
    with bc.task("crash-loop"):
        while True:
            _call(client, fd)
            time.sleep(pause_ms / 1000)


_abandoned: list[Any] = []
"""Keeps the stream alive until interpreter shutdown, like a module-level ``stream`` in a script."""


def abandoned_stream(fd: int) -> None:
    client = _client()
    stream = client.messages.create(
        model=MODEL, max_tokens=16, stream=True, messages=[{"role": "user", "content": "hello " * 300}]
    )
    for _event in stream:
        break
    _abandoned.append(stream)
    _note(fd, "broke out")


def fork(fd: int, children: int) -> None:
    client = _client()
    _call(client, fd)  # warm up: load the tokenizer, prices and the ledger before the first fork
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            _call(client, fd)

    writer = threading.Thread(target=busy)
    writer.start()
    pids = []
    for _ in range(children):
        time.sleep(random.uniform(0.0, 0.05))
        pid = os.fork()
        if pid == 0:
            child = _client()
            for _ in range(CHILD_CALLS):
                _call(child, fd)
            os._exit(0 if bc.flush(30) else 1)
        pids.append(pid)
    statuses = [os.waitpid(pid, 0)[1] for pid in pids]
    stop.set()
    writer.join()
    if any(statuses):
        raise SystemExit(f"children failed: {statuses}")


def zygote(directory: Path, children: int, pause_ms: float) -> None:
    bc.configure(ledger="memory://zygote")
    _call(_client(), os.open(os.devnull, os.O_WRONLY))
    bc.flush(30)
    pids = []
    for index in range(children):
        trial = directory / f"t{index}"
        trial.mkdir(parents=True, exist_ok=True)
        pid = os.fork()
        if pid == 0:
            try:
                bc.configure(ledger=f"sqlite:///{trial / 'ledger.db'}")
                fd = os.open(trial / "progress.txt", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                loop(fd, pause_ms, own_handler=False)
            finally:
                os._exit(1)
        print(f"pid {pid} {index}", flush=True)
        pids.append(pid)
    for pid in pids:
        print(f"status {pid} {os.waitpid(pid, 0)[1]}", flush=True)


def main() -> None:
    mode, progress = sys.argv[1], sys.argv[2]
    number = float(sys.argv[3]) if len(sys.argv) > 3 else 2.0
    if mode == "zygote":
        zygote(Path(progress).parent, int(number), 2.0)
        return
    if "BUDGETCLIENT_TEST_MAX_QUEUED" in os.environ:
        ledger_writer.MAX_QUEUED = int(os.environ["BUDGETCLIENT_TEST_MAX_QUEUED"])
    fd = os.open(progress, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    if mode in {"loop", "loop-own-handler"}:
        loop(fd, number, own_handler=mode == "loop-own-handler")
    elif mode == "abandoned-stream":
        abandoned_stream(fd)
    elif mode == "one-call":
        _call(_client(), fd)
    elif mode == "calls":
        client = _client()
        for _ in range(int(number)):
            _call(client, fd)
    elif mode == "fork":
        fork(fd, int(number))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
