"""Retrieval benchmark: our Retriever against dcmtk getscu on the same Orthanc, in one run.

    .venv/bin/python benchmarks/load/retrieve.py                 # 30 CT studies x 100 images
    .venv/bin/python benchmarks/load/retrieve.py --studies 6     # a quick look
    .venv/bin/python benchmarks/load/retrieve.py --big-mb 1000   # + peak RSS on a 1 GB study
    .venv/bin/python benchmarks/load/retrieve.py --syntax jpeg-ls  # the studies JPEG-LS lossless

Orthanc (Debian) runs with TCP_NODELAY=1 in its environment. Every variant retrieves the same
studies; each runs in its own process, so its peak RSS is its own. The baseline is dcmtk
``getscu`` run once per study with ``TCP_NODELAY=1`` (Debian's dcmtk leaves Nagle on without
it). Each variant runs ``--repeat`` times (default 2) and keeps its fastest run, since the
machine is shared. Prints a table: MB/s, ratio to the baseline (by time: every variant moves the
same instances, though a PACS transcoding for getscu sends more bytes), peak RSS (README.md).

``--syntax jpeg-ls`` / ``rle`` stores the same studies compressed (dcmtk's ``dcmcjpls`` /
``dcmcrle``, lossless, on CT-like pixels that compress about 2x): what a PACS holds. getscu
proposes uncompressed storage only, so Orthanc decompresses for it; movescu into
``storescp +xa`` and ours receive them as stored.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from connectors.testbed.orthanc import Orthanc, free_port  # noqa: E402

GETSCU = "/usr/bin/getscu"  # dcmtk's; .venv/bin/getscu is pynetdicom's app of the same name
MOVE_AET = "BENCHMOVE"


#: ``--syntax``: dcmtk's lossless compressor for the stored set (None: as written)
COMPRESSORS = {"uncompressed": None, "jpeg-ls": "/usr/bin/dcmcjpls", "rle": "/usr/bin/dcmcrle"}


def ct_like_pixels(rng: random.Random, size: int) -> bytes:
    """``size``² 16-bit pixels, smooth with a little noise, so lossless codecs get about 2x."""
    row = [(x * 3000) // size for x in range(size)]
    out = bytearray()
    for y in range(size):
        noise = rng.randbytes(size)
        out += b"".join(
            (v + y * 4 + (noise[x] & 0x1F)).to_bytes(2, "little") for x, v in enumerate(row)
        )
    return bytes(out)


def compress(folder: Path, syntax: str) -> None:
    """Each file of ``folder`` in ``syntax`` (dcmtk's compressor, in place, 2 at a time)."""
    tool = COMPRESSORS[syntax]
    if tool is None:
        return

    def one(f: Path) -> None:
        out = f.with_suffix(".c.dcm")
        subprocess.run([tool, str(f), str(out)], check=True, capture_output=True)
        out.replace(f)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one, sorted(folder.glob("*.dcm"))))


