"""Shared command-line plumbing: `--config FILE key=value ...`, clean errors, exit codes."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from megatron_slm.config import ConfigError, SLMConfig, load_config


def parse_config(argv: list[str] | None = None, description: str = "") -> SLMConfig:
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config file (see examples/configs/ and docs/config.md)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="override any config field, e.g. parallel.tp=2 train.iters=100")
    args = parser.parse_args(argv)
    return load_config(args.config, args.overrides)


def _is_rank0() -> bool:
    return os.environ.get("RANK", "0") == "0"


def run_main(main: Callable[[SLMConfig], None], argv: list[str] | None = None, description: str = "") -> None:
    """Parse, run; user errors become one line on stderr (from rank 0) and an exit code."""
    try:
        cfg = parse_config(argv, description)  # --help ends here, before torch is imported
    except ConfigError as e:
        _fail(e, 2)
    from megatron_slm.checkpoint.dist import CheckpointSaveError
    from megatron_slm.training.trainer import NonFiniteLoss

    # Exit codes: 2 configuration, 3 non-finite loss, 4 checkpoint write failed (e.g. disk full).
    try:
        main(cfg)
    except (ConfigError, NonFiniteLoss, CheckpointSaveError) as e:
        _fail(e, 2 if isinstance(e, ConfigError) else 3 if isinstance(e, NonFiniteLoss) else 4)
    finally:
        from megatron_slm.runtime.distributed import destroy_distributed

        try:
            destroy_distributed()
        except Exception:  # noqa: BLE001 - shutting down after a failure must not mask it
            pass


def _fail(error: Exception, code: int) -> None:
    if _is_rank0():
        print(f"error: {error}", file=sys.stderr, flush=True)
    sys.exit(code)
