"""The extended speech-text vocabulary: one source of truth for token ids.

Layout (SlamKit / SIMS compatible), with V = length of the base text tokenizer and K units:

    [0, V)        text tokens of the base tokenizer (incl. its own specials)
    V + k         <Un{k}>  speech unit k, 0 <= k < K
    V + K         <speech> modality marker
    V + K + 1     <text>   modality marker
    vocab_size  = V + K + 2

    vocab = SpeechVocab.from_pretrained("examples/tokenizer/tiny-bpe", num_units=100)
    vocab.unit_ids(np.array([3, 7]))          # -> [V+3, V+7] without any string round trip
    vocab.save("ckpt/tokenizer")              # AutoTokenizer.from_pretrained gives the same ids

A multi-codebook tokenizer (a neural codec with n_q codebooks of K codes) has K x n_q units:
codebook q owns units [q*K, (q+1)*K), so `<Un q*K+c>` = V + q*K + c is code c of codebook q and
K=500, n_q=1 is the layout above. `UnitInventory` says how the units split (saved beside the
tokenizer as speech_units.json; a tokenizer without it has one codebook).

`SpeechVocab` also serves as the tokenizer of Megatron's dataset configs (`vocab_size`, `eod`,
`pad`, `unique_identifiers`).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

SPEECH_TOKEN = "<speech>"
# SIMS: mhubert-base-25hz layer 11 + k-means with 500 clusters
DEFAULT_NUM_UNITS = 500
TEXT_TOKEN = "<text>"

# modality ids used by datasets and the trainer's per-modality losses
# distinct words kept per cache (a worker's cache is cleared when it grows past this)
WORD_CACHE_SIZE = 1_000_000
# punctuation, digits, apostrophes, case, accents and other scripts: where pre-tokenizers differ
SEPARABILITY_PROBE = ("Hello, world! It's 2024 -- the quick (brown) fox's 3.5% naïve café in Zürich; don't "
                      "O'Neil's e-mail U.S.A. 1,000,000 ...well \"quoted\" émigré 東京 Москва x=y+1 #tag @user")
MODALITY_TEXT = 0
MODALITY_SPEECH = 1
MODALITY_OTHER = 2


class VocabError(ValueError):
    """The tokenizer cannot be used as (or does not match) the requested extended vocabulary."""


INVENTORY_FILE = "speech_units.json"


@dataclass(frozen=True)
class UnitInventory:
    """The discrete units a speech tokenizer defines: `num_codebooks` codebooks of `codebook_size`
    codes, one token per codebook per frame (codes of a frame in codebook order). What vocabulary
    extension, interleaving, eval, generation and the vocoder read instead of assuming one stream."""
    codebook_size: int                 # K: codes per codebook
    num_codebooks: int = 1             # n_q: tokens per frame
    kind: str = "kmeans"               # which tokenizer made them (kmeans over hubert/mel features, mimi)
    frame_rate: Optional[float] = None  # frames per second (None: not recorded)

    def __post_init__(self):
        for name in ("codebook_size", "num_codebooks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise VocabError(f"unit inventory: {name} must be a positive integer, got {value!r}")

    @property
    def num_units(self) -> int:
        return self.codebook_size * self.num_codebooks

    @property
    def tokens_per_frame(self) -> int:
        return self.num_codebooks

    def codebook_range(self, q: int) -> tuple[int, int]:
        """Units [lo, hi) of codebook q."""
        if not 0 <= q < self.num_codebooks:
            raise VocabError(f"codebook {q} outside [0, {self.num_codebooks})")
        return q * self.codebook_size, (q + 1) * self.codebook_size

    def codebook_of(self, units: np.ndarray | Sequence[int]) -> np.ndarray:
        """The codebook of each unit index."""
        return np.asarray(units, dtype=np.int64) // self.codebook_size

    def flatten(self, codes: np.ndarray) -> np.ndarray:
        """[frames, n_q] codes (each in [0, K)) -> [frames * n_q] unit indices, frame by frame."""
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim != 2 or codes.shape[1] != self.num_codebooks:
            raise VocabError(f"expected [frames, {self.num_codebooks}] codes, got shape {list(codes.shape)}")
        if codes.size and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise VocabError(f"code {int(codes[(codes < 0) | (codes >= self.codebook_size)][0])} outside "
                             f"[0, {self.codebook_size})")
        return (codes + np.arange(self.num_codebooks) * self.codebook_size).reshape(-1)

    def unflatten(self, units: np.ndarray | Sequence[int]) -> np.ndarray:
        """Inverse of `flatten` for a whole number of frames in codebook order; VocabError otherwise."""
        u = np.asarray(units, dtype=np.int64).reshape(-1)
        n = self.num_codebooks
        if u.size % n:
            raise VocabError(f"{u.size} units are not a whole number of {n}-codebook frames")
        frames = u.reshape(-1, n)
        if frames.size and (self.codebook_of(frames) != np.arange(n)).any():
            raise VocabError(f"units are not frames in codebook order (codebook q of a frame takes units "
                             f"[q*{self.codebook_size}, (q+1)*{self.codebook_size}))")
        return frames - np.arange(n) * self.codebook_size

    def names(self) -> list[str]:
        return [unit_token(k) for k in range(self.num_units)]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "codebook_size": self.codebook_size, "num_codebooks": self.num_codebooks,
                "frame_rate": self.frame_rate, "num_units": self.num_units, "tokens_per_frame": self.tokens_per_frame}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "unit inventory") -> "UnitInventory":
        if not isinstance(d, Mapping):
            raise VocabError(f"{where}: expected a JSON object")
        try:
            return cls(codebook_size=d["codebook_size"], num_codebooks=d.get("num_codebooks", 1),
                       kind=str(d.get("kind", "kmeans")), frame_rate=d.get("frame_rate"))
        except KeyError as e:
            raise VocabError(f"{where}: missing field {e.args[0]!r}") from None
        except VocabError as e:
            raise VocabError(f"{where}: {e}") from None

    def save(self, directory: str | os.PathLike) -> None:
        (Path(directory) / INVENTORY_FILE).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Optional["UnitInventory"]:
        """The inventory saved beside a tokenizer, or None (a one-codebook vocabulary)."""
        path = Path(directory) / INVENTORY_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except ValueError as e:
            raise VocabError(f"{path}: not JSON ({e})") from None
        return cls.from_dict(data, str(path))


def unit_token(k: int) -> str:
    return f"<Un{k}>"


def count_unit_tokens(token_to_id: Mapping[str, Any]) -> int:
    """How many `<Un k>` tokens a tokenizer vocabulary (token -> id) holds: 0 for a base tokenizer."""
    return sum(1 for t in token_to_id if t.startswith("<Un") and t.endswith(">") and t[3:-1].isdigit())


def tokenizer_unit_count(tokenizer_dir: str | os.PathLike) -> int:
    """K of an extended tokenizer directory; VocabError when it holds no unit tokens."""
    K = count_unit_tokens(_load_hf_tokenizer(Path(tokenizer_dir)).get_vocab())
    if K == 0:
        raise VocabError(f"tokenizer {str(tokenizer_dir)!r} has no <Un k> unit tokens (not an extended vocabulary)")
    return K


def _generic_fast_tokenizer(path: Path) -> bool:
    """A bare tokenizer dir (no model config.json, from which AutoTokenizer may pick a model's own
    class, e.g. Qwen2's, which adds tokens) whose config names the generic fast class."""
    if (path / "config.json").exists():
        return False
    try:
        config = json.loads((path / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return False
    return (path / "tokenizer.json").is_file() and isinstance(config, dict) and \
        config.get("tokenizer_class") in ("PreTrainedTokenizerFast", "TokenizersBackend")


def _load_hf_tokenizer(path: Path):
    # imported only when needed: importing AutoTokenizer loads transformers' model registry (~3 s)
    if path.is_file() and path.suffix == ".model":  # a bare sentencepiece model (Llama-2 style)
        import shutil
        import tempfile

        # transformers converts a sentencepiece model only from a tokenizer dir: make one
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(path, Path(tmp) / "tokenizer.model")
            (Path(tmp) / "tokenizer_config.json").write_text(json.dumps(
                {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "legacy": False}))
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(tmp, local_files_only=True)
    if not path.is_dir():
        raise VocabError(f"tokenizer {str(path)!r}: not a directory with an HF tokenizer nor a sentencepiece .model file")
    try:
        if _generic_fast_tokenizer(path):  # the class AutoTokenizer would pick for it
            from transformers import PreTrainedTokenizerFast

            return PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # transformers raises many types for a broken dir
        raise VocabError(f"tokenizer {str(path)!r}: cannot load it with transformers.AutoTokenizer: {e}") from None


class SpeechVocab:
    """A base text tokenizer extended with K speech units and two modality markers."""

    def __init__(self, tokenizer: Any, num_units: int, text_vocab_size: int, source: str = "",
                 inventory: Optional[UnitInventory] = None) -> None:
        self.tokenizer = tokenizer
        self.num_units = int(num_units)
        self.inventory = inventory or UnitInventory(self.num_units)
        if self.inventory.num_units != self.num_units:
            raise VocabError(f"tokenizer {source!r}: {self.num_units} units but the unit inventory has "
                             f"{self.inventory.num_units} ({self.inventory.num_codebooks} x {self.inventory.codebook_size})")
        self.text_vocab_size = int(text_vocab_size)
        self.source = source
        self.unit_offset = self.text_vocab_size
        self.speech_id = self.unit_offset + self.num_units
        self.text_id = self.speech_id + 1
        self.vocab_size = self.text_id + 1
        self.bos: Optional[int] = tokenizer.bos_token_id
        eod = tokenizer.eos_token_id
        if eod is None:
            raise VocabError(f"tokenizer {source!r} has no EOS token, which the datasets need as end-of-document")
        self.eod: int = int(eod)
        # Llama-style tokenizers have no pad: fall back to EOD (the datasets mask padding by position).
        # A pad that is an ordinary text token or BOS is no pad either: SlamKit sets pad_token_id = 0
        # ('!' in Llama-3 and Qwen2.5), and masking targets equal to it would drop real tokens.
        self.has_pad = tokenizer.pad_token_id is not None and self._is_special(tokenizer.pad_token_id) \
            and tokenizer.pad_token_id != self.bos
        self.pad: int = int(tokenizer.pad_token_id) if self.has_pad else self.eod
        # offsets are char offsets in the HF wrapper and in the backend alike (no normalizer shifts them)
        self._backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
        self._first_cache: dict[str, tuple[int, ...]] = {}   # word -> ids, as the first word
        self._spaced_cache: dict[str, tuple[int, ...]] = {}  # word -> ids of " " + word
        self._base_sha256 = self._hash_text_vocab()
        self.unique_identifiers = OrderedDict(
            [("class", "SpeechVocab"), ("text_vocab_sha256", self._base_sha256),
             ("text_vocab_size", self.text_vocab_size), ("num_units", self.num_units)]
        )
        if self.inventory.num_codebooks > 1:  # absent for one codebook: HuBERT dataset caches keep their keys
            self.unique_identifiers["num_codebooks"] = self.inventory.num_codebooks

    def _is_special(self, token_id: int) -> bool:
        added = getattr(self.tokenizer, "added_tokens_decoder", {}) or {}
        return token_id in added and bool(getattr(added[token_id], "special", False))

    def added_specials(self) -> tuple[list[int], list[int]]:
        """(ids before, ids after) the text that the tokenizer adds when asked for special tokens
        (Llama-3: [BOS] before; Qwen2.5: nothing): how SlamKit's tokenised documents start and end."""
        cached = self.__dict__.get("_added_specials")
        if cached is None:
            probe = "a b"
            plain = list(self.tokenizer.encode(probe, add_special_tokens=False))
            full = list(self.tokenizer.encode(probe, add_special_tokens=True))
            cached = next(((full[:i], full[i + len(plain):]) for i in range(len(full) - len(plain) + 1)
                           if full[i:i + len(plain)] == plain), None)
            if cached is None:
                raise VocabError(f"tokenizer {self.source!r}: its special tokens are not added around the text")
            self._added_specials = cached
        return cached

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_pretrained(cls, tokenizer_dir: str | os.PathLike, num_units: Optional[int] = None,
                        inventory: Optional[UnitInventory] = None) -> "SpeechVocab":
        """Load a base tokenizer (HF dir or sentencepiece .model) and extend it with `num_units`
        units (default DEFAULT_NUM_UNITS), or check an already-extended one has exactly this layout and K
        (default: the K it holds). `inventory` (a tokenizer's units, e.g. from a units sidecar)
        gives K x n_q units; an extended tokenizer's saved inventory must be the same."""
        if num_units is not None and num_units <= 0:
            raise VocabError(f"num_units must be positive, got {num_units}")
        path = Path(tokenizer_dir)
        saved = UnitInventory.load(path) if path.is_dir() else None
        if inventory is not None:
            if num_units is not None and num_units != inventory.num_units:
                raise VocabError(f"num_units={num_units} but the unit inventory has {inventory.num_units} units")
            if saved is not None and (saved.num_codebooks, saved.codebook_size) != \
                    (inventory.num_codebooks, inventory.codebook_size):
                raise VocabError(f"tokenizer {str(path)!r} holds {saved.num_codebooks} codebook(s) of "
                                 f"{saved.codebook_size} units ({INVENTORY_FILE}) but the units have "
                                 f"{inventory.num_codebooks} of {inventory.codebook_size}")
            num_units = inventory.num_units
        elif saved is not None:
            if num_units is not None and num_units != saved.num_units:
                raise VocabError(f"tokenizer {str(path)!r} holds {saved.num_units} units "
                                 f"({saved.num_codebooks} codebooks x {saved.codebook_size}), but num_units={num_units}")
            inventory = saved
        tok = _load_hf_tokenizer(path)
        vocab = tok.get_vocab()
        if num_units is None:
            num_units = count_unit_tokens(vocab) or DEFAULT_NUM_UNITS
        if unit_token(0) in vocab:
            V = vocab[unit_token(0)]
            cls._check_layout(tok, vocab, V, num_units, str(path))
        else:
            if SPEECH_TOKEN in vocab or TEXT_TOKEN in vocab:
                raise VocabError(f"tokenizer {str(path)!r} has <speech>/<text> but no <Un0>: not an extended vocabulary we can use")
            V = len(tok)
            tok.add_tokens([unit_token(k) for k in range(num_units)] + [SPEECH_TOKEN, TEXT_TOKEN])
            cls._check_layout(tok, tok.get_vocab(), V, num_units, str(path))
        return cls(tok, num_units, V, source=str(path), inventory=inventory)

    @staticmethod
    def _check_layout(tok: Any, vocab: dict, V: int, K: int, source: str) -> None:
        if unit_token(K) in vocab:
            n = count_unit_tokens(vocab)
            raise VocabError(f"tokenizer {source!r} has {n} speech units (<Un0>..<Un{n - 1}>), but num_units={K}")
        for k in range(K):
            if vocab.get(unit_token(k)) != V + k:
                got = vocab.get(unit_token(k))
                raise VocabError(f"tokenizer {source!r}: {unit_token(k)} has id {got}, expected {V + k} "
                                 f"(layout text|<Un0..Un{K - 1}>|<speech>|<text>, K={K})")
        for name, want in ((SPEECH_TOKEN, V + K), (TEXT_TOKEN, V + K + 1)):
            if vocab.get(name) != want:
                raise VocabError(f"tokenizer {source!r}: {name} has id {vocab.get(name)}, expected {want} (K={K})")
        if len(tok) != V + K + 2:
            raise VocabError(f"tokenizer {source!r} has {len(tok)} tokens, expected {V + K + 2} "
                             f"(text {V} + {K} units + 2 markers): extra tokens after <text>")

    def _hash_text_vocab(self) -> str:
        # Hash token->id of the text part only, so a base tokenizer and its extended save agree.
        items = sorted((i, t) for t, i in self.tokenizer.get_vocab().items() if i < self.text_vocab_size)
        return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode("utf-8")).hexdigest()

    # ------------------------------------------------------------------ ids

    def unit_ids(self, units: np.ndarray | Sequence[int]) -> np.ndarray:
        """Unit indices [n] -> ids; [frames, n_q] codes of a multi-codebook tokenizer -> ids of the
        same shape (code c of codebook q is unit q*K + c; flatten row by row for the document order)."""
        u = np.asarray(units)
        if u.ndim == 2:
            return self.inventory.flatten(u).reshape(u.shape) + self.unit_offset
        if u.size and (u.min() < 0 or u.max() >= self.num_units):
            bad = u[(u < 0) | (u >= self.num_units)][0]
            raise VocabError(f"unit {int(bad)} outside [0, {self.num_units})")
        return u.astype(np.int64) + self.unit_offset

    def encode_text(self, text: str) -> list[int]:
        """Text -> ids without BOS/EOS."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def encode_words(self, words: Sequence[str]) -> list[list[int]]:
        """Each word's tokens: the word tokenised on its own, every word after the first with its
        leading space (the tokens a text span starting or continuing there gets). For tokenizers
        whose pre-tokenizer splits at spaces (byte-level BPE, the GPT-2/Llama-3/Qwen2 regexes,
        sentencepiece) the concatenation equals `encode_text(" ".join(words))`;
        `words_are_separable` checks that on probe text."""
        ids, owner = self.encode_words_flat(words)
        cuts = np.searchsorted(owner, np.arange(1, len(words)), side="left")
        return [part.tolist() for part in np.split(ids, cuts)] if len(words) else []

    def encode_words_flat(self, words: Sequence[str], first_spaced: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(token ids, index of the word each token belongs to) -- `encode_words` as arrays."""
        ids, counts = self.encode_word_lists(list(words), np.array([0, len(words)]), first_spaced)
        return ids, np.repeat(np.arange(len(words)), counts)

    def encode_word_lists(self, words: list[str], word_starts: np.ndarray, first_spaced: bool = False
                          ) -> tuple[np.ndarray, np.ndarray]:
        """(all token ids, token count of each word) for many utterances at once: utterance d is
        words[word_starts[d]:word_starts[d+1]], its first word tokenised without (or, with
        `first_spaced`, like SlamKit's stored words, with) and the others with their leading
        space. Distinct words are tokenised once (cached): a corpus repeats its words, and one
        tokenizer call per utterance used to be the largest cost of preprocessing."""
        spaced, firsts = self._spaced_cache, self._first_cache
        if len(spaced) > WORD_CACHE_SIZE:
            spaced.clear()
        if len(firsts) > WORD_CACHE_SIZE:
            firsts.clear()
        per_word = list(map(spaced.get, words))
        for i in ([] if first_spaced else np.asarray(word_starts[:-1])[np.diff(word_starts) > 0].tolist()):
            per_word[i] = firsts.get(words[i]) or firsts.setdefault(words[i], self._encode_piece(words[i]))
        for i in [i for i, t in enumerate(per_word) if t is None]:
            per_word[i] = spaced.get(words[i]) or spaced.setdefault(words[i], self._encode_piece(" " + words[i]))
        counts = np.fromiter(map(len, per_word), dtype=np.int64, count=len(per_word))
        ids = np.fromiter(itertools.chain.from_iterable(per_word), dtype=np.int64, count=int(counts.sum()))
        return ids, counts

    def _encode_piece(self, text: str) -> tuple[int, ...]:
        if self._backend is not None:  # the Rust tokenizer directly: no per-call Python wrapping
            return tuple(self._backend.encode(text, add_special_tokens=False).ids)
        return tuple(self.tokenizer.encode(text, add_special_tokens=False))

    def words_are_separable(self, probe: str = SEPARABILITY_PROBE) -> bool:
        """Whether words tokenised one by one give exactly the tokens of the joined text (on
        `probe`); when not, text spans cut at word boundaries differ from plain tokenisation."""
        words = probe.split()
        return np.array_equal(self.encode_words_flat(words)[0], np.asarray(self.encode_text(" ".join(words))))

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def modality_of(self, ids: np.ndarray) -> np.ndarray:
        """0 text, 1 speech unit, 2 other (modality markers, EOD, BOS, pad, padding ids < 0)."""
        table = self.__dict__.get("_modality_table")
        if table is None:  # one lookup per token (this runs for every training sample)
            # shifted by one: [0] for ids < 0, [vocab_size + 1] for ids past the vocabulary
            table = np.full(self.vocab_size + 2, MODALITY_OTHER, dtype=np.int64)
            table[1:self.unit_offset + 1] = MODALITY_TEXT
            table[self.unit_offset + 1:self.speech_id + 1] = MODALITY_SPEECH
            for special in {self.eod, self.pad, self.bos}:
                if special is not None:
                    table[special + 1] = MODALITY_OTHER
            self._modality_table = table
        # take(mode="clip") clamps the shifted ids into the table (np.clip costs more than the lookup)
        return table.take(np.asarray(ids) + 1, mode="clip")

    # ------------------------------------------------------------------ identity and saving

    def identity(self) -> dict:
        out = {"text_vocab_sha256": self._base_sha256, "text_vocab_size": self.text_vocab_size,
               "num_units": self.num_units, "vocab_size": self.vocab_size}
        if self.inventory.num_codebooks > 1:  # one codebook: the identity models made before codecs record
            out["num_codebooks"] = self.inventory.num_codebooks
        return out

    def save(self, directory: str | os.PathLike) -> None:
        self.tokenizer.save_pretrained(str(directory))
        if self.inventory.num_codebooks > 1:  # a one-codebook tokenizer dir stays as SlamKit's
            self.inventory.save(directory)

    def __repr__(self) -> str:
        codebooks = f", n_q={self.inventory.num_codebooks}" if self.inventory.num_codebooks > 1 else ""
        return (f"SpeechVocab(V={self.text_vocab_size}, K={self.num_units}{codebooks}, vocab_size={self.vocab_size}, "
                f"eod={self.eod}, bos={self.bos}, source={self.source!r})")
