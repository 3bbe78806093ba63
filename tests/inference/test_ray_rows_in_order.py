"""The Ray path's writer takes Ray's blocks only when they continue the run exactly (issue 18):
a block delivered twice, one out of order or one missing fails the run and leaves no file,
rather than a file with a film twice or a film silently missing."""

from __future__ import annotations

import pytest

from pneumo.errors import PneumoError
from pneumo.inference.ray_predict import InOrder
from pneumo.inference.rows import COLUMNS, RowWriter, read_rows

pa = pytest.importorskip("pyarrow")


def _block(indices: list[int]):
    rows = [
        {"index": i, **dict.fromkeys(COLUMNS), "path": f"film{i}.jpeg", "class": "NORMAL"}
        for i in indices
    ]
    return pa.Table.from_pylist(rows)


def test_blocks_in_order_are_written_once_each(tmp_path):
    out = tmp_path / "rows.csv"
    with RowWriter(out) as writer:
        rows = InOrder(writer)
        for block in ([0, 1], [2, 3], [4]):
            rows.add(_block(block))
    assert [r["path"] for r in read_rows(out)] == [f"film{i}.jpeg" for i in range(5)]
    assert (rows.total, rows.errors) == (5, 0)


@pytest.mark.parametrize(
    "blocks",
    [
        ([0, 1], [0, 1]),  # the same block twice (a retried task delivered again)
        ([0, 1], [2, 3], [2, 3]),
        ([0, 1], [1, 2]),  # overlapping
        ([2, 3], [0, 1]),  # out of order
        ([0, 1], [3, 2]),  # out of order inside a block
        ([0, 1], [3, 4]),  # a missing block
    ],
)
@pytest.mark.parametrize("suffix", [".csv", ".json", ".parquet"])
def test_a_duplicated_or_out_of_order_block_fails_the_run_and_writes_nothing(
    tmp_path, blocks, suffix
):
    out = tmp_path / f"rows{suffix}"
    with (
        pytest.raises(PneumoError, match="out of order, twice or with a gap"),
        RowWriter(out) as writer,
    ):
        rows = InOrder(writer)
        for block in blocks:
            rows.add(_block(block))
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary copy
