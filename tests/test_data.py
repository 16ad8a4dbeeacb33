"""Dataset loading, schema detection and the cleaning policy."""

import re
import shutil

import numpy as np
import pytest

from ids_edge import data, schemas, synthetic
from ids_edge.errors import IdsEdgeError
from ids_edge.preprocess import Preprocessor


def copy_sample(tmp_path):
    target = tmp_path / "sample"
    shutil.copytree(data.SAMPLE_DATA_DIR, target, ignore=shutil.ignore_patterns("*.md"))
    return target


def test_sample_loads_real_rows():
    dataset = data.load_sample()

    assert dataset.schema == "v39"
    assert dataset.feature_names == list(schemas.V39_FEATURES)
    assert dataset.class_names == ["Benign", "Attack"]
    assert dataset.report["train_rows_read"] == 390
    assert dataset.report["test_rows_read"] == 461
    assert len(dataset.train) + len(dataset.validation) == 390


def test_sample_counts_inf_and_duplicates():
    report = data.load_sample().report

    assert report["test_inf_cells"] == 1
    assert report["test_nan_cells"] == 0
    assert report["test_duplicates_dropped"] == 5
    assert report["train_duplicates_dropped"] == 0


def test_validation_split_stratified():
    dataset = data.load_sample(validation_fraction=0.2)
    for name, counts in dataset.report["class_rows"].items():
        total = counts["train"] + counts["validation"]
        assert abs(counts["validation"] - 0.2 * total) <= 1, name


def test_flat_folder_uses_file_names(tmp_path):
    sample = copy_sample(tmp_path)
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in sample.rglob("*.csv"):
        shutil.copy(path, flat / path.name)

    dataset = data.load_official(flat, 2)
    assert dataset.report["train_rows_read"] == 390
    assert dataset.report["test_rows_read"] == 461


def test_v45_schema_loads(tmp_path):
    folder = synthetic.write_synthetic_dataset(tmp_path / "v45", rows_per_file=5, schema="v45")
    dataset = data.load_official(folder, 19)

    assert dataset.schema == "v45"
    assert len(dataset.feature_names) == 45
    assert len(dataset.class_names) == 19


def test_v39_synthetic_has_all_classes(tmp_path):
    folder = synthetic.write_synthetic_dataset(tmp_path / "v39", rows_per_file=5)
    dataset = data.load_official(folder, 19)
    assert all(counts["test"] > 0 for counts in dataset.report["class_rows"].values())


def test_mixed_schemas_rejected(tmp_path):
    folder = synthetic.write_synthetic_dataset(tmp_path / "mixed", rows_per_file=5)
    v45 = synthetic.write_synthetic_dataset(tmp_path / "v45", rows_per_file=5, schema="v45")
    shutil.copy(v45 / "train" / "Recon-VulScan_train.pcap.csv", folder / "train" / "Recon-VulScan_train.pcap.csv")

    with pytest.raises(IdsEdgeError, match="mixes column schemas: .* uses v39 but Recon-VulScan_train.pcap.csv uses v45"):
        data.load_official(folder, 19)


def test_reordered_columns_follow_schema_order(tmp_path):
    sample = copy_sample(tmp_path)
    path = sample / "train" / "Benign_train.pcap.csv"
    lines = path.read_text().splitlines()
    rows = [line.split(",") for line in lines]
    swapped = [[row[1], row[0], *row[2:]] for row in rows]
    path.write_text("\n".join(",".join(row) for row in swapped) + "\n")

    original = data.load_sample()
    reordered = data.load_official(sample, 2)
    assert reordered.feature_names == original.feature_names
    np.testing.assert_array_equal(reordered.train.features, original.train.features)


def test_unknown_header_rejected(tmp_path):
    sample = copy_sample(tmp_path)
    path = sample / "train" / "Benign_train.pcap.csv"
    text = path.read_text()
    path.write_text(text.replace("Header_Length", "HeaderLen", 1))

    with pytest.raises(IdsEdgeError, match=re.escape("missing ['Header_Length'], unexpected ['HeaderLen']")):
        data.load_official(sample, 2)


def test_non_numeric_cell_names_line_and_column(tmp_path):
    sample = copy_sample(tmp_path)
    path = sample / "test" / "ARP_Spoofing_test.pcap.csv"
    lines = path.read_text().splitlines()
    cells = lines[3].split(",")
    cells[3] = "fast"
    lines[3] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")

    with pytest.raises(IdsEdgeError, match=r"ARP_Spoofing_test\.pcap\.csv, line 4, column 'Rate': value 'fast' is not a number"):
        data.load_official(sample, 2)


