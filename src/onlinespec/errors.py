"""The one exception type for mistakes a user can fix (bad model spec, bad flag value, missing package).

The CLI prints its message on one line and exits non-zero; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input or environment, with a message that says how to fix it."""
