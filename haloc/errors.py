"""The one exception type for bad user input, shared by every layer of the project.

It is a ValueError (the core API's contract); the CLIs turn it into exit code 2 with its message
and no traceback. Anything else that escapes is a bug and exits 1.

The core names its own parameters, never a command-line flag: a message says `param("num_classes",
"64")`, which reads `num_classes=64` to a Python caller (`str(e)`) and `--num-classes 64` where the
command line shows it (`e.render(as_flag)`). So one message serves the library, the Python API
(whose keywords are the same names) and the CLI.
"""
from __future__ import annotations

from collections.abc import Callable

_MARK, _VALUE = "\x1f", "\x1e"  # control characters no user text contains: a parameter's bounds in a message


def param(name: str, value: str | None = None) -> str:
    """Parameter `name` (a keyword of the core and of pipelines.api.compress), with `value` already
    formatted (e.g. repr(path)), as a BadInputError message mentions it."""
    return f"{_MARK}{name}{_VALUE}{'' if value is None else value}{_MARK}"


def as_keyword(name: str, value: str) -> str:
    """How a Python caller passes it: `num_classes=64`, or `num_classes` alone without a value."""
    return f"{name}={value}" if value else name


def as_flag(name: str, value: str) -> str:
    """How the command line passes it: `--num-classes 64`."""
    flag = "--" + name.replace("_", "-")
    return f"{flag} {value}" if value else flag


def render(message: str, style: Callable[[str, str], str] = as_keyword) -> str:
    """`message` with each param() in it written by `style`."""
    parts = message.split(_MARK)
    for i in range(1, len(parts), 2):  # odd parts are the parameters
        name, _, value = parts[i].partition(_VALUE)
        parts[i] = style(name, value)
    return "".join(parts)


class BadInputError(ValueError):
    """Input that the user must fix: the message names the input, what was received and the fix."""

    @property
    def message(self) -> str:
        """The message with its parameters unrendered: what a wrapping BadInputError puts in its own."""
        return str(self.args[0]) if self.args else ""

    def render(self, style: Callable[[str, str], str] = as_keyword) -> str:
        return render(self.message, style)

    def __str__(self) -> str:
        return self.render()
