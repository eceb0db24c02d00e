"""The one exception type for mistakes a user can fix.

The CLI prints a `UserError` as one line (`lorafit: error: ...`) and exits with code 2;
anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input, config or environment: the message names the file, row or key and the fix."""
