"""interop.export_gguf: llama.cpp's names, metadata, tokenizer and tensors, read back with gguf.

Running the file in llama.cpp itself (llama-cpp-python) is issue 19's next step; these tests
read it with the gguf package's reader and rebuild our model from what they read.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader
from gguf import quants as gguf_quants

from llama_edu.interop import export_gguf, gguf_name
from llama_edu.model import Llama
from llama_edu.quantize import fake_quantize
from llama_edu.train import load_pretrained


@pytest.fixture(scope="module")
def shipped():
    model, tok = load_pretrained()
    return model.eval(), tok


def field(reader: GGUFReader, key: str):
    value = reader.fields[key]
    if len(value.data) == 1:
        return value.parts[value.data[0]].tolist()[0] if value.types[0].name != "STRING" else \
            bytes(value.parts[value.data[0]]).decode()
    return [bytes(value.parts[i]) if value.types[-1].name == "STRING"
            else value.parts[i].tolist()[0] for i in value.data]


def read_back(path, args) -> Llama:
    """Our model rebuilt from the GGUF file's tensors (dequantized where they are Q8_0)."""
    reader = GGUFReader(path)
    tensors = {}
    for t in reader.tensors:
        data = np.array(t.data)
        if t.tensor_type == GGMLQuantizationType.Q8_0:
            data = gguf_quants.dequantize(data, GGMLQuantizationType.Q8_0)
        tensors[t.name] = torch.from_numpy(data.astype(np.float32)).reshape(
            tuple(reversed(t.shape.tolist())))  # gguf lists dims innermost first
    model = Llama(args)
    state = {name: tensors[gguf_name(name)] for name in model.state_dict()}
    model.load_state_dict(state)
    return model.eval()


def test_metadata_and_tokenizer_are_llama_cpps(shipped, tmp_path):
    model, tok = shipped
    path = export_gguf(model, tok, tmp_path / "tiny.gguf")
    reader = GGUFReader(path)
    a = model.args
    assert field(reader, "general.architecture") == "llama"
    expected = {"llama.context_length": a.max_seq_len, "llama.embedding_length": a.dim,
                "llama.block_count": a.n_layers, "llama.feed_forward_length": a.hidden_dim,
                "llama.attention.head_count": a.n_heads,
                "llama.attention.head_count_kv": a.kv_heads,
                "llama.rope.dimension_count": a.head_dim}
    for key, value in expected.items():
        assert field(reader, key) == value, key
    assert field(reader, "llama.rope.freq_base") == pytest.approx(a.rope_theta)
    assert field(reader, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(a.norm_eps)
    assert field(reader, "tokenizer.ggml.model") == "llama"
    tokens = field(reader, "tokenizer.ggml.tokens")
    assert len(tokens) == tok.vocab_size == 512
    assert [t.decode() for t in tokens[:3]] == ["<unk>", "<s>", "</s>"]
    assert tokens[100].decode() == tok.sp.IdToPiece(100)
    types = field(reader, "tokenizer.ggml.token_type")
    assert types[:3] == [2, 3, 3]  # unknown, control, control
    assert field(reader, "tokenizer.ggml.bos_token_id") == tok.bos_id
    assert field(reader, "tokenizer.ggml.eos_token_id") == tok.eos_id


@pytest.mark.parametrize("dtype", ["f32", "f16", "q8_0"])
def test_the_tensors_read_back_give_our_models_logits(shipped, tmp_path, dtype):
    model, tok = shipped
    path = export_gguf(model, tok, tmp_path / f"tiny-{dtype}.gguf", dtype=dtype)
    reader = GGUFReader(path)
    names = {t.name for t in reader.tensors}
    assert "blk.3.ffn_gate.weight" in names and "token_embd.weight" in names
    assert len(names) == len(model.state_dict())
    kinds = {t.name: t.tensor_type for t in reader.tensors}
    assert kinds["blk.0.attn_norm.weight"] == GGMLQuantizationType.F32  # norms stay float32
    assert kinds["blk.0.attn_q.weight"] == {"f32": GGMLQuantizationType.F32,
                                            "f16": GGMLQuantizationType.F16,
                                            "q8_0": GGMLQuantizationType.Q8_0}[dtype]
    back = read_back(path, model.args)
    reference = model
    if dtype != "f32":  # the weights the format can store
        reference = Llama(model.args).eval()
        state = {}
        for name, t in model.state_dict().items():
            if t.dim() == 1:
                state[name] = t
            elif dtype == "f16":
                state[name] = t.half().float()
            else:
                state[name] = fake_quantize(t, "q8_0")
        reference.load_state_dict(state)
    tokens = torch.tensor([tok.encode("Once upon a time, Mia found a red kite.", bos=True)])
    with torch.no_grad():
        torch.testing.assert_close(back(tokens), reference(tokens), rtol=0, atol=1e-5)


def test_an_existing_file_is_kept_and_bad_input_is_refused(shipped, tmp_path):
    model, tok = shipped
    path = tmp_path / "mine.gguf"
    path.write_bytes(b"my file")
    with pytest.raises(FileExistsError, match="left as it is"):
        export_gguf(model, tok, path)
    assert path.read_bytes() == b"my file"
    with pytest.raises(ValueError, match="unknown dtype 'q4_k'"):
        export_gguf(model, tok, tmp_path / "x.gguf", dtype="q4_k")
    with pytest.raises(ValueError, match="should end in .gguf"):
        export_gguf(model, tok, tmp_path / "x.bin")
    with pytest.raises(TypeError, match="SentencePieceTokenizer"):
        export_gguf(model, object(), tmp_path / "x.gguf")
    variant = Llama(dataclasses.replace(model.args, norm_type="layernorm"))
    with pytest.raises(ValueError, match="ablation variant"):
        export_gguf(variant, tok, tmp_path / "x.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.gguf"]  # nothing half-written
    export_gguf(model, tok, path, overwrite=True)
    assert GGUFReader(path).fields["general.architecture"]


def test_gguf_names_are_those_of_llama_cpps_own_converter(shipped):
    import gguf

    from llama_edu.interop import _name_map

    model, _ = shipped
    converter = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, model.args.n_layers)
    for ours, hf in _name_map(model.args).items():  # ours -> transformers' name
        assert converter.get_name(hf, try_suffixes=(".weight",)) == gguf_name(ours), ours


def test_gguf_names():
    assert gguf_name("layers.2.feed_forward.w3.weight") == "blk.2.ffn_up.weight"
    assert gguf_name("norm.weight") == "output_norm.weight"
    with pytest.raises(ValueError, match="not a tensor of a Llama"):
        gguf_name("layers.0.mlp.weight")
