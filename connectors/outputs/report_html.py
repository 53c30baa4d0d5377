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
from collections import defaultdict
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
    row per patient, the swimmer plot's points and the reconciliation segments."""
    av = data.availability
    ix = {c: av.column(c) for c in av.columns}
    modalities = sorted(
        {r[ix["modality"]] for r in av.rows if r[ix["modality"]] is not None}
        | {r[0] for r in data.summary.rows}
    )
    mod_index = {m: i for i, m in enumerate(modalities)}

    patients: dict[str, dict[str, Any]] = {}
    for r in av.rows:
        p = patients.setdefault(
            r[ix["nhs_number"]],
            {
                "row": r,
                "n": 0,
                "mods": [],
                "first": None,
                "last": None,
                "dfirst": None,
                "dlast": None,
                "before": None,
                "after": None,
            },
        )
        n = r[ix["number_of_studies"]] or 0
        if not n:
            continue
        p["n"] += n
        p["mods"].append(f"{r[ix['modality']]} {n}")
        p["first"] = _min(p["first"], r[ix["first_study_date"]])
        p["last"] = _max(p["last"], r[ix["last_study_date"]])
        p["dfirst"] = _min(p["dfirst"], r[ix["days_from_reference_to_first"]])
        p["dlast"] = _max(p["dlast"], r[ix["days_from_reference_to_last"]])
        p["before"] = _add(p["before"], r[ix["studies_before_reference"]])
        p["after"] = _add(p["after"], r[ix["studies_on_or_after_reference"]])
    nhs_index: dict[str, int] = {}
    rows: list[list[Any]] = []
    for i, (nhs, p) in enumerate(patients.items()):
        r = p["row"]
        nhs_index[nhs] = i
        rows.append(
            [
                nhs,
                r[ix["mrn"]] or "",
                r[ix["patient_status"]] or ("" if r[ix["is_on_master_list"]] else "not on list"),
                _iso(r[ix["reference_date"]]),
                p["n"],
                ", ".join(p["mods"]),
                _iso(p["first"]),
                _iso(p["last"]),
                p["dfirst"],
                p["dlast"],
                p["before"],
                p["after"],
            ]
        )

    points: list[int] = []
    sp = data.session_points
    i_nhs, i_mod, i_days = (sp.column(c) for c in ("nhs_number", "modality", "days_from_reference"))
    for r in sp.rows:
        days = r[i_days]
        if days is None or r[i_nhs] not in nhs_index or r[i_mod] not in mod_index:
            continue
        points += (nhs_index[r[i_nhs]], mod_index[r[i_mod]], days)

    rec = data.reconciliation
    i_st, i_fr, i_ur = (
        rec.column(c) for c in ("reconciliation_status", "failure_reason", "unexpected_reason")
    )
    segments: dict[tuple[str, str], int] = defaultdict(int)
    for r in rec.rows:
        segments[(r[i_st], r[i_fr] or r[i_ur] or "")] += 1
    order = {"present": 0, "missing": 1, "uid_mismatch": 2, "unexpected": 3}
    seg_rows = sorted(segments.items(), key=lambda kv: (order.get(kv[0][0], 9), -kv[1]))

    summary = [[r[0], r[1], r[data.summary.column("number_of_studies")]] for r in data.summary.rows]
    return {
        "meta": {
            "generated_at": data.generated_at,
            "run_id": data.run_id,
            "rules_sha256": data.rules_sha256,
            "last_sync": data.last_sync,
        },
        "counts": data.counts,
        "page_size": PAGE_SIZE,
        "modalities": modalities,
        "summary": summary,
        "patients": {"columns": list(PATIENT_COLUMNS), "numeric": list(NUMERIC), "rows": rows},
        "points": points,
        "reconciliation": [[s, reason, n] for (s, reason), n in seg_rows],
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


def _min(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else min(a, b)


def _max(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else max(a, b)


def _add(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else a + b
