"""read: list a corpus folder or object-store prefix, and fetch file bytes inside Ray workers.

Listing happens on the driver (metadata only) so that every file the job will not read gets a
reason; the bytes are read by the workers, so a bucket never streams through the driver.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pyarrow.fs as pafs

from rag.config import CorpusConfig
from rag.corpus import CorpusLocation, CorpusNotFound

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class FileChanged(ValueError):
    """The bytes read differ in length from the listing: the file changed during the run, so they are no snapshot."""


@dataclass(frozen=True)
class CorpusFile:
    source: str  # path relative to the corpus root, '/'-separated: the document's stable key
    location: str  # what the filesystem opens
    size: int


@dataclass(frozen=True)
class Skipped:
    source: str
    reason: str


# The files a listing will read, and those it will not, each with the reason.
Listing = tuple[list[CorpusFile], list[Skipped]]


@dataclass(frozen=True)
class ManifestEntry:
    url: str | None
    title: str | None


class Corpus:
    """A corpus root on the local disk or in an object store; picklable, so workers read through it."""

    def __init__(self, cfg: CorpusConfig, location: CorpusLocation | None = None):
        """``location``: the corpus as ``prepare`` found it; else it is looked up here (CorpusNotFound)."""
        self.cfg = cfg
        self.location = location or CorpusLocation.of(cfg)
        self.uri, self.root, self.remote = self.location.uri, self.location.root, self.location.remote
        self.extensions = tuple(e.lower() for e in cfg.extensions)

    def _filesystem(self) -> pafs.FileSystem:
        return self.location.filesystem()

    def list(self) -> Listing:
        """Every file under the root with a known extension, and the ones that will not be read, with why."""
        return self._list_remote() if self.remote else self._list_local()

    def _accept(self, source: str, size: int) -> Skipped | None:
        if size == 0:
            return Skipped(source, "empty file")
        if size > self.cfg.max_file_bytes:
            return Skipped(source, f"oversized: {size} bytes > corpus.max_file_bytes={self.cfg.max_file_bytes}")
        return None

    def _wanted(self, name: str) -> bool:
        return name.lower().endswith(self.extensions) and name != self.cfg.manifest

    def _list_local(self) -> Listing:
        files, skipped = [], []
        root = Path(self.root)
        # Symlinked folders are not followed (one pointing up would loop); symlinked files are read only if they
        # stay inside the root.
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            for link in (Path(dirpath) / name for name in dirnames):
                if link.is_symlink():
                    source = _printable(link.relative_to(root).as_posix()) + "/"
                    skipped.append(Skipped(source, "symlinked folder, not followed"))
            for name in sorted(filenames):
                path = Path(dirpath) / name
                source = path.relative_to(root).as_posix()
                if not self._wanted(name):
                    continue
                if reason := _bad_name(source):
                    skipped.append(reason)
                    continue
                try:
                    # A loop raises OSError here, where Path.resolve raises RuntimeError.
                    real = Path(os.path.realpath(path, strict=True))
                except OSError as e:
                    skipped.append(Skipped(source, f"unreadable: {e.strerror}"))
                    continue
                if not real.is_relative_to(root):
                    skipped.append(Skipped(source, "outside the corpus root (symlink)"))
                    continue
                try:
                    st = real.stat()
                except OSError as e:
                    skipped.append(Skipped(source, f"unreadable: {e.strerror}"))
                    continue
                if not stat.S_ISREG(st.st_mode):
                    skipped.append(Skipped(source, "not a regular file"))
                    continue
                if not os.access(real, os.R_OK):
                    skipped.append(Skipped(source, "unreadable: permission denied"))
                    continue
                if reason := self._accept(source, st.st_size):
                    skipped.append(reason)
                    continue
                files.append(CorpusFile(source, str(real), st.st_size))
        return files, skipped

    def _list_remote(self) -> Listing:
        fs = self._filesystem()
        try:
            infos = fs.get_file_info(pafs.FileSelector(self.root, recursive=True, allow_not_found=False))
        except (FileNotFoundError, OSError) as e:
            raise CorpusNotFound(f"corpus not found: {self.uri}: {e}") from None
        files, skipped = [], []
        for info in sorted(infos, key=lambda i: i.path):
            if info.type != pafs.FileType.File or not self._wanted(info.base_name):
                continue
            source = str(PurePosixPath(info.path).relative_to(self.root))
            if reason := _bad_name(source) or self._accept(source, info.size):
                skipped.append(reason)
                continue
            files.append(CorpusFile(source, info.path, info.size))
        return files, skipped

    def read(self, file: CorpusFile) -> bytes:
        """The file's bytes, never more than its listed size plus one, so a file that grew cannot exhaust memory."""
        with self._filesystem().open_input_stream(file.location) as stream:
            data = stream.read(file.size + 1)
        if len(data) != file.size:
            now = f"over {file.size}" if len(data) > file.size else str(len(data))
            raise FileChanged(f"changed while read: {file.size} bytes when listed, {now} when read")
        return data

    def manifest(self) -> dict[str, ManifestEntry]:
        """The optional ``manifest.jsonl`` at the root: per relative path, its canonical URL and title."""
        location = f"{self.root}/{self.cfg.manifest}"
        try:
            with self._filesystem().open_input_stream(location) as stream:
                lines = stream.read().decode("utf-8", errors="replace").splitlines()
        except (FileNotFoundError, OSError):
            return {}
        entries = {}
        for line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("path"), str):
                entries[row["path"]] = ManifestEntry(row.get("url"), row.get("title"))
        return entries


def _printable(source: str) -> str:
    """The name fit for a one-line summary: bytes that are not UTF-8 and control characters escaped."""
    text = source.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


def _bad_name(source: str) -> Skipped | None:
    """A source key is stored, cited and logged as UTF-8 text on one line; names that cannot be are skipped."""
    try:
        source.encode("utf-8")
    except UnicodeEncodeError:
        return Skipped(_printable(source), "file name is not UTF-8")
    if _CONTROL.search(source):
        return Skipped(_printable(source), "file name has control characters")
    return None
