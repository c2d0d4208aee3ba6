"""Benchmarks published as Hugging Face datasets, read from a local copy (no hub access).

`--src` may be a directory of parquet files as the hub stores them (`data/train-*.parquet`, or
`<config>/train-*.parquet` with one config per part), a `save_to_disk` directory (a Dataset or a
DatasetDict), or a directory of `save_to_disk` directories, one per config. The layout is told by
the audio columns of each config:

  speed/sStoryCloze, speed/tStoryCloze, speed/sWUGGY, speed/sBLIMP   `positive`, `negative`
  slprl/SALMon (one config per part)                                `positive_audio`, `negative_audio`

Item ids are the dataset rows: `<row>` (one config) or `<config>/<row>`; SALMon's part is the
config. Audio stays in the dataset: each candidate is an `AudioSource` whose bytes are fetched
from its row when the units pipeline decodes it (soundfile / DALI), never through `datasets`'
own decoding. Other columns are not used: the benchmarks' answers are the column names.
"""
from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Optional, Sequence

from megatron_slm.eval.benchmarks.spec import CandSpec, ItemSpec, PrepareError

AUDIO_COLUMNS = {"speed": ("positive", "negative"), "salmon": ("positive_audio", "negative_audio")}
INSTALL_HINT = "reading Hugging Face datasets needs the datasets package: pip install 'megatron-slm[formats]'"
_SAVE_TO_DISK = ("state.json", "dataset_dict.json")
_SHARD = re.compile(r"^(?P<split>[A-Za-z][\w]*?)-\d+-of-\d+\.parquet$")
_SPLIT_DIRS = ("train", "test", "validation", "dev")


def is_hf_dataset(src: str | os.PathLike) -> bool:
    """A local HF dataset: parquet files below it, or `save_to_disk` output (in it or one level down)."""
    p = Path(src)
    if not p.is_dir():
        return False
    if any((p / n).is_file() for n in _SAVE_TO_DISK) or any(
            (d / n).is_file() for d in p.iterdir() if d.is_dir() for n in _SAVE_TO_DISK):
        return True
    return next(p.rglob("*.parquet"), None) is not None


def _datasets():
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # local files only: never ask the hub
    try:
        import datasets
    except ImportError:
        raise PrepareError(INSTALL_HINT) from None
    return datasets


def _parquet_groups(root: Path) -> dict[str, dict[str, list[str]]]:
    """{config: {split: [files]}} following the hub's naming: `<config>/<split>-NNNNN-of-NNNNN.parquet`
    (`data/` holds the default config), or `<config>/<split>/NNNN.parquet` (the parquet converter)."""
    groups: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for f in sorted(root.rglob("*.parquet")):
        parts = f.relative_to(root).parts[:-1]
        m = _SHARD.match(f.name)
        if m:
            split = m["split"]
        elif parts and parts[-1] in _SPLIT_DIRS:
            split, parts = parts[-1], parts[:-1]
        else:
            split = "train"
        config = "/".join(parts) if parts and parts != ("data",) else "default"
        groups[config][split].append(str(f))
    return groups


def load_configs(src: str, split: Optional[str] = None) -> dict[str, object]:
    """{config: datasets.Dataset} of a local HF dataset; with several splits, `split` picks one."""
    ds_mod = _datasets()
    root = Path(src)
    found: dict[str, dict[str, object]] = {}
    try:
        if any((root / n).is_file() for n in _SAVE_TO_DISK):
            found["default"] = _splits(ds_mod.load_from_disk(str(root)))
        elif any((d / n).is_file() for d in root.iterdir() if d.is_dir() for n in _SAVE_TO_DISK):
            for d in sorted(root.iterdir()):
                if any((d / n).is_file() for n in _SAVE_TO_DISK):
                    found[d.name] = _splits(ds_mod.load_from_disk(str(d)))
        else:
            for config, splits in _parquet_groups(root).items():
                found[config] = {s: ds_mod.load_dataset("parquet", data_files={s: files}, split=s)
                                 for s, files in splits.items()}
    except (OSError, ValueError, TypeError, IndexError, KeyError) as e:  # a damaged arrow/parquet file, an odd
        # layout, a saved dataset without rows (datasets' loader fails with IndexError on it)
        raise PrepareError(f"{src}: not a readable Hugging Face dataset ({type(e).__name__}: {e})") from None
    out = {}
    for config, splits in found.items():
        if len(splits) == 1:
            out[config] = next(iter(splits.values()))
        elif split in splits:
            out[config] = splits[split]
        else:
            raise PrepareError(f"{src}: config {config!r} has splits {sorted(splits)}; choose one with --split")
    if not out:
        raise PrepareError(f"{src}: no dataset found")
    return out


