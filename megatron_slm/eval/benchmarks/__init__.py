"""The spoken-LM benchmarks: what each one is, how its public layout is read, and the registry.

spec          what a benchmark is (`Benchmark`: name, files/columns, pairing rule) and what a
              reader returns (`ItemSpec`: audio paths and texts per candidate), `PrepareError`
registry      every benchmark by name, and `read_specs` (a folder layout, or a local HF dataset)
zerospeech    sWUGGY and sBLIMP (ZeroSpeech 2021 sLM21): readers, official scoring, submission files
storycloze    spoken / topic StoryCloze (sSC, tSC)
cross_modal   StoryCloze with a prompt in the other modality (S->T, T->S)
salmon        SALMon
word_shuffle  the sanity set built from any corpus with units and word alignments
hf            the same benchmarks published as Hugging Face datasets (parquet / save_to_disk)
materialize   audio -> units (units pipeline or a precomputed units JSONL) -> scored items
"""
