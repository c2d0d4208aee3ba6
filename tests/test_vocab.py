"""The extended vocabulary: SlamKit id layout, saving/reloading, layout checks, modality ids."""

import numpy as np
import pytest

from megatron_slm.data.storage import dataset_identity
from megatron_slm.unit_identity import IdentityError, check_ids
from megatron_slm.vocab import MODALITY_OTHER, MODALITY_SPEECH, MODALITY_TEXT, SpeechVocab, VocabError

from conftest import TOKENIZER


@pytest.fixture(scope="module")
def vocab():
    return SpeechVocab.from_pretrained(TOKENIZER, num_units=100)


def test_layout_and_megatron_interface(vocab):
    V = len(__import__("transformers").AutoTokenizer.from_pretrained(str(TOKENIZER)))
    assert vocab.text_vocab_size == V == vocab.unit_offset
    assert (vocab.speech_id, vocab.text_id, vocab.vocab_size) == (V + 100, V + 101, V + 102)
    tok = vocab.tokenizer
    assert tok.convert_tokens_to_ids("<Un5>") == V + 5
    assert tok.convert_tokens_to_ids("<Un99>") == V + 99
    assert tok.convert_tokens_to_ids(["<speech>", "<text>"]) == [V + 100, V + 101]
    assert vocab.eod == tok.eos_token_id and vocab.bos == tok.bos_token_id
    assert isinstance(vocab.pad, int)
    assert vocab.unique_identifiers["num_units"] == 100


def test_unit_ids_match_string_tokens_and_are_range_checked(vocab):
    units = np.array([0, 5, 99, 42])
    ids = vocab.unit_ids(units)
    text = "".join(f"<Un{u}>" for u in units)
    assert ids.tolist() == vocab.tokenizer.encode(text, add_special_tokens=False)
    with pytest.raises(VocabError, match="unit 100 outside"):
        vocab.unit_ids(np.array([1, 100]))
    with pytest.raises(VocabError, match="unit -1"):
        vocab.unit_ids([-1])


def test_encode_words_keeps_leading_spaces_and_equals_plain_encoding(vocab):
    words = ["Once", "upon", "a", "time,", "Lily's", "dog", "ran."]
    per_word = vocab.encode_words(words)
    assert all(per_word), "every word gets at least one token"
    assert sum(per_word, []) == vocab.encode_text(" ".join(words))
    assert vocab.decode(per_word[1]) == " upon"
    assert vocab.decode(per_word[0]) == "Once"
    # rare words whose leading space is a token of its own still keep it
    words = ["Back", "you", "xylophone", "Zq", "9", "a", "\u00e9t\u00e9,", "to"]
    per_word = vocab.encode_words(words)
    assert [vocab.decode(t) for t in per_word] == [words[0]] + [" " + w for w in words[1:]]


def test_modality_of(vocab):
    ids = np.array([vocab.encode_text("cat")[0], vocab.unit_offset, vocab.speech_id - 1,
                    vocab.speech_id, vocab.text_id, vocab.eod, vocab.bos, -1])
    assert vocab.modality_of(ids).tolist() == [MODALITY_TEXT, MODALITY_SPEECH, MODALITY_SPEECH] + [MODALITY_OTHER] * 5


