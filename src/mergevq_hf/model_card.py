"""Model cards written from the ``model_cards/`` templates with ``huggingface_hub.ModelCardData``."""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

TEMPLATES = Path(__file__).resolve().parents[2] / "model_cards"
FALLBACK = (
    "---\n{{ card_data }}\n---\n\n# {{ model_name }}\n\n## Evaluation protocol\n\n{{ evaluation }}\n\n"
    "## Training\n\n{{ training }}\n"
)
TAGS = {
    "mergevq": ["mergevq", "image-tokenizer", "vector-quantization"],
    "mergear": ["mergevq", "mergear", "class-conditional-image-generation"],
    "random_ar": ["mergevq", "random-order", "class-conditional-image-generation"],
    "pipeline": ["mergevq", "mergear", "class-conditional-image-generation", "pipeline"],
    "source_recovery": ["mergevq", "source-recovery"],
    "classifier": ["mergevq", "image-classification", "fine-tuned"],
}


def _as_text(value) -> str:
    if value is None:
        return "Not evaluated yet."
    if isinstance(value, str):
        return value
    return "```json\n" + json.dumps(value, indent=2, default=str) + "\n```"


def write_model_card(
    folder: str | Path,
    kind: str,
    repo_id: str | None = None,
    evaluation=None,
    training=None,
    datasets: list[str] | None = None,
    metrics: list[str] | None = None,
) -> ModelCard:
    """Render ``model_cards/{kind}.md`` for the model saved in ``folder`` and write ``folder/README.md``."""
    if kind not in TAGS:
        raise ValueError(f"model card kind {kind!r}; allowed: {sorted(TAGS)}")
    folder = Path(folder)
    config_file = folder / ("tokenizer/config.json" if kind == "pipeline" else "config.json")
    config = json.loads(config_file.read_text()) if config_file.exists() else {}
    card_data = ModelCardData(
        library_name="mergevq_hf", tags=TAGS[kind], datasets=datasets, metrics=metrics, license="apache-2.0"
    )
    if "num_positions" not in config and "ch_mult" in config:  # tokenizer: L from the grid
        config["num_positions"] = (config["resolution"] // 2 ** (len(config["ch_mult"]) - 1)) ** 2
    template = TEMPLATES / f"{kind}.md"
    fields = dict(
        model_name=repo_id or folder.name,
        repo_id=repo_id or str(folder),
        evaluation=_as_text(evaluation),
        training=_as_text(training),
        num_tokens=config.get("num_tokens", config.get("num_positions", "K")),
        code_dim=config.get("code_dim", 18),
        num_positions=config.get("num_positions", "L"),
    )
    if template.exists():
        card = ModelCard.from_template(card_data, template_path=str(template), **fields)
    else:  # installed from a wheel: the templates live in the repository
        card = ModelCard.from_template(card_data, template_str=FALLBACK, **fields)
    card.save(folder / "README.md")
    return card


def record_eval_results(
    folder: str | Path,
    results: dict[str, float],
    task_type: str,
    dataset_name: str,
    dataset_type: str | None = None,
    dataset_split: str | None = None,
    metric_args: dict | None = None,
) -> ModelCard:
    """Add ``results`` ({metric type: value}, e.g. {"fid": 3.1, "inception_score": 250.0}) to the
    ``model-index`` of ``folder/README.md`` (created when missing), replacing earlier values of the same metric,
    task, dataset and split; other results stay. ``metric_args`` records the settings (K, CFG, number of
    images). Returns the saved card."""
    from huggingface_hub import EvalResult

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model card folder {str(folder)!r} is not a directory")
    readme = folder / "README.md"
    if readme.exists():
        card = ModelCard.load(readme)
    else:
        card = ModelCard(f"---\n{ModelCardData(library_name='mergevq_hf').to_yaml()}\n---\n\n# {folder.name}\n")
    if not card.data.model_name:
        card.data.model_name = folder.name
    dataset_type = dataset_type or dataset_name
    new = [
        EvalResult(
            task_type=task_type,
            dataset_type=dataset_type,
            dataset_name=dataset_name,
            dataset_split=dataset_split,
            metric_type=metric,
            metric_name=metric,
            metric_value=round(float(value), 6),
            metric_args=metric_args,
        )
        for metric, value in results.items()
        if value is not None
    ]
    replaced = {(r.task_type, r.dataset_type, r.dataset_split, r.metric_type) for r in new}
    kept = [
        r
        for r in (card.data.eval_results or [])
        if (r.task_type, r.dataset_type, r.dataset_split, r.metric_type) not in replaced
    ]
    card.data.eval_results = kept + new
    card.save(readme)
    return card
