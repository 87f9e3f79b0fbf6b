"""The one exception type for bad user input, shared by every layer of the project.

It is a ValueError (the core API's contract); the CLIs turn it into exit code 2 with its message
and no traceback. Anything else that escapes is a bug and exits 1.
"""


class BadInputError(ValueError):
    """Input that the user must fix: the message names the input, what was received and the fix."""
