"""Generated image folders for the data and training tests (no files from elsewhere)."""

from __future__ import annotations

import os

import numpy as np

CLASSES = ("cat", "dog", "emu")


def make_folder(root, *, train=6, test=2, size=(8, 10), mode="RGB", ext=".png"):
  """root/{train,test}/<class>/NN.png with pixel values that encode the file."""
  from PIL import Image
  written = {}
  channels = 3 if mode == "RGB" else 1
  for split, count in (("train", train), ("test", test)):
    for c, name in enumerate(CLASSES):
      os.makedirs(root / split / name, exist_ok=True)
      for i in range(count):
        value = (40 * c + 7 * i + (100 if split == "test" else 0)) % 256
        pixels = np.full((*size, channels), value, np.uint8)
        pixels[0, 0] = i  # makes every image distinct
        path = root / split / name / f"{i:02d}{ext}"
        Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels).save(path)
        written[str(path)] = pixels
  return written
