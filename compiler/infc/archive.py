"""One-file archives of a bundle: `NAME-VERSION-PLATFORM.tar.gz`, reproducible byte for byte.

`write_archive(bundle, outdir, platform)` writes the bundle's files (as
`write_bundle` does, from the in-memory bundle) under `NAME-VERSION/` into a
gzip'd tar beside the bundle folder. The same bundle gives the same bytes:

- entries sorted by path, folders before what they hold, each folder listed;
- every mtime `SOURCE_DATE_EPOCH` when set, else `FIXED_MTIME` (1980-01-01);
- owner uid/gid 0 with empty user and group names; modes 0755 for folders and
  `install.sh`, 0644 for every other file (`bundle.file_mode`);
- POSIX (pax) format only where a name needs it; gzip's header without a file
  name and with mtime 0.

Unpack on the target with `tar -xzf NAME-VERSION-PLATFORM.tar.gz` as the user
who will run it (GNU tar, as root, keeps the archive's owner uid 0 unless
`--no-same-owner`; it never follows the archive's paths outside the current
folder unless told to). With Python, `tarfile.extractall(filter="data")`.
The archive holds only plain files and folders under `NAME-VERSION/`.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from .bundle import Bundle, file_mode

__all__ = ["FIXED_MTIME", "archive_name", "write_archive"]

FIXED_MTIME = 315532800
"""1980-01-01T00:00:00Z (the zip epoch): every entry's mtime when SOURCE_DATE_EPOCH is not set."""


def archive_name(bundle: Bundle, platform: str) -> str:
    """`NAME-VERSION-PLATFORM.tar.gz`, e.g. `digits-1.0.0-linux_x86_64.tar.gz`."""
    return f"{bundle.dirname}-{platform}.tar.gz"


def _mtime() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    return int(value) if value.isdigit() else FIXED_MTIME


def _entry(name: str, *, size: int = 0, mode: int, folder: bool, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if folder else tarfile.REGTYPE
    info.size, info.mode, info.mtime = size, mode, mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_archive(bundle: Bundle, outdir: Path, platform: str) -> Path:
    """Write `outdir/NAME-VERSION-PLATFORM.tar.gz` (replacing an older one atomically); its path."""
    outdir.mkdir(parents=True, exist_ok=True)
    final = outdir / archive_name(bundle, platform)
    files = bundle.all_files()
    folders = {str(parent) for rel in files for parent in PurePosixPath(rel).parents if str(parent) != "."}
    top, mtime = bundle.dirname, _mtime()
    handle, staging = tempfile.mkstemp(prefix=f".{final.name}.", dir=outdir)
    try:
        with os.fdopen(handle, "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(_entry(top, mode=0o755, folder=True, mtime=mtime))
            for rel in sorted([*folders, *files], key=lambda p: PurePosixPath(p).parts):
                name = f"{top}/{rel}"
                if rel in folders:
                    tar.addfile(_entry(name, mode=0o755, folder=True, mtime=mtime))
                else:
                    data = files[rel]
                    tar.addfile(_entry(name, size=len(data), mode=file_mode(rel), folder=False, mtime=mtime),
                                io.BytesIO(data))
        os.chmod(staging, 0o644)
        os.replace(staging, final)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return final
