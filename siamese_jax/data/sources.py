"""Finding dataset files: a data directory from the config or environment, else a download."""

from __future__ import annotations

import os
import socket
import tarfile
import urllib.parse
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from siamese_jax.errors import DataError

DATA_DIR_ENV = "SIAMESE_JAX_DATA_DIR"


def resolve_data_dir(data_dir: str | None) -> Path | None:
    """The data directory: the config value if set, else $SIAMESE_JAX_DATA_DIR, else None."""
    chosen = data_dir or os.environ.get(DATA_DIR_ENV)
    return Path(chosen).expanduser() if chosen else None


ARCHIVE_SUFFIXES = (".zip", ".tgz", ".tar.gz", ".tar")


def archive_stem(name: str) -> str | None:
    """The folder an archive extracts to ('lfw.tgz' -> 'lfw'), or None for a plain file."""
    return next((name[: -len(s)] for s in ARCHIVE_SUFFIXES if name.endswith(s)), None)


def cache_file(cache_dir: str | None, name: str) -> Path:
    """Path of a decoded-dataset cache file: in `cache_dir` (the config's), else ~/.cache/siamese_jax."""
    root = Path(cache_dir) if cache_dir else Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "siamese_jax"
    return root.expanduser() / name


def cached_arrays(path: Path, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays of the .npz cache at `path`, or build()'s, written there first.

    A damaged cache is rebuilt. The write is atomic, so a crash never leaves half a cache; a cache
    that cannot be written is a DataError naming it.
    """
    if path.exists():
        try:
            with np.load(path) as f:
                return {name: f[name] for name in f.files}
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt from the sources.
            path.unlink(missing_ok=True)
    arrays = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")  # Per process: runs started together may race.
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except OSError as error:
        raise DataError(f"cannot write the dataset cache {path}: {error}; set --config.cache_dir") from None
    return arrays


def find_in_data_dir(root: Path, subdir: str, names: Sequence[str]) -> dict[str, Path | None]:
    """Looks for each file (or an archive's extracted folder, same name without suffix) in root/subdir and root."""
    found: dict[str, Path | None] = {}
    for name in names:
        found[name] = None
        stem = archive_stem(name)
        for folder in (root / subdir, root):
            candidates = [folder / name] + ([folder / stem] if stem else [])
            hit = next((c for c in candidates if c.exists()), None)
            if hit is not None:
                found[name] = hit
                break
    return found


def unreachable(urls: Sequence[str], timeout_s: float = 5.0) -> str | None:
    """Why the URLs' hosts cannot be reached ('cannot resolve HOST', ...), or None when each one answers.

    Checked before a download: with no network, the download manager's retries back off for
    minutes before failing, where a user should hear at once that the machine is offline.
    """
    for host, port in dict.fromkeys(_host_port(url) for url in urls):
        try:
            address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4]
        except OSError as error:
            return f"cannot resolve {host} ({error.strerror or error}): no network or DNS on this machine"
        try:
            socket.create_connection(address[:2], timeout=timeout_s).close()
        except OSError as error:
            return f"cannot connect to {host}:{port} ({error.strerror or error or 'timed out'})"
    return None


def _host_port(url: str) -> tuple[str, int]:
    """The host and port of an http(s) URL."""
    parts = urllib.parse.urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def download(urls: dict[str, str], dataset_name: str) -> dict[str, Path]:
    """Downloads files with tensorflow-datasets' download manager into its usual folder."""
    import tensorflow_datasets as tfds  # Imported lazily: only needed when nothing is local.

    download_dir = Path(os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")).expanduser() / "downloads"
    manager = tfds.download.DownloadManager(download_dir=download_dir, dataset_name=dataset_name)
    paths = manager.download(urls)
    return {name: Path(os.fspath(path)) for name, path in paths.items()}


def locate(data_dir: str | None, subdir: str, urls: dict[str, str]) -> dict[str, Path]:
    """Finds every file in `urls` locally, or downloads them, or raises DataError naming what is missing."""
    root = resolve_data_dir(data_dir)
    if root is not None:
        found = find_in_data_dir(root, subdir, list(urls))
        missing = [name for name, path in found.items() if path is None]
        if missing:
            raise DataError(
                f"missing {', '.join(missing)} in data directory {root}: put the file(s) in "
                f"{root / subdir}/ (download from {', '.join(urls[m] for m in missing)})"
            )
        return found  # type: ignore[return-value]
    advice = f"Offline, put them in DIR/{subdir}/ and pass --config.data_dir=DIR or set {DATA_DIR_ENV}=DIR"
    why = unreachable(list(urls.values()))
    if why:
        raise DataError(f"could not download {', '.join(urls)}: {why}. {advice}")
    try:
        return download(urls, dataset_name=subdir)
    except Exception as error:  # noqa: BLE001 - any download failure becomes the same advice.
        raise DataError(
            f"could not download {', '.join(urls)} ({type(error).__name__}: {str(error)[:200]}). {advice}"
        ) from None


# What one file of an archive may claim to hold, and all of them together: a zip or tar member
# that says it unpacks to more (a zip bomb, or a damaged header) is refused before it is read.
MAX_MEMBER_BYTES = 64 * 2**20
MAX_ARCHIVE_BYTES = 8 * 2**30


def check_member(archive: Path, name: str, size: int) -> None:
    """Raises DataError naming an archive member whose path leaves the archive's folder (absolute, or through
    '..') or whose unpacked size is more than MAX_MEMBER_BYTES."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or ".." in parts or (parts and parts[0].endswith(":")):
        raise DataError(f"{archive} holds a member whose path leaves the archive's folder: {name!r}; refusing "
                        "to read it")
    if size > MAX_MEMBER_BYTES:
        raise DataError(f"{archive}: member {name!r} claims {size:,} bytes unpacked, more than the "
                        f"{MAX_MEMBER_BYTES:,} a file here may hold (a zip bomb, or a damaged archive)")


def check_members(archive: Path, members: Iterable[tuple[str, int]]) -> None:
    """check_member on every (name, unpacked size), and their total against MAX_ARCHIVE_BYTES."""
    total = 0
    for name, size in members:
        check_member(archive, name, size)
        total += size
    if total > MAX_ARCHIVE_BYTES:
        raise DataError(f"{archive} claims {total:,} bytes unpacked, more than the {MAX_ARCHIVE_BYTES:,} an archive "
                        "here may hold")


class FileTree:
    """Read-only view of the files in a zip or tar archive or a folder, by '/'-separated relative path.

    Tar archives (.tgz) are compressed streams: read their files in names() order, which is the
    archive's order, or every read decompresses from the start again. Archive members are checked
    (check_members) before anything is decompressed.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._zip: zipfile.ZipFile | None = None
        self._tar: tarfile.TarFile | None = None
        if self.path.is_dir():
            return
        if not self.path.exists():
            raise DataError(f"{self.path} does not exist")
        is_tar = archive_stem(self.path.name) is not None and not self.path.name.endswith(".zip")
        if is_tar or (not self.path.name.endswith(".zip") and not zipfile.is_zipfile(self.path)):
            try:
                self._tar = tarfile.open(self.path)
                self._tar_files = {m.name: m for m in self._tar.getmembers() if m.isfile()}
                check_members(self.path, ((m.name, m.size) for m in self._tar_files.values()))
            except (tarfile.TarError, OSError, EOFError) as error:
                reason = str(error).splitlines()[0]
                raise DataError(
                    f"{self.path} is not a readable tar archive ({reason}); it is truncated or corrupt: download it again"
                ) from None
            return
        try:
            self._zip = zipfile.ZipFile(self.path)
            check_members(self.path, ((info.filename, info.file_size) for info in self._zip.infolist()))
            broken = self._zip.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise DataError(
                f"{self.path} is not a readable zip archive ({error}); it is truncated or corrupt: "
                "download it again"
            ) from None
        if broken is not None:
            raise DataError(f"{self.path} is corrupt (bad CRC in {broken}): download it again")

    def names(self) -> Iterator[str]:
        """Relative paths of every file in the tree."""
        if self._zip is not None:
            yield from (n for n in self._zip.namelist() if not n.endswith("/"))
        elif self._tar is not None:
            yield from self._tar_files
        else:
            for file in sorted(self.path.rglob("*")):
                if file.is_file():
                    yield file.relative_to(self.path).as_posix()

    def read(self, name: str) -> bytes:
        """The bytes of one file."""
        if self._zip is not None:
            return self._zip.read(name)
        if self._tar is not None:
            try:
                return self._tar.extractfile(self._tar_files[name]).read()
            except (tarfile.TarError, OSError, EOFError) as error:
                raise DataError(f"cannot read {self.describe(name)} ({error}): the archive is truncated or corrupt") from None
        return (self.path / name).read_bytes()

    def describe(self, name: str) -> str:
        """A human-readable location of one file, for error messages."""
        return f"{self.path}:{name}" if self._zip is not None or self._tar is not None else str(self.path / name)


def decode_png(tree: FileTree, name: str, expected_shape: tuple[int, int] | None = None):
    """Decodes one image to a boolean array where True is ink (dark), raising DataError on failure."""
    import numpy as np

    from siamese_jax.data.images import open_image

    pixels = np.asarray(open_image(tree.read(name), tree.describe(name)).convert("L"))
    if expected_shape is not None and pixels.shape != expected_shape:
        raise DataError(f"image {tree.describe(name)} is {pixels.shape}, expected {expected_shape}")
    return pixels < 128
