"""Magnitude pruning and quantization-aware training of the CNN with tensorflow-model-optimization.

Both fine-tune a copy of the trained model on the run's training split; the original model is
not changed. tfmot's default 8-bit QAT scheme does not accept Conv1D or MaxPooling1D, so QAT
works on :func:`to_conv2d_form`, a numerically equivalent model of Conv2D (3 x 1) and
MaxPooling2D (2 x 1) layers over a (features, 1, 1) input.
"""

import logging
import math

import numpy as np

from ids_edge._tf import import_tensorflow
from ids_edge.errors import IdsEdgeError

logger = logging.getLogger(__name__)

PRUNE_STRUCTURES = ("unstructured", "2:4")
"""``unstructured`` zeroes the smallest weights of each layer. ``2:4`` zeroes 2 of every 4
consecutive input weights of the Dense layers, which puts them at exactly 0.5 sparsity whatever
the target. tfmot 0.8 supports m-by-n sparsity for rank-2 and rank-4 kernels only, so the Conv1D
layers are pruned unstructured to the target in that mode."""

PRUNE_SCHEDULE_SHARE = 0.7
"""Share of the fine-tuning steps over which sparsity rises to the target; the rest fine-tunes
at the target sparsity."""


MIN_SPARSITY = 0.0001
MAX_SPARSITY = 0.9999
"""Range of ``--prune``: variant names give the target in percent with 2 decimals, and values
outside this range would read 0 or 100 there."""


def check_sparsity(sparsity):
    """Check a target sparsity (fraction of zero weights) given with ``--prune``.

    Raises:
        IdsEdgeError: The value is not strictly between 0 and 1, or outside
            [:data:`MIN_SPARSITY`, :data:`MAX_SPARSITY`].
    """
    if not isinstance(sparsity, (int, float)) or not 0 < sparsity < 1:
        raise IdsEdgeError(
            f"Invalid --prune {sparsity}: the target sparsity is the fraction of zero weights and must be "
            "strictly between 0 and 1, e.g. 0.5."
        )
    if not MIN_SPARSITY <= sparsity <= MAX_SPARSITY:
        raise IdsEdgeError(
            f"Invalid --prune {sparsity}: use a sparsity from {MIN_SPARSITY} to {MAX_SPARSITY}. Variant names give "
            "it in percent with 2 decimals, where this value would read as 0 or 100."
        )


def check_fine_tuning(epochs, learning_rate, structure=None):
    """Check the fine-tuning options shared by pruning and QAT.

    Raises:
        IdsEdgeError: Fewer than 1 epoch, a learning rate that is not positive, or an unknown
            pruning structure.
    """
    if epochs < 1:
        raise IdsEdgeError(f"Invalid --fine-tune-epochs {epochs}: pruning and QAT need 1 or more epochs.")
    if not learning_rate > 0:
        raise IdsEdgeError(f"Invalid --fine-tune-learning-rate {learning_rate}: use a positive number such as 0.0005.")
    if structure is not None and structure not in PRUNE_STRUCTURES:
        raise IdsEdgeError(f"Invalid --prune-structure {structure!r}: choose one of {', '.join(PRUNE_STRUCTURES)}.")


def _import_tfmot():
    import tensorflow_model_optimization as tfmot

    return tfmot


