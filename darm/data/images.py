"""Images as raster-order sequences: MNIST (binarized and 256 levels) and a user's own.

Pixels are quantised to L levels, then read top to bottom, left to right, channels
innermost (R, G, B of a pixel in turn), the order every family and `pixelcnn` share.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from darm.data.arrays import make_dataset
from darm.data.dataset import SPLITS, Dataset, seeded_split, split_note, whole_split
from darm.errors import DarmError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def quantise(pixels: np.ndarray, levels: int) -> np.ndarray:
    """uint8 intensities 0..255 -> symbols 0..levels-1, equal-width bins."""
    if not 2 <= levels <= 256:
        raise DarmError(f"--levels for images must be in 2..256, got {levels}")
    return (pixels.astype(np.int64) * levels) >> 8


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def binarized_mnist_dataset(path: Path) -> Dataset:
    """The fixed binarization of Larochelle & Murray (2011) with its official
    50000 / 10000 / 10000 split: the benchmark of NADE, MADE, PixelCNN, PixelRNN."""
    a = _npz(path)
    xs = {s: a[f"x_{s}"] for s in SPLITS}
    return make_dataset(
        "binarized_mnist",
        xs,
        dict.fromkeys(SPLITS),
        2,
        (28, 28),
        {"format": "builtin", "name": "binarized_mnist"},
        "binarized MNIST (Larochelle & Murray 2011), official split 50000/10000/10000",
    )


def mnist_dataset(path: Path, levels: int = 256) -> Dataset:
    """MNIST with labels: the official 60000 training images cut into the first 50000
    (train) and the last 10000 (valid), and the official 10000 test images."""
    a = _npz(path)
    xs = {"train": a["x_train"][:50000], "valid": a["x_train"][50000:], "test": a["x_test"]}
    ys = {"train": a["y_train"][:50000], "valid": a["y_train"][50000:], "test": a["y_test"]}
    return make_dataset(
        "mnist" if levels == 256 else f"mnist{levels}",
        {s: quantise(x, levels) for s, x in xs.items()},
        ys,
        levels,
        (28, 28),
        {"format": "builtin", "name": "mnist", "levels": levels},
        f"MNIST, {levels} grey levels, labels; train = first 50000 of the official training "
        f"set, valid = its last 10000, test = the official 10000",
    )


ORIENTATION = 0x0112  # the EXIF tag: 1 upright, 2-8 mirrored and/or turned


def read_pixels(path: Path, mode: str, upright: bool = True) -> np.ndarray:
    """An image file's 8-bit pixels in PIL `mode` (L, LA, RGB, RGBA): (H, W) or (H, W, C),
    turned upright as its EXIF Orientation tag says (upright=False: as stored, as runs of
    pictures from before darm did so read them; see reads_upright). Grey wider than 8 bits
    is scaled to 8 bits or refused (eight_bits): Pillow's convert would clip it at 255."""
    from PIL import Image, ImageOps

    with open_image(path) as stored:
        frames = getattr(stored, "n_frames", 1)
        if frames > 1:  # Pillow would read the first alone, the rest dropped unseen
            raise DarmError(
                f"{path} holds {frames} pictures (an animation or a stack); darm reads one a "
                f"file: save each frame as its own file"
            )
        # a phone stores a photo as its sensor saw it, with a tag saying how to turn it:
        # read as stored, a portrait would train (and be scored) lying on its side
        img = ImageOps.exif_transpose(stored) if upright else stored  # (a copy: tags stay)
        if img.mode.startswith("I") or img.mode == "F":  # wider than 8 bits, one channel
            img = Image.fromarray(eight_bits(np.asarray(img), sample_bits(stored), path), "L")
        return np.asarray(img.convert(mode))


def reads_upright(source: dict) -> bool:
    """Whether pictures are read for a run of this data source turned upright by their EXIF
    Orientation tag: runs record it since darm began to turn them; a run of pictures from
    before read them as stored, and reads them so again, so its splits, sizes and digest
    stay its own. Runs of data that holds no picture files read other pictures upright."""
    return source.get("upright", source.get("format") != "images")


def turned_note(path: Path) -> str:
    """' (turned upright by its EXIF Orientation tag)' where a picture's tag turns it."""
    with open_image(path) as img:
        orientation = img.getexif().get(ORIENTATION, 1)
    return " (turned upright by its EXIF Orientation tag)" if orientation != 1 else ""


