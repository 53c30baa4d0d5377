"""pacs2xnat: the quarterly PACS -> XNAT ingestion of a head-and-neck cancer imaging cohort.

Python here only talks to the outside world (DICOM, HTTP, spreadsheets, the DuckDB file);
every decision about *which* studies lives in the dbt models next to this package.
"""

from pathlib import Path

__version__ = "0.1.0"

#: The dbt project shipped with the package (dbt_project.yml, models/, seeds/, macros/).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
