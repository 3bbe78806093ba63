"""The ``pneumo`` command. Each group module registers thin subcommands over importable
functions; heavy imports happen inside the commands so ``pneumo --help`` stays instant."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from pneumo import __version__
from pneumo.cli import app, data, db, dicom_node, evaluation, inference, report, training

GROUPS = (data, training, evaluation, inference, app, db, dicom_node, report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pneumo",
        description="Pneumonia detection on pediatric chest X-rays (research use only).",
    )
    parser.add_argument("--version", action="version", version=f"pneumo {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in GROUPS:
        group.register(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a service manager, a container stopping): unwinds like Ctrl+C, so a
    command's context managers remove what it was writing instead of leaving it half done."""


def _terminate(signum, frame) -> None:
    raise Terminated()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. Whatever goes wrong ends in one line on stderr and an exit status,
    never a traceback (``-v`` logs the traceback for bug reports)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from pneumo.errors import PneumoError

    log = logging.getLogger("pneumo.cli")
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if on_main_thread else None
    try:
        return int(args.func(args) or 0)
    except PneumoError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)  # noqa: T201
        return 2
    except Terminated:
        print("terminated", file=sys.stderr)  # noqa: T201
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)  # noqa: T201
        return 130
    except (ValueError, TypeError) as exc:
        # settings dataclasses check the values given on the command line with ValueError
        log.debug("invalid argument", exc_info=True)
        print(f"error: invalid argument: {_one_line(exc)}", file=sys.stderr)  # noqa: T201
        return 2
    except MemoryError:
        print("error: out of memory (try a smaller --batch-size)", file=sys.stderr)  # noqa: T201
        return 1
    except OSError as exc:
        log.debug("system error", exc_info=True)
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: {exc.strerror or _one_line(exc)}{where}", file=sys.stderr)  # noqa: T201
        return 1
    except Exception as exc:  # noqa: BLE001 - a bug still ends in one line, not a traceback
        log.debug("unexpected error", exc_info=True)
        print(  # noqa: T201
            f"error: {type(exc).__name__}: {_one_line(exc)} (run with -v for the details)",
            file=sys.stderr,
        )
        return 1
    finally:
        if on_main_thread and previous is not None:  # None: set outside Python, left as it is
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
