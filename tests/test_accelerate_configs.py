"""Every accelerate config in recipes/accelerate/ passes accelerate's own launch checks and builds its plugin.

DeepSpeed is not installed in the test environment: its configs are checked as far as accelerate goes without
it (the launcher's argument checks, the environment it hands to the processes, and accelerate's
``DeepSpeedPlugin`` built from that environment, which needs no deepspeed import). FSDP is exercised for real
in tests/test_fsdp.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "recipes" / "accelerate").glob("*.yaml"))


def _launch_args(config: Path):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(config), "train.py"])
    args, defaults, mp_from_config = _validate_launch_command(args)
    return args, defaults, mp_from_config


def test_every_documented_engine_has_a_config():
    names = {c.stem for c in CONFIGS}
    assert {"fsdp", "deepspeed_zero2", "deepspeed_zero3", "multi_node", "multi_gpu", "cpu_2proc"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.stem)
def test_config_passes_accelerate_launch_checks(config, monkeypatch):
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args, defaults, mp_from_config = _launch_args(config)
    text = config.read_text()
    assert "accelerate launch --config_file" in text  # each config says how it is launched
    if args.use_fsdp:
        env = prepare_multi_gpu_env(args)
        for key, value in env.items():
            if key.startswith(("FSDP_", "ACCELERATE_")):
                monkeypatch.setenv(key, value)
        plugin = FullyShardedDataParallelPlugin()
        assert plugin.fsdp_version == 2 and "FULL_STATE_DICT" in str(plugin.state_dict_type)
    elif args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        _, env = prepare_deepspeed_cmd_env(args)
        for key, value in env.items():
            if key.startswith("ACCELERATE_"):
                monkeypatch.setenv(key, value)
        plugin = DeepSpeedPlugin()
        zero = plugin.deepspeed_config["zero_optimization"]
        assert zero["stage"] == int(config.stem[-1])
        if zero["stage"] == 3:  # the final sentence-transformers folder needs the gathered 16-bit weights
            assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    if config.stem == "multi_node":
        assert args.num_machines == 2 and args.num_processes == 16 and args.main_process_ip
    assert os.path.getsize(config) > 0
