"""Golden hashes of the bundled corpus's datasets and of the ids eval and generation make.

The outputs of preprocessing (static and dynamic interleaving under both conventions, speech and
text data), the dynamic drawer's documents of the first epochs, eval candidates and generation
prompts are hashed and compared with tests/golden/data.json, recorded before the document layout
was moved into one module: a refactor of that code must leave every id unchanged.

    python tests/test_golden_data.py --write    # re-record (only for an intended change of ids)
"""
from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from conftest import CORPUS, REPO, TOKENIZER

GOLDEN = REPO / "tests" / "golden" / "data.json"

# name -> (kind, mode, compat, method)
DATASETS = {
    "interleaved_static_slamkit": ("interleaved", "static", "slamkit", "poisson"),
    "interleaved_dynamic_slamkit": ("interleaved", "dynamic", "slamkit", "poisson"),
    "interleaved_static_none": ("interleaved", "static", "none", "poisson"),
    "interleaved_dynamic_none": ("interleaved", "dynamic", "none", "poisson"),
    "interleaved_static_slamkit_span": ("interleaved", "static", "slamkit", "span"),
    "interleaved_static_slamkit_random": ("interleaved", "static", "slamkit", "random"),
    "interleaved_static_none_span": ("interleaved", "static", "none", "span"),
    "interleaved_static_none_random": ("interleaved", "static", "none", "random"),
    "speech": ("speech", None, None, None),
    "text": ("text", None, None, None),
}
DRAWN_EPOCHS = 3
VOLATILE = ("elapsed_s",)  # the sidecar's timing


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _ids_sha(seqs) -> str:
    """One hash of a list of id sequences (lengths and values, as int64)."""
    h = hashlib.sha256()
    for s in seqs:
        a = np.asarray(s, dtype=np.int64)
        h.update(np.int64(len(a)).tobytes() + a.tobytes())
    return h.hexdigest()


def _sidecar_sha(path: Path, root: Path) -> str:
    meta = json.loads(path.read_text())
    for k in VOLATILE:
        meta.pop(k, None)
    text = json.dumps(meta, sort_keys=True).replace(str(root), "<out>").replace(str(REPO), "<repo>")
    return _sha(text.encode())


def build_datasets(out: Path) -> dict:
    from megatron_slm.config import InterleaveConfig
    from megatron_slm.data.preprocess import PreprocessJob, run

    text_jsonl = out / "text.jsonl"
    text_jsonl.write_bytes((CORPUS / "alignments.jsonl").read_bytes())  # its records carry a "text" field
    hashes = {}
    for name, (kind, mode, compat, method) in DATASETS.items():
        prefix = out / name
        job = PreprocessJob(kind=kind, tokenizer=str(TOKENIZER), out_prefix=str(prefix), progress=False,
                            inputs=[str(text_jsonl if kind == "text" else CORPUS / "units.jsonl")])
        if kind == "interleaved":
            job.alignments, job.mode = str(CORPUS / "alignments.jsonl"), mode
            job.interleave = InterleaveConfig(compat=compat, method=method, allow_mixed_compat=compat == "none")
        run(job)
        files = sorted(p for p in out.iterdir() if p.name.startswith(name + ".") or p.name.startswith(name + "_words."))
        hashes[name] = {p.name[len(name):]: (_sidecar_sha(p, out) if p.name.endswith(".meta.json") else _sha(p.read_bytes()))
                        for p in files}
    return hashes


def drawn_documents(out: Path) -> dict:
    """The dynamic drawer's documents of every stored document in the first epochs."""
    from megatron_slm.config import InterleaveConfig
    from megatron_slm.data import dynamic_index
    from megatron_slm.document import Markers
    from megatron_slm.data.storage import StoredDataset
    from megatron_slm.vocab import SpeechVocab

    vocab = SpeechVocab.from_pretrained(TOKENIZER, num_units=100)
    hashes = {}
    for compat in ("slamkit", "none"):
        stored = StoredDataset(str(out / f"interleaved_dynamic_{compat}"), vocab, "interleaved")
        markers = Markers(vocab.speech_id, vocab.text_id, vocab.bos if stored.meta["add_bos"] else None, vocab.eod)
        drawer = dynamic_index.Drawer(stored, InterleaveConfig(compat=compat), 1234, markers)
        docs = np.arange(len(stored))
        for epoch in range(DRAWN_EPOCHS):
            _, runs = drawer.draw_epoch(docs, epoch)
            counts, src, length, speech = runs
            offsets = np.r_[0, np.cumsum(counts, dtype=np.int64)]
            table = dynamic_index.RunTable(offsets, src, length, speech, stored, markers)
            seqs = [table.assemble(np.array([d]))[0] for d in docs]
            hashes[f"{compat}_epoch{epoch}"] = _ids_sha(seqs)
    return hashes


