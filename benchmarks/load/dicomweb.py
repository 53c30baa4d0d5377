"""DICOMweb against DIMSE on the same Orthanc, same studies, one run (issue 15).

    .venv/bin/pip install numpy pylibjpeg pylibjpeg-openjpeg   # the JPEG 2000 set only
    .venv/bin/python benchmarks/load/dicomweb.py    # 20 CT studies x 50 images, 1,000 patients
    .venv/bin/python benchmarks/load/dicomweb.py --studies 4 --images 20 --patients 100 --repeat 1

Retrieval, for an uncompressed set and a JPEG 2000 lossless set (the same pixels compressed
with pydicom + openjpeg; skipped with a note when those are missing): WADO-RS (ours, 1 and 4
connections), C-GET (ours, 1 and 4 associations; dcmtk getscu per study, the baseline), C-MOVE
(ours, 1 association); WADO-RS and C-GET again with ``[pacs] windows`` configured (the
window's end looked for after every instance: its cost; C-GET then runs in threads). Each
variant in its own process, ``--repeat`` interleaved rounds, each keeping its fastest (the
machine is shared: the ratios within one run are what count). Every WADO-RS study of the run
is checked byte for byte against the files Orthanc was given.

Query: QIDO-RS against C-FIND (ours: ``find_patient`` on a reused association or HTTP session)
for ``--patients`` patients with one study each, on 1 and 4 threads.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from retrieve import GETSCU, run_getscu, write_ct_study  # noqa: E402

from connectors.testbed.orthanc import Orthanc, free_port  # noqa: E402

MOVE_AET = "BENCHMOVE"
BASELINE = "getscu per study, TCP_NODELAY=1"
VARIANTS: list[tuple[str, dict]] = [
    ("ours WADO-RS, 1 connection", {"protocol": "dicomweb", "assocs": 1}),
    ("ours WADO-RS, 4 connections", {"protocol": "dicomweb", "assocs": 4}),
    ("ours C-GET, 1 association", {"method": "c-get", "assocs": 1}),
    ("ours C-GET, 4 associations (processes)", {"method": "c-get", "assocs": 4}),
    ("ours C-MOVE, 1 association", {"method": "c-move", "assocs": 1}),
    # [pacs] windows configured: the window's end is looked for after every instance
    ("ours WADO-RS, 1 connection, windows", {"protocol": "dicomweb", "assocs": 1, "window": 1}),
    ("ours C-GET, 1 association, windows", {"method": "c-get", "assocs": 1, "window": 1}),
    ("ours C-GET, 4 associations, windows", {"method": "c-get", "assocs": 4, "window": 1}),
]
#: open all week, but not "no windows": the gate works out the time after every instance
ALL_WEEK = ["Mon-Sun 00:00-24:00"]


def worker(spec: dict) -> dict:
    """One variant, in this (child) process: seconds and bytes."""
    from concurrent.futures import ThreadPoolExecutor

    from connectors.config import settings_from_dict
    from connectors.pacs.retrieve import Retriever
    from connectors.windows import gate_for

    settings = settings_from_dict(
        {
            "pacs": {
                "port": spec["port"],
                "protocol": spec.get("protocol", "dimse"),
                "dicomweb_url": spec["dicomweb_url"],
                "retrieve": spec.get("method", "c-get"),
                "max_associations": spec["assocs"],
                "move_destination": MOVE_AET,
                "receive_port": spec["receive_port"],
                "windows": ALL_WEEK if spec.get("window") else [],
            }
        }
    )
    out = Path(spec["out"])
    stop = gate_for(ALL_WEEK).closed_now if spec.get("window") else None
    with Retriever(settings) as r, ThreadPoolExecutor(spec["assocs"]) as pool:
        t = time.perf_counter()
        jobs = [
            pool.submit(r.retrieve, uid, out / f"s{i}", spec["expected"], stop)
            for i, uid in enumerate(spec["uids"])
        ]
        total = sum(j.result().bytes for j in jobs)
        seconds = time.perf_counter() - t
    return {"seconds": seconds, "bytes": total}


def child(spec: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        capture_output=True,
        cwd=ROOT,
        check=False,
    )
    if proc.returncode != 0:  # e.g. C-GET of JPEG 2000 from an Orthanc that cannot transcode
        last = (proc.stderr.decode().strip().splitlines() or ["?"])[-1]
        why = last[last.find("the PACS") :] if "the PACS" in last else last[-100:]
        return {"seconds": float("inf"), "bytes": 0, "failed": why}
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def compress_j2k(folder: Path) -> None:
    import pydicom
    from pydicom.uid import JPEG2000Lossless

    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f)
        ds.compress(JPEG2000Lossless)
        ds.save_as(f, enforce_file_format=True)


def seed(orthanc: Orthanc, tmp: Path, args: argparse.Namespace, j2k: bool) -> dict[str, Path]:
    """Upload the set; keep the source files (the byte-for-byte check reads them)."""
    sources: dict[str, Path] = {}
    for k in range(args.studies):
        src = tmp / ("j2k" if j2k else "raw") / str(k)
        uid = write_ct_study(src, args.images, seed=k + (1000 if j2k else 0))
        if j2k:
            compress_j2k(src)
        orthanc.upload(sorted(src.iterdir()))
        sources[uid] = src
    return sources


def check_bytes(orthanc: Orthanc, receive_port: int, sources: dict[str, Path], tmp: Path) -> int:
    """Every instance of every study, by WADO-RS, identical to the file Orthanc was given."""
    import pydicom

    from connectors.config import settings_from_dict
    from connectors.pacs.retrieve import Retriever
    from connectors.pacs.storage import file_name_for

    settings = settings_from_dict(
        {"pacs": {"protocol": "dicomweb", "dicomweb_url": orthanc.dicomweb_url}}
    )
    n = 0
    with Retriever(settings) as r:
        for uid, src in sources.items():
            got = r.retrieve(uid, tmp / "check" / uid, len(list(src.iterdir())))
            for f in src.iterdir():
                sop = pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID
                assert (got.folder / file_name_for(sop)).read_bytes() == f.read_bytes(), f
                n += 1
    shutil.rmtree(tmp / "check", ignore_errors=True)
    return n


def retrieval(
    orthanc: Orthanc, receive_port: int, uids: list[str], args: argparse.Namespace, tmp: Path
) -> list[dict]:
    best: dict[str, dict] = {}
    out = tmp / "out"
    size = lambda: sum(p.stat().st_size for p in out.rglob("*") if p.is_file())  # noqa: E731
    for k in range(args.repeat):
        print(f"  round {k + 1} of {args.repeat}", file=sys.stderr)
        runs: list[tuple[str, dict]] = [(BASELINE, {}), *VARIANTS]
        for name, extra in runs:
            shutil.rmtree(out, ignore_errors=True)
            if name == BASELINE:
                r = {"seconds": run_getscu(orthanc.dicom_port, uids, out, True), "bytes": size()}
            else:
                spec = {"name": name, "port": orthanc.dicom_port, "uids": uids, "out": str(out),
                        "receive_port": receive_port, "dicomweb_url": orthanc.dicomweb_url,
                        "expected": args.images, **extra}  # fmt: skip
                r = child(spec)
            if r["bytes"] == 0:  # getscu ends 0 even when the PACS sent nothing
                r = {"seconds": float("inf"), "bytes": 0, "failed": r.get("failed", "no files")}
            print(f"    {name}: {r['bytes'] / 1e6 / r['seconds']:.1f} MB/s", file=sys.stderr)
            if name not in best or r["seconds"] < best[name]["seconds"]:
                best[name] = {"name": name, **r}
    shutil.rmtree(out, ignore_errors=True)
    return [best[n] for n, _ in [(BASELINE, {}), *VARIANTS]]


def query(orthanc: Orthanc, args: argparse.Namespace, tmp: Path) -> list[dict]:
    """QIDO-RS vs C-FIND for ``--patients`` patients (one header-only study each)."""
    from concurrent.futures import ThreadPoolExecutor

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    from connectors.config import settings_from_dict
    from connectors.pacs.dicomweb import DicomwebClient
    from connectors.pacs.find import Window, find_patient, pacs_association

    print(f"seeding {args.patients} patients for the query", file=sys.stderr)
    mrns = [f"Q{k:07d}" for k in range(args.patients)]
    for mrn in mrns:
        ds = Dataset()
        ds.SOPClassUID = SecondaryCaptureImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.PatientID, ds.PatientName, ds.StudyDate = mrn, "Bench^Query", "20240101"
        ds.AccessionNumber, ds.Modality, ds.StudyDescription = mrn, "OT", "bench"
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = tmp / "q.dcm"
        ds.save_as(path, enforce_file_format=True)
        orthanc.upload([path])
    settings = settings_from_dict(
        {"pacs": {"port": orthanc.dicom_port, "dicomweb_url": orthanc.dicomweb_url}}
    )

    def run(kind: str, threads: int) -> float:
        chunks = [mrns[i::threads] for i in range(threads)]

        def ask(part: list[str]) -> int:
            n = 0
            if kind == "qido":
                client = DicomwebClient(settings.pacs)
                for m in part:
                    n += len(find_patient(client, m, Window()).studies)
                client.close()
            else:
                with pacs_association(settings) as assoc:
                    for m in part:
                        n += len(find_patient(assoc, m, Window()).studies)
            return n

        t = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            found = sum(pool.map(ask, chunks))
        assert found == len(mrns), (kind, found)
        return time.perf_counter() - t

    best: dict[str, float] = {}
    for _ in range(args.repeat):
        for kind, label in (("cfind", "C-FIND"), ("qido", "QIDO-RS")):
            for threads in (1, 4):
                name = f"ours {label}, {threads} {'association' if kind == 'cfind' else 'session'}"
                name += "s" if threads > 1 else ""
                s = run(kind, threads)
                print(f"    {name}: {s:.2f} s", file=sys.stderr)
                best[name] = min(best.get(name, s), s)
    return [{"name": n, "seconds": s} for n, s in best.items()]


def print_retrieval(title: str, rows: list[dict]) -> None:
    """Ratios to getscu, or to the first variant that worked when getscu got nothing."""
    ok = [r for r in rows if r["bytes"]]
    base_row = ok[0]
    base = base_row["bytes"] / base_row["seconds"]
    print(f"\n{title} (x: against {base_row['name']})\n")
    print(f"| {'variant':<42} | {'MB':>6} | {'s':>6} | {'MB/s':>6} | {'x':>8} |")
    print(f"|{'-' * 44}|{'-' * 8}|{'-' * 8}|{'-' * 8}|{'-' * 10}|")
    for r in rows:
        if not r["bytes"]:
            print(f"| {r['name']:<42} | failed: {r.get('failed', '')[:90]} |")
            continue
        rate = r["bytes"] / r["seconds"]
        print(f"| {r['name']:<42} | {r['bytes'] / 1e6:6.0f} | {r['seconds']:6.2f} | "
              f"{rate / 1e6:6.1f} | {rate / base:8.2f} |")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--studies", type=int, default=20)
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--patients", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if not os.access(GETSCU, os.X_OK):
        sys.exit("needs dcmtk's getscu (scripts/setup --test)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-dicomweb-"))
    receive_port = free_port()
    orthanc = Orthanc(
        tmp / "orthanc", dicomweb=True, modalities={MOVE_AET: (MOVE_AET, "127.0.0.1", receive_port)}
    )
    orthanc.start()
    try:
        sets = [("uncompressed (Explicit VR Little Endian)", False)]
        try:
            import numpy  # noqa: F401
            import openjpeg  # noqa: F401

            sets.append(("JPEG 2000 lossless", True))
        except ImportError:
            print("no numpy/pylibjpeg-openjpeg: the JPEG 2000 set is skipped", file=sys.stderr)
        for title, j2k in sets:
            print(f"seeding {title}: {args.studies} x {args.images} images", file=sys.stderr)
            sources = seed(orthanc, tmp, args, j2k)
            n = check_bytes(orthanc, receive_port, sources, tmp)
            rows = retrieval(orthanc, receive_port, list(sources), args, tmp)
            print_retrieval(f"{title}: {n} instances byte-identical by WADO-RS", rows)
            for sid in orthanc.studies():
                orthanc.rest("DELETE", f"/studies/{sid}")
            shutil.rmtree(tmp / ("j2k" if j2k else "raw"), ignore_errors=True)
        rows = query(orthanc, args, tmp)
        base = rows[0]["seconds"]
        print(f"\nquery: {args.patients} patients, one study each\n")
        print(f"| {'variant':<34} | {'s':>6} | {'x C-FIND 1':>10} |")
        print(f"|{'-' * 36}|{'-' * 8}|{'-' * 12}|")
        for r in rows:
            print(f"| {r['name']:<34} | {r['seconds']:6.2f} | {base / r['seconds']:10.2f} |")
    except BaseException:
        print(orthanc._tail_log(), file=sys.stderr)  # what Orthanc said, for the failure
        raise
    finally:
        orthanc.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
