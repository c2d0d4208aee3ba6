"""Audio -> discrete speech units (see docs/units.md).

Entry points: `pipeline.UnitExtractor` (on-the-fly units for audio files), `kmeans`
(load/assign/train codebooks), `records` (units JSONL + identity sidecar), `lhotse_export`
(units written back to Lhotse cuts). Submodules are imported on demand so that
`import megatron_slm.units` stays light and works without DALI or transformers.
"""
