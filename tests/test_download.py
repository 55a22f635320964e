"""download_hf against a Hub-like HTTP server on 127.0.0.1, and load_hf on real checkpoints' traits.

The server answers the requests huggingface_hub makes for `snapshot_download` (model info, the
tree listing, HEAD and GET of /resolve/, a redirect to a "CDN" for large files) and never offers
Xet, so the plain HTTP path is used. The checkpoints are tiny transformers Llamas made here.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import shutil
import socket
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import torch

from llama_edu import cli, interop
from llama_edu.hub import DOWNLOAD_MARKER

transformers = pytest.importorskip("transformers")
hf_hub = pytest.importorskip("huggingface_hub")

LFS_SUFFIXES = (".safetensors", ".bin", ".pth")  # what the Hub keeps in LFS and redirects to a CDN
EXTRAS = {  # files of real repositories that download_hf must leave on the server
    "README.md": b"# a model\n",
    ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
    "pytorch_model.bin": b"a pickle that must never be fetched",
    "original/consolidated.00.pth": b"Meta's pickle, never fetched either",
    "original/tokenizer.model": b"not fetched: only the top-level tokenizer.model is",
}
TOKENS = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(3))


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """Repositories served over HTTP the way huggingface.co answers huggingface_hub."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.requests: list[tuple[str, str]] = []
        self.broken: dict[str, str] = {}  # file name -> "truncate" (dies mid-file), "500"
        self.lock = threading.Lock()
        handler = type("Handler", (HubHandler,), {"hub": self})
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def commit(self, repo: str) -> str:
        files = self.repos[repo]
        return hashlib.sha1(b"".join(n.encode() + files[n] for n in sorted(files))).hexdigest()

    def file_requests(self) -> list[tuple[str, str]]:
        """The HEAD and GET requests for files (everything but the /api/ calls)."""
        with self.lock:
            return [r for r in self.requests if not r[1].startswith("/api/")]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class HubHandler(http.server.BaseHTTPRequestHandler):
    hub: FakeHub

    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self.serve(body=False)

    def do_GET(self) -> None:
        self.serve(body=True)

    def reply(self, status: int, headers: dict[str, str], data: bytes, body: bool) -> None:
        self.send_response(status)
        for key, value in {"Content-Length": str(len(data)), **headers}.items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def error(self, status: int, code: str | None, message: str, body: bool) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self.reply(status, headers, json.dumps({"error": message}).encode(), body)

    def serve(self, body: bool) -> None:
        hub = self.hub
        path = urlsplit(self.path).path
        with hub.lock:
            hub.requests.append((self.command, path))
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] in ("revision", "tree"):
            repo, what, revision = f"{parts[2]}/{parts[3]}", parts[4], parts[5]
            if repo not in hub.repos:
                return self.error(404, "RepoNotFound", "Repository not found", body)
            commit = hub.commit(repo)
            if revision not in ("main", commit):
                return self.error(404, "RevisionNotFound", "Invalid rev id: " + revision, body)
            files = hub.repos[repo]
            if what == "revision":
                info = {"_id": commit[:24], "id": repo, "modelId": repo, "sha": commit,
                        "private": False, "tags": ["transformers", "safetensors", "llama"],
                        "siblings": [{"rfilename": n} for n in sorted(files)]}
                return self.reply(200, {"Content-Type": "application/json"},
                                  json.dumps(info).encode(), body)
            tree = [{"type": "directory", "oid": "0" * 40, "size": 0, "path": d}
                    for d in sorted({n.rsplit("/", 1)[0] for n in files if "/" in n})]
            for name in sorted(files):
                data = files[name]
                entry = {"type": "file", "oid": git_blob_id(data), "size": len(data), "path": name}
                if name.endswith(LFS_SUFFIXES):
                    entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                                    "pointerSize": 134}
                tree.append(entry)
            return self.reply(200, {"Content-Type": "application/json"},
                              json.dumps(tree).encode(), body)
        if len(parts) >= 5 and parts[2] == "resolve":
            repo, revision, name = f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:])
            if repo not in hub.repos:
                return self.error(404, "RepoNotFound", "Repository not found", body)
            commit = hub.commit(repo)
            if revision not in ("main", commit):
                return self.error(404, "RevisionNotFound", "Invalid rev id: " + revision, body)
            if name not in hub.repos[repo]:
                return self.error(404, "EntryNotFound", "Entry not found", body)
            data = hub.repos[repo][name]
            if name.endswith(LFS_SUFFIXES):  # LFS: a redirect to another host, metadata on it
                sha = hashlib.sha256(data).hexdigest()
                return self.reply(302, {
                    "Location": f"http://localhost:{hub.port}/cdn/{sha}?name={name}",
                    "X-Repo-Commit": commit, "ETag": f'"{git_blob_id(sha.encode())}"',
                    "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data)),
                }, b"", body)
            return self.reply(200, {"X-Repo-Commit": commit, "ETag": f'"{git_blob_id(data)}"',
                                    "Content-Type": "application/octet-stream"}, data, body)
        if len(parts) == 2 and parts[0] == "cdn":
            name = unquote(urlsplit(self.path).query.removeprefix("name="))
            blobs = {hashlib.sha256(d).hexdigest(): d
                     for files in hub.repos.values() for d in files.values()}
            if parts[1] not in blobs:
                return self.error(404, None, "no such blob", body)
            data, failure = blobs[parts[1]], hub.broken.get(name)
            if failure == "500" or (failure == "truncate" and "Range" in self.headers):
                return self.error(500, None, "Internal Error", body)
            if failure == "truncate":  # promise the whole file, send half, hang up, then 500s
                hub.broken[name] = "500"
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                return None
            return self.reply(200, {"ETag": f'"{parts[1]}"'}, data, body)
        return self.error(404, None, "Not Found", body)


