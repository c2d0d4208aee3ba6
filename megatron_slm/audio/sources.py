"""Where audio comes from: the files a directory or list holds (one extension list, regular files
only), their utterance ids, and `AudioSource` for audio that is more than a whole file."""
from __future__ import annotations

import dataclasses
import io
import os
import stat
from typing import Callable, Optional, Sequence, Union

from megatron_slm.audio.skips import Skipped

# what --audio-dir lists and --file-list accepts: the formats both decoders read (DALI's audio
# decoder and libsndfile >= 1.1 decode all five)
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3")


@dataclasses.dataclass(frozen=True)
class AudioSource:
    """Where one utterance's samples are, when that is more than a whole file: only the span
    [offset, offset + duration) of `path` (a cut of a long recording), and/or encoded audio that
    `data()` returns (a member of a tar shard, a dataset's audio column) instead of the file.
    `path` then labels the audio in records and messages."""

    path: str
    offset: float = 0.0
    duration: Optional[float] = None  # None: to the end of the file
    data: Optional[Callable[[], bytes]] = dataclasses.field(default=None, compare=False)

    @property
    def is_span(self) -> bool:
        return self.offset > 0 or self.duration is not None

    def open(self):
        """What soundfile reads: the file, or the encoded bytes."""
        return io.BytesIO(self.data()) if self.data is not None else self.path

    def encoded(self) -> bytes:
        if self.data is not None:
            return self.data()
        with open(self.path, "rb") as f:
            return f.read()


Input = Union[str, AudioSource]  # what probe() takes: a file path, or a source


def is_audio_name(path: str) -> bool:
    return path.lower().endswith(AUDIO_EXTENSIONS)


def not_regular(path: str) -> Optional[str]:
    """Why `path` must not be opened, or None for a regular file (a FIFO blocks the reader forever)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # missing or unreadable: the decoder names the error
    if stat.S_ISREG(mode):
        return None
    kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else \
        "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a directory" if stat.S_ISDIR(mode) else "special"
    return f"not a regular file ({kind})"


def list_audio_files(audio_dir: str | os.PathLike, extensions: Sequence[str] = AUDIO_EXTENSIONS,
                     skipped: Optional[list] = None) -> list[str]:
    """The regular audio files under a directory (recursive), sorted for a stable order across
    ranks. Entries with an audio name that are no regular file (a FIFO, a device, a
    socket) are left out and appended to `skipped` as `Skipped`."""
    out, left = [], []
    for root, _, files in os.walk(audio_dir):
        for f in files:
            if not f.lower().endswith(tuple(extensions)):
                continue
            path = os.path.join(root, f)
            problem = not_regular(path)
            if problem is None:
                out.append(path)
            else:
                left.append(Skipped(path, problem))
    if skipped is not None:
        skipped.extend(sorted(left, key=lambda s: s.path))
    return sorted(out)


def utterance_id(path: str, root: str | None = None) -> str:
    """Id of a file: its path relative to `root` without extension ('/' kept), else the stem."""
    rel = os.path.relpath(path, root) if root else os.path.basename(path)
    return os.path.splitext(rel)[0].replace(os.sep, "/")
