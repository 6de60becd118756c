"""``evaluate`` module: Inception Score of classifier logits (torchmetrics' math; mergevq_hf).

    inception_score = mergevq_hf.evaluation.load_metric("inception_score")
    inception_score.compute(predictions=logits, splits=10)   # logits [N, C] of generated images
"""

import datasets
import evaluate
import numpy as np
import torch

from mergevq_hf.evaluation.inception_score import DEFAULT_SPLITS, inception_score

_DESCRIPTION = "exp(E_x KL(p(y|x) || p(y))) over splits of the generated images' class posteriors."
_KWARGS_DESCRIPTION = """
Args:
    predictions: logits [N, C] of a classifier (an Inception-v3) on the generated images.
    splits: number of parts (default 10); seed: of torchmetrics' shuffle before splitting (default 0).
Returns:
    inception_score, inception_score_std.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MergevqInceptionScore(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Salimans et al., Improved Techniques for Training GANs, 2016",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("float64"))}),
        )

    def _compute(self, predictions, splits=DEFAULT_SPLITS, seed=0):
        mean, std = inception_score(torch.as_tensor(np.asarray(predictions, dtype=np.float64)), splits, seed)
        return {"inception_score": mean, "inception_score_std": std}
