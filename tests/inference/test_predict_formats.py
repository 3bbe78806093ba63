"""One set of output formats for `pneumo predict` with and without --ray (issue 19): the local
path writes Parquet too, with the rows of its CSV and JSON (the Ray path is compared with the
local one for each format in test_ray_predict.py)."""

from __future__ import annotations

import pytest

from pneumo.cli import main
from pneumo.inference.predict import predict_files
from pneumo.inference.rows import read_rows

pq = pytest.importorskip("pyarrow.parquet")


def test_local_parquet_has_the_rows_of_csv_and_json(tiny_model, xray_files, tmp_path):
    inputs = [*map(str, xray_files), str(tmp_path / "missing.jpeg")]
    for suffix in (".csv", ".json", ".parquet"):
        predict_files(inputs, model=tiny_model, output=tmp_path / f"rows{suffix}", progress=False)
    table = pq.read_table(tmp_path / "rows.parquet")
    assert table.column_names == list(read_rows(tmp_path / "rows.csv")[0])
    parquet = table.to_pylist()
    assert parquet == read_rows(tmp_path / "rows.json")  # same values, same types
    assert len(parquet) == len(inputs) and parquet[-1]["error"] and parquet[0]["class"]
    assert str(table.schema.field("probability").type) == "double"


def test_cli_writes_parquet_without_ray(tiny_model, xray_files, tmp_path, capsys):
    out = tmp_path / "rows.parquet"
    code = main(["predict", *map(str, xray_files), "--model", str(tiny_model), "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    assert [r["path"] for r in read_rows(out)] == list(map(str, xray_files))


def test_an_unknown_format_is_refused_with_the_ones_there_are(tiny_model, xray_files, tmp_path):
    with pytest.raises(Exception, match=r"output must end in \.csv, \.json, \.parquet"):
        predict_files(xray_files, model=tiny_model, output=tmp_path / "rows.xlsx")
    assert not list(tmp_path.glob("rows.xlsx*"))
