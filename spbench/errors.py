"""The one exception type for input a person can fix.

A bad name, value, shape, file or setting raises :class:`InputError` (or a subclass) with a
one-line message that says what is wrong and how to fix it. The CLI prints such errors as one
line with exit code 2; anything else is a bug and keeps its traceback. It subclasses
``ValueError`` so library callers that catch bad values keep working.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input (a name, a value, a file, a setting): one readable line, exit code 2 from the CLI."""
