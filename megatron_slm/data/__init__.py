"""Alignments + units -> interleaved / speech / text Megatron datasets (see docs/data.md).

alignments  word timings (canonical JSONL, MFA TextGrid, Whisper JSON), validated
interleave  span selection and sequence assembly (pure, seeded functions)
preprocess  parallel, resumable preprocessing to .bin/.idx + <prefix>.meta.json
datasets    SLMDataset (a GPTDataset) and build_datasets for the trainer
records     skip-and-count reading of messy line inputs
synthetic   synthetic aligned corpora for tests and benchmarks
"""
