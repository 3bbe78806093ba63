"""Issue 21's figures: films per second through `pneumo dicom-node` end to end (Orthanc sends by
C-STORE, the node classifies, the SR and the overlay arrive back in Orthanc) against `pneumo
predict` on the same DICOM files, in the same run; and the latency from one film sent to its
results stored in Orthanc (films sent one at a time, p50/p95).

    python benchmarks/dicom_node.py [--films 40] [--latency-films 15]

Needs Debian's orthanc and the dicom-node extra. Films: the originals (PNEUMO_ORIGINALS) made into 512-px CR objects as the tests make them
(tests/dicom_node/films.py)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "dicom_node"), str(ROOT / "tests")]
ORIGINALS = Path(os.environ.get("PNEUMO_ORIGINALS", ROOT.parent / "shared/data/originals"))

from films import dataset, encoded, grey_film  # noqa: E402
from orthanc_server import find_orthanc, free_port, running_orthanc  # noqa: E402
from pydicom import uid  # noqa: E402

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"


def make_films(n: int) -> list[bytes]:
    """``n`` CR objects from the originals, cycling through them (each a new study)."""
    pixels = [grey_film(p) for p in sorted(ORIGINALS.rglob("*.jpeg"))[:n]]
    return [
        encoded(dataset(pixels[i % len(pixels)], study=uid.generate_uid(), ViewPosition="PA"))
        for i in range(n)
    ]


def srs_held(rest) -> int:
    found = rest.post("/tools/find", json={"Level": "Instance", "Query": {"SOPClassUID": SR_CLASS}})
    return len(found.json())


def wait_srs(rest, count: int, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while srs_held(rest) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {srs_held(rest)} of {count} results arrived")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--films", type=int, default=40)
    parser.add_argument("--latency-films", type=int, default=15)
    args = parser.parse_args()
    binary = find_orthanc()
    if binary is None:
        sys.exit("Orthanc not installed: apt-get install orthanc")
    from pneumo.dicom_node.config import Destination, NodeConfig
    from pneumo.dicom_node.node import DicomNode
    from pneumo.inference.engine import load_predictor
    from pneumo.storage.db import open_database

    films = make_films(args.films + args.latency_films)
    batch, single = films[: args.films], films[args.films :]
    work = Path(tempfile.mkdtemp(prefix="pneumo-node-bench-"))
    folder = work / "films"
    folder.mkdir()
    for i, data in enumerate(batch):
        (folder / f"{i:03d}.dcm").write_bytes(data)

    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pneumo", "predict", str(folder), "-o", str(work / "p.csv"),
         "--no-progress"],
        check=True, capture_output=True,
    )  # fmt: skip
    predict_s = time.perf_counter() - started

    predictor = load_predictor()
    node_port = free_port()
    modalities = {"pneumo": ["PNEUMO", "127.0.0.1", node_port]}
    with running_orthanc(binary, modalities) as pacs, pacs.rest() as rest:
        config = NodeConfig(
            port=node_port,
            allowed_callers=("ORTHANC",),
            destination=Destination("ORTHANC", "127.0.0.1", pacs.dicom_port),
            spool_dir=work / "spool",
            db=str(work / "records.db"),
        )
        with DicomNode(config, predictor=predictor, cam=predictor,
                       session_factory=open_database(config.db)):  # fmt: skip
            latencies = []
            for data in single:  # one at a time: C-STORE sent -> SR held by Orthanc
                orthanc_id = rest.post("/instances", content=data).json()["ID"]
                before = srs_held(rest)
                t0 = time.perf_counter()
                rest.post("/modalities/pneumo/store", json={"Resources": [orthanc_id]})
                wait_srs(rest, before + 1)
                latencies.append(time.perf_counter() - t0)
            ids = [rest.post("/instances", content=d).json()["ID"] for d in batch]
            before = srs_held(rest)
            t0 = time.perf_counter()
            rest.post("/modalities/pneumo/store",
                      json={"Resources": ids, "Asynchronous": True})  # fmt: skip
            wait_srs(rest, before + len(batch))
            node_s = time.perf_counter() - t0
    ms = np.array(latencies) * 1000
    print(f"{len(batch)} 512-px films as DICOM CR, one run, load average {os.getloadavg()[0]:.1f}")
    print("| path | seconds | films/s |")
    print("|---|---|---|")
    print(f"| `pneumo predict` on the files (start-up included) | {predict_s:.1f} | "
          f"{len(batch) / predict_s:.1f} |")  # fmt: skip
    print(f"| dicom-node: Orthanc C-STORE -> classify -> SR + overlay back in Orthanc | "
          f"{node_s:.1f} | {len(batch) / node_s:.1f} |")  # fmt: skip
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process (Orthanc apart; node, model, films in memory): {rss:.0f} MiB")
    print(f"latency, one film at a time ({len(single)} films): p50 {np.percentile(ms, 50):.0f} ms, "
          f"p95 {np.percentile(ms, 95):.0f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
