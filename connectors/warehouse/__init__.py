"""The warehouse: the raw schema (``schema``), connections, appends and mart reads (``store``),
the writer lock (``lock``), one ``raw.runs`` row per invocation (``runs``) and dbt (``dbt``).
"""
