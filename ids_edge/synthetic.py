"""Synthetic data in the official CICIoMT2024 file layout, for tests and benchmarks only.

The rows are random numbers with a class-dependent offset. They exercise all 19 classes and the
file layout but carry no information about real traffic. Any metric computed on them must be reported
as synthetic.
"""

import pathlib

import numpy as np

from ids_edge import labels, schemas

MARKER_FILE = "SYNTHETIC_DATA.txt"
"""File that marks a folder as synthetic, so every report made from it is labelled synthetic."""

TRAIN_FILE_NAMES = (
    ["ARP_Spoofing", "Benign", "MQTT-DDoS-Connect_Flood", "MQTT-DDoS-Publish_Flood", "MQTT-DoS-Connect_Flood",
     "MQTT-DoS-Publish_Flood", "MQTT-Malformed_Data", "Recon-OS_Scan", "Recon-Ping_Sweep", "Recon-Port_Scan",
     "Recon-VulScan"]
    + [f"TCP_IP-DDoS-ICMP{i}" for i in range(1, 9)]
    + [f"TCP_IP-DDoS-SYN{i}" for i in range(1, 5)]
    + [f"TCP_IP-DDoS-TCP{i}" for i in range(1, 5)]
    + [f"TCP_IP-DDoS-UDP{i}" for i in range(1, 9)]
    + [f"TCP_IP-DoS-{kind}{i}" for kind in ("ICMP", "SYN", "TCP", "UDP") for i in range(1, 5)]
)
"""Stems of the 51 official training files (``<stem>_train.pcap.csv``)."""

TEST_FILE_NAMES = (
    ["ARP_Spoofing", "Benign", "MQTT-DDoS-Connect_Flood", "MQTT-DDoS-Publish_Flood", "MQTT-DoS-Connect_Flood",
     "MQTT-DoS-Publish_Flood", "MQTT-Malformed_Data", "Recon-OS_Scan", "Recon-Ping_Sweep", "Recon-Port_Scan",
     "Recon-VulScan", "TCP_IP-DDoS-ICMP1", "TCP_IP-DDoS-ICMP2", "TCP_IP-DDoS-SYN", "TCP_IP-DDoS-TCP",
     "TCP_IP-DDoS-UDP1", "TCP_IP-DDoS-UDP2", "TCP_IP-DoS-ICMP", "TCP_IP-DoS-SYN", "TCP_IP-DoS-TCP", "TCP_IP-DoS-UDP"]
)
"""Stems of the 21 official test files (``<stem>_test.pcap.csv``)."""


def official_file_names():
    """Return every official WiFi/MQTT CSV file name, training files first."""
    return [f"{stem}_train.pcap.csv" for stem in TRAIN_FILE_NAMES] + [f"{stem}_test.pcap.csv" for stem in TEST_FILE_NAMES]


def write_synthetic_dataset(out_dir, rows_per_file=40, schema="v39", seed=0, separation=1.0):
    """Write synthetic rows for every official file name into ``out_dir/train`` and ``out_dir/test``.

    Args:
        out_dir: Folder to create.
        rows_per_file: Rows in each CSV file.
        schema: ``"v39"`` or ``"v45"`` column names.
        seed: Random seed; the same seed writes the same files.
        separation: Scale of the class-dependent offsets; smaller values make classes overlap more.

    Returns:
        The folder path.
    """
    out_dir = pathlib.Path(out_dir)
    features = schemas.SCHEMA_FEATURES[schema]
    rng = np.random.default_rng(seed)
    class_offsets = rng.normal(0.0, separation, size=(len(labels.CLASS_NAMES[19]), len(features)))
    column_scales = 10.0 ** rng.uniform(-1, 4, size=len(features))

    for split, stems in (("train", TRAIN_FILE_NAMES), ("test", TEST_FILE_NAMES)):
        (out_dir / split).mkdir(parents=True, exist_ok=True)
        for stem in stems:
            label, _ = labels.parse_file_name(f"{stem}_{split}.pcap.csv")
            offset = class_offsets[labels.CLASS_NAMES[19].index(label)]
            values = (offset + rng.normal(0.0, 1.0, size=(rows_per_file, len(features)))) * column_scales
            lines = [",".join(features)]
            lines += [",".join(f"{value:.6g}" for value in row) for row in values]
            (out_dir / split / f"{stem}_{split}.pcap.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out_dir / MARKER_FILE).write_text(
        "These CSV files are SYNTHETIC: random numbers with class-dependent offsets, written by\n"
        "ids_edge.synthetic in the official CICIoMT2024 file layout. Metrics computed on them are\n"
        "not results on CICIoMT2024.\n",
        encoding="utf-8",
    )
    return out_dir


def is_synthetic(data_dir):
    """Return whether ``data_dir`` was written by :func:`write_synthetic_dataset`."""
    return (pathlib.Path(data_dir) / MARKER_FILE).is_file()


def data_label(report):
    """Return the note that reports from a dataset report must carry: "" for real data."""
    if report.get("synthetic"):
        return " (SYNTHETIC data, not CICIoMT2024 results)"
    return ""
