"""Word alignment of transcripts by CTC forced alignment (tools/align_words.py).

ctc.py      the Viterbi over CTC emissions (with word skips, so a missing word is reported)
model.py    a local wav2vec2-style CTC model as frame log-probabilities; words as its tokens
aligner.py  windows for long files, batches for short ones, per-word confidence
"""
