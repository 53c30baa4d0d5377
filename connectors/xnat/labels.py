"""XNAT's label cleaning, as the client predicts it."""

from __future__ import annotations

# What XNAT turns into "_" in a session or subject label when it archives (xnat-web
# BaseXnatImagesessiondata.cleanValue, applied by PrearcSessionArchiver.fixSessionLabel and
# fixSubject): the label we send is not always the label XNAT keeps.
XNAT_CLEANED = frozenset(" `~@#$%^&*()+=[]{}|\\/?:;\"',.<>")


def xnat_label(label: str) -> str:
    """The label XNAT will archive for ``label``."""
    return "".join("_" if c in XNAT_CLEANED else c for c in label)
