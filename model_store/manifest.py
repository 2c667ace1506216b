"""sha256 manifests of a folder (`sha256sum -c` format): written, and verified with what they do not list."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

from model_store.errors import BundleError

MANIFEST = "MANIFEST.sha256"

log = logging.getLogger(__name__)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_files(folder: Path, skip: Sequence[str]) -> list[str]:
    """Every file under `folder` (posix paths relative to it) but the manifest and the `skip` folders."""
    return sorted(
        rel for p in folder.rglob("*")
        if p.is_file() and (rel := p.relative_to(folder).as_posix()) != MANIFEST
        and rel.split("/", 1)[0] not in skip
    )


def write_manifest(folder: Path, skip: Sequence[str] = ()) -> None:
    """Write `folder`'s MANIFEST.sha256 over every file except those under the top-level `skip` folders."""
    lines = [f"{sha256(folder / rel)}  {rel}" for rel in manifest_files(folder, skip)]
    (folder / MANIFEST).write_text("\n".join(lines) + "\n")


def verify_manifest(
    folder: Path, required: Sequence[str], skip: Sequence[str] = (), read: Sequence[str] = (),
    what: str = "folder",
) -> set[str]:
    """Raise BundleError unless every file listed matches its sha256 and every required file is listed.

    A file the manifest does not list is never verified: one under a top-level name in `read` (a file or
    folder that loading reads) is refused, any other is reported in a warning. Files under the `skip`
    folders are not this manifest's business. Returns the listed file names."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise BundleError(f"{folder}: not a {what} ({MANIFEST} is missing)")
    listed: set[str] = set()
    for number, line in enumerate(manifest.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        if not name or len(digest) != 64 or Path(name).is_absolute() or ".." in Path(name).parts:
            raise BundleError(f"{manifest}:{number}: malformed manifest line")
        target = folder / name
        if not target.is_file():
            raise BundleError(f"{folder}: {name} is listed in the manifest but missing")
        if sha256(target) != digest:
            raise BundleError(f"{folder}: {name} is corrupt (sha256 differs from the manifest)")
        listed.add(name)
    for name in required:
        if name not in listed:
            raise BundleError(f"{folder}: required file {name} is not in the manifest")
    unlisted = [rel for rel in manifest_files(folder, skip) if rel not in listed]
    refused = [rel for rel in unlisted if rel.split("/", 1)[0] in read]
    if refused:
        raise BundleError(f"{folder}: {', '.join(refused)} not in the manifest (unverified files that "
                          "loading would read)")
    if unlisted:
        log.warning("%s: %d file(s) not in the manifest, ignored and unverified: %s", folder, len(unlisted),
                    ", ".join(unlisted[:10]) + (" ..." if len(unlisted) > 10 else ""))
    return listed
