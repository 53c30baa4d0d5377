"""The ``raw`` schema: every raw table's columns, grain and primary key, declared once.

Every raw table is append-only and every row carries the ``run_id`` of the CLI invocation that
wrote it (``raw.runs``). The DDL is owned here and run on every connection (``store.py`` and the
dbt plugin), so a fresh clone can ``dbt build`` an empty warehouse and get empty marts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RawTable:
    """A raw table's load semantics, declared once (as dlt declares write_disposition)."""

    name: str
    grain: str
    columns: tuple[tuple[str, str], ...]
    primary_key: tuple[str, ...]
    #: declared as a dbt source (models read it); False for the connectors' own bookkeeping
    is_source: bool = True

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.columns)

    def ddl(self) -> str:
        cols = ",\n    ".join(f"{c} {t}" for c, t in self.columns)
        return f"create table if not exists raw.{self.name} (\n    {cols}\n)"

    def added_columns(self, existing: set[str]) -> list[str]:
        """``alter table`` statements for the columns a warehouse made by an older version lacks
        (schema changes are additive only: a new column is nullable, nothing is dropped)."""
        return [
            f"alter table raw.{self.name} add column {c} {t.replace(' not null', '')}"
            for c, t in self.columns
            if c not in existing
        ]


_RUN = (("run_id", "varchar not null"), ("loaded_at", "timestamp not null"))

