import random

import numpy as np
import pytest
import torch

from llama_edu import device


def test_default_is_first_available(monkeypatch):
    monkeypatch.delenv(device.ENV_VAR, raising=False)
    chosen = device.get_device()
    assert chosen == torch.device(device.available_devices()[0])
    if not torch.cuda.is_available() and not device._mps_available():
        assert chosen.type == "cpu"


def test_cpu_always_works_and_env_var_is_honoured(monkeypatch):
    assert device.available_devices()[-1] == "cpu"
    monkeypatch.setenv(device.ENV_VAR, "cpu")
    assert device.get_device() == torch.device("cpu")
    monkeypatch.setenv(device.ENV_VAR, " CPU ")
    assert device.get_device() == torch.device("cpu")


def test_argument_beats_environment(monkeypatch):
    monkeypatch.setenv(device.ENV_VAR, "tpu")
    assert device.get_device("cpu") == torch.device("cpu")


def test_unknown_device_lists_working_choices(monkeypatch):
    monkeypatch.setenv(device.ENV_VAR, "tpu")
    with pytest.raises(RuntimeError) as info:
        device.get_device()
    message = str(info.value)
    assert "'tpu'" in message and "LLAMA_EDU_DEVICE" in message
    for name in device.available_devices():
        assert name in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(device.ENV_VAR, "cuda")
    with pytest.raises(RuntimeError, match="cuda.*does not work on this machine.*cpu"):
        device.get_device()


def test_seed_everything_repeats_all_generators():
    def draw():
        gen = device.seed_everything(123)
        return (random.random(), np.random.rand(), torch.rand(2), torch.rand(2, generator=gen))

    first, second = draw(), draw()
    assert first[0] == second[0] and first[1] == second[1]
    assert torch.equal(first[2], second[2]) and torch.equal(first[3], second[3])
    device.seed_everything(124)
    assert not torch.equal(torch.rand(2), first[2])


@pytest.mark.parametrize("bad", [-1, 1.5, "7", True])
def test_seed_must_be_a_non_negative_int(bad):
    with pytest.raises(ValueError, match="non-negative int"):
        device.seed_everything(bad)


def test_describe_mentions_device_and_versions():
    text = str(device.describe(torch.device("cpu")))
    assert "cpu" in text and torch.__version__ in text
