"""Errors the user caused, and how a command shows them: one line, its fix, no traceback.

Every error a user can cause and fix (a config value, a dataset description, a missing or
unreadable file, a label value, a checkpoint that does not fit the config) is a `UserError`:
its message names the file or field, the value, and the fix. The command lines run their
`main` under `run_command`, which prints a `UserError` (and the operating system's own
missing-file and permission errors) as `PROGRAM: error: MESSAGE` on stderr and exits with
status 1, without a traceback; `--verbose` on the command line, or DEEPLAB_JAX_VERBOSE=1,
shows the traceback as well. A run stopped by SIGTERM (`Preempted`, after its checkpoint)
exits with EXIT_PREEMPTED (75) after one line saying so, so that an experiment runner that
trains many runs stops too. Any other exception is a bug of ours and keeps its traceback.

Each class also derives from the built-in exception its callers caught before it existed
(`ValueError`, `FileNotFoundError`), so `except ValueError` still catches a bad value.
"""
from __future__ import annotations

import os
import sys
import traceback
from typing import Callable, NoReturn

EXIT_USER_ERROR = 1  # the status of every error, as before: 0 finished, 75 preempted
# After a preemption checkpoint: EX_TEMPFAIL, "temporary failure, retry", distinct from
# success (0, the run finished) and from errors (1).
EXIT_PREEMPTED = 75
VERBOSE_FLAG = "--verbose"
VERBOSE_ENVIRONMENT = "DEEPLAB_JAX_VERBOSE"
# Raised by the operating system for paths the user gave: shown as user errors too.
OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


class UserError(Exception):
    """Something the user can fix; the message says what and how."""


class ConfigError(UserError, ValueError):
    """A config field's value (`config.model.output_stride=12`), or a command-line flag's."""


class DataError(UserError, ValueError):
    """The data: a dataset description, a label value, an image, a split."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named (or a dataset needs) is not there."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that does not fit the config, or a workdir without one."""


class Preempted(Exception):
    """Training stopped at `step` after SIGTERM; the checkpoint of `step` is complete
    (`training/preemption.py`). Not an error: rerunning the same command continues."""

    def __init__(self, step: int):
        super().__init__(f"Preempted: the checkpoint at step {step} is complete; run the same "
                         "command again to continue from it.")
        self.step = step


def verbose_requested(argv: list[str]) -> bool:
    return VERBOSE_FLAG in argv or os.environ.get(VERBOSE_ENVIRONMENT, "") not in ("", "0")


def run_command(main: Callable[[], object], program: str) -> NoReturn:
    """Runs `main()` (which parses `sys.argv` itself) and exits with its status.

    A `UserError` or an `OS_ERRORS` exits with EXIT_USER_ERROR after one message on stderr;
    `--verbose` (taken out of `sys.argv` before `main` sees it) or DEEPLAB_JAX_VERBOSE=1
    prints the traceback first. Anything else propagates: a bug shows its traceback.
    """
    verbose = verbose_requested(sys.argv)
    sys.argv = [argument for argument in sys.argv if argument != VERBOSE_FLAG]
    try:
        status = main()
    except (UserError, *OS_ERRORS) as error:
        if verbose:
            traceback.print_exc()
        print(describe(error, program, verbose=verbose), file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except Preempted as stop:
        print(f"{program}: {stop} Exit status {EXIT_PREEMPTED}.", file=sys.stderr)
        sys.exit(EXIT_PREEMPTED)
    sys.exit(status if isinstance(status, int) else 0)


def run_app(main: Callable[[list[str]], object], program: str) -> NoReturn:
    """`absl.app.run(main)` under `run_command`, its flags parsed by `parse_flags`."""
    from absl import app  # pylint: disable=import-outside-toplevel

    run_command(lambda: app.run(main, flags_parser=parse_flags), program)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's own flag parsing, with the errors of a --config flag as `ConfigError`s.

    ml_collections loads the --config file and applies --config.FIELD overrides while the
    flags are parsed: a missing file surfaces as an OSError, a field the config does not
    have as a KeyError or AttributeError, each behind absl's own traceback.
    """
    from absl import app  # pylint: disable=import-outside-toplevel

    try:
        return app.parse_flags_with_usage(argv)
    except (KeyError, AttributeError) as error:
        cause = error.args[0] if error.args else error
        text = str(cause.args[0] if isinstance(cause, BaseException) and cause.args else cause)
        field = text.split("\n")[0].strip("'\"")
        given = [arg for arg in argv if arg.startswith("--config.") and field in arg]
        hint = " ".join(line for line in text.split("\n")[1:]).strip()
        raise ConfigError(f"{', '.join(given) or '--config.' + field}: the config has no field "
                          f"{field!r}. {hint + ' ' if hint else ''}Correct the name (the "
                          "fields are those of configs/voc.py).") from error
    except OSError as error:
        config = next((arg for arg in argv if arg.startswith("--config=")), "--config")
        raise ConfigError(f"{config}: the config file could not be loaded ({error}). Give a "
                          "config file such as --config=configs/voc.py (a relative path "
                          "starts from the current folder).") from error


def describe(error: BaseException, program: str, *, verbose: bool = False) -> str:
    """`PROGRAM: error: MESSAGE`, with a fix where the message is the operating system's."""
    message = str(error).rstrip()
    if isinstance(error, OS_ERRORS) and not isinstance(error, UserError):
        path = getattr(error, "filename", None)
        fix = {FileNotFoundError: "check the path (a relative path starts from the current "
                                  "folder)",
               PermissionError: "make it readable (and its folder writable) by this user",
               IsADirectoryError: "give a file, not a folder",
               NotADirectoryError: "give a folder, not a file"}[type(error)]
        message = (f"{error.strerror or message}: {path}" if path else message).rstrip(".")
        message = f"{message}; {fix}."
    hint = "" if verbose else f" (add {VERBOSE_FLAG} for the traceback)"
    return f"{program}: error: {message}{hint}"
