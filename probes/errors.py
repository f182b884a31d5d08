"""The one exception type for user mistakes.

Its message is a single line naming the bad value and what is allowed; the CLI prints it and
exits with status 2, the app shows it in the page.
"""


class HeadscopeError(ValueError):
    """A user mistake: bad model spec, prompt, hook pattern, file, or parameter."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
