"""Errors that the CLI turns into one clear line and a non-zero exit."""

import difflib


class HarnessError(Exception):
    """A user-facing error: the message alone must tell the user what to do."""


def unknown_name(kind: str, name: str, known) -> HarnessError:
    """An error for a name that is not registered, naming the close matches."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    listing = ", ".join(known) if known else "none"
    return HarnessError(f"unknown {kind} '{name}'.{hint} Known {kind}s: {listing}.")
