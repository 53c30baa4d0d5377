"""openpyxl's write-only worksheet class lives in the private module
``openpyxl.worksheet._write_only``; the report's type hints need its name."""

from __future__ import annotations

from openpyxl.worksheet._write_only import WriteOnlyWorksheet

__all__ = ["WriteOnlyWorksheet"]
