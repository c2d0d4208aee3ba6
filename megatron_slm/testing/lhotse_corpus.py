"""Lhotse manifests of a corpus in our alignment JSONL (e.g. the bundled tiny corpus), built
with lhotse itself, for tests of the Lhotse readers and writers.

    cuts = corpus_cuts("examples/data/tiny_corpus/alignments.jsonl")   # one MonoCut per utterance
    write_manifests(cuts, out_dir)   # cuts.jsonl.gz, recordings + supervisions, shar/
"""
from __future__ import annotations

import os
from pathlib import Path

from megatron_slm.corpus.canonical import iter_alignments


def corpus_cuts(alignments: str, with_words: bool = True) -> list:
    """One MonoCut per record (id = the utterance id, the whole recording), its words in the
    supervision's alignment["word"] (start, duration = end - start)."""
    from lhotse import MonoCut, Recording, SupervisionSegment
    from lhotse.supervision import AlignmentItem

    root = os.path.dirname(os.path.abspath(alignments))
    cuts = []
    for r in iter_alignments(alignments):
        rec = Recording.from_file(os.path.join(root, r["audio"]), recording_id=r["id"])
        words = {"word": [AlignmentItem(w["word"], w["start"], w["end"] - w["start"]) for w in r["words"]]}
        sup = SupervisionSegment(id=r["id"], recording_id=r["id"], start=0.0, duration=rec.duration,
                                 text=r["text"], alignment=words if with_words else None)
        cuts.append(MonoCut(id=r["id"], start=0.0, duration=rec.duration, channel=0, recording=rec,
                            supervisions=[sup]))
    return cuts


def write_manifests(cuts: list, out_dir: str | os.PathLike, shard_size: int = 16) -> dict[str, str]:
    """The same cuts as a CutSet, a recordings + supervisions pair and a Shar directory."""
    from lhotse import CutSet, RecordingSet, SupervisionSet

    out = Path(out_dir)
    (out / "shar").mkdir(parents=True, exist_ok=True)
    cs = CutSet.from_cuts(cuts)
    paths = {"cuts": str(out / "cuts.jsonl.gz"), "supervisions": str(out / "corpus_supervisions.jsonl.gz"),
             "recordings": str(out / "corpus_recordings.jsonl.gz"), "shar": str(out / "shar")}
    cs.to_file(paths["cuts"])
    RecordingSet.from_recordings({c.recording.id: c.recording for c in cuts}.values()).to_file(paths["recordings"])
    SupervisionSet.from_segments([s for c in cuts for s in c.supervisions]).to_file(paths["supervisions"])
    cs.to_shar(paths["shar"], fields={"recording": "flac"}, shard_size=shard_size)
    return paths