def tiny_llama(folder: Path, *, tie: bool, dtype: torch.dtype, llama3: bool, shard: bool,
               hub_style_config: bool = False, tokenizer: bool = False) -> Path:
    """Save a small random transformers Llama (and maybe a byte-level tokenizer) into folder."""
    rope: dict = {"rope_type": "default", "rope_theta": 10000.0}
    if llama3:
        rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32}
    config = transformers.LlamaConfig(
        vocab_size=256, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=tie, rope_parameters=rope, initializer_range=0.1, rms_norm_eps=1e-5,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).to(dtype)
    model.save_pretrained(folder, safe_serialization=True,
                          max_shard_size="100KB" if shard else "1GB")
    if hub_style_config:  # as the Hub's config.json files are: rope_theta and rope_scaling apart
        cfg = json.loads((folder / "config.json").read_text())
        rope = cfg.pop("rope_parameters")
        cfg["rope_theta"] = rope.pop("rope_theta")
        cfg["rope_scaling"] = rope if rope["rope_type"] != "default" else None
        cfg["torch_dtype"] = cfg.pop("dtype")
        (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    if tokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        alphabet = pre_tokenizers.ByteLevel.alphabet()
        tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(alphabet))},
                                   merges=[]))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        transformers.PreTrainedTokenizerFast(tokenizer_object=tok).save_pretrained(folder)
    return folder


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file()}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    return {
        "llama3": tiny_llama(root / "llama3", tie=True, dtype=torch.bfloat16, llama3=True,
                             shard=True, hub_style_config=True),
        "untied": tiny_llama(root / "untied", tie=False, dtype=torch.float32, llama3=False,
                             shard=False, tokenizer=True),
    }


@pytest.fixture(scope="module")
def module_hub(checkpoints):
    hub = FakeHub()
    hub.repos["tester/tiny-llama3"] = {**files_of(checkpoints["llama3"]), **EXTRAS}
    hub.repos["tester/tiny-untied"] = {**files_of(checkpoints["untied"]), **EXTRAS}
    hub.repos["HuggingFaceTB/SmolLM2-135M"] = files_of(checkpoints["untied"])
    untied = hub.repos["tester/tiny-untied"]
    hub.repos["tester/pickles-only"] = {"config.json": untied["config.json"],
                                        "pytorch_model.bin": b"pickle"}
    gpt2 = {**json.loads(untied["config.json"]), "model_type": "gpt2"}
    hub.repos["tester/gpt2-like"] = {"config.json": json.dumps(gpt2).encode(),
                                     "model.safetensors": untied["model.safetensors"]}
    yield hub
    hub.close()


@pytest.fixture
def fake_hub(module_hub, monkeypatch, tmp_path_factory):
    """The server, with its request log emptied; huggingface_hub kept away from the real cache."""
    home = tmp_path_factory.mktemp("hf_home")
    for name, value in {"HF_HOME": home, "HF_HUB_CACHE": home / "hub",
                        "HF_TOKEN_PATH": home / "token", "HF_HUB_DISABLE_TELEMETRY": "1"}.items():
        monkeypatch.setenv(name, str(value))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE",
                 "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    constants = hf_hub.constants  # read from the environment at import, so set them too
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with module_hub.lock:
        module_hub.requests.clear()
    module_hub.broken.clear()
    yield module_hub
    assert not list(home.glob("hub/*")), "huggingface_hub wrote into the (test's) global cache"


def logits_of(model) -> torch.Tensor:
    with torch.no_grad():
        out = model(TOKENS)
    return out if isinstance(out, torch.Tensor) else out.logits


