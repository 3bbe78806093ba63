"""Loading and batching: worker processes, the model's input size and normalisation, one
consistent 3-channel image from any PNG mode, augmentation on for training only, and a broken
file skipped with a warning while the rest of its batch arrives."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import BAD_FILES, add_bad_file, grey_picture
from PIL import Image

from pneumo.data.augment import AugmentConfig
from pneumo.data.dataset import make_loader
from pneumo.data.discover import find_images
from pneumo.models.preprocess import DataConfig
from pneumo.training.transforms import image_dataset


def test_batches_from_worker_processes(tiny_data):
    records = find_images(tiny_data, splits=["train"])
    loader = make_loader(image_dataset(records, DataConfig()), batch_size=16, workers=2)
    batches = list(loader)
    assert [b["image"].shape for b in batches] == [(16, 3, 224, 224)] * 3
    assert batches[0]["image"].dtype == torch.float32
    seen = [p for b in batches for p in b["path"]]
    assert seen == [str(r.path) for r in records]  # unshuffled: the records' order, each once
    labels = torch.cat([b["label"] for b in batches]).tolist()
    assert labels == [r.label_index for r in records]
    assert [p for b in batches for p in b["patient"]] == [r.patient for r in records]


def test_workers_are_not_forks_of_a_threaded_caller(tiny_data):
    """A loader started in a process that already runs inference threads (``pneumo adapt`` after
    loading its engine, the app) must not fork that process: forking a threaded runtime can
    crash it. Workers come from a clean fork server instead, and the batches still arrive."""
    import os
    import threading

    busy = threading.Event()
    runner = threading.Thread(target=busy.wait, daemon=True)  # a live thread in the caller
    runner.start()
    try:
        records = find_images(tiny_data, splits=["val"])
        loader = make_loader(image_dataset(records, DataConfig((32, 32))), batch_size=4)
        batches = list(loader)
        workers = loader._iterator._workers
        parents = {
            int(Path(f"/proc/{w.pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            for w in workers
        }
    finally:
        busy.set()
    assert sum(len(b["path"]) for b in batches) == len(records) == 8
    assert len(workers) == 2 and os.getpid() not in parents


def test_shuffled_order_is_seeded(tiny_data):
    dataset = image_dataset(find_images(tiny_data, splits=["val"]), DataConfig((32, 32)))

    def order(seed):
        loader = make_loader(dataset, batch_size=4, shuffle=True, workers=0, seed=seed)
        return [p for b in loader for p in b["path"]]

    assert order(1) == order(1)
    assert order(1) != order(2)
    assert sorted(order(1)) == sorted(str(r.path) for r in dataset.records)


def test_size_and_normalisation_come_from_the_model_data_config(tmp_path):
    from pneumo.models.registry import create_model, data_config

    config = data_config(create_model("test_efficientnet", pretrained=False))
    path = tmp_path / "train" / "NORMAL" / "IM-0001-0001.png"
    path.parent.mkdir(parents=True)
    Image.new("L", (300, 200), 100).save(path)
    records = find_images(tmp_path)

    image = image_dataset(records, config)[0]["image"].numpy()
    assert image.shape == (3, *config.input_size) == (3, 160, 160)
    expected = [(100 / 255 - m) / s for m, s in zip(config.mean, config.std, strict=True)]
    np.testing.assert_allclose(image.mean(axis=(1, 2)), expected, rtol=1e-5)
    assert np.ptp(image, axis=(1, 2)).max() < 1e-5

    other = DataConfig((96, 128), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    image = image_dataset(records, other)[0]["image"].numpy()
    assert image.shape == (3, 96, 128)
    np.testing.assert_allclose(image, (100 / 255 - 0.5) / 0.25, rtol=1e-5)


def _save_as(picture: np.ndarray, mode: str, path):
    """Save the same grey picture in different storage modes."""
    if mode == "L":
        img = Image.fromarray(picture)
    elif mode == "RGB":
        img = Image.fromarray(np.stack([picture] * 3, axis=-1))
    elif mode == "RGBA":
        alpha = np.full_like(picture, 255)
        img = Image.fromarray(np.stack([picture, picture, picture, alpha], axis=-1))
    elif mode == "P":
        img = Image.fromarray(picture).convert("P")
        img.putpalette([v for i in range(256) for v in (i, i, i)])  # index i is grey level i
    elif mode == "I;16":
        img = Image.fromarray(picture.astype(np.uint16) * 257)  # full 16-bit range
    img.save(path)
    return Image.open(path).mode


def test_grey_rgb_rgba_palette_and_16bit_give_the_same_input(tmp_path):
    picture = grey_picture(seed=3, size=64)
    folder = tmp_path / "train" / "PNEUMONIA"
    folder.mkdir(parents=True)
    stored = {}
    for i, mode in enumerate(("L", "RGB", "RGBA", "P", "I;16")):
        stored[mode] = _save_as(picture, mode, folder / f"person{i}_virus_{i}.png")
    assert stored["P"] == "P" and stored["RGBA"] == "RGBA" and stored["I;16"].startswith("I")
    dataset = image_dataset(find_images(tmp_path), DataConfig())
    images = [dataset[i]["image"].numpy() for i in range(len(dataset))]
    assert len(images) == 5
    for image in images[1:]:
        np.testing.assert_array_equal(image, images[0])
    assert images[0].shape == (3, 224, 224)
    # one grey picture on three channels: the same values before the per-channel normalisation
    config = DataConfig()
    std, mean = np.array(config.std)[:, None, None], np.array(config.mean)[:, None, None]
    pixels = images[0] * std + mean
    np.testing.assert_allclose(pixels[0], pixels[2], atol=1e-6)
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6


def test_augmentation_is_off_for_evaluation_and_configurable(tiny_data):
    records = find_images(tiny_data, splits=["val"])[:1]
    plain = image_dataset(records, DataConfig())
    a, b = plain[0]["image"], plain[0]["image"]
    assert torch.equal(a, b)  # evaluation: the same input every time

    torch.manual_seed(0)
    augmented = image_dataset(records, DataConfig(), augment=AugmentConfig())
    x, y = augmented[0]["image"], augmented[0]["image"]
    assert x.shape == a.shape
    assert not torch.equal(x, y) and not torch.equal(x, a)

    # only a certain horizontal flip: exactly the mirrored evaluation input
    flip_only = replace(AugmentConfig.none(), hflip=1.0)
    flipped = image_dataset(records, DataConfig(), augment=flip_only)[0]["image"]
    np.testing.assert_allclose(flipped.numpy(), a.flip(-1).numpy(), atol=0.05)
    assert not np.allclose(flipped.numpy(), a.numpy(), atol=0.05)


@pytest.mark.parametrize("shift", ["jpeg", "downscale", "equalize"])
def test_acquisition_augmentations_change_the_film_but_not_its_layout(tiny_data, shift):
    """JPEG recompression, lost resolution and equalisation (shifts of the stress battery) are
    applied when asked, alone, and leave the film where it was (no flip, crop or rotation)."""
    records = find_images(tiny_data, splits=["val"])[:1]
    plain = image_dataset(records, DataConfig())[0]["image"].numpy()
    torch.manual_seed(0)
    only = replace(AugmentConfig.none(), **{shift: 1.0})
    shifted = image_dataset(records, DataConfig(), augment=only)[0]["image"].numpy()
    difference = np.abs(shifted - plain)
    assert difference.max() > 0.05  # the shift was applied
    # the same film in the same place: strongly correlated with the plain input
    assert np.corrcoef(shifted.ravel(), plain.ravel())[0, 1] > 0.8
    assert AugmentConfig.none().to_dict()[shift] == 0.0  # none() turns it off


def test_augmentation_probabilities_are_checked():
    with pytest.raises(ValueError, match="jpeg"):
        AugmentConfig(jpeg=1.5)


def test_broken_file_is_skipped_with_a_warning_and_the_batch_arrives(tiny_data, caplog):
    bad = add_bad_file(tiny_data, "truncated", split="val")
    records = find_images(tiny_data, splits=["val"])
    assert len(records) == 9
    loader = make_loader(image_dataset(records, DataConfig((64, 64))), batch_size=9, workers=2)
    with caplog.at_level(logging.WARNING):
        batches = list(loader)
    assert len(batches) == 1
    assert batches[0]["image"].shape == (8, 3, 64, 64)
    assert str(bad) not in batches[0]["path"]
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(bad) in m and "truncated" in m for m in warnings)
    assert loader.skipped == [(str(bad), loader.skipped[0][1])]


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_batch_of_only_broken_files_is_dropped(tmp_path, kind, caplog):
    folder = tmp_path / "train" / "NORMAL"
    folder.mkdir(parents=True)
    bad = add_bad_file(tmp_path, kind)
    Image.fromarray(grey_picture()).save(folder / "IM-0001-0001.png")
    records = sorted(find_images(tmp_path), key=lambda r: r.path != bad)  # bad file first
    loader = make_loader(image_dataset(records, DataConfig((32, 32))), batch_size=1, workers=0)
    batches = list(loader)
    assert [b["path"] for b in batches] == [[str(records[1].path)]]
    assert loader.skipped[0][0] == str(bad) and BAD_FILES[kind][1] in loader.skipped[0][1]
