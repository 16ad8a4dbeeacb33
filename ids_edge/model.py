"""The 1D-CNN intrusion detector: two Conv1D/MaxPooling1D stages, then two Dense layers."""

import dataclasses
import math

from ids_edge._tf import import_tensorflow
from ids_edge.errors import IdsEdgeError

MIN_FEATURES = 10
"""Fewest input features the architecture accepts: two valid convolutions (k3) and two poolings (2)."""

MAX_SEED = 2**32 - 1


@dataclasses.dataclass
class TrainingOptions:
    """Training hyperparameters; the defaults are the published model's."""

    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 0.001
    patience: int = 3
    validation_fraction: float = 0.2
    seed: int = 0
    max_rows_per_class: int | None = None

    def validate(self):
        """Check every value before any data is read.

        Raises:
            IdsEdgeError: The first invalid option, with its value and the valid range.
        """
        checks = [
            (self.epochs >= 1, f"--epochs {self.epochs}: use 1 or more"),
            (self.batch_size >= 1, f"--batch-size {self.batch_size}: use 1 or more"),
            (
                math.isfinite(self.learning_rate) and self.learning_rate > 0,
                f"--learning-rate {self.learning_rate}: use a positive finite number such as 0.001",
            ),
            (self.patience >= 0, f"--patience {self.patience}: use 0 or more epochs"),
            (
                0 < self.validation_fraction < 1,
                f"--validation-fraction {self.validation_fraction}: use a number between 0 and 1, such as 0.2",
            ),
            (0 <= self.seed <= MAX_SEED, f"--seed {self.seed}: use an integer from 0 to {MAX_SEED}"),
            (
                self.max_rows_per_class is None or self.max_rows_per_class >= 2,
                f"--max-rows-per-class {self.max_rows_per_class}: use 2 or more",
            ),
        ]
        for valid, message in checks:
            if not valid:
                raise IdsEdgeError(f"Invalid option {message}.")


def build_model(feature_count, class_count, learning_rate=0.001):
    """Build and compile the CNN for inputs of shape ``(feature_count, 1)``.

    Conv1D 32 (kernel 3, ReLU) -> MaxPooling1D 2 -> Conv1D 64 (kernel 3, ReLU) -> MaxPooling1D 2
    -> Flatten -> Dense 128 ReLU -> Dense ``class_count`` softmax; Adam and categorical
    cross-entropy.
    """
    _, keras = import_tensorflow()
    layers = keras.layers
    model = keras.Sequential(
        [
            layers.Input(shape=(feature_count, 1), name="features"),
            layers.Conv1D(32, 3, activation="relu", name="conv1"),
            layers.MaxPooling1D(2, name="pool1"),
            layers.Conv1D(64, 3, activation="relu", name="conv2"),
            layers.MaxPooling1D(2, name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dense(128, activation="relu", name="dense"),
            layers.Dense(class_count, activation="softmax", name="classes"),
        ],
        name="ids_edge_cnn",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
