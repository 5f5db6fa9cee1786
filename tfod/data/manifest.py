"""``manifest.json``: the converter writes it last; every stage that reads a converted folder
checks the folder against it with :func:`check_converted`.

The converter writes into a staging folder and moves its files into place at the end, the
manifest last (see :mod:`tfod.data.convert`). So a folder without a manifest is an unfinished
or foreign conversion, and a shard that the manifest does not list, or whose size (or, on
request, sha256) differs from the manifest's, was left or changed by something else: training
on it would silently use the wrong images. Each case is a :class:`tfod.errors.BadInput` naming
the file.

This module imports neither TensorFlow nor the OD API.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from tfod.errors import BadInput
from tfod.runfolder import atomic_write

MANIFEST_NAME = "manifest.json"
LABEL_MAP_NAME = "label_map.pbtxt"
SHARD_FILE = re.compile(r"^\.?(fold\d+|test)-\d{5}-of-\d{5}\.tfrecord(\.incomplete)?$")


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(manifest: dict, output_dir) -> Path:
    """Write ``manifest`` as ``output_dir/manifest.json`` atomically (temporary file, rename)."""
    path = Path(output_dir) / MANIFEST_NAME
    with atomic_write(path) as stream:
        stream.write(json.dumps(manifest, indent=2) + "\n")
    return path


def read_manifest(data_dir) -> dict:
    """The manifest of a converted folder; :class:`BadInput` when absent, unreadable or
    without its shard list."""
    path = Path(data_dir) / MANIFEST_NAME
    if not Path(data_dir).is_dir():
        raise BadInput("no such folder (expected a converted folder)", data_dir)
    if not path.is_file():
        raise BadInput("missing: the conversion did not finish, or this is not a converted "
                       "folder; run tfod-convert again", path)
    try:
        manifest = json.loads(path.read_text())
        shards, counts = manifest["shards"], manifest["counts"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise BadInput(f"unreadable or incomplete ({type(error).__name__}: {error})",
                       path) from error
    if not isinstance(shards, list) or not isinstance(counts, dict):
        raise BadInput("incomplete: 'shards' must be a list and 'counts' a mapping", path)
    return manifest


def check_converted(data_dir, verify: bool = False) -> dict:
    """The manifest of ``data_dir`` after checking that the folder is what it says.

    Present and complete; the label map there; every listed shard present with the listed
    size (and sha256 when ``verify``); no shard that the manifest does not list.
    """
    folder = Path(data_dir)
    manifest = read_manifest(folder)
    for entry in manifest["shards"]:
        _check_shard(folder, entry, verify)
    listed = {entry["file"] for entry in manifest["shards"]}
    for name in sorted(os.listdir(folder)):
        if SHARD_FILE.match(name) and name not in listed:
            raise BadInput(f"not listed in {MANIFEST_NAME}: left by another or an unfinished "
                           "conversion; run tfod-convert again", folder / name)
    for name in (LABEL_MAP_NAME, manifest.get("folds_csv")):
        if name and not (folder / name).is_file():
            raise BadInput(f"missing, although {MANIFEST_NAME} names it", folder / name)
    return manifest


def _check_shard(folder: Path, entry: dict, verify: bool) -> None:
    try:
        path, size, sha256 = folder / entry["file"], entry["bytes"], entry["sha256"]
    except (KeyError, TypeError) as error:
        raise BadInput(f"shard entry {entry!r} lacks {error} (written by an older tfod?); "
                       "run tfod-convert again", folder / MANIFEST_NAME) from error
    if not path.is_file():
        raise BadInput(f"missing, although {MANIFEST_NAME} lists it", path)
    if path.stat().st_size != size:
        raise BadInput(f"{path.stat().st_size} bytes, {MANIFEST_NAME} says {size}", path)
    if verify and file_sha256(path) != sha256:
        raise BadInput(f"sha256 differs from {MANIFEST_NAME}: the file changed", path)


def split_images(manifest: dict) -> dict[str, int]:
    """Images per split (``'fold0'``, ..., ``'test'``), from the manifest's shard list."""
    images: dict[str, int] = {}
    for entry in manifest["shards"]:
        images[entry["split"]] = images.get(entry["split"], 0) + int(entry["images"])
    return images
