"""Push models and pipelines to the Hugging Face Hub with model cards from the ``model_cards/`` templates."""

from __future__ import annotations

import tempfile
from pathlib import Path

from huggingface_hub import HfApi

from .model_card import write_model_card

KIND_BY_CLASS = {
    "MergeVQModel": "mergevq",
    "MergeARForCausalLM": "mergear",
    "MergeVQPipeline": "pipeline",
    "SourceRecoveryModel": "source_recovery",
}


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
