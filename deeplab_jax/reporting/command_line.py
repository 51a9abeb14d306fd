"""How every command line starts: its absl flags, stray arguments refused, logging set up."""
from __future__ import annotations

import logging
from typing import Callable, Sequence

from absl import app, flags


def start_command(argv: Sequence[str]) -> None:
    """What every `app.run` main does first: refuse stray arguments, set up logging."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    setup_logging()


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        force=True)
    # orbax and absl log every checkpoint step at INFO; keep the run's own lines readable.
    logging.getLogger("absl").setLevel(logging.WARNING)


def parse_flags(define: Callable[[flags.FlagValues], None], argv: Sequence[str],
                program: str) -> flags.FlagValues:
    """Parses `argv` (without the program name) into flags of their own, not absl's globals.

    For commands that are also called as functions (`main(["--x=1"])` in the tests, or two
    benchmarks in one process): `define(flag_values)` defines the flags on a fresh
    `FlagValues`. Unknown flags and stray arguments exit with the usage, as `app.run` does.
    """
    flag_values = flags.FlagValues()
    define(flag_values)
    defined = sorted(flag_values)
    try:
        remaining = flag_values([program, *argv])
        if len(remaining) > 1:
            raise flags.Error(f"unexpected arguments {remaining[1:]}")
        flag_values.validate_all_flags()
    except flags.Error as error:
        usage = "\n".join(f"  --{name}: {flag_values[name].help}" for name in defined)
        raise SystemExit(f"{program}: {error}\nflags:\n{usage}") from error
    return flag_values
