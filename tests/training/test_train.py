"""Training runs end to end on generated data with tiny backbones."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from pneumo.errors import PneumoError
from pneumo.models.checkpoint import load_model, read_metadata
from pneumo.models.registry import create_model
from pneumo.training.train import train


@pytest.fixture(autouse=True)
def _feature_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PNEUMO_CACHE", str(tmp_path / "cache"))


def _check_run(run_dir, epochs):
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, epochs + 1))
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_roc_auc"):
        assert key in history[0]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["resolved_precision"] in ("fp32", "bf16")
    meta = read_metadata(run_dir / "model")
    assert 0 < meta.threshold < 1 and meta.temperature > 0
    assert meta.data_fingerprint.startswith("sha256:")
    assert meta.ood.cutoff > 0
    model, meta, extra = load_model(run_dir / "model")
    assert any(k.startswith("ood.") for k in extra)
    return history, meta


def test_frozen_training_writes_a_complete_run(tiny_data, tiny_config, tmp_path):
    cfg = tiny_config(tiny_data, tmp_path / "run", mode="frozen", epochs=3)
    run = train(cfg)
    run_dir = run.run_dir
    history, meta = _check_run(run_dir, 3)
    # What train() hands back is what it wrote.
    assert run.history == history
    assert (run.selection.threshold, run.selection.temperature) == (
        meta.threshold,
        meta.temperature,
    )
    assert run.best_epoch == min(history, key=lambda h: h["val_loss"])["epoch"]
    assert (run_dir / "report" / "validation.json").is_file()
    # The second run reads every feature from the cache.
    cache = list((tmp_path / "cache" / "features").glob("*.safetensors"))
    assert len(cache) == 1
    before = cache[0].stat().st_mtime_ns
    train(tiny_config(tiny_data, tmp_path / "run2", mode="frozen", epochs=1))
    assert cache[0].stat().st_mtime_ns == before


@pytest.mark.parametrize(
    "extra", [{}, {"class_balance": "sampler", "workers": 2}], ids=["loss", "sampler-workers"]
)
def test_finetune_resumes_after_an_interruption(
    tiny_data, tiny_config, tmp_path, monkeypatch, extra
):
    from safetensors.torch import load_file

    cfg = tiny_config(tiny_data, tmp_path / "run", mode="finetune", epochs=2, **extra)
    import pneumo.training.finetune as ft

    real = ft.predict_loader
    calls = {"n": 0}

    def crash_in_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ft, "predict_loader", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    last = json.loads((tmp_path / "run" / "checkpoints" / "last.json").read_text())
    assert last["epoch"] == 1
    monkeypatch.setattr(ft, "predict_loader", real)
    steps_in_epoch_1 = int(last["optimizer_scalars"]["0.step"])
    calls = {"steps": 0}
    real_step = torch.optim.AdamW.step

    def counting_step(self, *args, **kwargs):
        calls["steps"] += 1
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", counting_step)
    cfg.resume = True
    history, _ = _check_run(train(cfg).run_dir, 2)
    assert history[0] == last["history"][0]  # epoch 1 was not trained again
    # The resumed process trained one epoch, and the optimizer and schedule carried on from the
    # first: a restart would have stepped twice as often from zero.
    assert calls["steps"] == steps_in_epoch_1
    final = json.loads((tmp_path / "run" / "checkpoints" / "last.json").read_text())
    assert int(final["optimizer_scalars"]["0.step"]) == 2 * steps_in_epoch_1
    assert final["scheduler"]["last_epoch"] == 2 * steps_in_epoch_1
    # Film order, augmentation and dropout of epoch 2 came from the seed and the epoch, so the
    # resumed run ends with the very weights of a run that was never interrupted.
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    whole = train(
        tiny_config(tiny_data, tmp_path / "whole", mode="finetune", epochs=2, **extra)
    ).run_dir
    resumed = load_file(str(tmp_path / "run" / "checkpoints" / "last.safetensors"))
    uninterrupted = load_file(str(whole / "checkpoints" / "last.safetensors"))
    assert resumed.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        assert torch.equal(resumed[name], tensor), name


def test_resume_without_a_checkpoint_is_a_clear_error(tiny_data, tiny_config, tmp_path):
    cfg = tiny_config(tiny_data, tmp_path / "run", mode="finetune", resume=True)
    with pytest.raises(PneumoError, match="no checkpoint"):
        train(cfg)


def test_nan_loss_stops_training_with_a_clear_error(tiny_data, tiny_config, tmp_path, monkeypatch):
    monkeypatch.setattr(
        torch.nn.CrossEntropyLoss, "forward", lambda self, x, y: x.sum() * float("nan")
    )
    with pytest.raises(PneumoError, match="diverged"):
        train(tiny_config(tiny_data, tmp_path / "run", mode="finetune", epochs=1))


def test_cli_train_and_unknown_backbone(tiny_data, tmp_path, capsys):
    from pneumo.cli import main

    code = main(
        [
            "train",
            "--backbone",
            "nope",
            "--data",
            str(tiny_data),
            "--no-pretrained",
            "--output",
            str(tmp_path / "x"),
        ]
    )
    assert code == 2
    assert "unknown backbone" in capsys.readouterr().err
    code = main(
        [
            "train",
            "--backbone",
            "test_resnet",
            "--no-pretrained",
            "--mode",
            "frozen",
            "--data",
            str(tiny_data),
            "--output",
            str(tmp_path / "run"),
            "--epochs",
            "2",
            "--workers",
            "0",
            "--precision",
            "fp32",
        ]
    )
    assert code == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["backbone"] == "test_resnet" and config["lr"] == 0.002
    assert config["batch_size"] == 32 and config["patience"] == 3


def test_compare_ranks_backbones_and_retrains_the_winner(tiny_data, tiny_config, tmp_path):
    from pneumo.training.compare import compare

    base = tiny_config(tiny_data, tmp_path / "unused", mode="frozen", epochs=2)
    summary = compare(base, ["test_efficientnet", "test_resnet"], output=tmp_path / "cmp")
    ranked = summary["ranked"]
    assert {r["backbone"] for r in ranked} == {"test_efficientnet", "test_resnet"}
    assert ranked[0]["roc_auc"] >= ranked[1]["roc_auc"]
    assert summary["baseline_always_pneumonia"]["balanced_accuracy"] == 0.5
    report = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "test_resnet" in report and "always PNEUMONIA" in report
    final = read_metadata(tmp_path / "cmp" / "final" / "model")
    winner = read_metadata(tmp_path / "cmp" / ranked[0]["backbone"] / "model")
    assert final.backbone == winner.backbone and final.threshold == winner.threshold


@pytest.mark.slow
@pytest.mark.parametrize("class_balance", ["loss", "sampler"])
def test_distributed_training_with_two_processes(tiny_data, tmp_path, class_balance):
    """torchrun with 2 CPU processes (gloo) trains one model; rank 0 writes the run."""
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "pneumo",
        "train",
        "--backbone",
        "test_efficientnet",
        "--no-pretrained",
        "--mode",
        "finetune",
        "--data",
        str(tiny_data),
        "--output",
        str(out),
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--workers",
        "0",
        "--precision",
        "fp32",
        "--val-fraction",
        "0.25",
        "--class-balance",
        class_balance,
    ]
    env = {
        **__import__("os").environ,
        "PNEUMO_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2
    _check_run(out, 2)
    # Each rank trained on its own half of the films, every epoch, and the two ended with the
    # same weights (gradients were averaged, not each rank training its own model).
    report = json.loads((out / "distributed.json").read_text())
    n_train = config["n_train"]
    assert [e["epoch"] for e in report["epochs"]] == [1, 2]
    for epoch in report["epochs"]:
        assert epoch["films_per_rank"] == [n_train // 2, n_train // 2]
        if class_balance == "loss":
            assert epoch["shared_films"] == 0
            assert epoch["distinct_films"] == 2 * (n_train // 2)
    assert len(report["weights_sha256"]) == 2 and report["identical_weights"]


@pytest.mark.parametrize("head_init", ["probe", "zero"])
def test_finetune_starts_from_a_sound_head(tiny_data, tiny_config, tmp_path, head_init):
    from safetensors.torch import load_file

    cfg = tiny_config(tiny_data, tmp_path / "run", mode="finetune", epochs=1, head_init=head_init)
    run_dir = train(cfg).run_dir
    start = load_file(str(run_dir / "checkpoints" / "start.safetensors"))
    head = start["classifier.weight"]
    info = json.loads((run_dir / "head_init.json").read_text())
    assert info["head_init"] == head_init
    if head_init == "zero":
        assert torch.count_nonzero(head) == 0
    else:
        # The probe fitted the head on the frozen features before fine-tuning began.
        assert info["probe_history"] and torch.count_nonzero(head) > 0
        torch.manual_seed(0)
        random_head = create_model("test_efficientnet", pretrained=False).get_classifier()
        assert not torch.allclose(head, random_head.weight)
    # The EMA is saved with the checkpoint, so --resume continues the same average.
    last = load_file(str(run_dir / "checkpoints" / "last.safetensors"))
    assert any(k.startswith("ema.") for k in last)
    _check_operating_point(cfg, run_dir / "model")


def _check_operating_point(cfg, model_dir):
    """The threshold is the run's stated rule applied to its saved validation predictions:
    the highest one reaching the target sensitivity there, after the fitted shift."""

    from pneumo.evaluation.calibration import calibrated_probabilities, shifted_logits
    from pneumo.training.finalize import read_val_predictions

    meta = read_metadata(model_dir)
    logits, y, prevalence = read_val_predictions(model_dir / "val_predictions.csv")
    assert len(y) == meta.metrics["n"] and 0 < prevalence < 1
    p = calibrated_probabilities(
        shifted_logits(logits, meta.metrics["logit_shift"]), meta.temperature
    )[:, 1]
    assert (p[y == 1] >= meta.threshold).mean() >= cfg.target_sensitivity
    higher = p[y == 1][p[y == 1] > meta.threshold]
    assert higher.size == 0 or (p[y == 1] >= higher.min()).mean() < cfg.target_sensitivity
    assert meta.metrics["sensitivity"] == pytest.approx((p[y == 1] >= meta.threshold).mean())


def test_prevalence_moves_the_threshold_by_bayes_rule(tiny_data, tiny_config, tmp_path):
    cfg = tiny_config(
        tiny_data,
        tmp_path / "run",
        mode="frozen",
        epochs=1,
        threshold_method="bayes",
        prevalence=0.8,
    )
    meta = read_metadata(train(cfg).model_dir)
    assert meta.threshold == pytest.approx(0.2)


def test_variants_table_and_export(tiny_data, tiny_config, tmp_path):
    from pneumo.training.variants import compare_variants, export_variant

    cfg = tiny_config(tiny_data, tmp_path / "run", mode="finetune", epochs=1)
    run_dir = train(cfg).run_dir
    rows = compare_variants(run_dir, alphas=(0.5,))
    names = [r["variant"] for r in rows]
    assert names[:3] == [
        "start (ImageNet backbone + starting head)",
        "last epoch",
        "EMA of weights",
    ]
    assert "WiSE-FT alpha 0.5 (start -> EMA)" in names
    assert all(0 <= r["val_roc_auc"] <= 1 and r["canary_n"] == 8 for r in rows)
    assert "| EMA of weights |" in (run_dir / "variants.md").read_text()
    export_variant(run_dir, "WiSE-FT alpha 0.5 (start -> EMA)", tmp_path / "wise", alphas=(0.5,))
    model, meta, _ = load_model(tmp_path / "wise")
    assert meta.backbone == "test_efficientnet"
    with pytest.raises(KeyError, match="unknown variant"):
        export_variant(run_dir, "nope", tmp_path / "x")


def _served(model_dir):
    """The predictor `pneumo bundle` computes the card's figures with: the shipped graph."""
    from pneumo.inference.engine import load_predictor

    return load_predictor(model_dir, backend="onnx", precision="fp32")


