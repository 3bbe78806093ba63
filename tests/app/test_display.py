"""How names and scores are put into words on the page (issue 18)."""

from __future__ import annotations

from pneumo.app.display import HEADING_NAME_LIMIT, describe_ood_score, short_name


def test_long_file_names_are_cut_in_the_middle_keeping_the_extension():
    name = "patient_" + "x" * 150 + "_chest_pa_2024-03-01.jpeg"
    short = short_name(name)
    assert len(short) == HEADING_NAME_LIMIT
    assert short.startswith("patient_xxx") and short.endswith("\u2026.jpeg")
    assert short_name("film 01.png") == "film 01.png"


def test_the_distance_score_is_explained_against_the_models_cutoff():
    far = describe_ood_score(0.66, 0.35)
    assert "0.66" in far and "at most 0.35" in far and "learnt from" in far
    near = describe_ood_score(0.30, 0.35)
    assert "within the range of real chest X-rays (up to 0.35)" in near
    assert describe_ood_score(None, 0.35) == ""
    assert "the higher, the less alike" in describe_ood_score(0.5, None)
