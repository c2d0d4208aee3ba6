"""Alignments + units -> interleaved / speech / text Megatron datasets (see docs/data.md).

records        skip-and-count reading of messy line inputs
interleave     span selection and sequence assembly (pure, counter-seeded, vectorised)
prepare        records -> prepared utterances, a shard at once (with a per-record reference path)
preprocess     the offline driver: parallel, resumable preprocessing to .bin/.idx + sidecar
storage        the on-disk format (sidecar, dtype, words layout, identity check, StoredDataset)
dynamic_index  per-epoch sample indices of dynamic interleaved data (a fresh draw per epoch)
samples        packed ids -> a training sample (labels, loss mask, modality, masks)
datasets       SLMDataset, the GPTDataset every kind of data is read through
blend          data.* config -> the blended train/valid/test datasets for the trainer
"""
