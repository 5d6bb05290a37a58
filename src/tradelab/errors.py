"""The one exception a user can cause.

Anything raised as TradelabError is printed by the CLI as one line
("error: <message>") with exit code 1, never as a traceback. Raise it where the
cause is known and the message can say what to do about it.
"""


class TradelabError(Exception):
    """A problem the user can fix; the message says how."""
