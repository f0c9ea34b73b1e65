"""Runs a simad server in-process on 127.0.0.1 (port 0) on its own event-loop thread, for tests."""

from __future__ import annotations

import asyncio
import threading

from simad_server import ServerConfig, create_server


class ServerThread:
    """``with ServerThread(**config) as s:`` -> ``s.address`` ("127.0.0.1:<port>"), ``s.server``."""

    def __init__(self, **config):
        config.setdefault("address", "127.0.0.1:0")
        config.setdefault("data_dir", None)
        config.setdefault("warmup", False)
        self.config = ServerConfig(**config)
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="simad-test-server", daemon=True)

    def _main(self):
        asyncio.set_event_loop(self._loop)
        try:
            self.server = create_server(self.config)
            self._loop.run_until_complete(self.server.start())
        except BaseException as e:  # noqa: BLE001 - reported to the test thread
            self._error = e
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()

    def __enter__(self) -> ServerThread:
        self._thread.start()
        self._started.wait(600)
        if self._error is not None:
            raise self._error
        self.port = self.server.port
        self.address = f"127.0.0.1:{self.port}"
        return self

    def run(self, coro, timeout=60):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def __exit__(self, *exc):
        try:
            self.run(self.server.stop(grace=1.0))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
