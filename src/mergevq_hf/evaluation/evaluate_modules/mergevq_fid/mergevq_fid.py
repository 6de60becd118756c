"""``evaluate`` module: FID between generated features and reference features or statistics (mergevq_hf).

    fid = mergevq_hf.evaluation.load_metric("fid")          # offline: this file ships inside the package
    fid.compute(predictions=fake_features, reference_features=real_features)   # [N, D], [M, D]
    fid.compute(predictions=fake_features, reference_npz="VIRTUAL_imagenet256_labeled.npz")  # ADM mu / sigma
"""

import datasets
import evaluate
import numpy as np
import torch

from mergevq_hf.evaluation.fid import GaussianStatistics, frechet_distance

_DESCRIPTION = "Fréchet distance between Gaussian fits of two feature sets (Inception pool features for FID)."
_KWARGS_DESCRIPTION = """
Args:
    predictions: generated-image features, one float vector per image ([N, D]).
    reference_features: reference features [M, D]; or
    reference_npz: an ADM-style .npz holding mu and sigma.
Returns:
    fid: the Fréchet distance (torchmetrics' FID math, float64).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MergevqFid(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Heusel et al., GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("float64"))}),
        )

    def _compute(self, predictions, reference_features=None, reference_npz=None):
        if (reference_features is None) == (reference_npz is None):
            raise ValueError("give exactly one of reference_features or reference_npz")
        fake = GaussianStatistics.from_features(torch.as_tensor(np.asarray(predictions, dtype=np.float64)))
        if reference_npz is not None:
            real = GaussianStatistics.load_npz(reference_npz)
        else:
            real = GaussianStatistics.from_features(torch.as_tensor(np.asarray(reference_features, dtype=np.float64)))
        return {"fid": frechet_distance(fake, real)}
