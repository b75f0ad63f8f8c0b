"""Scoring a trained model on a dataset's labelled images (behind `numpyseg evaluate`).

Protocol of the spec: each image is zero-padded (DRIVE to 592 x 592, STARE to
704 x 704, others to a multiple of 8), predicted whole, and the probability map
cropped back to the image's size; an image whose field of view differs by more
than 15 % from the one the weights were trained at is first resized to that
scale (numpyseg.prediction.predict_samples).  The maps are thresholded and
scored per image against the labels, over the whole image and inside the FOV
(numpyseg.metrics.segmentation.evaluate_dataset).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

#: Keys every score file (`score_document`) has; an existing file with them may be replaced.
SCORE_KEYS = ("weights", "dataset", "split", "threshold", "images")


def load_scored_samples(dataset: str, root=None, split: str | None = None, *, images=None, labels=None,
                        masks=None, synthetic_count: int = 8, synthetic_size: int = 128, seed: int = 0,
                        limit: int | None = None):
    """The labelled images to score: a dataset's split (default 'test'), or a folder of images and labels.

    Args:
        dataset: 'drive', 'stare', 'chase', 'folder' or 'synthetic'.
        root: the dataset's folder (not for 'synthetic', nor for 'folder' with `images`).
        split: 'test' (default), 'training' or 'all' (see numpyseg.data.datasets.load_dataset).
        images, labels, masks: 'folder' given as separate folders (labels needed).
        synthetic_count, synthetic_size, seed: the synthetic images.
        limit: keep only the first `limit` images.
    Returns:
        list of numpyseg.data.sample.Sample, every one with a label.
    Raises:
        DataError: a missing folder option, an unreadable dataset, or an image without a label.
    """
    from numpyseg.data.datasets import load_dataset, load_folder
    from numpyseg.data.io import DataError

    if dataset == "synthetic":
        size = int(synthetic_size)
        samples = load_dataset("synthetic", split=split or "test", n=int(synthetic_count), size=(size, size),
                               seed=int(seed))
    elif dataset == "folder" and images:
        if not labels:
            raise DataError("--dataset folder with --images also needs --labels DIR (scoring needs labels)")
        samples = load_folder(images, labels, masks)
    elif root is None:
        raise DataError(f"--dataset {dataset} needs --data-root DIR (the folder holding the dataset)")
    else:
        samples = load_dataset(dataset, root, split or "test")
    if limit is not None:
        samples = samples[:limit]
    missing = [s.name for s in samples if s.label is None]
    if missing:
        raise DataError(f"image {missing[0]} has no label: evaluation needs a label for every image")
    return samples


@dataclass
class Evaluation:
    """What `evaluate` measured.

    scores: evaluate_dataset's dict: 'whole' and 'fov', each {'mean': {...}, 'per_image': [...]}.
    images: how many images were scored.
    pad_size: (H, W) the images were padded to, or None (each to a multiple of 8).
    scales: image name -> the factor it was resized by before prediction (1.0: not resized).
    seconds_per_image: prediction time per image (scoring excluded).
    """

    scores: dict
    images: int
    pad_size: tuple[int, int] | None
    scales: dict
    seconds_per_image: float

    @property
    def rescaled(self) -> int:
        """How many images were resized to the trained FOV scale."""
        return sum(scale != 1.0 for scale in self.scales.values())


def evaluate(trained, samples, dataset: str, *, threshold: float = 0.5, rescale: str = "auto", tta: bool = False,
             batch_size: int = 1, progress=None) -> Evaluation:
    """Predict every sample (padded as `dataset` is) and score it against its label.

    Args:
        trained: numpyseg.prediction.TrainedModel (load_trained).
        samples: labelled Samples (load_scored_samples).
        dataset: the dataset's name, which fixes the padded size (DRIVE 592, STARE 704).
        threshold, rescale, tta, batch_size, progress: as numpyseg.prediction.predict_samples.
    """
    from numpyseg.inference import dataset_pad_size
    from numpyseg.metrics.segmentation import evaluate_dataset
    from numpyseg.prediction import predict_samples

    pad = dataset_pad_size(dataset, [s.shape for s in samples])
    start = time.monotonic()
    probs, predictions = predict_samples(trained, samples, pad_size=pad, rescale=rescale, tta=tta,
                                         batch_size=batch_size, progress=progress)
    seconds = time.monotonic() - start
    scores = evaluate_dataset(probs, [s.label for s in samples], [s.fov for s in samples],
                              threshold=threshold, names=[s.name for s in samples])
    return Evaluation(scores, len(samples), pad, {s.name: p.scale for s, p in zip(samples, predictions)},
                      seconds / max(len(samples), 1))


def score_document(evaluation: Evaluation, trained, weights, *, dataset: str, split: str, threshold: float,
                   rescale: str, tta: bool) -> dict:
    """Every score and how it was obtained, as a JSON-ready dict (NaN -> null); its keys include SCORE_KEYS."""
    checkpoint = trained.checkpoint
    pad = evaluation.pad_size
    document = {"weights": str(weights), "config": checkpoint.config, "epoch": checkpoint.epoch,
                "dataset": dataset, "split": split, "threshold": threshold,
                "pad_size": list(pad) if pad else None, "images": evaluation.images,
                "rescale": rescale, "trained_fov_diameter": trained.fov_diameter, "tta": tta,
                "scales": evaluation.scales,
                "seconds_per_image": evaluation.seconds_per_image, **evaluation.scores}
    return _json_safe(document)


def write_scores(path, document: dict):
    """Write `score_document`'s dict as indented JSON, atomically; returns the path."""
    from numpyseg.atomic import atomic_write_bytes

    return atomic_write_bytes(path, (json.dumps(document, indent=2) + "\n").encode())


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