def pruning_schedule_steps(rows, batch_size, epochs):
    """Return ``(end_step, frequency)`` of the polynomial sparsity schedule.

    Sparsity rises from 0 at step 0 to the target at ``end_step``, with masks updated every
    ``frequency`` steps. ``end_step`` is a multiple of ``frequency``, so the last update reaches
    the target exactly.
    """
    total_steps = epochs * math.ceil(rows / batch_size)
    end_step = max(1, int(total_steps * PRUNE_SCHEDULE_SHARE))
    frequency = max(1, end_step // 10)
    return (end_step // frequency) * frequency, frequency


def prune_model(model, x_train, y_train, sparsity, structure="unstructured", epochs=3, batch_size=32,
                learning_rate=0.0005, seed=0):
    """Prune the Conv1D and Dense kernels by magnitude while fine-tuning, then strip the wrappers.

    Args:
        model: The trained tf_keras model; it is cloned, not changed.
        x_train: Standardized training inputs of shape (rows, features, 1), float32.
        y_train: One-hot training labels of shape (rows, classes).
        sparsity: Target fraction of zero weights per layer, in (0, 1).
        structure: One of :data:`PRUNE_STRUCTURES`.
        epochs: Fine-tuning epochs (1 or more).
        batch_size: Rows per fine-tuning step.
        learning_rate: Adam learning rate of the fine-tuning.
        seed: Seed of the fine-tuning's shuffling.

    Returns:
        A plain tf_keras model (pruning wrappers removed) with the pruned weights set to zero.
    """
    check_sparsity(sparsity)
    check_fine_tuning(epochs, learning_rate, structure)
    from ids_edge.train import set_seed

    _, keras = import_tensorflow()
    tfmot = _import_tfmot()
    set_seed(seed)
    # Layer names such as quantize_layer_1 end up in the .tflite tensor names. Restarting the
    # automatic name counters makes a second export in the same process give the same bytes.
    keras.backend.reset_uids()

    end_step, frequency = pruning_schedule_steps(len(x_train), batch_size, epochs)
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=float(sparsity), begin_step=0, end_step=end_step, frequency=frequency
    )

    def wrap(layer):
        if isinstance(layer, keras.layers.Dense) and structure == "2:4":
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule, sparsity_m_by_n=(2, 4))
        if isinstance(layer, (keras.layers.Dense, keras.layers.Conv1D)):
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    # clone_function wraps the layer instances it is given, so clone first to leave ``model`` as it was.
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    pruned = keras.models.clone_model(copy, clone_function=wrap)
    _copy_weights(model, pruned)
    pruned.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    logger.info("Pruning to sparsity %.2f (%s) over %d steps, %d fine-tuning epochs", sparsity, structure, end_step, epochs)
    pruned.fit(
        x_train,
        y_train,
        epochs=epochs,
        batch_size=batch_size,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
        shuffle=True,
        verbose=0,
    )
    return tfmot.sparsity.keras.strip_pruning(pruned)


def _copy_weights(source, target):
    """Copy each layer's kernel and bias from ``source`` into the same-named (wrapped) layer."""
    for layer in source.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        wrapped = _find_layer(target, layer.name)
        inner = getattr(wrapped, "layer", wrapped)
        inner.set_weights(weights)


def _find_layer(model, name):
    for layer in model.layers:
        if layer.name == name or getattr(getattr(layer, "layer", None), "name", None) == name:
            return layer
    raise ValueError(f"layer {name} not found")


def layer_sparsity(model):
    """Measure the fraction of zero weights in each layer's kernel.

    Returns:
        ``{layer name: {"weights": count, "zeros": count, "sparsity": fraction,
        "two_of_four": bool}}`` for every layer with a kernel. ``two_of_four`` is true when
        every group of 4 consecutive input weights (the TFLite weight layout's last axis) has
        at least 2 zeros.
    """
    result = {}
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        values = kernel.numpy()
        zeros = int(np.count_nonzero(values == 0))
        result[layer.name] = {
            "weights": int(values.size),
            "zeros": zeros,
            "sparsity": zeros / values.size,
            "two_of_four": _has_two_of_four(values),
        }
    return result


def overall_sparsity(layers):
    """Return the fraction of zero weights over all kernels of a :func:`layer_sparsity` result."""
    weights = sum(entry["weights"] for entry in layers.values())
    return sum(entry["zeros"] for entry in layers.values()) / weights if weights else 0.0


def _has_two_of_four(kernel):
    # TFLite stores weights with the input channels last: [out, in] for FULLY_CONNECTED and
    # [out, height, width, in] for CONV_2D, so the groups of 4 run along the input axis.
    if kernel.ndim == 2:
        rows = kernel.T
    else:
        rows = np.moveaxis(kernel, -1, 0).reshape(-1, kernel.shape[-2])
    if rows.shape[-1] % 4:
        return False
    groups = rows.reshape(rows.shape[0], -1, 4)
    return bool(((groups == 0).sum(axis=-1) >= 2).all())


