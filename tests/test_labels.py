"""File-name to class mapping for every official CICIoMT2024 WiFi/MQTT file."""

import re

import pytest

from ids_edge import labels, synthetic
from ids_edge.errors import IdsEdgeError

from conftest import SHARED_DATA

# The published taxonomy, written out here independently of ids_edge.labels.
CATEGORY_OF = {
    "Benign": "Benign",
    "ARP_Spoofing": "Spoofing",
    "Recon-OS_Scan": "Recon", "Recon-Ping_Sweep": "Recon", "Recon-Port_Scan": "Recon", "Recon-VulScan": "Recon",
    "MQTT-DDoS-Connect_Flood": "MQTT", "MQTT-DDoS-Publish_Flood": "MQTT", "MQTT-DoS-Connect_Flood": "MQTT",
    "MQTT-DoS-Publish_Flood": "MQTT", "MQTT-Malformed_Data": "MQTT",
    "TCP_IP-DoS-ICMP": "DoS", "TCP_IP-DoS-SYN": "DoS", "TCP_IP-DoS-TCP": "DoS", "TCP_IP-DoS-UDP": "DoS",
    "TCP_IP-DDoS-ICMP": "DDoS", "TCP_IP-DDoS-SYN": "DDoS", "TCP_IP-DDoS-TCP": "DDoS", "TCP_IP-DDoS-UDP": "DDoS",
}


def official_names_from_listing():
    """Read the official file list shipped beside the real sample rows, when it is there."""
    listing = SHARED_DATA / "OFFICIAL_FILES.md"
    if not listing.is_file():
        return None
    return re.findall(r"^- (\S+\.pcap\.csv)$", listing.read_text(encoding="utf-8"), flags=re.MULTILINE)


def test_official_listing_matches_generator():
    names = official_names_from_listing()
    if names is None:
        pytest.skip("OFFICIAL_FILES.md is not beside this checkout, so only the built-in list is tested")
    assert sorted(names) == sorted(synthetic.official_file_names())


def test_official_file_count():
    names = synthetic.official_file_names()
    assert len(names) == 72
    assert len(set(names)) == 72


@pytest.mark.parametrize("file_name", synthetic.official_file_names())
def test_every_official_file_maps(file_name):
    label, split = labels.parse_file_name(file_name)
    expected_label = re.sub(r"\d*_(train|test)\.pcap\.csv$", "", file_name)

    assert label == expected_label
    assert split == ("train" if file_name.endswith("_train.pcap.csv") else "test")
    assert labels.task_label(label, 19) == expected_label
    assert labels.task_label(label, 6) == CATEGORY_OF[expected_label]
    assert labels.task_label(label, 2) == ("Benign" if expected_label == "Benign" else "Attack")


def test_every_class_has_a_file():
    mapped = {labels.parse_file_name(name)[0] for name in synthetic.official_file_names()}
    assert mapped == set(labels.CLASS_NAMES[19])
    assert set(CATEGORY_OF) == set(labels.CLASS_NAMES[19])


def test_shard_digits_stripped():
    assert labels.parse_file_name("TCP_IP-DDoS-UDP7_train.pcap.csv") == ("TCP_IP-DDoS-UDP", "train")


@pytest.mark.parametrize(
    ("file_name", "message"),
    [
        ("Bluetooth-DoS_train.pcap.csv", "maps to no CICIoMT2024 class: 'Bluetooth-DoS'"),
        ("Benign.csv", "does not follow the CICIoMT2024 pattern"),
        ("Benign_validation.pcap.csv", "does not follow the CICIoMT2024 pattern"),
    ],
)
def test_unknown_file_name_rejected(file_name, message):
    with pytest.raises(IdsEdgeError, match=re.escape(message)):
        labels.parse_file_name(file_name)


def test_task_class_counts():
    assert len(labels.task_class_names(19)) == 19
    assert len(labels.task_class_names(6)) == 6
    assert labels.task_class_names(2) == ["Benign", "Attack"]
    with pytest.raises(IdsEdgeError, match="Invalid task 5"):
        labels.task_class_names(5)
