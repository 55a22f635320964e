"""Getting checkpoints from the Hugging Face Hub: real Llama-architecture models, safely downloaded.

`download_hf` fetches only what `llama_edu.interop.load_hf` (and transformers) need - the config,
the safetensors weights and the tokenizer files - and never pickled weights (.bin, .pth), which
can run code when they are opened. The files land in a staging folder next to the destination
and are moved into place only when the download is complete.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from .runfiles import atomic_write_text, install_folder, make_staging_dir

REAL_CHECKPOINTS: dict[str, str] = {
    "SmolLM2-135M": "HuggingFaceTB/SmolLM2-135M",
    "TinyLlama-1.1B": "TinyLlama/TinyLlama_v1.1",
    "Llama-3.2-1B": "meta-llama/Llama-3.2-1B",  # gated: accept Meta's licence, then use a token
}
"""Short names of real Llama-architecture checkpoints on the Hub, and their repository ids."""

DOWNLOAD_MARKER = "llama_edu_download.json"  # written last; says which repository the folder holds
DOWNLOAD_FORMAT = "llama_edu.download/1"
CHECKPOINT_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
)
"""The files download_hf fetches from the top of a repository, besides every *.safetensors."""

_REPO_ID = re.compile(r"(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*")


def _wanted(name: str) -> bool:
    return "/" not in name and (name in CHECKPOINT_FILES or name.endswith(".safetensors"))


def _hub() -> Any:
    try:
        import huggingface_hub
        import huggingface_hub.errors
    except ImportError as exc:
        raise ImportError(
            "download_hf needs the huggingface_hub package, which is not installed. Install it "
            "with `pip install huggingface_hub` (transformers brings it along)."
        ) from exc
    return huggingface_hub


def _by_hand(repo_id: str, revision: str, out: Path) -> str:
    extra = "" if revision == "main" else f" --revision {revision}"
    return (
        f"or download it by hand with `hf download {repo_id}{extra} --local-dir {out}` and load "
        "that folder with llama_edu.interop.load_hf"
    )


def _explain(
    exc: Exception, hub: Any, repo_id: str, revision: str, where: str, out: Path
) -> Exception:
    """A clear error (what failed, where, what to do) for an exception of huggingface_hub."""
    errors = hub.errors
    if isinstance(exc, errors.GatedRepoError):
        return PermissionError(
            f"{repo_id} at {where} is gated: its files need an account that accepted the model's "
            f"licence. Accept it on {where}/{repo_id} while logged in, then pass token=... (a read "
            f"token from {where}/settings/tokens) or run `hf auth login`; "
            + _by_hand(repo_id, revision, out) + "."
        )
    if isinstance(exc, errors.RepositoryNotFoundError):
        return FileNotFoundError(
            f"there is no repository {repo_id!r} at {where} (or it is private and no token with "
            f"access was given). Check the name: it is owner/name as in {where}/{repo_id}; for a "
            "private model pass token=...; " + _by_hand(repo_id, revision, out) + "."
        )
    if isinstance(exc, errors.RevisionNotFoundError):
        return FileNotFoundError(
            f"{repo_id} at {where} has no revision {revision!r}. Give a branch, tag or commit of "
            f"that repository (the default is 'main'); " + _by_hand(repo_id, "main", out) + "."
        )
    first_line = (str(exc).strip().splitlines() or [""])[0].rstrip(".")
    return RuntimeError(
        f"downloading {repo_id} (revision {revision!r}) from {where} failed: "
        f"{type(exc).__name__}: {first_line}. Nothing was written to {out}. Check the network "
        "connection and the endpoint (HF_ENDPOINT or endpoint=...), then run it again; "
        + _by_hand(repo_id, revision, out) + "."
    )


def _existing_download(out: Path, repo_id: str, revision: str) -> bool:
    """True if out is a complete earlier download of repo_id; False if out is new or empty.

    Raises FileExistsError for anything else, and leaves it as it is.
    """
    if not out.exists():
        return False
    if not out.is_dir():
        raise FileExistsError(
            f"{out} is a file, but download_hf needs a folder. Nothing was changed; give the "
            "name of a new or empty folder."
        )
    if not any(out.iterdir()):
        return False
    try:
        record = json.loads((out / DOWNLOAD_MARKER).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        record = None
    if not isinstance(record, dict) or record.get("format") != DOWNLOAD_FORMAT:
        raise FileExistsError(
            f"{out} already holds files and is not a download made by download_hf (it has no "
            f"valid {DOWNLOAD_MARKER}). Nothing was changed; give the name of a new or empty "
            "folder."
        )
    if record.get("repo_id") != repo_id or revision not in (record.get("revision"),
                                                             record.get("commit")):
        raise FileExistsError(
            f"{out} holds {record.get('repo_id')} (revision {record.get('revision')!r}), not "
            f"{repo_id} (revision {revision!r}). Nothing was changed; download into another "
            "folder, or delete this one yourself first."
        )
    files = record.get("files")
    if not isinstance(files, dict):
        files = {}
    changed = [
        name
        for name, size in files.items()
        if not (out / name).is_file() or (out / name).stat().st_size != size
    ]
    if changed or not files:
        raise FileExistsError(
            f"{out} is a download of {repo_id} but {', '.join(changed) or 'its file list'} "
            "is missing or changed since. Nothing was changed; delete the folder and download "
            "again."
        )
    return True


def _require_checkpoint_files(names: list[str], repo_id: str, where: str) -> None:
    """Refuse, before anything is fetched, a repository that lacks config.json or safetensors."""
    top = sorted(n for n in names if "/" not in n)
    if "config.json" not in top:
        shown = ", ".join(top[:8]) or "no files"
        raise FileNotFoundError(
            f"{repo_id} at {where} has no config.json at its top level ({shown}), so it is not "
            "a checkpoint saved with transformers. Check the name; download_hf fetches "
            f"Llama-architecture models such as {', '.join(REAL_CHECKPOINTS.values())}."
        )
    if not any(n.endswith(".safetensors") for n in top):
        pickles = [n for n in names if n.endswith((".bin", ".pth", ".pt", ".ckpt"))]
        has = f" (it has only {', '.join(pickles[:4])})" if pickles else ""
        raise FileNotFoundError(
            f"{repo_id} at {where} has no .safetensors weights{has}. llama_edu never loads "
            "pickled weights, which can run code when they are opened. Look for a safetensors "
            "version of this model on the Hub, or convert it yourself in an environment you "
            "trust."
        )


def _require_llama_config(config_file: Path, repo_id: str, where: str) -> None:
    """Refuse, before the weights are fetched, a config that load_hf cannot build."""
    from .interop import args_from_hf_config

    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"the config.json of {repo_id} at {where} is not valid JSON ({exc}); "
                         "check the repository on the Hub.") from exc
    kind = config.get("model_type") if isinstance(config, dict) else None
    if kind != "llama":
        raise ValueError(
            f"{repo_id} at {where} is a {kind!r} model, not a Llama (its config.json says "
            f"model_type={kind!r}); llama_edu builds model_type 'llama' only. Choose a "
            f"Llama-architecture model, e.g. {', '.join(REAL_CHECKPOINTS.values())}."
        )
    try:
        args_from_hf_config(config)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{repo_id} at {where} cannot be built by llama_edu: {exc}") from exc


def _check_download(staging: Path, names: list[str], repo_id: str) -> dict[str, int]:
    """The downloaded files and their sizes, after checking that everything asked for arrived."""
    missing = [n for n in names if not (staging / n).is_file()]
    index_file = staging / "model.safetensors.index.json"
    if index_file.is_file():
        try:
            shards = set(json.loads(index_file.read_text(encoding="utf-8"))["weight_map"].values())
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise ValueError(f"the model.safetensors.index.json of {repo_id} is not a valid index "
                             "(a JSON object with a 'weight_map'); check the repository.") from None
        missing += sorted(s for s in shards if not (staging / s).is_file() and s not in missing)
    if missing:
        raise RuntimeError(
            f"the download of {repo_id} lacks {', '.join(missing)}, which the repository lists. "
            "Nothing was kept; run it again, or check the repository on the Hub."
        )
    return {p.name: p.stat().st_size for p in sorted(staging.iterdir()) if p.is_file()}


def download_hf(
    repo_id: str,
    folder: str | os.PathLike,
    *,
    revision: str = "main",
    endpoint: str | None = None,
    token: str | None = None,
) -> Path:
    """Download a Llama checkpoint (config, safetensors, tokenizer) from the Hub into folder.

    repo_id is "owner/name" or a key of REAL_CHECKPOINTS. Pickled weights are never fetched, and
    a repository without config.json or safetensors weights, or whose config is not a Llama that
    load_hf can build, is refused before its weights are fetched. The files go into a staging
    folder next to `folder` and are moved into place when complete, so `folder` ends up either
    complete or as it was. An existing `folder` must be empty, or an earlier complete download
    of the same repo_id and revision, which is returned as it is (delete it to download anew).
    endpoint defaults to HF_ENDPOINT or https://huggingface.co; token to the one saved by
    `hf auth login` (gated models such as Llama 3.2 need one).
    """
    if isinstance(repo_id, str):
        repo_id = REAL_CHECKPOINTS.get(repo_id, repo_id)
    if not isinstance(repo_id, str) or not _REPO_ID.fullmatch(repo_id):
        raise ValueError(
            f"{repo_id!r} is not a repository id; give owner/name as in the model's address "
            f"(e.g. HuggingFaceTB/SmolLM2-135M) or one of {', '.join(REAL_CHECKPOINTS)}."
        )
    if not isinstance(revision, str) or not revision.strip():
        raise ValueError(f"revision must be a branch, tag or commit name, got {revision!r}.")
    if endpoint is not None and not re.match(r"https?://[^/\s]+", endpoint):
        raise ValueError(f"endpoint={endpoint!r} is not an http(s) address; give one such as "
                         "https://huggingface.co, or leave it out.")
    out = Path(folder).expanduser()
    if _existing_download(out, repo_id, revision):
        return out
    hub = _hub()
    where = (endpoint or hub.constants.ENDPOINT).rstrip("/")
    api = hub.HfApi(endpoint=endpoint, token=token)
    staging = make_staging_dir(out.parent, out.name, "download")
    hub_cache = staging / ".cache" / "hub"  # refs that snapshot_download writes stay in here

    def fetch(names: list[str], commit: str) -> None:
        try:
            hub.snapshot_download(
                repo_id, revision=commit, endpoint=endpoint, token=token, local_dir=staging,
                cache_dir=hub_cache, allow_patterns=[glob.escape(n) for n in names],
            )
        except Exception as exc:  # every failure of the transfer gets the same clear message
            raise _explain(exc, hub, repo_id, revision, where, out) from exc

    try:
        try:
            info = api.model_info(repo_id, revision=revision)
            commit = info.sha or revision
            names = (
                [s.rfilename for s in info.siblings]
                if info.siblings is not None
                else api.list_repo_files(repo_id, revision=commit)
            )
        except Exception as exc:
            raise _explain(exc, hub, repo_id, revision, where, out) from exc
        _require_checkpoint_files(names, repo_id, where)
        fetch(["config.json"], commit)
        _require_llama_config(staging / "config.json", repo_id, where)
        wanted = sorted(n for n in names if _wanted(n))
        fetch(wanted, commit)
        shutil.rmtree(staging / ".cache", ignore_errors=True)  # huggingface_hub's bookkeeping
        files = _check_download(staging, wanted, repo_id)
        record = {
            "format": DOWNLOAD_FORMAT, "repo_id": repo_id, "revision": revision,
            "commit": commit, "endpoint": where, "files": files,
        }
        atomic_write_text(staging / DOWNLOAD_MARKER, json.dumps(record, indent=2) + "\n")
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise FileExistsError(f"{out} was filled by something else during the download. "
                                  "Nothing was changed in it; download into another folder.")
        install_folder(staging, out, last=DOWNLOAD_MARKER)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
