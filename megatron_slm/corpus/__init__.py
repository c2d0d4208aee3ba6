"""Corpora: word alignments in every format we read, speech synthesis, and the spoken story corpus.

words.py            the base record (`Alignment`), `AlignmentError` and the one `validate`
canonical.py        our alignment JSONL (also what tools/align_words.py writes)
textgrid.py         Montreal Forced Aligner TextGrids
whisper.py          Whisper / WhisperX word timestamps
lhotse_manifests.py Lhotse CutSets, supervisions manifests and Shar directories (words, audio, fields written back)
alignments.py       `AlignmentIndex`: any of the formats above by utterance id, parsed on demand
transcripts.py      what the aligner reads (transcripts JSONL, Lhotse) and writes (JSONL, Lhotse)
synth.py            espeak-ng speech with exact word alignments
stories.py          the story grammar; story_corpus.py builds the cached spoken story corpus
"""