def to_conv2d_form(model):
    """Rebuild the CNN with Conv2D and MaxPooling2D layers that compute the same function.

    The input (features, 1) is reshaped to (features, 1, 1). Each Conv1D with kernel k becomes a
    Conv2D with kernel (k, 1), and each MaxPooling1D with pool p a MaxPooling2D with pool (p, 1).
    Kernels are copied with an inserted width axis; Dense layers are copied as they are.

    Raises:
        IdsEdgeError: The model contains a layer this rewrite does not handle.
    """
    _, keras = import_tensorflow()
    layers = keras.layers
    feature_count = model.input_shape[1]
    converted = [layers.Input(shape=(feature_count, 1), name="features"), layers.Reshape((feature_count, 1, 1), name="to_2d")]
    for layer in model.layers:
        config = layer.get_config()
        if isinstance(layer, layers.Conv1D):
            converted.append(
                layers.Conv2D(
                    config["filters"], (config["kernel_size"][0], 1), strides=(config["strides"][0], 1),
                    padding=config["padding"], activation=config["activation"], name=layer.name,
                )
            )
        elif isinstance(layer, layers.MaxPooling1D):
            converted.append(
                layers.MaxPooling2D(
                    (config["pool_size"][0], 1), strides=(config["strides"][0], 1), padding=config["padding"], name=layer.name
                )
            )
        elif isinstance(layer, (layers.Flatten, layers.Dense)):
            converted.append(layer.__class__.from_config(config))
        else:
            raise IdsEdgeError(
                f"QAT cannot rewrite layer {layer.name} ({layer.__class__.__name__}) into Conv2D form; "
                "it handles Conv1D, MaxPooling1D, Flatten and Dense. Export without --qat."
            )
    rewritten = keras.Sequential(converted, name=f"{model.name}_conv2d")

    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        if isinstance(layer, layers.Conv1D):
            weights = [weights[0][:, np.newaxis], *weights[1:]]
        rewritten.get_layer(layer.name).set_weights(weights)
    return rewritten


def quantization_aware_model(model, x_train, y_train, epochs=3, batch_size=32, learning_rate=0.0005, seed=0,
                             preserve_sparsity=False):
    """Fine-tune the CNN with fake-quantized int8 weights and activations (tfmot QAT).

    Args:
        model: The trained (optionally pruned) Conv1D model; it is not changed.
        x_train: Standardized training inputs of shape (rows, features, 1), float32, clamped to
            the int8 input range the export uses.
        y_train: One-hot training labels.
        epochs: Fine-tuning epochs (1 or more).
        batch_size: Rows per step.
        learning_rate: Adam learning rate.
        seed: Seed of the fine-tuning's shuffling.
        preserve_sparsity: Use tfmot's prune-preserving QAT scheme, so zero weights of a pruned
            model stay zero.

    Returns:
        The quantization-aware tf_keras model in Conv2D form, ready for the TFLite converter.
    """
    from ids_edge.train import set_seed

    check_fine_tuning(epochs, learning_rate)
    _, keras = import_tensorflow()
    tfmot = _import_tfmot()
    set_seed(seed)
    # Layer names such as quantize_layer_1 end up in the .tflite tensor names. Restarting the
    # automatic name counters makes a second export in the same process give the same bytes.
    keras.backend.reset_uids()

    rewritten = to_conv2d_form(model)
    if preserve_sparsity:
        annotated = tfmot.quantization.keras.quantize_annotate_model(rewritten)
        aware = tfmot.quantization.keras.quantize_apply(
            annotated, tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
        )
    else:
        aware = tfmot.quantization.keras.quantize_model(rewritten)
    aware.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    logger.info("Quantization-aware fine-tuning for %d epochs", epochs)
    aware.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0)
    return aware
