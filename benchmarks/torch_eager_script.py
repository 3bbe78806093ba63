"""The plain script a user would write without pneumo's engine: Pillow decode, resize, timm in
torch eager fp32, batch 32. `speed.py` times it against `pneumo predict` on the same files.

    python benchmarks/torch_eager_script.py FOLDER
"""

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pneumo.models.checkpoint import load_model


def main(folder: str) -> None:
    model, meta, _ = load_model(None)
    model.eval()
    h, w = meta.data_config.input_size
    mean = np.array(meta.data_config.mean, dtype=np.float32)[:, None, None]
    std = np.array(meta.data_config.std, dtype=np.float32)[:, None, None]
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".jpeg", ".jpg"))
    probs = []
    for start in range(0, len(files), 32):
        batch = []
        for f in files[start : start + 32]:
            img = Image.open(f).convert("RGB").resize((w, h), Image.Resampling.BILINEAR)
            x = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
            batch.append((x - mean) / std)
        with torch.inference_mode():
            logits = model(torch.from_numpy(np.stack(batch)))
        probs += torch.softmax(logits / meta.temperature, dim=1)[:, 1].tolist()
    sys.stdout.write(f"{len(probs)} images\n")


if __name__ == "__main__":
    main(sys.argv[1])
