"""User-facing errors: one line naming the file, the record and the problem."""


class VirNucProError(Exception):
    """An error the user can act on; the CLI prints it as one line and exits 1."""


class InputError(VirNucProError):
    """Bad input data: `path`, optional `record` and `problem` make up the one-line message."""

    def __init__(self, path, problem, record=None):
        self.path, self.problem, self.record = str(path), problem, record
        where = f"{self.path}: record '{record}'" if record is not None else self.path
        super().__init__(f"{where}: {problem}")


def first_line(exc):
    """The first line of an exception's message, or its type's name when the message is empty."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
