"""The installer's one error kind."""


class InstallError(Exception):
    """A problem the user can fix; the message is shown as is and nothing has been changed."""