def test_nan_and_inf_cleaned_by_preprocessor(tmp_path):
    sample = copy_sample(tmp_path)
    path = sample / "train" / "Benign_train.pcap.csv"
    lines = path.read_text().splitlines()
    cells = lines[1].split(",")
    cells[3] = ""  # Rate missing: NaN
    cells[36] = "-inf"  # IAT
    lines[1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")

    dataset = data.load_official(sample, 2)
    assert dataset.report["train_nan_cells"] == 1
    assert dataset.report["train_inf_cells"] == 1

    preprocessor = Preprocessor.fit(dataset.train.features, dataset.feature_names)
    standardized = preprocessor.transform(np.vstack([dataset.train.features, dataset.validation.features, dataset.test.features]))
    assert np.isfinite(standardized).all()


def test_preprocessor_policy_values():
    train = np.array([[1.0, 5.0], [3.0, 5.0], [np.inf, 5.0]])
    preprocessor = Preprocessor.fit(train, ["a", "b"])

    assert preprocessor.clip_max[0] == 3.0
    assert preprocessor.mean[0] == pytest.approx((1 + 3 + 3) / 3)
    assert preprocessor.scale[1] == 1.0  # a constant column keeps scale 1
    sanitized = preprocessor.sanitize(np.array([[np.nan, 5.0], [np.inf, 5.0], [-np.inf, 5.0], [100.0, 5.0]]))
    assert sanitized[0, 0] == preprocessor.mean[0]
    assert sanitized[1, 0] == 3.0
    assert sanitized[2, 0] == 1.0
    assert sanitized[3, 0] == 3.0


def test_duplicates_dropped_within_split(tmp_path):
    sample = copy_sample(tmp_path)
    path = sample / "train" / "ARP_Spoofing_train.pcap.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines + lines[1:4]) + "\n")

    dataset = data.load_official(sample, 2)
    assert dataset.report["train_duplicates_dropped"] == 3
    assert len(dataset.train) + len(dataset.validation) == 390


def test_missing_folder_rejected(tmp_path):
    with pytest.raises(IdsEdgeError, match="Data folder .*nowhere not found"):
        data.load_official(tmp_path / "nowhere", 19)


def test_empty_folder_rejected(tmp_path):
    with pytest.raises(IdsEdgeError, match="No CSV files in"):
        data.load_official(tmp_path, 19)


def test_missing_test_split_rejected(tmp_path):
    sample = copy_sample(tmp_path)
    shutil.rmtree(sample / "test")
    with pytest.raises(IdsEdgeError, match="No test files in"):
        data.load_official(sample, 2)


def test_file_in_wrong_folder_rejected(tmp_path):
    sample = copy_sample(tmp_path)
    shutil.move(sample / "test" / "Benign_test.pcap.csv", sample / "train" / "Benign_test.pcap.csv")
    with pytest.raises(IdsEdgeError, match="is a test file inside the train/ folder"):
        data.load_official(sample, 2)


def test_unmapped_file_rejected(tmp_path):
    sample = copy_sample(tmp_path)
    shutil.copy(sample / "train" / "Benign_train.pcap.csv", sample / "train" / "Bluetooth_train.pcap.csv")
    with pytest.raises(IdsEdgeError, match="'Bluetooth_train.pcap.csv' maps to no CICIoMT2024 class"):
        data.load_official(sample, 2)


def test_header_only_file_rejected(tmp_path):
    sample = copy_sample(tmp_path)
    path = sample / "train" / "Benign_train.pcap.csv"
    path.write_text(path.read_text().splitlines()[0] + "\n")
    with pytest.raises(IdsEdgeError, match="has a header but no rows"):
        data.load_official(sample, 2)


def test_generic_mode_with_label_column(tmp_path):
    rng = np.random.default_rng(0)
    header = ",".join(f"f{i}" for i in range(12)) + ",kind"
    rows = [",".join(f"{v:.3f}" for v in rng.normal(size=12)) + f",{'scan' if i % 3 else 'normal'}" for i in range(90)]
    (tmp_path / "capture.csv").write_text(header + "\n" + "\n".join(rows) + "\n")

    dataset = data.load_generic(tmp_path, "kind")
    assert dataset.schema == "generic"
    assert dataset.class_names == ["normal", "scan"]
    assert len(dataset.feature_names) == 12
    assert len(dataset.train) + len(dataset.validation) + len(dataset.test) == 90


def test_generic_mode_missing_label_column(tmp_path):
    (tmp_path / "capture.csv").write_text("a,b\n1,2\n")
    with pytest.raises(IdsEdgeError, match="has no column 'Label'.*--label-column"):
        data.load_generic(tmp_path, "Label")


def test_generic_empty_label_cell(tmp_path):
    rows = ["a,b,c,d,e,f,g,h,i,j,kind"] + [f"{i},1,2,3,4,5,6,7,8,9,{'x' if i % 2 else 'y'}" for i in range(20)]
    rows[6] = "5,1,2,3,4,5,6,7,8,9,"
    (tmp_path / "capture.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(IdsEdgeError, match=r"capture\.csv, line 7, column 'kind': the label is empty"):
        data.load_generic(tmp_path, "kind")


def test_generic_test_fraction_named(tmp_path):
    rows = ["a,b,c,d,e,f,g,h,i,j,kind"] + [f"{i},1,2,3,4,5,6,7,8,9,{'x' if i % 2 else 'y'}" for i in range(20)]
    (tmp_path / "capture.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(IdsEdgeError, match="Invalid option --test-fraction 0"):
        data.load_generic(tmp_path, "kind", test_fraction=0)


def test_test_rows_in_train_counted():
    train = data.Split(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([0, 1]))
    test = data.Split(np.array([[1.0, 2.0], [3.0, 4.0], [3.0, 4.0], [5.0, 6.0]]), np.array([0, 0, 1, 1]))
    # [3, 4] with label 0 is not in train (there it has label 1), so 2 of the 4 test rows count.
    assert data._count_test_rows_in_train(train, test) == 2


def test_generic_label_only_in_test(tmp_path):
    header = "a,b,c,d,e,f,g,h,i,j,kind"
    for split, kinds in (("train", "xy"), ("test", "xyz")):
        (tmp_path / split).mkdir()
        rows = [header] + [f"{i},1,2,3,4,5,6,7,8,9,{kinds[i % len(kinds)]}" for i in range(12)]
        (tmp_path / split / "flows.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(IdsEdgeError, match=r"Labels \['z'\] of column 'kind' occur in .*test but not in .*train"):
        data.load_generic(tmp_path, "kind")
