"""Training: the published architecture, seeding and reproducibility."""

import numpy as np
import pytest

from ids_edge import runs
from ids_edge.model import TrainingOptions, build_model
from ids_edge.runs import load_run
from ids_edge.train import train_run


def test_architecture_matches_publication():
    model = build_model(39, 19)
    kinds = [type(layer).__name__ for layer in model.layers]

    assert kinds == ["Conv1D", "MaxPooling1D", "Conv1D", "MaxPooling1D", "Flatten", "Dense", "Dense"]
    assert model.layers[0].filters == 32
    assert model.layers[0].kernel_size == (3,)
    assert model.layers[2].filters == 64
    assert model.layers[5].units == 128
    assert model.layers[6].units == 19
    assert model.layers[6].activation.__name__ == "softmax"
    assert model.loss == "categorical_crossentropy"
    assert type(model.optimizer).__name__ == "Adam"


def test_defaults_are_published_values():
    options = TrainingOptions()
    assert options.epochs == 10
    assert options.batch_size == 32


def test_same_seed_same_weights(sample_dataset, tmp_path):
    options = TrainingOptions(epochs=2, seed=7)
    for name in ("first", "second"):
        train_run(sample_dataset, runs.DataSource("sample"), options, tmp_path / name)

    first = load_run(tmp_path / "first").load_model().get_weights()
    second = load_run(tmp_path / "second").load_model().get_weights()
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_early_stopping_restores_best(sample_dataset, tmp_path):
    import json

    from ids_edge._tf import import_tensorflow
    from ids_edge.train import as_model_input

    _, keras = import_tensorflow()
    train_run(sample_dataset, runs.DataSource("sample"), TrainingOptions(epochs=8, patience=1, seed=3), tmp_path / "run")
    run = load_run(tmp_path / "run")
    history = json.loads((tmp_path / "run" / "history.json").read_text())

    model = run.load_model()
    model.compile(loss="categorical_crossentropy")
    inputs = as_model_input(run.preprocessor.transform(sample_dataset.validation.features))
    targets = keras.utils.to_categorical(sample_dataset.validation.labels, 2)
    restored_loss = model.evaluate(inputs, targets, verbose=0, batch_size=len(inputs))

    assert restored_loss == pytest.approx(min(history["val_loss"]), rel=1e-4)
    assert run.info["best_epoch"] == int(np.argmin(history["val_loss"])) + 1


def test_diverged_training_rejected(sample_dataset, tmp_path, monkeypatch):
    from ids_edge import train as train_module
    from ids_edge._tf import import_tensorflow
    from ids_edge.errors import IdsEdgeError

    tf, _ = import_tensorflow()

    def build_diverging_model(feature_count, class_count, learning_rate):
        model = build_model(feature_count, class_count, learning_rate)
        model.compile(optimizer="adam", loss=lambda y_true, y_pred: tf.reduce_sum(y_pred) * float("nan"))
        return model

    monkeypatch.setattr(train_module, "build_model", build_diverging_model)
    with pytest.raises(IdsEdgeError, match="Training diverged: the loss became NaN or inf in epoch 1"):
        train_run(sample_dataset, runs.DataSource("sample"), TrainingOptions(epochs=3), tmp_path / "run")
    assert not (tmp_path / "run").exists()