def test_bundle_writes_fp16_weights_and_a_card_computed_from_the_run(
    tiny_data, tiny_config, tmp_path
):
    from pneumo.training.bundle import bundle_model

    cfg = tiny_config(tiny_data, tmp_path / "run", mode="finetune", epochs=1, wise_alpha=0.5)
    run_dir = train(cfg).run_dir
    dest = bundle_model(run_dir, tmp_path / "bundled", predictor_for=_served)
    from safetensors.torch import load_file

    weights = load_file(str(dest / "model.safetensors"))
    floats = [v for k, v in weights.items() if k.startswith("model.") and v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    card = (dest / "MODEL_CARD.md").read_text()
    figures = json.loads((dest / "figures.json").read_text())
    # It ships the graph serving runs (no torch needed) and the guard's validation films; the
    # graph gives torch's probabilities on them.
    from pneumo.inference.engine import load_predictor
    from pneumo.models.films import read_films

    films = read_films(dest)
    assert len(films.validation) == figures["validation"]["n"] and films.calibration
    paths = [r.path for r in films.validation]
    shipped = _served(dest)
    assert shipped.onnx_path == dest / "model.onnx"
    eager = load_predictor(dest, backend="torch").predict_sources(paths)
    for a, b in zip(shipped.predict_sources(paths), eager, strict=True):
        assert a.label == b.label and abs(a.probability - b.probability) < 1e-4
    # The card's figures are the shipped weights' figures, not the run's or hand-written ones.
    auc = figures["validation"]["roc_auc"]
    assert f"| roc_auc | {auc:.4f} |" in card
    assert "WiSE-FT mixed at alpha 0.5" in card and "random initialisation" in card
    assert "--wise-alpha 0.5" in card and "--head-init" not in card
    assert figures["canary"]["n"] == 8 and "canary" in card
    meta = read_metadata(dest)
    assert meta.threshold == read_metadata(run_dir / "model").threshold
    assert f"**{meta.threshold:.3f} (model)**" in card
    assert "the highest threshold reaching 97% sensitivity on validation" in card
    # The stress battery ran on the validation films with the shipped weights.
    stress = figures["stress"]
    assert {"none", "JPEG quality 20", "brighter (gamma 0.6)"} <= set(stress)
    jpeg = stress["JPEG quality 20"]
    assert f"| JPEG quality 20 | {jpeg['roc_auc']:.4f} | {jpeg['balanced_accuracy']:.4f} |" in card


def test_bundle_places_the_operating_point_again_from_saved_predictions(
    tiny_data, tiny_config, tmp_path
):
    """Another rule needs no pass over the films: the run's val_predictions.csv is enough, and
    the shipped weights then give on validation what the new rule promised."""
    from pneumo.training.bundle import bundle_model

    cfg = tiny_config(tiny_data, tmp_path / "run", mode="finetune", epochs=1)
    run_dir = train(cfg).run_dir
    original = read_metadata(run_dir / "model")
    bayes = bundle_model(
        run_dir,
        tmp_path / "bayes",
        threshold_method="bayes",
        prevalence=0.8,
        predictor_for=_served,
    )
    meta = read_metadata(bayes)
    assert meta.threshold == pytest.approx(0.2)  # Bayes' rule at 80% prevalence
    assert meta.training["threshold_method"] == "bayes"
    assert (
        "moved by Bayes' rule to a deployment prevalence of 80%"
        in (bayes / "MODEL_CARD.md").read_text()
    )
    # The same rule again reproduces the run's own operating point and weights (to fp16).
    same = bundle_model(
        run_dir, tmp_path / "same", threshold_method="sensitivity", predictor_for=_served
    )
    again = read_metadata(same)
    assert again.threshold == pytest.approx(original.threshold, abs=1e-9)
    assert again.metrics["logit_shift"] == pytest.approx(original.metrics["logit_shift"])
    _, run_meta_bias = _head_bias(run_dir / "model")
    _, same_bias = _head_bias(same)
    assert torch.allclose(run_meta_bias, same_bias, atol=2e-3)
    # The shipped fp16 weights give on validation what the rule promised there (fp16 may move
    # one film across the threshold).
    figures = json.loads((same / "figures.json").read_text())["validation"]
    assert again.metrics["sensitivity"] >= cfg.target_sensitivity
    assert abs(figures["sensitivity"] - again.metrics["sensitivity"]) <= (
        1 / figures["n_pneumonia"] + 1e-9
    )


def _head_bias(model_dir):
    model, meta, _ = load_model(model_dir)
    return meta, model.get_classifier().bias.detach().float()


def test_cuda_without_a_gpu_is_a_clear_error(tiny_data, tiny_config, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(PneumoError, match="no CUDA GPU"):
        train(tiny_config(tiny_data, tmp_path / "run", mode="finetune", device="cuda"))


def test_runs_from_one_start_can_be_souped_and_bundled(tiny_data, tiny_config, tmp_path):
    from pneumo.training.bundle import bundle_model
    from pneumo.training.variants import compare_variants, export_variant, soup_name

    first = train(tiny_config(tiny_data, tmp_path / "a", mode="finetune", epochs=1)).run_dir
    start = first / "checkpoints" / "start.safetensors"
    second_cfg = tiny_config(
        tiny_data,
        tmp_path / "b",
        mode="finetune",
        epochs=1,
        seed=1,
        split_seed=0,
        start_weights=start,
    )
    second = train(second_cfg).run_dir
    # The second run starts exactly where the first did, on the same validation patients.
    from safetensors.torch import load_file

    a, b = load_file(str(start)), load_file(str(second / "checkpoints" / "start.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((second / "head_init.json").read_text())["head_init"] == "start_weights"
    rows = compare_variants(first, soup_runs=[second], alphas=())
    assert any(r["variant"].startswith("greedy soup keeps ") for r in rows)
    export_variant(first, soup_name(2), tmp_path / "soup" / "model", alphas=(), soup_runs=[second])
    meta = read_metadata(tmp_path / "soup" / "model")
    assert meta.training["variant"]["soup_runs"] == [str(second)]
    for name in ("config.json", "history.json"):
        (tmp_path / "soup" / name).write_text((first / name).read_text())
    bundled = bundle_model(tmp_path / "soup", tmp_path / "bundled", predictor_for=_served)
    card = (bundled / "MODEL_CARD.md").read_text()
    assert f"--soup {second}" in card and "uniform soup of 2 runs" in card
