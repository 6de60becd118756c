"""``evaluate`` module: improved precision and recall with k-NN manifolds (Kynkäänniemi et al., 2019; mergevq_hf).

    pr = mergevq_hf.evaluation.load_metric("precision_recall")
    pr.compute(predictions=fake_features, reference_features=real_features, k=3)
"""

import datasets
import evaluate
import numpy as np
import torch

from mergevq_hf.evaluation.precision_recall import DEFAULT_K, precision_recall

_DESCRIPTION = "Fraction of generated samples inside the real k-NN manifold (precision) and the reverse (recall)."
_KWARGS_DESCRIPTION = """
Args:
    predictions: generated-image features [N, D].
    reference_features: reference features [M, D].
    k: neighbours of the manifold radii (default 3).
Returns:
    precision, recall: fractions in [0, 1].
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MergevqPrecisionRecall(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Kynkäänniemi et al., Improved Precision and Recall Metric for Assessing Generative Models, 2019",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("float64"))}),
        )

    def _compute(self, predictions, reference_features, k=DEFAULT_K):
        real = torch.as_tensor(np.asarray(reference_features, dtype=np.float64))
        fake = torch.as_tensor(np.asarray(predictions, dtype=np.float64))
        return precision_recall(real, fake, k=k)
