"""The LoRA check: it passes correct solutions and names the typical mistakes."""

from __future__ import annotations

import torch
from check_harness import table_tests


def lora_forward(x, weight, A, B, alpha, r):
    return x @ weight.T + (alpha / r) * (x @ A.T) @ B.T


def merged_weight(x, weight, A, B, alpha, r):
    """Another correct way: fold the update into one (out, in) matrix first."""
    return x @ (weight + (alpha / r) * B @ A).T


def with_functional_linear(x, weight, A, B, alpha, r):
    """nn.Linear's own function, as a LoRALinear does it with its three layers."""
    linear = torch.nn.functional.linear
    return linear(x, weight) + linear(linear(x, A), B) * alpha / r


def no_scaling(x, weight, A, B, alpha, r):
    return x @ weight.T + (x @ A.T) @ B.T


def scaled_by_alpha(x, weight, A, B, alpha, r):
    return x @ weight.T + alpha * (x @ A.T) @ B.T


def scaled_by_r_over_alpha(x, weight, A, B, alpha, r):
    return x @ weight.T + (r / alpha) * (x @ A.T) @ B.T


def integer_division(x, weight, A, B, alpha, r):
    return x @ weight.T + (alpha // r) * (x @ A.T) @ B.T


def subtracted(x, weight, A, B, alpha, r):
    return x @ weight.T - (alpha / r) * (x @ A.T) @ B.T


def base_forgotten(x, weight, A, B, alpha, r):
    return (alpha / r) * (x @ A.T) @ B.T


def a_and_b_swapped(x, weight, A, B, alpha, r):
    return x @ weight.T + (alpha / r) * (x @ B.T) @ A.T


def merged_as_a_at_b(x, weight, A, B, alpha, r):
    return x @ (weight + (alpha / r) * A @ B).T


def no_transposes(x, weight, A, B, alpha, r):
    return x @ weight.T + (alpha / r) * (x @ A) @ B


def a_not_transposed(x, weight, A, B, alpha, r):
    return x @ weight.T + (alpha / r) * (x @ A) @ B.T


def merged_not_transposed(x, weight, A, B, alpha, r):
    return x @ (weight + (alpha / r) * B @ A)


def merged_in_place(x, weight, A, B, alpha, r):
    weight += (alpha / r) * B @ A
    return x @ weight.T


def always_float32(x, weight, A, B, alpha, r):
    return lora_forward(x.float(), weight.float(), A.float(), B.float(), alpha, r)


CHECKS = ["lora_forward"]
CORRECT = [
    ("lora_forward", lora_forward),
    ("lora_forward", merged_weight),
    ("lora_forward", with_functional_linear),
]
WRONG = [
    ("lora_forward", no_scaling, ["scaling is missing", "alpha / r"]),
    ("lora_forward", scaled_by_alpha, ["scaled by alpha;"]),
    ("lora_forward", scaled_by_r_over_alpha, ["scaled by r / alpha"]),
    ("lora_forward", integer_division, ["integer division"]),
    ("lora_forward", subtracted, ["update is subtracted"]),
    ("lora_forward", base_forgotten, ["base layer is missing"]),
    ("lora_forward", a_and_b_swapped, ["A and B are swapped"]),
    ("lora_forward", merged_as_a_at_b, ["A and B are swapped", "not A @ B"]),
    ("lora_forward", no_transposes, ["neither A nor B is transposed"]),
    ("lora_forward", a_not_transposed, ["A is not transposed"]),
    ("lora_forward", merged_not_transposed, ["merged weight is not transposed"]),
    ("lora_forward", merged_in_place, ["changed weight in place"]),
    ("lora_forward", always_float32, ["float64", "keep the inputs' dtype"]),
]

globals().update(table_tests(CORRECT, WRONG, CHECKS))


def test_a_shape_crash_on_non_square_inputs_explains_the_shapes() -> None:
    import pytest

    from llama_edu import checks

    def transposes_only_when_square(x, weight, A, B, alpha, r):
        if A.shape[0] == A.shape[1]:
            return lora_forward(x, weight, A, B, alpha, r)
        return x @ weight.T + (alpha / r) * (x @ B) @ A

    with pytest.raises(checks.CheckFailed, match=r"shapes do not fit: x @ A.T has shape"):
        checks.lora_forward(transposes_only_when_square)


def test_the_library_layer_agrees_with_the_reference() -> None:
    from llama_edu.checks.lora import reference_lora_forward
    from llama_edu.lora import LoRALinear

    gen = torch.Generator().manual_seed(3)
    layer = LoRALinear(torch.nn.Linear(6, 5, bias=False), r=3, alpha=7.5)
    with torch.no_grad():
        layer.lora_B.weight.copy_(torch.randn(5, 3, generator=gen))
    x = torch.randn(2, 6, generator=gen)
    want = reference_lora_forward(x, layer.weight, layer.lora_A.weight, layer.lora_B.weight, 7.5, 3)
    torch.testing.assert_close(layer(x), want)
