"""Training data, one job per file:

    config.py     DataConfig: dataset, split, crops, views (checked on creation)
    streaming.py  the ``datasets`` stream per process, RobustImageStream (decode + augment, never stops on a bad
                  image), make_dataloader, load_split_tensors (a whole small split as tensors, for evaluation)
    decoding.py   open_image / decode_image: any stored form -> loaded PIL image, decompression-bomb guard
    augment.py    seeded crops, flips and the alignment loss's weak / strong views

Each example is ``{"pixel_values": [3,R,R], "view_weak": [3,A,A], "view_strong": [3,A,A], "label": int}`` with
pixels in [-1, 1] (R = ``resolution``, A = ``aug_resolution``; the views are skipped when
``alignment_views=False``, the label is -1 where the dataset has none). The two views feed the alignment loss
(Eq. 12): the teacher sees the weak view, the student the strong one; the training code converts them to the
teacher's own normalisation. Small local datasets for tests and examples: ``mergevq_hf.testing``.
"""

from .augment import augmentation_seed, random_resized_crop_box, strong_augment, transform_example
from .config import CROP_MODES, DataConfig
from .decoding import DECODE_ERRORS, ImageTooLargeError, decode_image, open_image
from .streaming import RobustImageStream, load_image_stream, load_split_tensors, make_dataloader

__all__ = [
    "CROP_MODES",
    "DECODE_ERRORS",
    "DataConfig",
    "ImageTooLargeError",
    "RobustImageStream",
    "augmentation_seed",
    "decode_image",
    "load_image_stream",
    "load_split_tensors",
    "make_dataloader",
    "open_image",
    "random_resized_crop_box",
    "strong_augment",
    "transform_example",
]
