"""Alignments + units -> interleaved / speech / text Megatron datasets (see docs/data.md).

records        skip-and-count reading of messy line inputs
draws          counter-based random numbers (a document's draw depends on seed, epoch, key only)
spans          which words are spoken: the samplers of both conventions behind one dispatch
slamkit_sampling  SlamKit's samplers, reproduced in distribution at array speed
interleave     prepared utterances, drawn modality runs and their assembly (laid out by document.py)
ragged         array operations over many variable-length segments
prepare        records -> prepared utterances, a shard at once (with a per-record reference path)
preprocess     the offline driver: parallel, resumable preprocessing to .bin/.idx + sidecar
indexed        .bin/.idx writing with numpy (Megatron's format, no torch)
storage        the on-disk format (sidecar, dtype, words layout, identity check, StoredDataset)
dynamic_index  per-epoch sample indices of dynamic interleaved data (a fresh draw per epoch)
samples        packed ids -> a training sample (labels, loss mask, modality, masks)
datasets       SLMDataset, the GPTDataset every kind of data is read through
blend          data.* config -> the blended train/valid/test datasets for the trainer
"""