def _splits(obj) -> dict[str, object]:
    return dict(obj) if hasattr(obj, "keys") else {"train": obj}


def layout_of(ds, where: str) -> str:
    """'speed' or 'salmon', from the audio columns."""
    cols = set(ds.column_names)
    for name, (pos, neg) in AUDIO_COLUMNS.items():
        if pos in cols and neg in cols:
            return name
    raise PrepareError(f"{where}: columns {sorted(cols)}: expected audio columns "
                       + " or ".join(f"{p!r}/{n!r}" for p, n in AUDIO_COLUMNS.values()))


class _RowAudio:
    """The encoded bytes of one audio cell, fetched when the decoder asks for them."""

    def __init__(self, ds, row: int, column: str, root: str, where: str):
        self.ds, self.row, self.column, self.root, self.where = ds, row, column, root, where

    def __call__(self) -> bytes:
        cell = self.ds[self.row][self.column]
        data = cell.get("bytes") if isinstance(cell, dict) else None
        if data:
            return data
        path = cell.get("path") if isinstance(cell, dict) else None
        if path:  # a dataset that references its audio files instead of embedding them
            full = path if os.path.isabs(path) else os.path.join(self.root, path)
            if os.path.isfile(full):
                with open(full, "rb") as f:
                    return f.read()
        raise OSError(f"{self.where}: row {self.row} column {self.column!r} holds no audio bytes")


def read_hf(src: str, task: str, split: Optional[str] = None, parts: Optional[Sequence[str]] = None) -> list[ItemSpec]:
    """ItemSpecs of a local HF benchmark dataset (positive = the positive column, one negative)."""
    from megatron_slm.audio.sources import AudioSource

    ds_mod = _datasets()
    configs = load_configs(src, split)
    if parts:
        missing = [p for p in parts if p not in configs]
        if missing:
            raise PrepareError(f"{src}: no config(s) {', '.join(missing)} (have {', '.join(sorted(configs))})")
        configs = {p: configs[p] for p in parts}
    root = os.path.abspath(src)
    specs = []
    for config, ds in sorted(configs.items()):
        where = f"{src} (config {config})"
        layout = layout_of(ds, where)
        pos_col, neg_col = AUDIO_COLUMNS[layout]
        if len(ds) == 0:  # an empty config would vanish from the report instead of scoring 0 items
            raise PrepareError(f"{where}: no rows")
        for col in (pos_col, neg_col):  # bytes and path, never decoded by datasets
            kind = ds.features[col]
            try:
                ds = ds.cast_column(col, ds_mod.Audio(decode=False))
            except Exception as e:  # datasets raises ValueError/TypeError/ArrowInvalid for a wrong column type
                raise PrepareError(f"{where}: column {col!r} holds {kind}, not audio "
                                   f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
        named = len(configs) > 1 or layout == "salmon"
        part = config if named else None
        columns = {col: ds.select_columns([col]) for col in (pos_col, neg_col)}  # a row read fetches one cell

        def cand(row: int, col: str) -> CandSpec:
            key = f"{root}#{config}/{row}/{col}"  # a unique name for the units cache and messages
            return CandSpec(audio=key, source=AudioSource(key, data=_RowAudio(columns[col], row, col, root, where)))

        for row in range(len(ds)):
            specs.append(ItemSpec(id=f"{config}/{row}" if named else str(row), task=task, part=part,
                                  positive=cand(row, pos_col), negatives=[cand(row, neg_col)]))
    if not specs:
        raise PrepareError(f"{src}: the dataset has no rows")
    return specs
