"""Load CICIoMT2024 CSV files, or generic labelled CSV files, into train, validation and test splits.

Cleaning policy, applied the same way to every split:

- A cell that is not a number (after pandas' parsing of ``inf``, ``-inf``, ``nan`` and empty
  cells) is an error that names the file, line and column.
- ``+inf``, ``-inf`` and NaN are kept and counted. :class:`ids_edge.preprocess.Preprocessor`
  clips every value to the finite range of the training split (so ``Rate=inf`` becomes the
  largest finite training rate) and replaces NaN with the training mean.
- Exact duplicate rows (same features and label) are dropped within each split, keeping the
  first, and counted. Test rows that also occur in the training split are counted, not dropped.
"""

import dataclasses
import logging
import pathlib

import numpy as np
import pandas as pd

from ids_edge import labels, schemas, synthetic
from ids_edge.errors import IdsEdgeError

logger = logging.getLogger(__name__)

SAMPLE_DATA_DIR = pathlib.Path(__file__).parent / "sample_data"
"""Real CICIoMT2024 rows bundled with the package (Benign and ARP_Spoofing only)."""

@dataclasses.dataclass
class Split:
    """Raw features (float64, shape (rows, features)) and integer class indices."""

    features: np.ndarray
    labels: np.ndarray

    def __len__(self):
        return len(self.labels)


@dataclasses.dataclass
class Dataset:
    """Train, validation and test splits with their feature and class names."""

    train: Split
    validation: Split
    test: Split
    feature_names: list
    class_names: list
    schema: str
    task: int
    report: dict