RAW_TABLES: dict[str, RawTable] = {
    t.name: t
    for t in (
        RawTable(
            "runs",
            "one row per CLI invocation; completed in place when the invocation ends",
            (
                ("run_id", "varchar not null"),
                ("command", "varchar not null"),
                ("arguments", "varchar"),  # JSON list, secrets never present
                ("user_name", "varchar"),
                ("host_name", "varchar"),
                ("tool_version", "varchar"),
                ("config_path", "varchar"),
                ("input_files", "varchar"),  # JSON list of {path, sha256}
                ("rules_sha256", "varchar"),
                ("started_at", "timestamp not null"),
                ("finished_at", "timestamp"),
                ("outcome", "varchar"),  # running | success | partial | failed
                ("exit_code", "integer"),
                ("summary", "varchar"),  # JSON
                ("loaded_at", "timestamp not null"),
            ),
            ("run_id",),
        ),
        RawTable(
            "master_patients",
            "one row per data row of the master patient list, per import run",
            (
                *_RUN,
                ("source_file", "varchar not null"),
                ("source_sha256", "varchar not null"),
                ("source_sheet", "varchar"),
                ("source_row", "integer not null"),
                ("mrn", "varchar not null"),
                ("nhs_number", "varchar"),
                ("reference_date", "date"),
                ("status", "varchar not null"),
                ("patient_name", "varchar"),
                ("birth_date", "date"),
                ("repairs", "varchar"),
            ),
            ("run_id", "source_row"),
        ),
        RawTable(
            "pacs_queries",
            "one row per patient C-FIND (all its sub-queries) in one run, success or not",
            (
                *_RUN,
                ("query_id", "varchar not null"),
                ("mrn", "varchar not null"),
                ("window_from", "date"),
                ("window_to", "date"),
                ("started_at", "timestamp not null"),
                ("finished_at", "timestamp not null"),
                ("outcome", "varchar not null"),  # success | failed
                ("studies_found", "integer not null"),
                ("sub_queries", "integer not null"),
                ("status_code", "varchar"),
                ("message", "varchar"),
            ),
            ("query_id",),
        ),
        RawTable(
            "pacs_studies",
            "one row per study returned by one patient's C-FIND in one run (DICOM values as sent)",
            (
                *_RUN,
                ("query_id", "varchar not null"),
                ("queried_at", "timestamp not null"),
                ("query_mrn", "varchar not null"),
                ("window_from", "date"),
                ("window_to", "date"),
                ("accession_number", "varchar"),
                ("patient_id", "varchar"),
                ("study_date", "varchar"),
                ("study_time", "varchar"),
                ("study_description", "varchar"),
                ("study_instance_uid", "varchar not null"),
                ("modalities_in_study", "varchar"),
                ("number_of_study_related_instances", "varchar"),
                ("patient_name", "varchar"),
                ("patient_birth_date", "varchar"),
                ("specific_character_set", "varchar"),
            ),
            ("query_id", "study_instance_uid"),
        ),
        RawTable(
            "xnat_sessions",
            "one row per imaging session in the XNAT project, per snapshot (raw.xnat_syncs)",
            (
                *_RUN,
                ("sync_id", "varchar"),  # the snapshot; complete once raw.xnat_syncs has it
                ("synced_at", "timestamp not null"),
                ("project", "varchar not null"),
                ("subject_id", "varchar"),
                ("subject_label", "varchar"),
                ("session_id", "varchar not null"),
                ("session_label", "varchar"),
                ("xsi_type", "varchar"),
                ("modality", "varchar"),
                ("session_date", "varchar"),
                ("study_instance_uid", "varchar"),
                ("scan_count", "integer"),
                ("insert_date", "varchar"),
            ),
            ("sync_id", "session_id"),
        ),
        RawTable(
            "xnat_syncs",
            "one row per complete snapshot of the XNAT project, written after its last session",
            (
                *_RUN,
                ("sync_id", "varchar not null"),
                ("project", "varchar not null"),
                ("started_at", "timestamp not null"),
                ("finished_at", "timestamp not null"),
                ("sessions", "integer not null"),
                ("subjects", "integer not null"),
            ),
            ("sync_id",),
        ),
        RawTable(
            "ingest_attempts",
            "one row per attempt to put one study into XNAT (load or retry), whatever its end",
            (
                *_RUN,
                ("attempt_id", "varchar not null"),
                ("study_instance_uid", "varchar not null"),
                ("accession_number", "varchar"),
                ("nhs_number", "varchar"),
                ("subject_label", "varchar"),
                ("session_label", "varchar"),
                ("mode", "varchar not null"),  # direct | dqr
                ("retrieve_method", "varchar"),  # c-get | c-move | dqr
                ("started_at", "timestamp not null"),
                ("finished_at", "timestamp not null"),
                ("outcome", "varchar not null"),  # loaded | already_present | failed
                ("reason_category", "varchar"),  # seeds/failure_reasons.csv; null when loaded
                ("message", "varchar"),
                ("files_expected", "integer"),
                ("files_received", "integer"),
                ("files_archived", "integer"),
                ("bytes_transferred", "bigint"),
                ("xnat_session_id", "varchar"),
                # of files_received: as the PACS stores them / converted on the way / of those,
                # lossless to lossy; null when the PACS did not say what it stores
                ("instances_as_stored", "integer"),
                ("instances_converted", "integer"),
                ("instances_lossy_converted", "integer"),
            ),
            ("attempt_id",),
        ),
        RawTable(
            "dbt_builds",
            "one row per dbt invocation by pacs2xnat: what it built, on which inputs, how it ended",
            (
                *_RUN,
                ("build_id", "varchar not null"),
                ("command", "varchar not null"),  # the dbt command line (run, build ...)
                ("selection", "varchar not null"),  # JSON: select, exclude, resource types
                ("fingerprint", "varchar not null"),  # of the inputs (raw tables, project, vars)
                ("dbt_invocation_id", "varchar"),  # dbt's id of this invocation
                ("started_at", "timestamp not null"),
                ("finished_at", "timestamp not null"),
                ("success", "boolean not null"),
                ("counts", "varchar"),  # JSON: results by status
                ("nodes", "varchar"),  # JSON: the models, seeds and tests it ran successfully
                ("project_fingerprint", "varchar"),  # of the project's files and vars alone
            ),
            ("build_id",),
            is_source=False,
        ),
        RawTable(
            "journal_entries",
            "one row per journal entry written to the warehouse (warehouse/journal.py), in the "
            "same transaction as its rows: a replay skips what is here",
            (
                *_RUN,
                ("entry_id", "varchar not null"),
                ("journaled_at", "timestamp not null"),
                ("row_counts", "varchar"),  # JSON: rows by table
            ),
            ("entry_id",),
            is_source=False,
        ),
    )
}


def apply_ddl(con: Any) -> None:
    """Create the raw schema and tables, and add the columns an older warehouse lacks; one
    catalogue query, so an up-to-date warehouse costs only the ``create ... if not exists``."""
    con.execute("create schema if not exists raw")
    for table in RAW_TABLES.values():
        con.execute(table.ddl())
    existing: dict[str, set[str]] = {}
    for table_name, column_name in con.execute(
        "select table_name, column_name from information_schema.columns"
        " where table_catalog = current_database() and table_schema = 'raw'"
    ).fetchall():
        existing.setdefault(table_name, set()).add(column_name)
    for table in RAW_TABLES.values():
        for statement in table.added_columns(existing.get(table.name, set())):
            con.execute(statement)