@contextmanager
def open_image(path: Path):
    """Image.open, with what can go wrong in reading it (a missing or broken file, one too
    large for Pillow's decompression-bomb guard) as one DarmError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            yield img
    except FileNotFoundError:
        raise DarmError(f"no image file {path}") from None
    except IsADirectoryError:  # (a folder of a class's pictures, say)
        raise DarmError(f"{path} is a folder: give its picture files ({path}/*.png)") from None
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise DarmError(f"cannot read image {path}: {e}") from None


def sample_bits(img) -> int:
    """Bits per pixel the file stores for a wide grey image: 16 for I;16* modes and for a PNG
    in mode I (older Pillows), else the TIFF's BitsPerSample tag (32 where it has none)."""
    if img.mode.startswith("I;16") or (img.mode == "I" and img.format == "PNG"):
        return 16
    bits = getattr(img, "tag_v2", {}).get(258, 32)  # TIFF tag 258: BitsPerSample
    return int(bits[0] if isinstance(bits, tuple) else bits)


def eight_bits(wide: np.ndarray, bits: int, path: Path) -> np.ndarray:
    """Grey pixels wider than 8 bits, (H, W), as uint8: 16-bit integers scaled by >> 8;
    floats that are whole numbers 0..255 as they are. Wider integers are refused, whatever
    their values: scaled by the file's depth they would read black, unscaled they would mean
    one thing in one picture and another in the next."""
    if wide.dtype.kind == "f":
        if not np.isfinite(wide).all():
            raise DarmError(f"{path} holds NaN or infinite pixels")
        lo, hi = (wide.min(), wide.max()) if wide.size else (0, 0)
        if not ((wide == np.round(wide)).all() and lo >= 0 and hi <= 255):
            raise DarmError(
                f"{path} holds floating-point pixels in {lo:g}..{hi:g}; darm reads whole "
                f"values 0..255 from a float image: save it scaled to 0..255, or as 8-bit"
            )
        return wide.astype(np.uint8)
    if bits > 16 or (wide.size and (wide.min() < 0 or wide.max() > 65535)):
        raise DarmError(
            f"{path} holds {bits}-bit integer pixels; darm reads 8- and 16-bit images: save "
            f"it as 8-bit (0..255) or 16-bit (0..65535)"
        )
    return (wide.astype(np.int64) >> 8).astype(np.uint8)  # 0..65535 -> 0..255


def grey_mode(mode: str) -> bool:
    """A one-channel Pillow mode: 1, L, LA, F, and every integer one (I, I;16, I;16B, ...)."""
    return mode in ("1", "L", "LA", "F") or mode.startswith("I")


PIL_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}  # channels -> Pillow mode


def grey_palette(img) -> bool:
    """A palette image (GIF, P-mode PNG) whose colours are all grey."""
    rgb = np.asarray(img.convert("RGB"))  # (H, W, 3)
    return bool((rgb == rgb[..., :1]).all())


def _image_mode(paths: list[Path]) -> str:
    """'L' when every image is grey, else 'RGB'. A palette image (GIF, P-mode PNG) is grey
    when its colours are: grey pictures saved as GIF must not become three equal channels."""
    for p in paths:
        with open_image(p) as img:
            if img.mode in ("P", "PA") and grey_palette(img):
                continue
            if not grey_mode(img.mode):
                return "RGB"
    return "L"


def conversion_note(paths: list[Path], mode: str) -> str:
    """What reading every image in `mode` did that the files do not show: transparency
    dropped, grey images given three equal channels, colour images made grey (for a grey
    model). (Headers only, and the colours of palette images: no other pixels are read.)"""

    def plural(n: int, what: str) -> str:
        return f"{n} {what}{'s' * (n != 1)}"

    alpha = grey = 0
    for p in paths:
        with open_image(p) as img:
            alpha += img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
            grey += grey_mode(img.mode) or (img.mode in ("P", "PA") and grey_palette(img))
    colour = len(paths) - grey
    notes = []
    if alpha and not mode.endswith("A"):
        notes.append(f"the transparency of {plural(alpha, 'image')} dropped")
    if grey and not mode.startswith("L"):
        notes.append(f"{plural(grey, 'grey image')} read as {mode} (equal channels)")
    if colour and mode.startswith("L"):
        notes.append(f"{plural(colour, 'colour image')} read as grey")
    return "; ".join(notes)


def hidden(path: Path, folder: Path) -> bool:
    """Whether a file under `folder` is hidden there: its name or a folder's starts with '.'."""
    return any(part.startswith(".") for part in path.relative_to(folder).parts)


def files_under(folder: Path) -> Iterator[Path]:
    """Every file under `folder`, through linked folders too (Path.rglob does not follow
    links): a class folder linked in from elsewhere is a class. Hidden folders are not
    walked, nor a link back up the tree (a cycle); a folder reached under two names (a
    link to a class beside it) is refused, since which class it is cannot be told."""
    walked = {}  # real folder -> the name it was first walked under
    for root, folders, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in walked:
            raise DarmError(
                f"{root} and {walked[real]} are one folder (a link): its pictures would be "
                f"read twice, in two classes; remove one"
            )
        walked[real] = root
        folders[:] = sorted(  # walked in name order, whatever order the file system keeps
            name
            for name in folders
            if not name.startswith(".")
            and not (real + os.sep).startswith(os.path.realpath(os.path.join(root, name)) + os.sep)
        )
        yield from (Path(root, f) for f in files)


