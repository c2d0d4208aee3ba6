"""Post-training: supervised fine-tuning (SFT) and direct preference optimisation (DPO).

    records.py     the record format (prompt, response | chosen/rejected; text, units or segments),
                   SlamKit's preference features, the pair layout and TRL-style truncation
    storage.py     pair datasets on disk: token ids, per-token roles (loss masks + pair structure)
    preprocess.py  `tools/preprocess_data.py preference|sft` (its arguments: cli.py)
    datasets.py    training samples of pair datasets (SFT sequences, DPO chosen/rejected pairs)
    objective.py   the DPO loss, its metrics and the forward step of `train.objective=dpo|sft`
    reference.py   the reference model's log-probabilities: one pass at the run's TP/PP, stored
"""
