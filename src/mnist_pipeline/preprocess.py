"""Turn a photo or scan of one digit into a 28x28 MNIST image, the way MNIST was made.

1. Grayscale. Transparency is composited onto white (a drawing app's transparent background
   is the paper); EXIF rotation is applied; 16-bit images are scaled to 8 bits.
2. A 28x28 image on a dark background is already in MNIST form: it is used unchanged.
3. Otherwise: invert if the border's median is light (ink on paper); subtract the background
   (the border's median) and stretch so the strongest ink is 255.
4. Crop to the ink's bounding box: pixels at least ``INK`` of the strongest ink, so faint
   paper noise does not count.
5. Scale the longer side to 20 px, keeping the aspect ratio (antialiased).
6. Place it in a 28x28 field with its centre of mass at pixel (14, 14), as far as the field
   allows (MNIST's digits have their centre of mass at (14.0, 14.0) on average).

The result is uint8 pixels p, as in the prepared data; the model sees p / 256.
"""

from __future__ import annotations

import os

import numpy as np

from .errors import UserError

FIELD = 28  # MNIST image side
BOX = 20  # the digit's longer side in MNIST
INK = 0.4  # a pixel is ink if at least this fraction of the strongest ink
MIN_CONTRAST = 32  # ink must stand out this much (of 255) from the background, or it is blank


def read_image(source, name: str | None = None):
    """A PIL image from a path, a PIL image, or a uint8 array; errors are one line."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim not in (2, 3):
            raise UserError(f"{name or 'array'}: expected uint8 (H, W) or (H, W, 3|4) pixels")
        return Image.fromarray(source)
    path = name or os.fspath(source)
    try:
        with Image.open(source) as opened:  # the first frame, read into memory
            opened.load()
            image = opened.copy()
    except FileNotFoundError:
        raise UserError(f"{path}: image file not found") from None
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image (Pillow cannot identify it)") from None
    except OSError as err:  # permission, a folder, a truncated or corrupt image
        raise UserError(f"{path}: cannot read image ({err.strerror or err})") from None
    except Exception as err:  # decompression bombs, malformed headers
        raise UserError(f"{path}: cannot read image ({type(err).__name__}: {err})") from None
    return image


def grayscale(image) -> np.ndarray:
    """(H, W) float pixels 0..255: EXIF-rotated, transparency on white, 16-bit scaled."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(image, dtype=np.float64) / 257
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return np.asarray(image.convert("L"), dtype=np.float64)


def border(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])


def centre_of_mass(a: np.ndarray) -> tuple[float, float]:
    rows, cols = np.indices(a.shape)
    total = a.sum()
    return (rows * a).sum() / total, (cols * a).sum() / total


def to_mnist(image, name: str = "image") -> np.ndarray:
    """28x28 uint8 pixels in MNIST form (white ink on 0) for one image of one digit."""
    from PIL import Image

    a = grayscale(read_image(image, name))
    background = np.median(border(a))
    light = background > 127  # ink on paper
    if light:
        a, background = 255 - a, 255 - background
    if a.max() - background < MIN_CONTRAST:
        raise UserError(f"{name}: no ink found (a blank image)")
    if a.shape == (FIELD, FIELD) and not light:
        return np.round(a).astype(np.uint8)  # already MNIST
    a = np.clip((a - background) * 255 / (a.max() - background), 0, 255)
    rows, cols = np.nonzero(a >= INK * 255)
    a = a[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    scale = BOX / max(a.shape)
    size = (max(1, round(a.shape[1] * scale)), max(1, round(a.shape[0] * scale)))
    resized = Image.fromarray(a.astype(np.float32)).resize(size, Image.Resampling.LANCZOS)
    digit = np.clip(np.asarray(resized), 0, 255)
    cy, cx = centre_of_mass(digit)
    top = int(np.clip(round(FIELD // 2 - cy), 0, FIELD - digit.shape[0]))
    left = int(np.clip(round(FIELD // 2 - cx), 0, FIELD - digit.shape[1]))
    field = np.zeros((FIELD, FIELD))
    field[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return np.round(field).astype(np.uint8)
