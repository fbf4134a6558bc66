"""The one exception family of capsa's Python side. A CapsaError's message is
a complete one-line sentence for the user; the CLI prints it as
`capsa: error: <message>` and exits with `exit_code`, never a traceback."""


class CapsaError(Exception):
    exit_code = 1


class NotFound(CapsaError):
    """An image, container, tag or file the user named does not exist."""


class Conflict(CapsaError):
    """A name in use, an image still referenced, a container still running."""


class BadInput(CapsaError):
    """Content from outside that breaks its format or lies about itself: a
    registry's reply, an archive, an image config (a wrong type, a missing
    field, a digest that does not match). Nothing of it is stored. Exit
    code 125, Docker's for a failure of the engine rather than of the
    container's command."""
    exit_code = 125
