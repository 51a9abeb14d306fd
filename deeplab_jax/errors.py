"""Errors the user caused, and how a command shows them: one line, its fix, no traceback.

Every error a user can cause and fix (a config value, a dataset description, a missing or
unreadable file, a label value, a checkpoint that does not fit the config) is a `UserError`:
its message names the file or field, the value, and the fix. The command lines run their
`main` under `run_command`, which prints a `UserError` (and the operating system's own
missing-file and permission errors) as `PROGRAM: error: MESSAGE` on stderr and exits with
status 1, without a traceback; `--verbose` on the command line, or DEEPLAB_JAX_VERBOSE=1,
shows the traceback as well. Any other exception is a bug of ours and keeps its traceback.

Each class also derives from the built-in exception its callers caught before it existed
(`ValueError`, `FileNotFoundError`), so `except ValueError` still catches a bad value.
"""
from __future__ import annotations

import os
import sys
import traceback
from typing import Callable, NoReturn

EXIT_USER_ERROR = 1  # the status of every error, as before: 0 finished, 75 preempted
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
    sys.exit(status if isinstance(status, int) else 0)


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
