"""The data-availability page: ONE self-contained HTML file (inline CSS, JS and data).

The page template, stylesheet and script live in ``report_assets/``; the data goes in
a ``<script type="application/json">`` block, serialised with every ``<`` / ``>`` / ``&``
escaped as ``\\u003c`` etc., so no value (a study description reading ``</script><script>...``)
can end the block. The script renders everything with ``textContent``/DOM calls, and the
page's Content-Security-Policy forbids any request: it opens offline, from a file or an e-mail.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from importlib import resources
from typing import IO, Any

from connectors.outputs.report_data import ReportData

ASSETS = "report_assets"
PATIENT_COLUMNS = (
    "NHS number",
    "MRN",
    "Status",
    "Reference date",
    "Studies",
    "Modalities",
    "First study",
    "Last study",
    "Days to first",
    "Days to last",
    "Before ref.",
    "On/after ref.",
)
PAGE_SIZE = 25  # table rows per page, and so swimmer-plot lanes: readable on a laptop screen
NUMERIC = (False, False, False, False, True, False, False, False, True, True, True, True)
_PLACEHOLDER = re.compile(r"/\*@(CSS|JS|DATA)@\*/")


def _asset(name: str) -> str:
    return resources.files("connectors.outputs").joinpath(ASSETS, name).read_text(encoding="utf-8")


def safe_json(value: Any) -> str:
    """JSON that is safe inside a ``<script>`` element: ``<``, ``>``, ``&`` and the two
    JavaScript line terminators are \\u-escaped (``ensure_ascii`` covers U+2028/9)."""
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"), default=_default)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _default(v: Any) -> Any:
    if isinstance(v, dt.datetime):
        return v.isoformat(" ", "seconds")
    if isinstance(v, dt.date):
        return v.isoformat()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def page_payload(data: ReportData) -> dict[str, Any]:
    """What the page's script draws: meta, counts, modality list, the per-quarter summary, one
    row per patient, the swimmer plot's points and the reconciliation segments; every number
    and order as the marts give it."""
    av = data.availability
    i_mod = av.column("modality")
    modalities = sorted(
        {r[i_mod] for r in av.rows if r[i_mod] is not None} | {r[0] for r in data.summary.rows}
    )
    mod_index = {m: i for i, m in enumerate(modalities)}

    pt = data.patients
    ix = {c: pt.column(c) for c in pt.columns}
    nhs_index: dict[str, int] = {}
    rows: list[list[Any]] = []
    for i, r in enumerate(pt.rows):
        nhs_index[r[ix["nhs_number"]]] = i
        rows.append(
            [
                r[ix["nhs_number"]],
                r[ix["mrn"]] or "",
                r[ix["patient_status"]] or ("" if r[ix["is_on_master_list"]] else "not on list"),
                _iso(r[ix["reference_date"]]),
                r[ix["number_of_studies"]],
                r[ix["modalities"]],
                _iso(r[ix["first_study_date"]]),
                _iso(r[ix["last_study_date"]]),
                r[ix["days_from_reference_to_first"]],
                r[ix["days_from_reference_to_last"]],
                r[ix["studies_before_reference"]],
                r[ix["studies_on_or_after_reference"]],
            ]
        )

    points: list[int] = []
    sp = data.session_points
    i_nhs, i_pmod, i_days = (
        sp.column(c) for c in ("nhs_number", "modality", "days_from_reference")
    )
    for r in sp.rows:
        days = r[i_days]
        if days is None or r[i_nhs] not in nhs_index or r[i_pmod] not in mod_index:
            continue
        points += (nhs_index[r[i_nhs]], mod_index[r[i_pmod]], days)

    counts = data.counts
    summary = [[r[0], r[1], r[data.summary.column("number_of_studies")]] for r in data.summary.rows]
    return {
        "meta": {
            "generated_at": data.generated_at,
            "run_id": data.run_id,
            "rules_sha256": data.rules_sha256,
            "last_sync": data.last_sync,
        },
        "counts": {k: v for k, v in counts.items() if k != "reconciliation_segments"},
        "page_size": PAGE_SIZE,
        "modalities": modalities,
        "summary": summary,
        "patients": {"columns": list(PATIENT_COLUMNS), "numeric": list(NUMERIC), "rows": rows},
        "points": points,
        "reconciliation": counts["reconciliation_segments"],
    }


def render_html(data: ReportData) -> str:
    parts = {
        "CSS": _asset("report.css"),
        "JS": _asset("report.js"),
        "DATA": safe_json(page_payload(data)),
    }
    return _PLACEHOLDER.sub(lambda m: parts[m.group(1)], _asset("page.html"))


def write_html(data: ReportData, f: IO[str]) -> None:
    f.write(render_html(data))


def _iso(v: dt.date | None) -> str:
    return v.isoformat() if v is not None else ""