def write_ct_study(
    folder: Path, n: int, size: int = 256, seed: int = 0, smooth: bool = False
) -> str:
    """One CT study of ``n`` slices (``size``² 16-bit; random pixels, or CT-like ones that a
    lossless codec compresses, with ``smooth``); returns its UID."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    study = generate_uid()
    series = generate_uid()
    for i in range(n):
        ds = Dataset()
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.PatientID = f"P{seed:05d}"
        ds.PatientName = "Bench^Patient"
        ds.AccessionNumber = f"A{seed:07d}"
        ds.StudyDate = "20240101"
        ds.Modality = "CT"
        ds.InstanceNumber = i + 1
        ds.Rows = ds.Columns = size
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = ct_like_pixels(rng, size) if smooth else rng.randbytes(size * size * 2)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(folder / f"{i:05d}.dcm", enforce_file_format=True)
    return study


def run_getscu(port: int, uids: list[str], out: Path, nodelay: bool) -> float:
    env = dict(os.environ)
    if nodelay:
        env["TCP_NODELAY"] = "1"
    else:
        env.pop("TCP_NODELAY", None)
    t = time.perf_counter()
    for i, uid in enumerate(uids):
        d = out / f"g{i}"
        d.mkdir(parents=True)
        subprocess.run(
            [
                *(GETSCU, "-aet", "BENCH", "-aec", "ORTHANC", "-S"),
                *("-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={uid}"),
                *("-od", str(d), "127.0.0.1", str(port)),
            ],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    return time.perf_counter() - t


def run_movescu(port: int, uids: list[str], out: Path, receive_port: int, k: int) -> float:
    """dcmtk's C-MOVE, ``k`` at once: one ``storescp --fork`` on the destination's port and
    ``k`` threads each running ``movescu`` for its share of the studies, ``TCP_NODELAY=1``."""
    from concurrent.futures import ThreadPoolExecutor

    env = dict(os.environ, TCP_NODELAY="1")
    out.mkdir(parents=True)
    scp = subprocess.Popen(
        ["/usr/bin/storescp", "--fork", "+B", "+xa", "-aet", MOVE_AET, "-od", str(out),
         str(receive_port)],
        cwd=out, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(0.5)  # listening

        def move(uid: str) -> None:
            subprocess.run(
                [
                    *("/usr/bin/movescu", "-aet", "BENCH", "-aec", "ORTHANC", "-S"),
                    *("-aem", MOVE_AET, "-k", "QueryRetrieveLevel=STUDY"),
                    *("-k", f"StudyInstanceUID={uid}", "127.0.0.1", str(port)),
                ],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

        t = time.perf_counter()
        with ThreadPoolExecutor(k) as pool:
            list(pool.map(move, uids))
        return time.perf_counter() - t
    finally:
        scp.terminate()
        scp.wait()


def worker(spec: dict) -> dict:
    """One variant, in this (child) process: returns seconds and bytes."""
    out = Path(spec["out"])
    if spec["kind"] == "bare":
        return bare_pynetdicom(spec["port"], spec["uids"], out)
    from concurrent.futures import ThreadPoolExecutor

    from connectors.config import settings_from_dict
    from connectors.pacs.retrieve import Retriever
    from connectors.pacs.retrieve.engine import AssociationRetriever

    settings = settings_from_dict(
        {
            "pacs": {
                "port": spec["port"],
                "retrieve": spec["method"],
                "retrieve_backend": spec.get("backend", "pynetdicom"),
                "max_associations": spec["assocs"],
                "move_destination": MOVE_AET,
                "receive_port": spec["receive_port"],
            }
        }
    )
    # the benchmark's only switch: associations in threads of this process
    if spec.get("threads"):
        r: Any = AssociationRetriever(settings)
    else:
        r = Retriever(settings)
    with r, ThreadPoolExecutor(spec["assocs"]) as pool:
        t = time.perf_counter()  # worker processes started, associations not yet open
        jobs = [
            pool.submit(r.retrieve, uid, out / f"s{i}", spec.get("expected"))
            for i, uid in enumerate(spec["uids"])
        ]
        total = sum(j.result().bytes for j in jobs)
        seconds = time.perf_counter() - t
    return {"seconds": seconds, "bytes": total}


def bare_pynetdicom(port: int, uids: list[str], out: Path) -> dict:
    """A plain pynetdicom C-GET loop on one association, TCP_NODELAY set, defaults otherwise."""
    import socket

    from pydicom.dataset import Dataset
    from pynetdicom import AE, build_role, evt
    from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelGet

    state = {"bytes": 0, "n": 0}

    def nodelay(event: evt.Event) -> None:
        event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def store(event: evt.Event) -> int:
        data = event.encoded_dataset()
        state["n"] += 1
        (out / f"{state['n']}.dcm").write_bytes(data)
        state["bytes"] += len(data)
        return 0

    out.mkdir(parents=True, exist_ok=True)
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    t = time.perf_counter()
    assoc = ae.associate(
        "127.0.0.1",
        port,
        ae_title="ORTHANC",
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_CONN_OPEN, nodelay), (evt.EVT_C_STORE, store)],
    )
    for uid in uids:
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = uid
        for _status, _ in assoc.send_c_get(ds, StudyRootQueryRetrieveInformationModelGet):
            pass
    assoc.release()
    return {"seconds": time.perf_counter() - t, "bytes": state["bytes"]}


def child_rss_wrapper(spec: dict, tree: Path = ROOT) -> dict:
    """Popen + wait4 so the peak RSS is this child's alone; ``tree``: whose code runs it."""
    script = tree / "benchmarks" / "load" / "retrieve.py"
    proc = subprocess.Popen(
        [sys.executable, str(script), "--worker", json.dumps(spec)],
        stdout=subprocess.PIPE,
        cwd=tree,
    )
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {spec['name']} failed with exit code {proc.returncode}")
    result = json.loads(stdout.decode().strip().splitlines()[-1])
    result["rss_mb"] = usage.ru_maxrss / 1024
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--studies", type=int, default=30)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--nagle-studies", type=int, default=3, help="getscu with Nagle on is slow")
    ap.add_argument("--repeat", type=int, default=2, help="best of N runs per variant")
    ap.add_argument("--big-mb", type=int, default=0, help="also retrieve one study this big")
    ap.add_argument(
        "--compare-with",
        help="a checkout of another commit: its Retriever runs the same variants "
        "in the same run (rows named [folder]), to measure a change against what it changes",
    )
    ap.add_argument("--only", default="", help="run only the variants whose name holds this")
    ap.add_argument(
        "--syntax", choices=sorted(COMPRESSORS), default="uncompressed",
        help="how Orthanc stores the studies (lossless compression by dcmtk's tools)",
    )  # fmt: skip
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    tmp = Path(tempfile.mkdtemp(prefix="bench-retrieve-"))
    try:
        bench(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench(args: argparse.Namespace, tmp: Path) -> None:
    receive_port = free_port()
    orthanc = Orthanc(
        tmp / "orthanc",
        tcp_nodelay=True,
        modalities={MOVE_AET: (MOVE_AET, "127.0.0.1", receive_port)},
    )
    orthanc.start()
    try:
        print(
            f"seeding Orthanc: {args.studies} CT studies x {args.images} images, {args.syntax}",
            file=sys.stderr,
        )
        uids, stored = [], 0
        for k in range(args.studies):
            src = tmp / "src" / str(k)
            smooth = args.syntax != "uncompressed"
            uids.append(write_ct_study(src, args.images, seed=k, smooth=smooth))
            compress(src, args.syntax)
            stored += sum(f.stat().st_size for f in src.iterdir())
            orthanc.upload(sorted(src.iterdir()))
            shutil.rmtree(src)
        rows = run_variants(args, tmp, orthanc.dicom_port, uids, receive_port)
        if args.big_mb:
            rows.append(big_study(args, tmp, orthanc, receive_port))
    finally:
        orthanc.stop()
    print(f"stored: {stored / 1e6:.0f} MB ({args.syntax})", file=sys.stderr)
    print_table(rows)


VARIANTS: list[tuple[str, dict]] = [
    ("bare pynetdicom C-GET, 1 assoc, TCP_NODELAY", {"kind": "bare"}),
    ("ours C-GET, 1 association", {"method": "c-get", "assocs": 1}),
    ("ours C-GET, 2 associations in threads", {"method": "c-get", "assocs": 2, "threads": True}),
    ("ours C-GET, 2 associations in processes (default)", {"method": "c-get", "assocs": 2}),
    ("ours C-MOVE, 1 association", {"method": "c-move", "assocs": 1}),
    ("ours C-MOVE, 2 associations in threads", {"method": "c-move", "assocs": 2, "threads": True}),
    ("ours C-MOVE, 2 associations in processes (default)", {"method": "c-move", "assocs": 2}),
    ("ours dcmtk C-GET, 1 association", {"method": "c-get", "assocs": 1, "backend": "dcmtk"}),
    ("ours dcmtk C-GET, 2 associations", {"method": "c-get", "assocs": 2, "backend": "dcmtk"}),
    ("ours dcmtk C-MOVE, 1 association", {"method": "c-move", "assocs": 1, "backend": "dcmtk"}),
    ("ours dcmtk C-MOVE, 2 associations", {"method": "c-move", "assocs": 2, "backend": "dcmtk"}),
]
BASELINE = "getscu per study, TCP_NODELAY=1"
#: C-MOVE's baseline at the same number of moves at once, and the rows measured against it
MOVE_BASELINE = "movescu into storescp, {k} at once, TCP_NODELAY=1"


def run_variants(
    args: argparse.Namespace, tmp: Path, port: int, uids: list[str], receive_port: int
) -> list[dict]:
    """``--repeat`` rounds, each running every variant once (so a busy moment on the shared
    machine hits all variants alike); each variant keeps its fastest round."""
    best: dict[str, dict] = {}

    def keep(name: str, r: dict) -> None:
        old = best.get(name)
        if old is None or r["seconds"] < old["seconds"]:
            r["rss_mb"] = max(r.get("rss_mb") or 0, (old or {}).get("rss_mb") or 0) or None
            best[name] = {"name": name, **r}
        print(f"  {name}: {r['bytes'] / 1e6 / r['seconds']:.1f} MB/s", file=sys.stderr)

    d = tmp / "out"

    def fresh() -> None:
        """An empty output folder, and the disk idle: the previous variant's 400 MB of dirty
        pages are written back now (os.sync), not during the next variant's clock."""
        shutil.rmtree(d, ignore_errors=True)
        os.sync()

    d_size = lambda: sum(p.stat().st_size for p in d.rglob("*") if p.is_file())  # noqa: E731
    for k in range(args.repeat):
        print(f"round {k + 1} of {args.repeat}", file=sys.stderr)
        todo = [(BASELINE, True, uids)]
        if k == 0 and args.nagle_studies:
            todo.append(("getscu per study, Nagle on", False, uids[: args.nagle_studies]))
        for name, nodelay, subset in todo:
            fresh()
            secs = run_getscu(port, subset, d, nodelay)
            keep(name, {"seconds": secs, "bytes": d_size(), "rss_mb": None})
        for n_moves in (1, 2):
            fresh()
            secs = run_movescu(port, uids, d, receive_port, n_moves)
            keep(
                MOVE_BASELINE.format(k=n_moves),
                {"seconds": secs, "bytes": d_size(), "rss_mb": None},
            )
        for name, extra in VARIANTS:
            if args.only and args.only not in name:
                continue
            fresh()
            spec = {"kind": "ours", "name": name, "port": port, "uids": uids, "out": str(d)}
            spec.update(receive_port=receive_port, **extra)
            keep(name, child_rss_wrapper(spec))
            if args.compare_with and name.startswith("ours"):
                base = Path(args.compare_with)
                fresh()
                keep(f"{name} [{base.name}]", child_rss_wrapper(spec, base))
    shutil.rmtree(d, ignore_errors=True)
    order = [BASELINE, "getscu per study, Nagle on", *(MOVE_BASELINE.format(k=k) for k in (1, 2))]
    for n, _ in VARIANTS:
        order += [n, *(f"{n} [{Path(args.compare_with).name}]" for _ in [1] if args.compare_with)]
    return [best[n] for n in order if n in best]


def big_study(args: argparse.Namespace, tmp: Path, orthanc: Orthanc, receive_port: int) -> dict:
    """One study of ``--big-mb`` MB (512x512 CT slices, 0.5 MB each): peak RSS of ours."""
    n = max(1, args.big_mb * 1_000_000 // (512 * 512 * 2))
    print(f"seeding one {args.big_mb} MB study ({n} images)", file=sys.stderr)
    src = tmp / "big"
    uid = write_ct_study(src, n, size=512, seed=10_000)
    orthanc.upload(sorted(src.iterdir()))
    shutil.rmtree(src)
    name = f"ours C-GET, one {args.big_mb} MB study (peak RSS)"
    spec = {
        "kind": "ours",
        "name": name,
        "port": orthanc.dicom_port,
        "uids": [uid],
        "out": str(tmp / "out" / "big"),
        "method": "c-get",
        "assocs": 1,
        "receive_port": receive_port,
        "expected": n,
    }
    r = child_rss_wrapper(spec)
    shutil.rmtree(tmp / "out", ignore_errors=True)
    print(f"  {name}: {r['rss_mb']:.0f} MB peak RSS", file=sys.stderr)
    return {"name": name, **r}


def print_table(rows: list[dict]) -> None:
    base = next(r for r in rows if r["name"] == BASELINE)["seconds"]
    moves = {
        k: r["seconds"] for k in (1, 2) for r in rows if r["name"] == MOVE_BASELINE.format(k=k)
    }
    print(
        f"| {'variant':<52} | {'MB':>6} | {'s':>6} | {'MB/s':>6} | {'x getscu':>8} | "
        f"{'x movescu':>9} | RSS MB |"
    )
    print(f"|{'-' * 54}|{'-' * 8}|{'-' * 8}|{'-' * 8}|{'-' * 10}|{'-' * 11}|--------|")
    for r in rows:
        rate = r["bytes"] / r["seconds"]
        rss = f"{r['rss_mb']:.0f}" if r.get("rss_mb") else "-"
        k = 2 if "2 assoc" in r["name"] else 1
        vs = moves[k] / r["seconds"] if "C-MOVE" in r["name"] and k in moves else None
        vs_move = f"{vs:9.2f}" if vs is not None else " " * 9
        print(
            f"| {r['name']:<52} | {r['bytes'] / 1e6:6.0f} | {r['seconds']:6.2f} | "
            f"{rate / 1e6:6.1f} | {base / r['seconds']:8.2f} | {vs_move} | {rss:>6} |"
        )


if __name__ == "__main__":
    main()
