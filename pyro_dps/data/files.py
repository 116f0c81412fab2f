"""Data sets on disk read one row at a time: a folder of images by class, a memory-mapped .npy of features.

    dataset, labels = image_folder("photos/", transform=flip)   # photos/<class>/*.png|jpg, classes by name
    problem = Problem(net, DatasetRows(dataset), labels, x_meta, y_meta)
    rows = npy_rows("features.npy")                              # DatasetRows over numpy.load(mmap_mode="r")

Nothing here reads a whole data set: an image file is opened when its row is gathered, a .npy row is read
from the memory map when its row is gathered.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from pyro_dps.data.rows import DatasetRows
from pyro_dps.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def image_to_tensor(image: Any) -> torch.Tensor:
    """A PIL image as float32 (C, H, W) in [0, 1] (as torchvision's ToTensor); arrays and tensors as tensors."""
    if torch.is_tensor(image):
        return image
    array = np.asarray(image)
    if array.dtype == np.uint8 and hasattr(image, "mode"):  # a PIL image: channels last, 0..255
        array = array[..., None] if array.ndim == 2 else array
        return torch.from_numpy(array.transpose(2, 0, 1).astype(np.float32) / 255.0)
    return torch.as_tensor(array)


class ImageFolder(Dataset):
    """Images in `root/<class name>/*.png|jpg`, item i = (features, label); opened when read.

    `transform` is applied to each PIL image (converted to `mode`), its result made a tensor by
    `image_to_tensor`; without one, the image as float32 (C, H, W) in [0, 1]."""

    def __init__(self, root: str | os.PathLike, transform: Callable | None = None, mode: str = "RGB"):
        self.root, self.transform, self.mode = Path(root), transform, mode
        if not self.root.is_dir():
            raise DataError(f"image folder {str(self.root)!r} is not a directory")
        self.classes = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        stray = sorted(p.name for p in self.root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if stray:
            raise DataError(f"image folder {str(self.root)!r} has images outside a class folder ({stray[0]!r}); "
                            "the layout is root/<class name>/<image>")
        if not self.classes:
            raise DataError(f"image folder {str(self.root)!r} has no class folders (root/<class name>/*.png|jpg)")
        self.files: list[Path] = []
        labels = []
        for label, name in enumerate(self.classes):
            files = self._class_files(self.root / name)
            self.files += files
            labels += [label] * len(files)
        self.labels = torch.tensor(labels, dtype=torch.long)

    @staticmethod
    def _class_files(folder: Path) -> list[Path]:
        files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        wrong = [p.name for p in files if p.is_dir() or p.suffix.lower() not in IMAGE_SUFFIXES]
        if wrong:
            raise DataError(f"{str(folder / wrong[0])!r} is not a .png or .jpg image; a class folder holds only "
                            "images")
        if not files:
            raise DataError(f"class folder {str(folder)!r} has no images")
        return files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image, UnidentifiedImageError

        path = self.files[i]
        try:
            with Image.open(path) as img:
                image = img.convert(self.mode)
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{str(path)!r} cannot be read as an image: {exc}") from exc
        x = image_to_tensor(self.transform(image) if self.transform is not None else image)
        return x, int(self.labels[i])


def image_folder(root: str | os.PathLike, transform: Callable | None = None,
                 mode: str = "RGB") -> tuple[ImageFolder, torch.Tensor]:
    """(the `ImageFolder` dataset of `root`, its labels (N,) int64): classes sorted by folder name are labels
    0, 1, ... (`dataset.classes`), files sorted by name within a class. No image is opened here."""
    dataset = ImageFolder(root, transform, mode)
    return dataset, dataset.labels


class NpyRows(Dataset):
    """Rows of a .npy array, memory-mapped (`numpy.load(mmap_mode="r")`): a row is read when it is asked for.
    Floating features are converted to `dtype` (float32 by default; None keeps the file's)."""

    def __init__(self, path: str | os.PathLike, dtype: torch.dtype | None = torch.float32):
        self.path, self.dtype = Path(path), dtype
        if not self.path.is_file():
            raise DataError(f"{str(self.path)!r} is not a file")
        try:
            self.array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise DataError(f"{str(self.path)!r} cannot be read as a .npy array: {exc}") from exc
        if not isinstance(self.array, np.ndarray) or self.array.ndim < 1 or self.array.dtype.kind not in "biuf":
            raise DataError(f"{str(self.path)!r} must hold one numeric .npy array of rows, got "
                            f"{getattr(self.array, 'dtype', type(self.array).__name__)}")

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def _tensor(self, rows: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.array(rows))  # a copy out of the map
        return x.to(self.dtype) if self.dtype is not None and x.is_floating_point() else x

    def __getitem__(self, i: int) -> torch.Tensor:
        return self._tensor(self.array[i])

    def __getitems__(self, rows: list[int]) -> list[torch.Tensor]:
        """Several rows with one read of the map (torch's batched-fetch protocol)."""
        return list(self._tensor(self.array[np.asarray(rows, dtype=np.int64)]).unbind(0))


def npy_rows(path: str | os.PathLike, dtype: torch.dtype | None = torch.float32,
             device: torch.device | str = "cpu") -> DatasetRows:
    """The rows of a .npy file as a `DatasetRows`, memory-mapped (see `NpyRows`)."""
    return DatasetRows(NpyRows(path, dtype), device)
