"""The Streamlit server process that `pneumo app` starts: ``python -m pneumo.app.server ARGS``
(ARGS as for ``streamlit``), with two things plain ``streamlit run`` lacks under a launcher:

- It stops when its launcher goes, however it goes (kill -9 included, on any POSIX system): the
  launcher holds the write end of this process's stdin and never writes, so end of file on stdin
  means the launcher is gone.
- A closed output never blocks a shutdown. Streamlit prints "Stopping..." when it gets SIGTERM;
  with its output pipe closed (`pneumo app | head`) that raised BrokenPipeError inside the
  signal handler and the server kept serving. Writes to a closed output are dropped instead.

It also serves the app's Prometheus metrics on a port of their own when ``pneumo app
--metrics-port`` asks for them (``pneumo.app.metrics``), started here once before Streamlit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import sys
import threading
import time

STOP_GRACE_S = 10.0
"""How long Streamlit may take to stop after its launcher went, before the process exits hard."""


class DropWhenClosed:
    """A text stream that drops what it cannot write (a pipe whose reader has gone) instead of
    raising: output is a courtesy, stopping is not."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError:
            self._to_devnull()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError:
            self._to_devnull()

    def _to_devnull(self) -> None:
        devnull = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
        # the interpreter's own flush at exit then writes somewhere instead of failing
        with contextlib.suppress(OSError, ValueError):
            os.dup2(devnull.fileno(), self._stream.fileno())
        self._stream = devnull

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def stop_when_stdin_closes(grace_s: float = STOP_GRACE_S) -> None:
    """When stdin is a pipe, stop this process (SIGTERM, then a hard exit after ``grace_s``)
    once its writer, the launcher, is gone."""
    if not stat.S_ISFIFO(os.fstat(0).st_mode):
        return

    def watch() -> None:
        while os.read(0, 4096):  # the launcher never writes; b"" is end of file
            pass
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(128 + signal.SIGTERM)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


def start_metrics() -> None:
    """Serve the app's Prometheus metrics when asked for: here, once per process, and not in
    the page script, which Streamlit runs again on every click."""
    from pneumo.app import metrics

    try:
        metrics.start_from_env()
    except OSError as exc:  # the port is taken, or the address is not this machine's
        host = os.environ.get(metrics.HOST_ENV, "localhost")
        port = os.environ.get(metrics.PORT_ENV)
        raise SystemExit(f"error: cannot serve metrics on {host}:{port}: {exc.strerror}") from None


def main(argv: list[str] | None = None) -> None:
    sys.stdout = DropWhenClosed(sys.stdout)
    sys.stderr = DropWhenClosed(sys.stderr)
    stop_when_stdin_closes()
    start_metrics()
    from streamlit.web import cli

    cli.main(args=sys.argv[1:] if argv is None else argv, prog_name="streamlit")


if __name__ == "__main__":
    main()