@pytest.mark.parametrize("repo, source", [("tester/tiny-llama3", "llama3"),
                                          ("tester/tiny-untied", "untied")])
def test_download_then_load_hf_equals_transformers(fake_hub, checkpoints, tmp_path, repo, source):
    folder = interop.download_hf(repo, tmp_path / "model", endpoint=fake_hub.url)
    assert folder == tmp_path / "model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging folder left
    served = files_of(checkpoints[source])
    got = files_of(folder)
    assert got.pop(DOWNLOAD_MARKER)
    assert got == served  # every file it needs, byte for byte, and nothing else
    assert not [r for r in fake_hub.requests if r[1].endswith((".bin", ".pth", "README.md"))]
    record = json.loads((folder / DOWNLOAD_MARKER).read_text())
    assert (record["repo_id"], record["revision"]) == (repo, "main")
    assert record["commit"] == fake_hub.commit(repo)

    ours = interop.load_hf(folder)
    theirs = transformers.LlamaForCausalLM.from_pretrained(
        checkpoints[source], dtype=torch.float32, attn_implementation="eager").eval()
    assert all(p.dtype == torch.float32 for p in ours.parameters())
    assert ours.args.tie_embeddings == (source == "llama3")
    assert (ours.args.rope_scaling is not None) == (source == "llama3")
    assert ours.args.kv_heads == 2
    expected = logits_of(theirs)
    assert expected.abs().max() > 0.5  # weights of order 0.1 give logits worth comparing
    torch.testing.assert_close(logits_of(ours), expected, atol=1e-4, rtol=1e-4)
    if source == "untied":
        tok = transformers.AutoTokenizer.from_pretrained(folder)
        assert tok.decode(tok("Hello, Llama!")["input_ids"]) == "Hello, Llama!"


def test_a_second_download_of_the_same_repo_makes_no_request(fake_hub, tmp_path):
    first = interop.download_hf("tester/tiny-untied", tmp_path / "m", endpoint=fake_hub.url)
    assert fake_hub.file_requests()
    before = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}
    with fake_hub.lock:
        fake_hub.requests.clear()
    again = interop.download_hf("tester/tiny-untied", tmp_path / "m", endpoint=fake_hub.url)
    assert again == first and fake_hub.requests == []
    commit = fake_hub.commit("tester/tiny-untied")  # the commit that "main" named is the same
    assert interop.download_hf("tester/tiny-untied", first, revision=commit) == first
    assert fake_hub.requests == []
    assert {p.name: p.stat().st_mtime_ns for p in again.iterdir()} == before


@pytest.mark.parametrize("what", ["user file", "other repo", "other revision", "plain file",
                                  "changed download"])
def test_a_folder_that_is_not_this_download_is_refused_and_kept(fake_hub, tmp_path, what):
    out = tmp_path / "m"
    if what == "plain file":
        out.write_text("my notes")
    elif what == "user file":
        out.mkdir()
        (out / "notes.txt").write_text("my notes")
    else:
        other = "tester/tiny-llama3" if what == "other repo" else "tester/tiny-untied"
        interop.download_hf(other, out, endpoint=fake_hub.url)
        if what == "changed download":
            (out / "model.safetensors").write_bytes(b"edited by hand")
    before = files_of(out) if out.is_dir() else out.read_bytes()
    with fake_hub.lock:
        fake_hub.requests.clear()
    revision = "v1.0" if what == "other revision" else "main"
    with pytest.raises(FileExistsError, match="Nothing was changed") as info:
        interop.download_hf("tester/tiny-untied", out, endpoint=fake_hub.url, revision=revision)
    assert str(out) in str(info.value)
    assert (files_of(out) if out.is_dir() else out.read_bytes()) == before
    assert fake_hub.requests == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("failure, existing, error, words", [
    ("missing repo", "none", FileNotFoundError, "there is no repository"),
    ("missing revision", "empty folder", FileNotFoundError, "has no revision"),
    ("connection refused", "none", RuntimeError, "Check the network"),
    ("truncate", "empty folder", RuntimeError, "Check the network"),
    ("500", "none", RuntimeError, "Check the network"),
])
def test_a_failed_download_leaves_nothing_behind(fake_hub, tmp_path, failure, existing, error,
                                                 words):
    repo = "tester/nothing-here" if failure == "missing repo" else "tester/tiny-llama3"
    revision = "v9" if failure == "missing revision" else "main"
    endpoint = closed_port_url() if failure == "connection refused" else fake_hub.url
    if failure in ("truncate", "500"):
        fake_hub.broken["model-00002-of-00003.safetensors"] = failure
        assert "model-00002-of-00003.safetensors" in fake_hub.repos[repo]
    out = tmp_path / "m"
    if existing == "empty folder":
        out.mkdir()
    with pytest.raises(error, match=words) as info:
        interop.download_hf(repo, out, endpoint=endpoint, revision=revision)
    message = str(info.value)
    assert repo in message and endpoint in message and "hf download" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if existing == "none" else ["m"])
    assert not out.exists() or not any(out.iterdir())
    if failure in ("truncate", "500"):  # once the server is well again, the same call works
        fake_hub.broken.clear()
        interop.load_hf(interop.download_hf(repo, out, endpoint=endpoint))
        assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


