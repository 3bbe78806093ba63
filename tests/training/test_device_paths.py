"""Training on a GPU (``--device cuda``) runs code no CPU-only CI executes on a device, so the
class of bug that crashed ``--head-init probe`` on CUDA (``.numpy()`` on a CUDA tensor) is
checked two ways: a scan of the training code that every CI runs, and the real CUDA runs, which
run wherever a GPU is present (the lent GPU machine) and skip elsewhere."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

import pneumo

PACKAGE = Path(pneumo.__file__).parent
DEVICE_CODE = ("training", "models", "evaluation")
"""Sub-packages whose tensors can live on the training device."""

FACTORIES = {
    "tensor",
    "zeros",
    "ones",
    "empty",
    "randn",
    "rand",
    "randperm",
    "arange",
    "from_numpy",
}
"""torch functions that create a tensor on the CPU unless given ``device=``."""


def _chain_is_on_cpu(node: ast.expr) -> bool:
    """Whether the receiver of ``.numpy()`` is known to be on the CPU: it went through
    ``.cpu()``, was made by a torch factory without ``device=``, or is a DataLoader batch
    field (``batch[...]``: loaders yield CPU tensors)."""
    while True:
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "cpu":
                return True
            if (
                isinstance(func, ast.Attribute)
                and func.attr in FACTORIES
                and isinstance(func.value, ast.Name)
                and func.value.id == "torch"
            ):
                return not any(k.arg == "device" for k in node.keywords)
            node = func
        elif isinstance(node, ast.Attribute):
            node = node.value
        elif isinstance(node, ast.Subscript):
            if isinstance(node.value, ast.Name) and node.value.id == "batch":
                return True
            node = node.value
        else:
            return False


def device_unsafe_numpy_calls(source: str, filename: str) -> list[str]:
    """``file:line`` of each ``.numpy()`` whose tensor may still be on the GPU."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "numpy"
            and not _chain_is_on_cpu(node.func.value)
        ):
            found.append(f"{filename}:{node.lineno}")
    return found


def test_the_scan_tells_a_cuda_tensor_from_a_cpu_one():
    """The check itself: the crash of issue 17 is caught, its fix and CPU-made tensors pass."""
    crash = "digest.update(tensor.detach().float().numpy().tobytes())"
    assert device_unsafe_numpy_calls(crash, "features.py") == ["features.py:1"]
    assert device_unsafe_numpy_calls("model(x).numpy()", "f.py") == ["f.py:1"]
    assert device_unsafe_numpy_calls("torch.zeros(3, device=d).numpy()", "f.py") == ["f.py:1"]
    for safe in (
        "digest.update(tensor.detach().float().cpu().numpy().tobytes())",
        "torch.randn(3, 4).numpy()",
        'batch["label"].numpy()',
        "head(vx).cpu().numpy()",
    ):
        assert device_unsafe_numpy_calls(safe, "f.py") == [], safe


def test_training_code_brings_tensors_to_the_cpu_before_numpy():
    unsafe = []
    for package in DEVICE_CODE:
        for path in sorted((PACKAGE / package).rglob("*.py")):
            unsafe += device_unsafe_numpy_calls(path.read_text(), str(path.relative_to(PACKAGE)))
    assert unsafe == [], f".numpy() on a tensor that may be on the GPU (add .cpu()): {unsafe}"


COLLECTIVE_CODE = ("finetune.py", "runtime.py")
"""Where training talks to other ranks (early stopping, the precision rank 0 chose)."""


def test_collectives_send_tensors_on_the_process_device():
    """NCCL (torchrun on GPUs) only moves CUDA tensors: a broadcast of a CPU tensor fails there
    although gloo (CPU CI) accepts it."""
    trees = [ast.parse((PACKAGE / "training" / f).read_text()) for f in COLLECTIVE_CODE]
    for node in (n for tree in trees for n in ast.walk(tree)):
        if isinstance(node, ast.FunctionDef) and any(
            isinstance(c, ast.Attribute) and c.attr in {"broadcast", "all_reduce"}
            for c in ast.walk(node)
        ):
            makers = [
                c
                for c in ast.walk(node)
                if isinstance(c, ast.Call)
                and isinstance(c.func, ast.Attribute)
                and c.func.attr in FACTORIES
            ]
            assert makers and all(any(k.arg == "device" for k in c.keywords) for c in makers), (
                f"{node.name}: tensors sent to other ranks must be created on the process device"
            )


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def _feature_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PNEUMO_CACHE", str(tmp_path / "cache"))


@needs_cuda
@pytest.mark.parametrize(
    "overrides",
    [
        {"mode": "finetune", "head_init": "probe", "freeze_bn": True},
        {"mode": "finetune", "head_init": "zero", "freeze_bn": False},
        {"mode": "frozen"},
    ],
    ids=["lp-ft", "zero-train-bn", "frozen"],
)
def test_training_on_cuda_writes_a_model_that_serves_like_it_trained(
    tiny_data, tiny_config, tmp_path, overrides, _feature_cache
):
    from pneumo.models.checkpoint import read_metadata
    from pneumo.training.train import train

    cfg = tiny_config(tiny_data, tmp_path / "run", device="cuda", epochs=1, **overrides)
    run = train(cfg)
    meta = read_metadata(run.model_dir)
    assert 0 < meta.threshold < 1 and meta.temperature >= 1
    assert (run.model_dir / "val_predictions.csv").is_file()
    history = json.loads((run.run_dir / "history.json").read_text())
    assert history and history[-1]["val_loss"] == history[-1]["val_loss"]  # not NaN
