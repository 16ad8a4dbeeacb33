"""Feature preprocessing shared by training, export, benchmarks and generated firmware code.

Every step works in float32 with one IEEE operation at a time, so that the C code in
``firmware_bridge`` reproduces it bit for bit:

1. sanitize: NaN becomes the training mean; every other value, +/-inf included, is clipped to
   the finite range seen in the training split;
2. standardize: ``(x - mean) / scale``, with ``scale = 1`` for constant columns;
3. quantize (int8 models only): ``clamp(rint(z / input_scale) + zero_point, -128, 127)``, with
   ``rint`` rounding half to even as C99's ``rintf`` does in the default rounding mode.
"""

import dataclasses

import numpy as np

from ids_edge.errors import IdsEdgeError


@dataclasses.dataclass
class Preprocessor:
    """Per-feature parameters fit on the training split, in the order of ``feature_names``."""

    feature_names: list
    mean: np.ndarray
    scale: np.ndarray
    clip_min: np.ndarray
    clip_max: np.ndarray

    @classmethod
    def fit(cls, features, feature_names):
        """Fit the parameters on raw training features of shape (rows, features)."""
        values = np.asarray(features, dtype=np.float64)
        finite = np.where(np.isfinite(values), values, np.nan)
        if np.isnan(finite).all(axis=0).any():
            bad = [feature_names[i] for i in np.flatnonzero(np.isnan(finite).all(axis=0))]
            raise IdsEdgeError(
                f"Columns {bad} have no finite value in the training split, so they cannot be "
                "standardized. Remove them from the CSV files or fix the export that wrote them."
            )

        clip_min = np.nanmin(finite, axis=0)
        clip_max = np.nanmax(finite, axis=0)
        clipped = np.clip(values, clip_min, clip_max)  # +/-inf count as the range ends; NaN stays out
        mean = np.nanmean(clipped, axis=0)
        std = np.nanstd(clipped, axis=0)
        scale = np.where(std > 0, std, 1.0)
        return cls(
            feature_names=list(feature_names),
            mean=mean.astype(np.float32),
            scale=scale.astype(np.float32),
            clip_min=clip_min.astype(np.float32),
            clip_max=clip_max.astype(np.float32),
        )

    def sanitize(self, features):
        """Replace NaN with the mean and clip every value to the training range (float32)."""
        values = np.asarray(features, dtype=np.float32)
        values = np.clip(values, self.clip_min, self.clip_max)
        return np.where(np.isnan(values), self.mean, values).astype(np.float32)

    def transform(self, features):
        """Sanitize and standardize raw features; returns float32 of shape (rows, features)."""
        values = self.sanitize(features)
        return ((values - self.mean) / self.scale).astype(np.float32)

    def to_dict(self):
        return {
            "feature_names": list(self.feature_names),
            "mean": [float(v) for v in self.mean],
            "scale": [float(v) for v in self.scale],
            "clip_min": [float(v) for v in self.clip_min],
            "clip_max": [float(v) for v in self.clip_max],
        }

    @classmethod
    def from_dict(cls, data):
        return cls(
            feature_names=list(data["feature_names"]),
            mean=np.asarray(data["mean"], dtype=np.float32),
            scale=np.asarray(data["scale"], dtype=np.float32),
            clip_min=np.asarray(data["clip_min"], dtype=np.float32),
            clip_max=np.asarray(data["clip_max"], dtype=np.float32),
        )


def quantize(values, scale, zero_point):
    """Quantize float32 values to int8 with the affine parameters of a TFLite tensor."""
    scaled = np.asarray(values, dtype=np.float32) / np.float32(scale)
    rounded = np.rint(scaled) + np.float32(zero_point)
    return np.clip(rounded, -128, 127).astype(np.int8)


def dequantize(values, scale, zero_point):
    """Turn int8 tensor values back into float32: ``(q - zero_point) * scale``."""
    return ((np.asarray(values, dtype=np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)
