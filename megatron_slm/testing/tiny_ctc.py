"""A tiny wav2vec2 CTC model directory (Wav2Vec2ForCTC + char tokenizer + feature extractor), built
with transformers itself, random or fitted in a minute to a corpus with exact word times.

    make_tiny_ctc(out_dir)                                          # random weights: plumbing
    fit_to_alignments(out_dir, "examples/data/tiny_corpus/alignments.jsonl", steps=60)

Fitting trains frame classification (cross-entropy), not CTC: each frame's target is read off the
known word times (blank between words, a word's characters spread evenly over its frames, a blank
between repeated characters), which a model this small learns in a minute where CTC from scratch
would not. The result emits what a CTC model emits, so it exercises the aligner end to end.
A fixed number of steps (batches of random crops) keeps the result independent of the machine's speed.
"""
from __future__ import annotations

import json
import os
import string
from pathlib import Path

import numpy as np

CHARS = list(string.ascii_uppercase) + ["'"]


def make_tiny_ctc(out: str | os.PathLike, seed: int = 0, hidden: int = 64, layers: int = 2) -> Path:
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vocab = {"<pad>": 0, "<unk>": 1, "|": 2, **{c: i + 3 for i, c in enumerate(CHARS)}}
    (out / "vocab.json").write_text(json.dumps(vocab))
    tok = Wav2Vec2CTCTokenizer(str(out / "vocab.json"), unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|")
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                  return_attention_mask=True)
    cfg = Wav2Vec2Config(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                         intermediate_size=2 * hidden, conv_dim=(32,) * 7, feat_extract_norm="layer",
                         num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, pad_token_id=0,
                         do_stable_layer_norm=True, mask_time_prob=0.0, ctc_loss_reduction="mean")
    torch.manual_seed(seed)
    Wav2Vec2ForCTC(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    fe.save_pretrained(out)
    return out


def frame_targets(words: list[dict], frames: int, frame_seconds: float, vocab: dict[str, int]) -> np.ndarray:
    """Per frame: the character being said (evenly spread over each word's frames), else blank."""
    target = np.zeros(frames, dtype=np.int64)
    for w in words:
        chars = [vocab[c] for c in w["word"].upper() if c in vocab and c not in ("<pad>", "|")]
        a, b = int(round(w["start"] / frame_seconds)), min(frames, int(round(w["end"] / frame_seconds)))
        if not chars or b <= a:
            continue
        edges = np.linspace(a, b, len(chars) + 1).round().astype(int)
        for k, c in enumerate(chars):
            target[edges[k]:edges[k + 1]] = c
            if k and chars[k - 1] == c and edges[k] < edges[k + 1]:
                target[edges[k]] = 0  # CTC needs a blank between repeats
    return target


def fit_to_alignments(model_dir: str | os.PathLike, alignments: str, steps: int = 60, batch: int = 4,
                      crop_seconds: float = 3.0, holdout: tuple[str, ...] = (), lr: float = 3e-3,
                      seed: int = 0) -> dict:
    """Train `model_dir` (from make_tiny_ctc) on a corpus with word times: `steps` steps of
    `batch` random crops; returns {"steps", "frame_accuracy"} (on the training utterances)."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    from megatron_slm.audio.decode_soundfile import load_audio
    from megatron_slm.corpus.canonical import iter_alignments

    torch.manual_seed(seed)
    model = Wav2Vec2ForCTC.from_pretrained(model_dir)
    fe = Wav2Vec2FeatureExtractor.from_pretrained(model_dir)
    vocab = json.loads((Path(model_dir) / "vocab.json").read_text())
    fs = model.config.inputs_to_logits_ratio / fe.sampling_rate
    root = os.path.dirname(os.path.abspath(alignments))
    data = []
    for r in iter_alignments(alignments):
        if r["id"] in holdout:
            continue
        wave = load_audio(os.path.join(root, r["audio"]), fe.sampling_rate)
        x = torch.from_numpy(fe(wave, sampling_rate=fe.sampling_rate, return_tensors="np")["input_values"][0])
        n = int(model._get_feat_extract_output_lengths(torch.tensor(len(wave))))
        data.append((x, torch.from_numpy(frame_targets(r["words"], n, fs, vocab))))
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    ratio = model.config.inputs_to_logits_ratio
    crop = int(crop_seconds / fs)  # frames per crop; a batch of equal crops needs no padding
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        xs, ys = [], []
        for i in torch.randint(len(data), (batch,), generator=gen).tolist():
            x, y = data[i]
            f0 = int(torch.randint(max(1, len(y) - crop), (1,), generator=gen))
            xs.append(x[f0 * ratio: (f0 + crop) * ratio + ratio])
            ys.append(y[f0: f0 + crop])
        n = min(min(len(y) for y in ys), min(int(model._get_feat_extract_output_lengths(torch.tensor(len(x))))
                                             for x in xs))
        logits = model(torch.stack([x[: min(map(len, xs))] for x in xs])).logits[:, :n]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 torch.stack([y[:n] for y in ys]).reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = [float((model(x[None]).logits[0, : len(y)].argmax(-1) == y).float().mean()) for x, y in data]
    model.save_pretrained(model_dir)
    return {"steps": steps, "frame_accuracy": float(np.mean(acc))}
