"""Data for the ViTCoD algorithm: scikit-learn's bundled digits (default) or a local image folder.

* ``digits``: the 1,797 real 8x8 handwritten digits that ship with scikit-learn,
  upscaled (bilinear) to ``img_size`` (default 32x32, so 4x4 patches give 64
  patches + CLS = 65 tokens), one channel. A fixed stratified 80/20 split
  (split seed 0, whatever the training seed) so every run tests on the same 360 images.
* ``imagefolder``: ``ROOT/<class>/<image>`` (PNG/JPEG... via Pillow, already
  installed with matplotlib). If ``ROOT/train`` and ``ROOT/val`` exist they are
  the splits, otherwise one folder is split 80/20 with split seed 0. Images are
  resized (shorter side to ``img_size * 256/224``), center-cropped and normalized
  with ImageNet's mean/std, as DeiT expects.

Both give torch ``Dataset``s of ``(image [C, S, S] float32, label int)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

__all__ = ["digits_datasets", "ImageFolder", "imagefolder_datasets", "make_datasets", "loader", "random_shift",
           "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _split(labels: np.ndarray, val_fraction: float = 0.2, seed: int = 0):
    """Stratified index split, the same for every training seed."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = int(round(len(idx) * val_fraction))
        val.extend(idx[:n_val])
        train.extend(idx[n_val:])
    return np.sort(train), np.sort(val)


def digits_datasets(img_size: int = 32, in_chans: int = 1):
    """``(train, val)`` TensorDatasets of the upscaled digits, values normalized to mean 0, std ~1."""
    from sklearn.datasets import load_digits

    if not isinstance(img_size, int) or img_size < 8:
        raise ValueError(f"digits img_size must be an int >= 8 (the digits are 8x8), got {img_size!r}")
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0            # [N, 1, 8, 8] in [0, 1]
    x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False)
    x = ((x - 0.3) / 0.4).repeat(1, in_chans, 1, 1)
    y = torch.tensor(d.target, dtype=torch.long)
    tr, va = _split(d.target)
    return TensorDataset(x[tr], y[tr]), TensorDataset(x[va], y[va])


def first_images(dataset, n: int = 512) -> torch.Tensor:
    """The first ``n`` images of a dataset of ``(image, label)`` pairs as one ``[B, C, H, W]`` tensor (what the
    Q/K auto-encoder's PCA start is fitted on)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"first_images: n must be a positive int, got {n!r}")
    count = min(n, len(dataset))
    if count == 0:
        raise ValueError("first_images: the dataset is empty")
    return torch.stack([torch.as_tensor(dataset[i][0]) for i in range(count)])


class ImageFolder(Dataset):
    """``root/<class>/<file>`` images, classes sorted by folder name (as torchvision's ImageFolder)."""

    def __init__(self, root: str | Path, img_size: int = 224, in_chans: int = 3, files=None, classes=None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist")
        self.classes = classes or sorted(p.name for p in self.root.iterdir() if p.is_dir())
        if not self.classes:
            raise ValueError(f"image folder {self.root} has no class subfolders (expected ROOT/<class>/<image>)")
        if files is None:
            files = [(p, i) for i, c in enumerate(self.classes) for p in sorted((self.root / c).rglob("*"))
                     if p.suffix.lower() in IMAGE_EXTENSIONS]
        if not files:
            raise ValueError(f"image folder {self.root} has no images with extensions {IMAGE_EXTENSIONS}")
        self.files = files
        self.img_size, self.in_chans = img_size, in_chans

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        from PIL import Image

        path, label = self.files[i]
        with Image.open(path) as im:
            im = im.convert("L" if self.in_chans == 1 else "RGB")
            w, h = im.size
            short = int(round(self.img_size * 256 / 224))
            scale = short / min(w, h)
            im = im.resize((max(short, round(w * scale)), max(short, round(h * scale))), Image.BICUBIC)
            w, h = im.size
            left, top = (w - self.img_size) // 2, (h - self.img_size) // 2
            im = im.crop((left, top, left + self.img_size, top + self.img_size))
            a = np.asarray(im, dtype=np.float32) / 255.0
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        x = torch.from_numpy(a.copy())
        if self.in_chans == 3:
            x = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
        else:
            x = (x - 0.5) / 0.25
        return x, label


def imagefolder_datasets(root: str | Path, img_size: int = 224, in_chans: int = 3):
    root = Path(root)
    if (root / "train").is_dir() and (root / "val").is_dir():
        train = ImageFolder(root / "train", img_size, in_chans)
        return train, ImageFolder(root / "val", img_size, in_chans, classes=train.classes)
    full = ImageFolder(root, img_size, in_chans)
    tr, va = _split(np.array([label for _, label in full.files]))
    return (ImageFolder(root, img_size, in_chans, [full.files[i] for i in tr], full.classes),
            ImageFolder(root, img_size, in_chans, [full.files[i] for i in va], full.classes))


def make_datasets(data: str, img_size: int, in_chans: int):
    """``data`` is ``"digits"`` or the path of an image folder."""
    if data == "digits":
        return digits_datasets(img_size, in_chans)
    return imagefolder_datasets(data, img_size, in_chans)


def loader(dataset, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=g if shuffle else None,
                      num_workers=0)


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels (zero padding): cheap augmentation for tiny ViTs."""
    if max_shift <= 0:
        return x
    B, C, H, W = x.shape
    pad = F.pad(x, (max_shift,) * 4, value=float(x.min()))
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2, B), generator=generator)
    rows = (dy[:, None] + torch.arange(H)[None])              # [B, H]
    cols = (dx[:, None] + torch.arange(W)[None])              # [B, W]
    return pad[torch.arange(B)[:, None, None, None], torch.arange(C)[None, :, None, None],
               rows[:, None, :, None], cols[:, None, None, :]]