@pytest.mark.parametrize("repo, error, words", [
    ("tester/pickles-only", FileNotFoundError, r"no \.safetensors weights \(it has only "
                                               r"pytorch_model\.bin\)"),
    ("tester/gpt2-like", ValueError, "is a 'gpt2' model, not a Llama"),
])
def test_a_repository_without_llama_safetensors_is_refused_before_its_weights(
    fake_hub, tmp_path, repo, error, words
):
    with pytest.raises(error, match=words):
        interop.download_hf(repo, tmp_path / "m", endpoint=fake_hub.url)
    assert not [r for r in fake_hub.requests if r[1].endswith((".bin", ".safetensors"))]
    assert list(tmp_path.iterdir()) == []


def test_real_checkpoint_ids_are_well_formed():
    ids = interop.REAL_CHECKPOINTS
    assert {"SmolLM2-135M", "TinyLlama-1.1B", "Llama-3.2-1B"} <= ids.keys()
    assert ids["SmolLM2-135M"] == "HuggingFaceTB/SmolLM2-135M"
    assert ids["Llama-3.2-1B"] == "meta-llama/Llama-3.2-1B"
    for repo in ids.values():
        assert re.fullmatch(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", repo), repo
        assert "--" not in repo and ".." not in repo


def test_bad_arguments_are_refused_before_any_request(fake_hub, tmp_path):
    for repo in ("", "a/b/c", "owner/name with space", None):
        with pytest.raises(ValueError, match="not a repository id"):
            interop.download_hf(repo, tmp_path / "m", endpoint=fake_hub.url)
    with pytest.raises(ValueError, match="not an http"):
        interop.download_hf("tester/tiny-untied", tmp_path / "m", endpoint="127.0.0.1:1")
    assert fake_hub.requests == [] and list(tmp_path.iterdir()) == []


def test_cli_download(fake_hub, tmp_path, capsys):
    out = tmp_path / "smol"
    assert cli.main(["download", "SmolLM2-135M", "--out", str(out),
                     "--endpoint", fake_hub.url]) == 0
    printed = capsys.readouterr().out
    assert "HuggingFaceTB/SmolLM2-135M" in printed and str(out) in printed
    assert interop.load_hf(out).args.vocab_size == 256
    assert cli.main(["download", "HuggingFaceTB/SmolLM2-135M", "--out", str(out),
                     "--endpoint", fake_hub.url]) == 0
    assert "already" in capsys.readouterr().out
    assert cli.main(["download", "tester/nothing-here", "--out", str(tmp_path / "x"),
                     "--endpoint", fake_hub.url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llama-edu download: there is no repository") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smol"]


# --- load_hf on what real checkpoints have ------------------------------------------------


def test_load_hf_reads_the_shards_its_index_names_and_only_those(checkpoints, tmp_path):
    folder = tmp_path / "sharded"
    shutil.copytree(checkpoints["llama3"], folder)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1
    expected = logits_of(interop.load_hf(checkpoints["llama3"]))
    from safetensors.torch import save_file

    save_file({"tok_embeddings.weight": torch.zeros(256, 64)}, folder / "consolidated.safetensors")
    torch.testing.assert_close(logits_of(interop.load_hf(folder)), expected, atol=0, rtol=0)
    (folder / shards[-1]).unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(shards[-1])):
        interop.load_hf(folder)


CONFIG = {"hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256,
          "rms_norm_eps": 1e-5, "max_position_embeddings": 256, "model_type": "llama"}


@pytest.mark.parametrize("change, words", [
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "type 'linear'"),
    ({"rope_parameters": {"rope_type": "yarn", "factor": 2.0, "rope_theta": 1e4}}, "type 'yarn'"),
    ({"head_dim": 32}, "head_dim=32"),
    ({"attention_bias": True}, "attention_bias=true"),
    ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
])
def test_args_from_hf_config_refuses_what_it_cannot_build(change, words):
    assert interop.args_from_hf_config(CONFIG).rope_scaling is None
    with pytest.raises(ValueError, match=re.escape(words)):
        interop.args_from_hf_config({**CONFIG, **change})