def _read_csv(path):
    try:
        frame = pd.read_csv(path, engine="pyarrow")
    except (OSError, ValueError, pd.errors.ParserError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise IdsEdgeError(f"Could not read CSV file {path}: {message}. Check that it is a complete CSV file.") from None
    frame.columns = [str(column).strip() for column in frame.columns]
    if frame.empty:
        raise IdsEdgeError(f"CSV file {path} has a header but no rows. Remove it or add rows.")
    return frame


def _to_numeric(frame, path, columns):
    """Convert ``columns`` to float64, raising on the first cell that is not a number."""
    result = {}
    for column in columns:
        series = frame[column]
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            result[column] = series.to_numpy(dtype=np.float64)
            continue

        converted = pd.to_numeric(series, errors="coerce")
        bad = converted.isna() & series.notna() & (series.astype(str).str.strip() != "")
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise IdsEdgeError(
                f"{path}, line {row + 2}, column {column!r}: value {series.iloc[row]!r} is not a number. "
                "Fix or delete that row."
            )
        result[column] = converted.to_numpy(dtype=np.float64)
    return np.column_stack([result[column] for column in columns]) if columns else np.empty((len(frame), 0))


def _check_data_dir(data_dir, expected):
    if data_dir.is_file():
        raise IdsEdgeError(f"--data {data_dir} is a file, not a folder. Pass {expected} with --data.")
    if not data_dir.is_dir():
        raise IdsEdgeError(f"Data folder {data_dir} not found. Pass {expected} with --data.")


def find_official_files(data_dir):
    """List ``(path, split)`` pairs of the ``*_train.pcap.csv`` and ``*_test.pcap.csv`` files.

    ``data_dir`` contains ``train/`` and ``test/`` subfolders, or the files themselves.
    """
    data_dir = pathlib.Path(data_dir)
    _check_data_dir(data_dir, "the folder of the CICIoMT2024 CSV files")

    subfolders = [data_dir / split for split in labels.SPLITS if (data_dir / split).is_dir()]
    folders = subfolders or [data_dir]
    files = sorted(path for folder in folders for path in folder.glob("*.csv") if path.is_file())
    if not files:
        raise IdsEdgeError(
            f"No CSV files in {data_dir} (looked in {', '.join(str(folder) for folder in folders)}). "
            "Point --data at the folder that holds train/ and test/ from the CICIoMT2024 download."
        )

    found = []
    for path in files:
        label, split = labels.parse_file_name(path.name)
        if subfolders and path.parent.name != split:
            raise IdsEdgeError(f"{path} is a {split} file inside the {path.parent.name}/ folder. Move it to {split}/.")
        found.append((path, label, split))
    return found


def _drop_duplicates(features, label_indices, split_name, report):
    frame = pd.DataFrame(features)
    frame["__label"] = label_indices
    duplicated = frame.duplicated(keep="first").to_numpy()
    report[f"{split_name}_duplicates_dropped"] = int(duplicated.sum())
    return features[~duplicated], label_indices[~duplicated]


def _count_non_finite(features, split_name, report):
    report[f"{split_name}_inf_cells"] = int(np.isinf(features).sum())
    report[f"{split_name}_nan_cells"] = int(np.isnan(features).sum())


def _stratified_split(train, validation_fraction, seed, class_names, option="--validation-fraction"):
    if not 0 < validation_fraction < 1:
        raise IdsEdgeError(f"Invalid option {option} {validation_fraction}: use a number between 0 and 1, such as 0.2.")

    counts = np.bincount(train.labels, minlength=len(class_names))
    rng = np.random.default_rng(seed)
    validation_rows = []
    for index, count in enumerate(counts):
        if count == 0:
            continue
        if count < 2:
            raise IdsEdgeError(
                f"Class {class_names[index]!r} has {count} training row, too few for a stratified "
                "validation split. Add training rows for it or remove the class."
            )
        rows = np.flatnonzero(train.labels == index)
        take = min(max(1, int(round(count * validation_fraction))), count - 1)
        validation_rows.append(rng.choice(rows, size=take, replace=False))

    validation_mask = np.zeros(len(train), dtype=bool)
    validation_mask[np.concatenate(validation_rows)] = True
    return (
        Split(train.features[~validation_mask], train.labels[~validation_mask]),
        Split(train.features[validation_mask], train.labels[validation_mask]),
    )


def _limit_rows_per_class(split, max_rows_per_class, seed):
    if max_rows_per_class is None:
        return split
    rng = np.random.default_rng(seed)
    keep = []
    for index in np.unique(split.labels):
        rows = np.flatnonzero(split.labels == index)
        if len(rows) > max_rows_per_class:
            rows = np.sort(rng.choice(rows, size=max_rows_per_class, replace=False))
        keep.append(rows)
    keep = np.sort(np.concatenate(keep))
    return Split(split.features[keep], split.labels[keep])


def _row_hashes(split):
    frame = pd.DataFrame(split.features).assign(label=split.labels)
    return pd.util.hash_pandas_object(frame, index=False).to_numpy()


def _count_test_rows_in_train(train, test):
    # 64-bit row hashes keep this cheap on the full download (1.6 M test against 7.2 M training
    # rows). A hash collision could only overcount, and the count is only reported.
    return int(np.isin(_row_hashes(test), _row_hashes(train)).sum())


def load_official(data_dir, task, validation_fraction=0.2, seed=0, max_rows_per_class=None):
    """Load a CICIoMT2024 WiFi/MQTT download (either column schema) for a 2-, 6- or 19-class task.

    Args:
        data_dir: Folder with ``train/`` and ``test/`` subfolders, or with the files themselves.
        task: 2, 6 or 19 classes.
        validation_fraction: Fraction of each training class held out for validation, in (0, 1).
        seed: Seed of the validation split and of row limiting.
        max_rows_per_class: Keep at most this many random rows per class in each split, or None.

    Returns:
        The :class:`Dataset`; its ``report`` counts files, rows, duplicates and non-finite cells.

    Raises:
        IdsEdgeError: A file maps to no class, its header matches neither schema, the folder mixes
            schemas, a cell is not a number, or a split is missing.
    """
    class_names = labels.task_class_names(task)
    files = find_official_files(data_dir)
    report = {"source": str(data_dir), "files": len(files), "synthetic": synthetic.is_synthetic(data_dir)}

    schema = None
    schema_file = None
    parts = {split: ([], []) for split in labels.SPLITS}
    for path, label, split in files:
        frame = _read_csv(path)
        file_schema = schemas.detect_schema(frame.columns, path)
        if schema is None:
            schema, schema_file = file_schema, path
        elif file_schema != schema:
            raise IdsEdgeError(
                f"{data_dir} mixes column schemas: {schema_file.name} uses {schema} but {path.name} uses "
                f"{file_schema}. Use files from one release of the dataset."
            )
        feature_names = list(schemas.SCHEMA_FEATURES[schema])
        features = _to_numeric(frame, path, feature_names)
        class_index = class_names.index(labels.task_label(label, task))
        parts[split][0].append(features)
        parts[split][1].append(np.full(len(features), class_index, dtype=np.int64))
        logger.debug("Read %s: %d rows, class %s, %s split", path, len(features), label, split)

    for split in labels.SPLITS:
        if not parts[split][0]:
            raise IdsEdgeError(f"No {split} files in {data_dir}. Both *_train.pcap.csv and *_test.pcap.csv files are needed.")

    dataset = _build_dataset(parts, feature_names, class_names, schema, task, report, validation_fraction, seed, max_rows_per_class)
    return dataset


def load_sample(task=2, validation_fraction=0.2, seed=0):
    """Load the bundled real CICIoMT2024 rows (Benign and ARP_Spoofing, v39 schema)."""
    dataset = load_official(SAMPLE_DATA_DIR, task, validation_fraction=validation_fraction, seed=seed)
    dataset.report["source"] = "bundled sample of real CICIoMT2024 rows (Benign, ARP_Spoofing)"
    return dataset


def load_generic(data_dir, label_column, validation_fraction=0.2, test_fraction=0.2, seed=0, max_rows_per_class=None):
    """Load any CSV files with a label column; every other column must be numeric.

    ``data_dir`` contains ``train/`` and ``test/`` subfolders of CSV files, or CSV files from which
    a stratified test split of ``test_fraction`` is drawn. Class names are the sorted labels.
    """
    data_dir = pathlib.Path(data_dir)
    _check_data_dir(data_dir, "a folder of CSV files")
    subfolders = {split: data_dir / split for split in labels.SPLITS if (data_dir / split).is_dir()}
    if subfolders and len(subfolders) != len(labels.SPLITS):
        raise IdsEdgeError(f"{data_dir} has only {', '.join(subfolders)}/: give both train/ and test/, or neither.")
    groups = {split: sorted(folder.glob("*.csv")) for split, folder in subfolders.items()} or {"all": sorted(data_dir.glob("*.csv"))}
    for split, paths in groups.items():
        if not paths:
            raise IdsEdgeError(f"No CSV files for the {split} split in {data_dir}.")

    frames = {}
    feature_names = None
    for split, paths in groups.items():
        for path in paths:
            frame = _read_csv(path)
            if label_column not in frame.columns:
                raise IdsEdgeError(
                    f"{path} has no column {label_column!r} (columns: {', '.join(frame.columns[:8])}, ...). "
                    "Pass the label column's name with --label-column."
                )
            names = [column for column in frame.columns if column != label_column]
            if feature_names is None:
                feature_names = names
            elif names != feature_names:
                raise IdsEdgeError(f"{path} has other feature columns than the first file. Give every file the same header.")
            features = _to_numeric(frame, path, feature_names)
            label_values = frame[label_column]
            empty = (label_values.isna() | (label_values.astype(str).str.strip() == "")).to_numpy()
            if empty.any():
                row = int(np.flatnonzero(empty)[0])
                raise IdsEdgeError(
                    f"{path}, line {row + 2}, column {label_column!r}: the label is empty. Give every row a label or delete the row."
                )
            frames.setdefault(split, []).append((features, label_values.astype(str).str.strip().to_numpy()))

    all_labels = np.concatenate([label_values for parts in frames.values() for _, label_values in parts])
    class_names = sorted(set(all_labels.tolist()))
    if len(class_names) < 2:
        raise IdsEdgeError(f"Column {label_column!r} has only the label {class_names}: a classifier needs at least 2 classes.")

    if "train" in frames:
        train_labels = set(np.concatenate([label_values for _, label_values in frames["train"]]).tolist())
        only_in_test = sorted(set(class_names) - train_labels)
        if only_in_test:
            raise IdsEdgeError(
                f"Labels {only_in_test} of column {label_column!r} occur in {data_dir / 'test'} but not in "
                f"{data_dir / 'train'}, so the model cannot learn them. Add training rows for them or remove their test rows."
            )

    parts = {}
    for split, items in frames.items():
        features = np.concatenate([features for features, _ in items])
        indices = np.searchsorted(class_names, np.concatenate([label_values for _, label_values in items]))
        parts[split] = ([features], [indices.astype(np.int64)])

    if "all" in parts:
        everything = Split(parts["all"][0][0], parts["all"][1][0])
        train, test = _stratified_split(everything, test_fraction, seed + 1, class_names, "--test-fraction")
        parts = {"train": ([train.features], [train.labels]), "test": ([test.features], [test.labels])}

    report = {
        "source": str(data_dir),
        "files": sum(len(paths) for paths in groups.values()),
        "label_column": label_column,
        "synthetic": synthetic.is_synthetic(data_dir),
    }
    return _build_dataset(parts, feature_names, class_names, "generic", len(class_names), report, validation_fraction, seed, max_rows_per_class)


def _build_dataset(parts, feature_names, class_names, schema, task, report, validation_fraction, seed, max_rows_per_class):
    splits = {}
    for split in labels.SPLITS:
        features = np.concatenate(parts[split][0])
        label_indices = np.concatenate(parts[split][1])
        report[f"{split}_rows_read"] = int(len(label_indices))
        _count_non_finite(features, split, report)
        features, label_indices = _drop_duplicates(features, label_indices, split, report)
        splits[split] = _limit_rows_per_class(Split(features, label_indices), max_rows_per_class, seed)

    report["test_rows_also_in_train"] = _count_test_rows_in_train(splits["train"], splits["test"])
    train, validation = _stratified_split(splits["train"], validation_fraction, seed, class_names)
    report["class_rows"] = {
        name: {
            "train": int((train.labels == index).sum()),
            "validation": int((validation.labels == index).sum()),
            "test": int((splits["test"].labels == index).sum()),
        }
        for index, name in enumerate(class_names)
    }
    missing = [name for name, counts in report["class_rows"].items() if counts["train"] == 0]
    if missing:
        logger.warning("No training rows for classes %s: the model cannot learn them.", ", ".join(missing))
    untested = [name for name, counts in report["class_rows"].items() if counts["test"] == 0]
    if untested:
        logger.warning("No test rows for classes %s: their test metrics are undefined.", ", ".join(untested))

    return Dataset(train, validation, splits["test"], list(feature_names), list(class_names), schema, task, report)


def describe_report(report):
    """Format a dataset report as lines for the terminal."""
    lines = [f"Data: {report['source']} ({report['files']} files){synthetic.data_label(report)}"]
    for split in labels.SPLITS:
        lines.append(
            f"  {split}: {report[f'{split}_rows_read']} rows read, "
            f"{report[f'{split}_duplicates_dropped']} exact duplicates dropped, "
            f"{report[f'{split}_inf_cells']} inf and {report[f'{split}_nan_cells']} NaN cells clipped or filled"
        )
    lines.append(f"  test rows that also occur in train: {report['test_rows_also_in_train']}")
    for name, counts in report["class_rows"].items():
        lines.append(f"  {name}: train {counts['train']}, validation {counts['validation']}, test {counts['test']}")
    return lines
