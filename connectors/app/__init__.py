"""The command line: the Typer app (``cli``), the quarterly cycle (``cycle``) and ``doctor``.

The only package that imports the others' steps; errors become exit codes here, in one place.
"""
