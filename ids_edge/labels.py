"""CICIoMT2024 class taxonomy and the mapping from official file names to classes.

The 19 classes are the attack names in the official file names. The 6-class categories and
the 2-class split follow the taxonomy of Dadkhah et al., "CICIoMT2024: A benchmark dataset for
multi-protocol security assessment in IoMT", Internet of Things 28 (2024) 101351.
"""

import re

from ids_edge.choices import TASKS
from ids_edge.errors import IdsEdgeError

# One row per 19-class label: (label, 6-class category, 2-class label).
TAXONOMY = (
    ("Benign", "Benign", "Benign"),
    ("ARP_Spoofing", "Spoofing", "Attack"),
    ("Recon-OS_Scan", "Recon", "Attack"),
    ("Recon-Ping_Sweep", "Recon", "Attack"),
    ("Recon-Port_Scan", "Recon", "Attack"),
    ("Recon-VulScan", "Recon", "Attack"),
    ("MQTT-DDoS-Connect_Flood", "MQTT", "Attack"),
    ("MQTT-DDoS-Publish_Flood", "MQTT", "Attack"),
    ("MQTT-DoS-Connect_Flood", "MQTT", "Attack"),
    ("MQTT-DoS-Publish_Flood", "MQTT", "Attack"),
    ("MQTT-Malformed_Data", "MQTT", "Attack"),
    ("TCP_IP-DoS-ICMP", "DoS", "Attack"),
    ("TCP_IP-DoS-SYN", "DoS", "Attack"),
    ("TCP_IP-DoS-TCP", "DoS", "Attack"),
    ("TCP_IP-DoS-UDP", "DoS", "Attack"),
    ("TCP_IP-DDoS-ICMP", "DDoS", "Attack"),
    ("TCP_IP-DDoS-SYN", "DDoS", "Attack"),
    ("TCP_IP-DDoS-TCP", "DDoS", "Attack"),
    ("TCP_IP-DDoS-UDP", "DDoS", "Attack"),
)

CLASS_NAMES = {
    19: [row[0] for row in TAXONOMY],
    6: ["Benign", "Spoofing", "Recon", "MQTT", "DoS", "DDoS"],
    2: ["Benign", "Attack"],
}
"""Class names per task, in output-index order."""

SPLITS = ("train", "test")

_FILE_NAME = re.compile(r"^(?P<stem>.+?)(?P<shard>\d*)_(?P<split>train|test)\.pcap\.csv$")


def parse_file_name(file_name):
    """Split an official file name into its 19-class label and split.

    ``TCP_IP-DDoS-UDP7_train.pcap.csv`` gives ``("TCP_IP-DDoS-UDP", "train")``: the split suffix,
    ``.pcap.csv`` and shard digits are removed.

    Raises:
        IdsEdgeError: The name does not end in ``_train.pcap.csv`` or ``_test.pcap.csv``, or
            its stem is not one of the 19 class names.
    """
    match = _FILE_NAME.match(file_name)
    if match is None:
        raise IdsEdgeError(
            f"File name {file_name!r} does not follow the CICIoMT2024 pattern "
            "'<Attack>_train.pcap.csv' or '<Attack>_test.pcap.csv'. Rename it, or use "
            "--label-column for CSV files that carry their own label."
        )

    label = match.group("stem")
    if label not in CLASS_NAMES[19]:
        raise IdsEdgeError(
            f"File {file_name!r} maps to no CICIoMT2024 class: {label!r} is not one of "
            f"{', '.join(CLASS_NAMES[19])}. Rename or remove the file."
        )
    return label, match.group("split")


def task_class_names(task):
    """Return the class names of a 2-, 6- or 19-class task in output-index order."""
    if task not in TASKS:
        raise IdsEdgeError(f"Invalid task {task!r}: choose one of {', '.join(map(str, TASKS))}.")
    return list(CLASS_NAMES[task])


def task_label(label, task):
    """Map a 19-class label to its label in the given task."""
    for name, category, binary in TAXONOMY:
        if name == label:
            return {19: name, 6: category, 2: binary}[task]
    raise IdsEdgeError(f"Unknown CICIoMT2024 class {label!r}.")
