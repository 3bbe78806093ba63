"""Associations that drop mid-transfer: a sender that aborts (A-ABORT) or whose connection dies
halfway through a film's data set. The node keeps running, says so in its log without the
patient's name, keeps nothing of the half-sent film (no spool file, no record), and the same
film sent again in full is classified and its results arrive in Orthanc."""

from __future__ import annotations

import io
import time

import pydicom
import pytest
from films import PATIENT_NAME
from orthanc_server import free_port, running_orthanc
from test_destination_down import c_store

pytest.importorskip("pynetdicom", reason="pip install 'pneumo[dicom-node]'")
pytest.importorskip("highdicom", reason="pip install 'pneumo[dicom-node]'")

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

FRAGMENT = 16_384
"""Bytes of one P-DATA PDU the test sends: a 512-pixel film's data set takes dozens."""


def store_pdus(assoc, ds: pydicom.Dataset) -> list[bytes]:
    """The encoded P-DATA-TF PDUs of one C-STORE request of ``ds`` on ``assoc``, as a sender
    puts them on the wire: the command set, then the data set in fragments."""
    from pynetdicom.dimse_messages import C_STORE_RQ
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.dsutils import encode
    from pynetdicom.pdu import P_DATA_TF

    (context,) = [c for c in assoc.accepted_contexts if c.abstract_syntax == ds.SOPClassUID]
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = ds.SOPClassUID
    request.AffectedSOPInstanceUID = ds.SOPInstanceUID
    request.Priority = 2
    request.DataSet = io.BytesIO(encode(ds, False, True))  # explicit VR little endian
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    pdus = []
    for primitive in message.encode_msg(context.context_id, FRAGMENT):
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        pdus.append(pdu.encode())
    return pdus


def send_half_a_film(port: int, ds: pydicom.Dataset, ending: str) -> None:
    """Open an association, send the command and about half of the film's data set, then end
    it by ``ending``: "abort" (an A-ABORT after the last whole PDU, as a sender that gives up
    sends it) or "drop" (the socket closed in the middle of a PDU, as when the sender crashes
    or the network goes)."""
    from pynetdicom import AE

    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="PNEUMO")
    assert assoc.is_established
    pdus = store_pdus(assoc, ds)
    assert len(pdus) > 10  # the film really spans many PDUs
    wire = assoc.dul.socket.socket
    for pdu in pdus[: len(pdus) // 2]:
        wire.sendall(pdu)
    if ending == "abort":
        time.sleep(0.5)  # the node has read what was sent
        assoc.abort()
    else:
        wire.sendall(pdus[len(pdus) // 2][: FRAGMENT // 2])  # and half a PDU
        time.sleep(0.5)
        import socket

        wire.shutdown(socket.SHUT_RDWR)
        wire.close()
        assoc.kill()
    assert not assoc.is_established


def echo(port: int) -> int:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="PNEUMO")
    assert assoc.is_established, "the node no longer accepts associations"
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


@pytest.mark.parametrize("ending", ["abort", "drop"])
def test_a_film_cut_off_mid_transfer_leaves_nothing_and_the_node_serves_the_next(
    orthanc_binary, engine, objects, tmp_path, captured_logs, ending
):
    from sqlalchemy import func, select

    from pneumo.dicom_node.config import Destination, NodeConfig
    from pneumo.dicom_node.node import DicomNode
    from pneumo.storage.db import open_database
    from pneumo.storage.tables import Record

    predictor, cam = engine
    node_port = free_port()
    film = pydicom.dcmread(io.BytesIO(objects["mono1"]))
    film.SOPInstanceUID = film.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    sessions = open_database(tmp_path / "records.db")
    modalities = {"pneumo": ["PNEUMO", "127.0.0.1", node_port]}  # Orthanc takes its results
    with running_orthanc(orthanc_binary, modalities) as pacs, pacs.rest() as rest:
        config = NodeConfig(
            port=node_port,
            destination=Destination("ORTHANC", "127.0.0.1", pacs.dicom_port),
            spool_dir=tmp_path / "spool",
            db=str(tmp_path / "records.db"),
        )
        with DicomNode(config, predictor=predictor, cam=cam, session_factory=sessions) as node:
            first_line = len(captured_logs.lines)
            send_half_a_film(node_port, film, ending)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any(
                "association from MODALITY" in line for line in captured_logs.lines[first_line:]
            ):
                time.sleep(0.2)
            ours = [
                line
                for line in captured_logs.lines[first_line:]
                if line.split()[1].startswith("pneumo")
            ]
            how = "(A-ABORT)" if ending == "abort" else "(the connection dropped)"
            assert any(
                "association from MODALITY" in line and how in line and "nothing" in line
                for line in ours
            ), ours
            assert echo(node_port) == 0  # still listening
            # no film, no partial file (.part-*), no result
            assert not [*node.spool.inbox.iterdir(), *node.spool.outbox.iterdir()]
            with sessions() as s:
                assert s.scalar(select(func.count()).select_from(Record)) == 0
            assert node.classified == 0

            # the same instance again, in full: not taken for a duplicate of the cut one
            assert c_store(node_port, [film]) == [0]
            deadline = time.monotonic() + 90
            while len(rest.get("/instances").json()) < 2 and time.monotonic() < deadline:
                time.sleep(0.3)
            held = [
                rest.get(f"/instances/{i}/simplified-tags").json()
                for i in rest.get("/instances").json()
            ]
    assert sorted(h["Modality"] for h in held) == ["OT", "SR"]
    assert {h["StudyInstanceUID"] for h in held} == {str(film.StudyInstanceUID)}
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Record)) == 1
    text = "\n".join(captured_logs.lines[first_line:])
    for part in PATIENT_NAME.split("^"):
        assert part not in text
