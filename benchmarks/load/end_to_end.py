"""End-to-end direct load against its two halves, in one run on the same data.

    .venv/bin/python benchmarks/load/end_to_end.py                # 30 CT studies x 100 images
    .venv/bin/python benchmarks/load/end_to_end.py --studies 6    # a quick look
    .venv/bin/python benchmarks/load/end_to_end.py --big-mb 1000  # + peak RSS loading a 1 GB study

Orthanc (Debian, TCP_NODELAY=1) holds the studies; the stand-in XNAT runs in its own process.
Each variant runs in its own process, so its peak RSS is its own:

- ``retrieve-only``: ``Retriever`` pulls every study to disk, ``max_associations`` at once;
- ``upload-only``: the retrieved files are zipped while uploading and verified, one study at
  a time (the loader's upload path: ``XnatClient.upload_zip`` + ``count_files``);
- ``load``: ``run_load(mode="direct")``, retrieval overlapping the uploads;
- ``bare tools``: the issue's bare pipeline, per study dcmtk ``getscu`` (TCP_NODELAY=1) and a
  zip of its folder POSTed to the same import service, ``--assoc`` studies at a time;
- ``load (direct, C-MOVE)`` with ``--move``: the same load with ``retrieve = "c-move"`` (the
  Orthanc sends to the loader's ``receive_port``), against the C-GET load of the same round;
- ``load … [folder]`` with ``--compare-with FOLDER`` (a checkout of another commit): each load
  variant again with that tree's code (its copy of this script runs the child), in the same
  rounds, which of the two goes first alternating, so a change is measured against the code
  before it on the same data and the same bare tools.

Every variant's child runs on this interpreter, or ``--python`` (say a venv that
``scripts/setup`` made without ``--test``, as a user's install is: without the test extras'
pandas and numpy, which xnatpy and pydicom import when they are there, ~0.35 s of start-up).

Target: load within 1.3x of max(retrieve-only, upload-only), the C-MOVE load within 0.8x of
the C-GET load's speed; peak RSS of the loader under
300 MB while loading a 1 GB study; at most 2 s from the process's start to the first instance
on disk (``first s``: Python start-up, imports, login, sync, manifest read and the workers
included; retrieve-only's is the same without the loader around it). Prints a table with
ratios; figures in README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bed import PASSWORD, USER, start_standin, stop_standin  # noqa: E402

MOVE_AET = "BENCH_MOVE"  # the loader's storage SCP, as Orthanc knows it (--move)


def seed_orthanc(orthanc: Any, src: Path, n: int, images: int, size: int) -> list[tuple[str, int]]:
    """``n`` synthetic CT studies (``write_study``) uploaded to ``orthanc``, their files
    removed: (Study UID, images) of each."""
    studies = []
    for i in range(n):
        folder = src / str(i)
        uid = write_study(folder, images, size, seed=i)
        orthanc.upload(sorted(folder.iterdir()))
        shutil.rmtree(folder)
        studies.append((uid, images))
    return studies


def write_study(folder: Path, n: int, size: int, seed: int) -> str:
    """One synthetic CT study of ``n`` ``size``x``size`` 16-bit images (random pixels)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    study, series = generate_uid(), generate_uid()
    for i in range(n):
        ds = Dataset()
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientID, ds.PatientName = f"BENCH{seed:05d}", "BENCH^SYNTHETIC"
        ds.AccessionNumber, ds.StudyDate, ds.Modality = f"BA{seed:06d}", "20240101", "CT"
        ds.SeriesNumber, ds.InstanceNumber = 1, i + 1
        ds.Rows = ds.Columns = size
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 15, 0, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = rng.randbytes(size * size * 2)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(folder / f"{i:05d}.dcm", enforce_file_format=True)
    return str(study)


