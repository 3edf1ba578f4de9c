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

import contextlib
import os
import stat
import warnings

import numpy as np

from .atomic import kind
from .errors import UserError

FIELD = 28  # MNIST image side
BOX = 20  # the digit's longer side in MNIST
INK = 0.4  # a pixel is ink if at least this fraction of the strongest ink
MIN_CONTRAST = 32  # ink must stand out this much (of 255) from the background, or it is blank


# The most pixels an image may have: 4096 x 4096, so a 16-megapixel phone photo (4608 x 3456)
# fits, and predict peaks at about 0.4 GB and 1 s on it (to_mnist works in float64: ~20 bytes
# a pixel). Pillow's own limit (89 MP, refused only at twice that) let a 180 KB PNG of
# 13000 x 13000 take 4.3 GB and 17 s. Checked from the header, before any pixel is decoded.
MAX_PIXELS = 2**24
AT_MOST = f"predict reads at most {MAX_PIXELS} (4096x4096): scale it down"


def _check_size(image, name: str) -> None:
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise UserError(f"{name}: {width}x{height} is {width * height} pixels; {AT_MOST}")


def _open_regular(path: str, name: str):
    """A binary file object for ``path``, refused in one line unless it is a regular file.

    stat first, so a FIFO is never opened (opening one for reading would wait for a writer);
    the open is non-blocking and checked again, in case the path changed in between.
    """
    try:
        if stat.S_ISREG(mode := os.stat(path).st_mode):
            f = open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NONBLOCK))
            if stat.S_ISREG(mode := os.fstat(f.fileno()).st_mode):
                return f
            f.close()
    except FileNotFoundError:
        raise UserError(f"{name}: image file not found") from None
    except OSError as err:  # permission, a name too long...
        raise UserError(f"{name}: cannot read image ({err.strerror or err})") from None
    raise UserError(f"{name}: not a regular file ({kind(mode)}); give an image file")


def read_image(source, name: str | None = None):
    """A PIL image from a path, a binary file object, a PIL image, or a uint8 array; errors
    are one line.

    A path must name a regular file of at most MAX_PIXELS pixels.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim not in (2, 3):
            raise UserError(f"{name or 'array'}: expected uint8 (H, W) or (H, W, 3|4) pixels")
        source, name = Image.fromarray(source), name or "array"
    if isinstance(source, Image.Image):
        _check_size(source, name or "image")
        return source
    if hasattr(source, "read"):  # a binary file object: dvc.api.open(..., mode="rb"), say
        path = name or getattr(source, "name", None) or "image file object"
        opened_file = contextlib.nullcontext(source)
    else:
        path = name or os.fspath(source)
        opened_file = _open_regular(os.fspath(source), path)
    try:
        with warnings.catch_warnings(), opened_file as f:
            # Pillow warns (on stderr) above its own limit: MAX_PIXELS refuses those anyway.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(f) as opened:  # reads the header only
                _check_size(opened, path)  # before any pixel is decoded
                opened.load()  # the first frame, read into memory
                return opened.copy()
    except UserError:
        raise
    except Image.DecompressionBombError:  # above twice Pillow's limit: refused at the header
        raise UserError(
            f"{path}: more than {2 * Image.MAX_IMAGE_PIXELS} pixels; {AT_MOST}"
        ) from None
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image (Pillow cannot identify it)") from None
    except OSError as err:  # a truncated or corrupt image
        raise UserError(f"{path}: cannot read image ({err.strerror or err})") from None
    except Exception as err:  # decompression bombs, malformed headers
        raise UserError(f"{path}: cannot read image ({type(err).__name__}: {err})") from None


def grayscale(image, name: str = "image") -> np.ndarray:
    """(H, W) float pixels 0..255: EXIF-rotated, transparency on white, 16-bit scaled.

    Every Pillow mode converts, or is refused in one line. Pillow cannot convert LAB or
    premultiplied La to L: they go through RGB and LA.
    """
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(image, dtype=np.float64) / 257
    try:
        if image.mode in ("LAB", "La"):
            image = image.convert({"LAB": "RGB", "La": "LA"}[image.mode])
        if image.has_transparency_data:
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, rgba)
        return np.asarray(image.convert("L"), dtype=np.float64)
    except ValueError as err:  # a mode Pillow cannot convert
        raise UserError(f"{name}: cannot make a {image.mode} image grayscale ({err})") from None


def to_mnist(image, name: str = "image") -> np.ndarray:
    """28x28 uint8 pixels in MNIST form (white ink on 0) for one image of one digit."""
    from PIL import Image

    a = grayscale(read_image(image, name), name)
    border = np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])
    background = np.median(border)
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
    rows, cols = np.indices(digit.shape)  # its centre of mass: (cy, cx)
    total = digit.sum()
    cy, cx = (rows * digit).sum() / total, (cols * digit).sum() / total
    top = int(np.clip(round(FIELD // 2 - cy), 0, FIELD - digit.shape[0]))
    left = int(np.clip(round(FIELD // 2 - cx), 0, FIELD - digit.shape[1]))
    field = np.zeros((FIELD, FIELD))
    field[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return np.round(field).astype(np.uint8)
