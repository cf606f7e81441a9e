"""One family of exceptions for everything a user can get wrong or a machine can lack.

The CLI prints ``str(error)`` as one line (two at most) and exits with ``exit_code``;
nothing in this family ever reaches the user as a traceback.
"""

from __future__ import annotations


class CoachError(Exception):
    """Base of every error the CLI reports to the user."""

    exit_code = 1


class UsageError(CoachError):
    """Bad command-line usage: an unknown name, a bad option value."""

    exit_code = 2


class InputError(CoachError):
    """A file the user gave us is wrong. Carries where (file:line:column) and the field path."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
                if self.column is not None:
                    where += f":{self.column}"
            where += ": "
        field = f"{self.field}: " if self.field else ""
        return f"{where}{field}{self.message}"


class RoutineError(InputError):
    """A routine file is invalid."""


class VoicePackError(InputError):
    """A voice pack is invalid."""


class SpeechError(CoachError):
    """Text-to-speech is missing or failed at run time."""

    exit_code = 1
