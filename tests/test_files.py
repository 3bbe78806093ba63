"""Atomic writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import stat

import pytest

from pneumo.files import atomic_path, write_atomic


def test_write_atomic_replaces_the_file_and_leaves_nothing_beside_it(tmp_path):
    target = tmp_path / "sub" / "model.json"
    write_atomic(target, "old\n")
    write_atomic(target, b"new\n")
    assert target.read_bytes() == b"new\n"
    assert [p.name for p in target.parent.iterdir()] == ["model.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary_one(tmp_path):
    target = tmp_path / "films.json"
    target.write_text("complete")
    with pytest.raises(RuntimeError, match="disk on fire"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk on fire")
    assert target.read_text() == "complete"
    assert [p.name for p in tmp_path.iterdir()] == ["films.json"]


def test_patient_data_stays_private_and_other_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        private = write_atomic(tmp_path / "film.dcm", b"x", durable=True, mode=0o600)
        shared = write_atomic(tmp_path / "model.onnx", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(shared.stat().st_mode) == 0o644  # readable by the server's user


def test_the_prefix_names_temporary_files_for_a_sweep(tmp_path):
    with atomic_path(tmp_path / "a.dcm", prefix=".part-") as tmp:
        assert tmp.name.startswith(".part-") and tmp.parent == tmp_path
        tmp.write_bytes(b"film")
    assert (tmp_path / "a.dcm").read_bytes() == b"film"
