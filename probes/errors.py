"""The two exception types a user sees: a mistake (``HeadscopeError``) and a runtime failure
(``HeadscopeFailure``).

Each message is a single line. A mistake names the bad value and what is allowed: the CLI prints it and
exits with status 2, the app shows it in the page. A failure says what the tool could not do that the
user did not get wrong (a download that fails, a corrupt cached file or result, an unreadable file) and
names the file or the way out: the CLI prints it and exits with status 1.
"""


class HeadscopeError(ValueError):
    """A user mistake: bad model spec, prompt, hook pattern, file, or parameter."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class HeadscopeFailure(RuntimeError):
    """A runtime failure: a download, a corrupt or unreadable file, a missing tool (pip)."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
