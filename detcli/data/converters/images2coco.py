"""A folder of images to a test-set style COCO json: ``images`` and ``categories``, no annotations.

What ``det test`` needs to run a model on unlabelled images (``file_name`` relative to the folder,
sizes from the file headers, categories ``1..K`` from a class-names file).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from detcli.data.converters._common import (
    IMAGE_EXTENSIONS,
    CocoBuilder,
    ConversionResult,
    image_size,
    list_images,
    read_class_names,
    require_dir,
    write_split,
)
from detcli.errors import DatasetError
from detcli.fileio import check_writable_file


def images_to_coco(img_dir: str | os.PathLike[str], classes: str | os.PathLike[str], out_file: str | os.PathLike[str],
                   exclude_extensions: Iterable[str] = ()) -> ConversionResult:
    """Write ``out_file`` listing every image under ``img_dir`` (recursively, sorted).

    Args:
        img_dir: the image folder.
        classes: class names (``.txt``, one per line, or a data ``.yaml`` with ``names``).
        out_file: the ``.json`` to write.
        exclude_extensions: suffixes to skip, e.g. ``("png",)`` or ``(".png",)``.

    Raises:
        DatasetError: missing folder, no image, bad class file or an output that is not ``.json``.
    """
    root = require_dir(img_dir, "image folder")
    out = Path(out_file)
    check_writable_file(out, "output file")  # before any work
    if out.suffix.lower() != ".json":
        raise DatasetError(f"output {out} must be a .json file")
    names = read_class_names(classes)
    builder = CocoBuilder(names)
    images = list_images(root, exclude_extensions)
    if not images:
        raise DatasetError(f"{root}: no images found (extensions {' '.join(IMAGE_EXTENSIONS)}"
                           f"{', excluding ' + ' '.join(exclude_extensions) if exclude_extensions else ''})")
    for img in images:
        builder.add_image(img.relative_to(root).as_posix(), *image_size(img))
    result = ConversionResult()
    result.outputs.append(write_split(builder, out.stem, out, root))
    return result