def test_save_reload_same_ids_and_identity(vocab, tmp_path):
    from transformers import AutoTokenizer

    vocab.save(tmp_path)
    again = AutoTokenizer.from_pretrained(str(tmp_path))
    assert again.convert_tokens_to_ids("<Un7>") == vocab.unit_offset + 7
    assert len(again) == vocab.vocab_size
    reloaded = SpeechVocab.from_pretrained(tmp_path, num_units=100)
    assert reloaded.identity() == vocab.identity()
    assert reloaded.unique_identifiers == vocab.unique_identifiers
    with pytest.raises(VocabError, match="has 100 speech units.*num_units=50"):
        SpeechVocab.from_pretrained(tmp_path, num_units=50)
    with pytest.raises(VocabError, match="<Un100> has id None"):
        SpeechVocab.from_pretrained(tmp_path, num_units=200)
    assert reloaded.identity() == vocab.identity()  # a saved extended tokenizer is the same vocabulary
    mine = dataset_identity(vocab, None)
    check_ids(dataset_identity(reloaded, None), mine, "x", "the tokenizer")
    with pytest.raises(IdentityError, match="data/foo.json and the tokenizer were made with a different vocabulary "
                                            r"\(num_units 500 in data/foo.json vs 100 in the tokenizer\)"):
        check_ids({"vocab": {**vocab.identity(), "num_units": 500}}, mine, "data/foo.json", "the tokenizer")
    check_ids({"vocab": {**vocab.identity(), "num_units": 500}}, mine, "text data", "the tokenizer", compare_units=False)


def test_wrong_layout_is_refused(tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(TOKENIZER))
    tok.add_tokens(["<Un0>", "<Un1>", "<extra>", "<Un2>", "<Un3>", "<speech>", "<text>"])
    tok.save_pretrained(str(tmp_path))
    with pytest.raises(VocabError, match="<Un2> has id .*expected"):
        SpeechVocab.from_pretrained(tmp_path, num_units=4)
    # units at the right ids but something appended after <text>
    tok = AutoTokenizer.from_pretrained(str(TOKENIZER))
    tok.add_tokens([f"<Un{k}>" for k in range(4)] + ["<speech>", "<text>", "<junk>"])
    tok.save_pretrained(str(tmp_path / "b"))
    with pytest.raises(VocabError, match="extra tokens after <text>"):
        SpeechVocab.from_pretrained(tmp_path / "b", num_units=4)


def test_missing_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(VocabError, match="not a directory"):
        SpeechVocab.from_pretrained(tmp_path / "nope", num_units=4)


def test_sentencepiece_model(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    text = (TOKENIZER.parents[2] / "megatron_slm" / "commands" / "train_tiny_tokenizer.py").read_text().split('"""')[3]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text.splitlines()), model_prefix=str(tmp_path / "sp"),
                                   vocab_size=150, model_type="bpe", bos_id=1, eos_id=2, unk_id=0, pad_id=-1,
                                   minloglevel=2)
    v = SpeechVocab.from_pretrained(tmp_path / "sp.model", num_units=8)
    assert v.text_vocab_size == 150 and v.vocab_size == 160
    words = ["The", "cat", "sat."]
    assert sum(v.encode_words(words), []) == v.encode_text("The cat sat.")
    v.save(tmp_path / "ext")
    assert SpeechVocab.from_pretrained(tmp_path / "ext", num_units=8).identity() == v.identity()


def test_word_tokens_are_cached_and_separability_is_checked():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from megatron_slm.vocab import SpeechVocab

    v = SpeechVocab.from_pretrained(TOKENIZER, num_units=20)
    assert v.words_are_separable()  # byte-level BPE splits at spaces
    words = "The cat, the dog's ball.".split()
    assert sum(v.encode_words(words), []) == v.encode_text(" ".join(words))
    calls = []
    real = v._encode_piece
    v._encode_piece = lambda text: (calls.append(text), real(text))[1]
    ids, counts = v.encode_word_lists(words + words, np.array([0, len(words), 2 * len(words)]))
    assert calls == [] and len(counts) == 2 * len(words)  # every word came from the cache
    assert np.array_equal(ids[: counts[: len(words)].sum()], ids[counts[: len(words)].sum():])
    # a BPE without pre-tokenizer merges across the space: "a b" is one token, "a" + " b" are three
    bpe = Tokenizer(models.BPE(vocab={"a": 0, " ": 1, "b": 2, "a ": 3, "a b": 4, "<s>": 5, "</s>": 6},
                               merges=[("a", " "), ("a ", "b")]))
    hf = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>")
    merged = SpeechVocab(hf, num_units=2, text_vocab_size=7, source="merged-bpe")
    assert merged.encode_text("a b") == [4] and not merged.words_are_separable("a b a b")