def _corpus_units(n: int) -> list[tuple[str, list[int]]]:
    rows = [json.loads(line) for line in (CORPUS / "units.jsonl").read_text().splitlines() if line.strip()]
    return [(r["id"], [int(u) for u in r["units"]]) for r in rows[:n]]


def _corpus_texts(n: int) -> list[str]:
    rows = [json.loads(line) for line in (CORPUS / "alignments.jsonl").read_text().splitlines() if line.strip()]
    return [r["text"] for r in rows[:n]]


def eval_ids() -> dict:
    from megatron_slm.eval.items import Candidate, Item
    from megatron_slm.eval.scoring import encode_items
    from megatron_slm.vocab import SpeechVocab

    vocab = SpeechVocab.from_pretrained(TOKENIZER, num_units=100)
    units, texts = _corpus_units(4), _corpus_texts(4)
    items = [
        Item("speech", "t", Candidate(units=units[0][1][:30]), [Candidate(units=units[1][1][:30])]),
        Item("text", "t", Candidate(text=texts[0]), [Candidate(text=texts[1])]),
        Item("s2t", "t", Candidate(text=texts[2]), [Candidate(text=" " + texts[3])], prompt=Candidate(units=units[2][1][:20])),
        Item("t2s", "t", Candidate(units=units[3][1][:25]), [Candidate(units=units[0][1][5:30])], prompt=Candidate(text=texts[0])),
        Item("both", "t", Candidate(units=units[1][1][:10], text=texts[1]), [Candidate(text=texts[2])],
             prompt=Candidate(text=texts[3])),
    ]
    out = {}
    for prefer in ("units", "text"):
        seqs, spans = encode_items(items, vocab, prefer)
        out[prefer] = {"ids": [s.tokens.tolist() for s in seqs], "score_from": [s.score_from for s in seqs], "spans": spans}
    return out


def prompt_ids() -> dict:
    from megatron_slm.generate.prompts import Prompt, Segment, encode_prompt
    from megatron_slm.vocab import SpeechVocab

    vocab = SpeechVocab.from_pretrained(TOKENIZER, num_units=100)
    units, texts = _corpus_units(2), _corpus_texts(2)
    prompts = [
        Prompt("speech", [Segment("speech", units=units[0][1][:40])], "f:1"),
        Prompt("text", [Segment("text", text=texts[0])], "f:2"),
        Prompt("mixed", [Segment("text", text=texts[1][:20]), Segment("speech", units=units[1][1][:15]),
                         Segment("text", text="and then"), Segment("text", text=" it rained")], "f:3"),
        Prompt("spaced", [Segment("speech", units=units[0][1][:5]), Segment("text", text=" already spaced")], "f:4"),
    ]
    return {f"{p.id}/{output}": encode_prompt(p, vocab, output) for p in prompts for output in ("speech", "text", "any")}


def compute() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        return {"datasets": build_datasets(out), "drawn": drawn_documents(out), "eval": eval_ids(), "prompts": prompt_ids()}


def test_golden_data():
    golden = json.loads(GOLDEN.read_text())
    got = json.loads(json.dumps(compute()))
    for section in ("datasets", "drawn", "eval", "prompts"):
        assert got[section] == golden[section], f"{section} differ from {GOLDEN}"


if __name__ == "__main__":
    if "--write" not in sys.argv[1:]:
        sys.exit("usage: python tests/test_golden_data.py --write")
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(compute(), indent=1) + "\n")
    print(f"wrote {GOLDEN}")
