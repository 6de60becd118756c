"""Hugging Face Hub helpers: tell a local path from a Hub repo id (a missing local path is a clear error, not a
confusing Hub one), and push models and pipelines with model cards from the ``model_cards/`` templates."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from huggingface_hub import HfApi

from .model_card import write_model_card

KIND_BY_CLASS = {
    "MergeVQModel": "mergevq",
    "MergeARForCausalLM": "mergear",
    "MergeVQPipeline": "pipeline",
    "SourceRecoveryModel": "source_recovery",
    "MergeVQForImageClassification": "classifier",
}


# a Hub repo id is ``name`` or ``namespace/name``; like the Hub, each part starts and ends with a letter, digit or
# "_", has no "--" or "..", and the name has at most 96 characters
_REPO_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?"
_REPO_ID = re.compile(rf"(?:{_REPO_PART}/)?{_REPO_PART}")


def is_hub_repo_id(name: str) -> bool:
    """Whether the string ``name`` could be a Hub repo id (``name`` or ``namespace/name``, characters
    ``[A-Za-z0-9._-]``, no leading ``/``, ``.`` or ``~``, at most one ``/``, no ``--`` or ``..``)."""
    return (
        isinstance(name, str)
        and _REPO_ID.fullmatch(name) is not None
        and len(name.rsplit("/", 1)[-1]) <= 96
        and "--" not in name
        and ".." not in name
    )


def check_pretrained_path(name_or_path: str | os.PathLike) -> Path | str:
    """The one rule for "local path or Hub id": an existing path is returned as a ``Path``; a string that could be
    a Hub repo id is returned unchanged (for ``from_pretrained`` / ``snapshot_download``); anything else (a
    ``pathlib.Path``, or a string that cannot be a repo id such as ``./x``, ``/x``, ``~/x``, ``a/b/c``) that does
    not exist raises ``FileNotFoundError`` saying the local path was not found."""
    if isinstance(name_or_path, os.PathLike):  # a pathlib.Path is always local
        path = Path(name_or_path)
        if path.exists():
            return path
        raise FileNotFoundError(f"local path {str(name_or_path)!r} was not found")
    if not isinstance(name_or_path, str) or not name_or_path:
        raise TypeError(f"expected a local path or a Hub repo id ('namespace/name'), got {name_or_path!r}")
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    if is_hub_repo_id(name_or_path):
        return name_or_path
    raise FileNotFoundError(
        f"local path {name_or_path!r} was not found (and it cannot be a Hub repo id, which is 'name' or "
        "'namespace/name' with characters A-Z a-z 0-9 . _ -)"
    )


def resolve_pretrained_path(name_or_path: str | os.PathLike, **download_kwargs) -> Path:
    """A local folder for ``name_or_path``: an existing path as is, a Hub repo id downloaded with
    ``huggingface_hub.snapshot_download(repo_id, **download_kwargs)``; a missing local path raises
    ``FileNotFoundError`` (see :func:`check_pretrained_path`)."""
    checked = check_pretrained_path(name_or_path)
    if isinstance(checked, Path):
        return checked
    import huggingface_hub

    return Path(huggingface_hub.snapshot_download(checked, **download_kwargs))


def push_to_hub(
    obj,
    repo_id: str,
    evaluation=None,
    training=None,
    datasets: list[str] | None = None,
    metrics: list[str] | None = None,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload with mergevq_hf",
    revision: str | None = None,
):
    """``obj.save_pretrained`` into a temporary folder, add a model card rendered from the template of its kind
    (with the evaluation protocol: reference set, K, CFG, sampling settings), create the repo if needed and
    upload the folder in one commit. Returns the ``CommitInfo``."""
    kind = KIND_BY_CLASS.get(type(obj).__name__)
    if kind is None:
        raise TypeError(f"push_to_hub takes {sorted(KIND_BY_CLASS)}, got {type(obj).__name__}")
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="mergevq_push_") as tmp:
        folder = Path(tmp) / repo_id.split("/")[-1]
        obj.save_pretrained(folder)
        write_model_card(
            folder, kind, repo_id=repo_id, evaluation=evaluation, training=training, datasets=datasets, metrics=metrics
        )
        api.create_repo(repo_id, private=private, exist_ok=True)
        return api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), commit_message=commit_message, revision=revision
        )