def settings_for(spec: dict[str, Any]) -> Any:
    from connectors.config import LoadConfig, PacsConfig, Settings, WarehouseConfig, XnatConfig

    work = Path(spec["work"])
    return dataclasses.replace(
        Settings(base_dir=work),
        pacs=PacsConfig(
            host="127.0.0.1",
            port=spec["pacs_port"],
            called_aet="ORTHANC",
            max_associations=spec["assoc"],
            retrieve_backend=spec.get("backend", "pynetdicom"),
            retrieve=spec.get("retrieve", "c-get"),
            move_destination=MOVE_AET,
            receive_port=spec.get("receive_port", 11113),
        ),
        xnat=XnatConfig(
            url=spec["xnat_url"],
            project=spec.get("project", "LOAD"),
            timeout=600.0,
            dqr_in_flight=spec.get("in_flight", 1),  # DQR mode (benchmarks/load/dqr.py)
            dqr_poll_seconds=spec.get("poll", 5.0),
        ),
        warehouse=WarehouseConfig(path=str(work / "wh" / "w.duckdb")),
        load=LoadConfig(work_dir=str(work / "tmp"), queue_size=2, retries=0),
    )


def first_file(folder: Path, t0: float) -> dict[str, float]:
    """Watch ``folder`` (every 5 ms, in a thread) for its first whole instance (``<uid>.dcm``,
    renamed so once written; dcmtk's files once taken from its staging); the returned dict gets
    ``first_s``, the wall seconds from ``t0`` (the parent's clock when it started this
    process)."""
    out: dict[str, float] = {}

    def watch() -> None:
        while "first_s" not in out:
            if folder.is_dir() and any(f.is_file() for f in folder.rglob("*.dcm")):
                out["first_s"] = time.time() - t0
                return
            time.sleep(0.005)

    threading.Thread(target=watch, daemon=True).start()
    return out


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One variant, in its own process; prints its figures as JSON."""
    os.environ["XNAT_USER"], os.environ["XNAT_PASS"] = USER, PASSWORD
    settings = settings_for(spec)
    first: dict[str, float] = {}
    if spec["variant"] != "upload-only":
        where = Path(spec["keep"]) if spec["variant"] == "retrieve-only" else settings.work_dir
        first = first_file(where, spec["t0"])
    studies: list[tuple[str, int]] = spec["studies"]
    t = time.perf_counter()
    nbytes = 0
    extra: dict[str, Any] = {}
    if spec["variant"] == "retrieve-only":
        from concurrent.futures import ThreadPoolExecutor

        from connectors.pacs.retrieve import Retriever

        with Retriever(settings) as r, ThreadPoolExecutor(spec["assoc"]) as pool:
            got = list(
                pool.map(lambda s: r.retrieve(s[0], Path(spec["keep"]) / s[0], s[1]), studies)
            )
        nbytes = sum(g.bytes for g in got)
    elif spec["variant"] == "bare-tools":
        nbytes = bare_tools(spec, settings)
    elif spec["variant"] == "upload-only":
        from connectors.xnat.client import XnatClient
        from connectors.xnat.zipstream import ZipProgress, zip_stream

        with XnatClient(settings) as client:
            for i, (uid, n) in enumerate(studies):
                files = sorted((Path(spec["keep"]) / uid).iterdir())
                prog = ZipProgress()
                client.upload_zip(zip_stream(files, prog), f"SUBJ{i:04d}", f"UP{i:05d}")
                row = client.find_session(f"UP{i:05d}")
                if row is None or client.count_files(row["ID"]) != n:
                    raise SystemExit(f"upload-only: study {i} not archived whole")
                nbytes += prog.payload_bytes
    else:
        from connectors.load.runner import run_load
        from connectors.warehouse.runs import RunContext
        from connectors.warehouse.store import Warehouse

        with Warehouse(settings.warehouse_path).connect() as con:
            con.execute(
                "create table main.ingest_manifest (accession_number varchar, patient_id varchar,"
                " study_date date, study_description varchar, study_instance_uid varchar,"
                " nhs_number varchar, subject_label varchar, session_label varchar, mrn varchar,"
                " modalities_in_study varchar, number_of_study_related_instances integer)"
            )
            for i, (uid, n) in enumerate(studies):
                con.execute(
                    "insert into main.ingest_manifest values (?, ?, date '2024-01-01', 'CT',"
                    " ?, ?, ?, ?, ?, 'CT', ?)",
                    [f"LD{i:05d}", f"P{i}", uid, None, f"SUBJ{i:04d}", f"LD{i:05d}", f"P{i}", n],
                )
        summary = run_load(
            RunContext(settings=settings, command="load", arguments=[]),
            spec.get("mode", "direct"),
            build_manifest=False,
        )
        if summary["loaded"] != len(studies):
            raise SystemExit(f"load: {summary}")
        nbytes = summary["bytes"]
        extra = {"loading_seconds": summary["seconds"]}
    seconds = time.perf_counter() - t
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    return {
        "seconds": seconds,
        "bytes": nbytes,
        "rss_mb": me.ru_maxrss / 1024,
        "child_rss_mb": kids.ru_maxrss / 1024,  # the largest retrieval worker process
        "cpu": cpu,
        "first_s": first.get("first_s"),
        **extra,
    }


def bare_tools(spec: dict[str, Any], settings: Any) -> int:
    """The issue's bare pipeline: per study dcmtk ``getscu`` (TCP_NODELAY=1) into a folder,
    then a zip of it POSTed to the same import service, ``assoc`` studies at a time; no
    manifest, no warehouse, no verification. The bytes uploaded."""
    import zipfile
    from concurrent.futures import ThreadPoolExecutor

    import requests

    env = dict(os.environ, TCP_NODELAY="1")
    work = Path(spec["work"])
    p, x = settings.pacs, settings.xnat

    def one(item: tuple[int, tuple[str, int]]) -> int:
        i, (uid, n) = item
        folder = work / uid
        folder.mkdir(parents=True)
        subprocess.run(
            ["getscu", "-S", "-aet", p.calling_aet, "-aec", p.called_aet, "-od", str(folder),
             "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={uid}",
             p.host, str(p.port)],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        files = sorted(folder.iterdir())
        if len(files) != n:
            raise SystemExit(f"bare-tools: getscu brought {len(files)} of {n}")
        zipped = work / f"{uid}.zip"
        with zipfile.ZipFile(zipped, "w", zipfile.ZIP_STORED) as z:
            for f in files:
                z.write(f, f.name)
        with open(zipped, "rb") as body:
            resp = requests.post(
                f"{x.url}/data/services/import",
                params={"import-handler": "DICOM-zip", "dest": "/archive", "project": x.project,
                        "subject": f"SUBJ{i:04d}", "session": f"BT{i:05d}"},
                data=body, headers={"Content-Type": "application/zip"},
                auth=(USER, PASSWORD), timeout=600,
            )  # fmt: skip
        resp.raise_for_status()
        return zipped.stat().st_size

    with ThreadPoolExecutor(spec["assoc"]) as pool:
        return sum(pool.map(one, enumerate(spec["studies"])))


def proc_cpu(pid: int | None) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_child(
    spec: dict[str, Any], others: dict[str, int | None], tree: Path = ROOT
) -> dict[str, Any]:
    """``spec`` in a child process running ``tree``'s copy of this script (its code)."""
    before = {k: proc_cpu(pid) for k, pid in others.items()}
    spec = {**spec, "t0": time.time()}
    wrap: list[str] = []
    if spec.get("profile") and spec["variant"] == "load":  # py-spy, worker processes too
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        out_file = f"{spec['profile']}.{spec['project']}"
        wrap = [spy, "record", "-r", "250", "-f", "raw", "-s", "-o", out_file, "--"]
    script = tree / HERE.relative_to(ROOT) / Path(__file__).name
    out = subprocess.run(
        [*wrap, spec["python"], str(script), "--child", json.dumps(spec)],
        cwd=tree,
        check=False,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"{spec['variant']} failed:\n{out.stderr[-3000:]}")
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]  # not py-spy's
    result = dict(json.loads(lines[-1]))
    for k, pid in others.items():
        result[k] = proc_cpu(pid) - before[k]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--studies", type=int, default=30)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--size", type=int, default=256, help="image rows = columns")
    ap.add_argument("--assoc", type=int, default=2, help="max_associations")
    ap.add_argument("--backend", default="pynetdicom", choices=("pynetdicom", "dcmtk"))
    ap.add_argument(
        "--repeat", type=int, default=2, help="interleaved rounds; each variant's fastest is kept"
    )
    ap.add_argument("--big-mb", type=int, default=0, help="also load one study of this size")
    ap.add_argument("--move", action="store_true", help="also the load with C-MOVE")
    ap.add_argument(
        "--compare-with",
        help="a checkout of another commit: its load variants run too, in the same rounds "
        "(rows named [folder]), to measure a change against what it changes",
    )
    ap.add_argument(
        "--profile",
        help="py-spy (pip install py-spy) records each load variant, its workers too, as raw "
        "stacks in FILE.<project> (its figures then include the sampling)",
    )
    ap.add_argument(
        "--python",
        help="the interpreter every variant runs on (default: this one), e.g. the .venv/bin/python "
        "of a clone set up by `scripts/setup` without --test, as a user installs it",
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    from connectors.testbed.orthanc import Orthanc, free_port

    root = Path(tempfile.mkdtemp(prefix="bench_e2e_"))
    other = Path(args.compare_with).resolve() if args.compare_with else None
    kinds = ("UPLOAD", "LOAD", "BARE", "MOVE", *(("LOADB", "MOVEB") if other else ()))
    args.python = args.python or sys.executable
    projects = [f"{p}{r}" for r in range(args.repeat) for p in kinds]
    projects.append("BIG")
    standin, url = start_standin(projects)
    receive_port = free_port()
    orthanc = Orthanc(
        root / "orthanc",
        tcp_nodelay=True,
        modalities={MOVE_AET: (MOVE_AET, "127.0.0.1", receive_port)},
    )
    try:
        orthanc.start()
        studies = seed_orthanc(orthanc, root / "src", args.studies, args.images, args.size)
        base = {
            "pacs_port": orthanc.port,
            "xnat_url": url,
            "assoc": args.assoc,
            "backend": args.backend,
            "receive_port": receive_port,
            "profile": str(Path(args.profile).resolve()) if args.profile else "",
            "python": args.python,
        }
        keep = root / "retrieved"
        others = {"xnat_cpu": standin.pid, "pacs_cpu": orthanc.pid}
        best: dict[str, dict[str, Any]] = {}
        for r in range(args.repeat):  # interleaved rounds: fair on a machine shared with others
            spec = {**base, "studies": studies, "keep": str(keep), "work": str(root / f"w1{r}")}
            todo = [
                ("retrieve-only", "retrieve-only", "LOAD0", "c-get"),
                ("upload-only", "upload-only", f"UPLOAD{r}", "c-get"),
                ("load (direct)", "load", f"LOAD{r}", "c-get"),
                ("bare tools", "bare-tools", f"BARE{r}", "c-get"),
            ]
            if args.move:
                todo.append(("load (direct, C-MOVE)", "load", f"MOVE{r}", "c-move"))
            runs: list[tuple[str, str, str, str, Path]] = []
            for name, variant, project, method in todo:
                pair = [(name, variant, project, method, ROOT)]
                if other is not None and variant == "load":  # the order alternating by round
                    twin = f"{project.rstrip('0123456789')}B{r}"
                    pair.append((f"{name} [{other.name}]", variant, twin, method, other))
                runs += pair[::-1] if r % 2 else pair
            for name, variant, project, method, tree in runs:
                work = str(root / f"{variant}-{method}-{r}-{project}")
                job = {"variant": variant, "project": project, "work": work, "retrieve": method}
                got = run_child({**spec, **job}, others, tree)
                if name not in best or got["seconds"] < best[name]["seconds"]:
                    best[name] = got
            shutil.rmtree(keep, ignore_errors=True)
        rows = list(best.items())
        if args.big_mb:
            n = max(1, args.big_mb * 1_000_000 // (512 * 512 * 2 + 1000))
            folder = root / "src" / "big"
            uid = write_study(folder, n, 512, seed=99999)
            orthanc.upload(sorted(folder.iterdir()))
            shutil.rmtree(folder)
            big = {**base, "studies": [(uid, n)], "keep": str(keep), "project": "BIG"}
            rows.append(
                (
                    f"load 1 study {args.big_mb} MB",
                    run_child({**big, "variant": "load", "work": str(root / "w4")}, others),
                )
            )
        report(rows, args)
    finally:
        orthanc.stop()
        stop_standin(standin)
        shutil.rmtree(root, ignore_errors=True)


def report(rows: list[tuple[str, dict[str, Any]]], args: argparse.Namespace) -> None:
    by = dict(rows)
    bound = max(by["retrieve-only"]["seconds"], by["upload-only"]["seconds"])
    print(
        f"\n{args.studies} studies x {args.images} images {args.size}x{args.size}, "
        f"fastest of {args.repeat} interleaved rounds, "
        f"max_associations={args.assoc}, retrieve_backend={args.backend}, "
        f"on {args.python}; "
        f"baseline = max(retrieve-only, upload-only) = {bound:.1f} s"
    )
    w = max(26, *(len(name) + 1 for name, _ in rows))
    print(
        f"{'variant':<{w}}{'seconds':>9}{'MB':>9}{'MB/s':>8}{'x baseline':>12}"
        f"{'peak RSS MB':>13}{'(workers)':>10}{'CPU s: client':>15}{'XNAT':>6}{'PACS':>6}"
    )
    for name, r in rows:
        mb = r["bytes"] / 1e6
        ratio = r["seconds"] / bound if not name.startswith("load 1 study") else float("nan")
        print(
            f"{name:<{w}}{r['seconds']:>9.1f}{mb:>9.0f}{mb / r['seconds']:>8.1f}"
            f"{ratio:>12.2f}{r['rss_mb']:>13.0f}{r['child_rss_mb']:>10.0f}{r['cpu']:>15.1f}"
            f"{r['xnat_cpu']:>6.1f}{r['pacs_cpu']:>6.1f}"
        )
    load = by["load (direct)"]
    e2e = load["seconds"] / bound
    print(f"\nload / max(retrieve, upload) = {e2e:.2f}  (target <= 1.30)")
    print(
        f"of which login + sync + manifest read: {load['seconds'] - load['loading_seconds']:.1f} s;"
        f" the loading itself: {load['loading_seconds']:.1f} s"
        f" = {load['loading_seconds'] / bound:.2f} x baseline"
    )
    bare = by["bare tools"]["seconds"]
    print(
        f"bare tools (getscu, zip, POST; {args.assoc} at a time) {bare:.1f} s: "
        f"load is {bare / load['seconds']:.2f} x as fast (target >= 0.9)"
    )
    if "load (direct, C-MOVE)" in by:
        move = by["load (direct, C-MOVE)"]["seconds"]
        print(
            f"load with C-MOVE {move:.1f} s: {load['seconds'] / move:.2f} x the C-GET load's"
            " speed (target >= 0.8)"
        )
    if args.compare_with:  # each load row of the other tree against the same bare tools
        tag = f" [{Path(args.compare_with).resolve().name}]"
        for name in ("load (direct)", "load (direct, C-MOVE)"):
            if name in by and name + tag in by:
                ours, theirs = by[name]["seconds"], by[name + tag]["seconds"]
                print(
                    f"{name}: {bare / ours:.2f} x the bare tools' speed against "
                    f"{bare / theirs:.2f} x for{tag}; {theirs / ours:.2f} x as fast as{tag}"
                )
    alone = by["retrieve-only"].get("first_s")
    if load.get("first_s") is not None and alone is not None:
        print(
            f"from process start to the first instance on disk: load {load['first_s']:.2f} s"
            f" (target <= 2 s), retrieve-only {alone:.2f} s = {load['first_s'] / alone:.2f} x"
        )


if __name__ == "__main__":
    main()