def image_folder_dataset(
    folder: Path,
    levels: int = 256,
    seed: int = 42,
    fractions=(0.1, 0.1),
    whole: bool = False,
    channels: int | None = None,
    upright: bool = True,
) -> Dataset:
    """Every image under `folder` (same size), grey or RGB, quantised to `levels`.

    Images directly in sub-folders take the sub-folder's name as their class label
    (classes sorted by name), so `--conditional` works on a folder per class. Hidden files
    and folders (.ipynb_checkpoints, say) are skipped: they would be a class of their own.
    A seeded split, 80/10/10 by default. whole: every image in test (other data, scored
    whole by a trained model). channels: read every image with this many (a trained
    model's), rather than grey if all of them are, else RGB.
    """
    name = folder.name
    paths = sorted(
        p
        for p in files_under(folder)
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not hidden(p, folder)
    )
    if len(paths) < (1 if whole else 3):
        kinds = ", ".join(IMAGE_SUFFIXES)
        need = 1 if whole else 3
        held = f"{len(paths)} image{'s' * (len(paths) != 1)}"
        raise DarmError(f"{folder} holds {held} ({kinds}); need at least {need}")
    if channels is not None and channels not in PIL_MODES:
        raise DarmError(f"the model reads {channels}-channel images; picture files hold 1 to 4")
    mode = PIL_MODES[channels] if channels else _image_mode(paths)
    images = [read_pixels(p, mode, upright) for p in paths]
    shape = images[0].shape
    for p, img in zip(paths, images):
        if img.shape != shape:
            turned = turned_note if upright else (lambda q: "")
            raise DarmError(
                f"{p} is {img.shape[0]}x{img.shape[1]} (rows x columns){turned(p)}, but "
                f"{paths[0].relative_to(folder)} is {shape[0]}x{shape[1]}{turned(paths[0])}; "
                f"all images must have one size"
            )
    x = quantise(np.stack(images), levels)  # (N, H, W) or (N, H, W, 3)
    classes = sorted({p.parent.relative_to(folder).as_posix() for p in paths})
    if "." in classes and len(classes) > 1:  # which class would the top-level images be?
        raise DarmError(
            f"{folder} has images at its top and in sub-folders: put them all in sub-folders "
            f"(one per class) or none"
        )
    y = None
    if len(classes) > 1 or classes[0] != ".":
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index[p.parent.relative_to(folder).as_posix()] for p in paths])
    idx = whole_split(len(x)) if whole else seeded_split(len(x), fractions, seed)
    xs = {s: x[i.numpy()] for s, i in idx.items()}
    ys = {s: None if y is None else y[i.numpy()] for s, i in idx.items()}
    n = len(classes)
    labels = f", {n} class{'es' * (n != 1)} from sub-folders" if y is not None else ""
    data = make_dataset(
        name,
        xs,
        ys,
        levels,
        x.shape[1:],
        {"format": "images", "path": str(folder), "levels": levels, "seed": seed}
        | ({"upright": True} if upright else {}),  # (a run from before has no such key)
        f"{len(x)} {mode} images from {folder}{labels}, {levels} levels, "
        + (split_note(fractions, seed) if not whole else "scored whole"),
        class_names=classes if y is not None else None,
    )
    data.caveat = conversion_note(paths, mode)
    # which file each example is, for people reading per-example results
    data.info["files"] = {
        s: [paths[j].relative_to(folder).as_posix() for j in i.tolist()] for s, i in idx.items()
    }
    return data


def image_array_dataset(
    path: Path, levels: int = 256, seed: int = 42, whole: bool = False
) -> Dataset:
    """An .npz / .npy of uint8 images (N, H, W) or (N, H, W, C), intensities 0..255,
    quantised to `levels`; its own x_train / x_valid / x_test split if it has one.
    whole: as for array_dataset."""
    from darm.data.arrays import array_dataset

    def to_levels(a: np.ndarray, what: str) -> np.ndarray:
        if a.dtype != np.uint8:
            raise DarmError(f"{what}: images must be uint8 intensities 0..255, got {a.dtype}")
        if a.ndim == 2:  # (a split of) rows: one picture saved as (H, W), say
            raise DarmError(
                f"{what}: images must be (N, H, W) or (N, H, W, C), got rows of {a.shape[1]} "
                f"values (one picture is saved as (1, H, W): x[None])"
            )
        if a.ndim not in (3, 4):
            raise DarmError(f"{what}: images must be (N, H, W) or (N, H, W, C), got {a.shape}")
        return quantise(a, levels)

    data = array_dataset(path, levels=levels, seed=seed, transform=to_levels, whole=whole)
    # upright: how other picture files are read for the run (these are pixels already)
    data.source = {"format": "images", "path": str(path), "levels": levels, "seed": seed,
                   "upright": True}  # fmt: skip
    return data
