"""A PACS that is down when results are ready: they wait on disk, ``pneumo dicom-node
--status`` and the log say so, and they are delivered, all of them, once it is back."""

from __future__ import annotations

import io
import subprocess
import sys
import time

import pydicom
import pytest
from orthanc_server import free_port, running_orthanc

pytest.importorskip("pynetdicom", reason="pip install 'pneumo[dicom-node]'")
pytest.importorskip("highdicom", reason="pip install 'pneumo[dicom-node]'")

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def c_store(port: int, datasets: list[pydicom.Dataset]) -> list[int]:
    """Send ``datasets`` to the node as a modality would; the C-STORE status of each."""
    from pynetdicom import AE

    ae = AE(ae_title="MODALITY")
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="PNEUMO")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def status(spool) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pneumo", "dicom-node", "--status", "--spool", str(spool)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_results_wait_while_the_pacs_is_down_and_all_arrive_when_it_is_back(
    orthanc_binary, engine, objects, tmp_path, captured_logs
):
    from pneumo.dicom_node.config import Destination, NodeConfig
    from pneumo.dicom_node.node import DicomNode

    predictor, cam = engine
    pacs_port, node_port = free_port(), free_port()
    config = NodeConfig(
        port=node_port,
        destination=Destination("ORTHANC", "127.0.0.1", pacs_port),
        spool_dir=tmp_path / "spool",
        db=str(tmp_path / "records.db"),
        retry_first_s=0.5,
        retry_max_s=1.0,
    )
    films = [pydicom.dcmread(io.BytesIO(objects[n])) for n in ("mono1", "jpegls")]
    with DicomNode(config, predictor=predictor, cam=cam) as node:
        assert c_store(node_port, films) == [0, 0]
        outbox = config.spool_dir / "outbox"
        deadline = time.monotonic() + 60
        while (len(list(outbox.glob("*.dcm"))) < 4 or node.outbox.state.failures < 2) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.2)
        report = status(config.spool_dir)
        assert "results waiting to be sent: 4 (to ORTHANC@127.0.0.1" in report
        assert "destination failing" in report
        assert any("4 results kept in the outbox" in line for line in captured_logs.lines)

        modalities = {"pneumo": ["PNEUMO", "127.0.0.1", node_port]}
        pacs_back = running_orthanc(orthanc_binary, modalities, dicom_port=pacs_port)
        with pacs_back as pacs, pacs.rest() as rest:
            deadline = time.monotonic() + 60
            while len(rest.get("/instances").json()) < 4 and time.monotonic() < deadline:
                time.sleep(0.3)
            held = [
                rest.get(f"/instances/{i}/simplified-tags").json()
                for i in rest.get("/instances").json()
            ]
    assert sorted(h["Modality"] for h in held) == ["OT", "OT", "SR", "SR"]
    assert {h["StudyInstanceUID"] for h in held} == {str(f.StudyInstanceUID) for f in films}
    assert not list(outbox.glob("*.dcm"))
    assert "results waiting to be sent: 0" in status(config.spool_dir)


def test_a_full_queue_asks_the_sender_to_retry_and_every_film_still_gets_its_result(
    engine, objects, tmp_path
):
    """A burst beyond the queue is answered "out of resources" (A700), not held in memory;
    what was refused and sent again is classified like the rest."""
    from pneumo.dicom_node.config import NodeConfig
    from pneumo.dicom_node.node import DicomNode

    predictor, cam = engine
    port = free_port()
    config = NodeConfig(
        port=port, spool_dir=tmp_path / "spool", db=str(tmp_path / "r.db"), queue_size=1
    )
    base = pydicom.dcmread(io.BytesIO(objects["mono1"]))
    burst = []
    for _ in range(6):
        ds = pydicom.dcmread(io.BytesIO(objects["mono1"]))
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        burst.append(ds)
    assert base.SOPInstanceUID not in {ds.SOPInstanceUID for ds in burst}
    with DicomNode(config, predictor=predictor, cam=cam) as node:
        first = c_store(port, burst)
        assert 0xA700 in first and 0 in first
        pending = [ds for ds, code in zip(burst, first, strict=True) if code != 0]
        deadline = time.monotonic() + 90
        while pending and time.monotonic() < deadline:
            time.sleep(0.5)
            codes = c_store(port, pending)
            pending = [ds for ds, code in zip(pending, codes, strict=True) if code != 0]
        assert not pending
        while node.classified < len(burst) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert node.classified == len(burst)
    srs = [p for p in (config.spool_dir / "outbox").glob("*.dcm")]
    assert len(srs) == 2 * len(burst)  # no destination: SR and overlay of each wait on disk
