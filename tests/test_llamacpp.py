"""The GGUF file from interop.export_gguf runs in llama.cpp itself, through llama-cpp-python.

llama-cpp-python compiles llama.cpp when it is installed (about 15 CPU minutes here). `.ci/run`
builds it in the background at the lowest priority while the other tests run, and sets
LLAMA_EDU_LLAMACPP_BUILD to a path prefix: the build writes `<prefix>.rc` (pip's exit status)
and `<prefix>.log` when it ends. These tests wait for that file and are moved to the end of the
run (conftest.py). Without the variable they run when llama_cpp imports and skip otherwise,
except under CI, where a missing llama.cpp fails.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from llama_edu.generate import generate
from llama_edu.interop import export_gguf
from llama_edu.train import load_pretrained

pytestmark = pytest.mark.llamacpp

WAIT_S = 45 * 60  # the background build's worst case on 2 busy cores

PROMPTS = [
    "Once upon a time, Mia found a red kite in the park.",
    "One day, a boy named Kai went to the river.",
]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def _wait_for_background_build() -> None:
    prefix = os.environ.get("LLAMA_EDU_LLAMACPP_BUILD")
    if not prefix:
        return
    rc_file, log_file = Path(prefix + ".rc"), Path(prefix + ".log")
    deadline = time.monotonic() + WAIT_S
    while not rc_file.is_file() or not rc_file.read_text().strip():
        if time.monotonic() > deadline:
            pytest.fail(f"the background build of llama-cpp-python did not end in {WAIT_S} s; "
                        f"see {log_file}")
        time.sleep(5)
    rc = rc_file.read_text().strip()
    if rc != "0":
        tail = log_file.read_text(errors="replace")[-3000:] if log_file.is_file() else ""
        pytest.fail(f"installing llama-cpp-python failed (pip exit status {rc}):\n{tail}")


@pytest.fixture(scope="module")
def llama_cpp():
    _wait_for_background_build()
    try:
        import llama_cpp
    except ImportError as exc:
        if _in_ci():
            pytest.fail(f"CI must run the llama.cpp tests, but llama_cpp does not import ({exc});"
                        " install it with `pip install llama-cpp-python` (it compiles llama.cpp)")
        pytest.skip("llama-cpp-python is not installed (pip install llama-cpp-python)")
    return llama_cpp


@pytest.fixture(scope="module")
def shipped():
    model, tok = load_pretrained()
    return model.eval(), tok


def greedy_in_llama_cpp(llm, prompt: list[int], n: int) -> tuple[list[int], np.ndarray]:
    """n greedy tokens after prompt by argmax of llama.cpp's logits, and the prompt's logits."""
    llm.reset()
    llm.eval(prompt)
    prompt_logits = np.array(llm.scores[: len(prompt)])
    out = []
    for _ in range(n):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(nxt)
        llm.eval([nxt])
    return out, prompt_logits


@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_llama_cpp_continues_the_exported_model_exactly_as_we_do(llama_cpp, shipped, tmp_path,
                                                                 dtype):
    model, tok = shipped
    if dtype == "f16":  # the reference is our model with the weights llama.cpp reads
        model = load_pretrained()[0].eval()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.dim() == 2 and "tok_embeddings" not in name:
                    p.copy_(p.half().float())
    path = export_gguf(model, tok, tmp_path / f"shipped-{dtype}.gguf", dtype=dtype)
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=model.args.max_seq_len, n_threads=2,
                          logits_all=True, verbose=False)
    for text in PROMPTS:
        ours = tok.encode(text, bos=True)
        # llama.cpp tokenizes with the SentencePiece vocabulary stored in the file
        assert llm.tokenize(text.encode(), add_bos=True) == ours
        theirs, logits = greedy_in_llama_cpp(llm, ours, 40)
        assert theirs == generate(model, ours, 40)
        with torch.no_grad():
            expected = model(torch.tensor([ours]))[0].numpy()
        np.testing.assert_allclose(logits, expected, atol=1e-2, rtol=0)
    llm.close()


def test_llama_cpp_runs_our_q8_0_file(llama_cpp, shipped, tmp_path):
    # llama.cpp also rounds the activations to 8 bits in a Q8_0 product, so its logits are near
    # our Q8_0 model's (0.12 apart at most here, on logits of about +-10), not equal
    from llama_edu.quantize import quantize_model

    model, tok = shipped
    path = export_gguf(model, tok, tmp_path / "shipped-q8_0.gguf", dtype="q8_0")
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=model.args.max_seq_len, n_threads=2,
                          logits_all=True, verbose=False)
    ours = tok.encode(PROMPTS[0], bos=True)
    _, logits = greedy_in_llama_cpp(llm, ours, 1)
    with torch.no_grad():
        q8 = quantize_model(model, "q8_0")(torch.tensor([ours]))[0].numpy()
        f32 = model(torch.tensor([ours]))[0].numpy()
    assert np.abs(logits - q8).max() < 0.5
    assert np.abs(logits - f32).max() > 0  # it did read 8-bit weights
    assert (logits.argmax(-1) == q8.argmax(-1)).mean() > 0.9
    llm.close()
