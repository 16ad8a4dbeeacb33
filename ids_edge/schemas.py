"""The two published CICIoMT2024 CSV column schemas."""

from ids_edge.errors import IdsEdgeError

V39_FEATURES = (
    "Header_Length", "Protocol Type", "Time_To_Live", "Rate",
    "fin_flag_number", "syn_flag_number", "rst_flag_number", "psh_flag_number",
    "ack_flag_number", "ece_flag_number", "cwr_flag_number",
    "ack_count", "syn_count", "fin_count", "rst_count",
    "HTTP", "HTTPS", "DNS", "Telnet", "SMTP", "SSH", "IRC", "TCP", "UDP", "DHCP", "ARP",
    "ICMP", "IGMP", "IPv", "LLC",
    "Tot sum", "Min", "Max", "AVG", "Std", "Tot size", "IAT", "Number", "Variance",
)
"""Revised schema: 39 features, as in the bundled sample's headers."""

# NOTE: these 45 names follow the first release's documentation (CICIoT2023's extractor output
# without flow_duration, and no IGMP). No real file of that release was available to check them.
V45_FEATURES = (
    "Header_Length", "Protocol Type", "Duration", "Rate", "Srate", "Drate",
    "fin_flag_number", "syn_flag_number", "rst_flag_number", "psh_flag_number",
    "ack_flag_number", "ece_flag_number", "cwr_flag_number",
    "ack_count", "syn_count", "fin_count", "urg_count", "rst_count",
    "HTTP", "HTTPS", "DNS", "Telnet", "SMTP", "SSH", "IRC", "TCP", "UDP", "DHCP", "ARP",
    "ICMP", "IPv", "LLC",
    "Tot sum", "Min", "Max", "AVG", "Std", "Tot size", "IAT", "Number",
    "Magnitue", "Radius", "Covariance", "Variance", "Weight",
)
"""First-release schema: 45 features (``Magnitue`` is spelled as in the files)."""

SCHEMA_FEATURES = {"v39": V39_FEATURES, "v45": V45_FEATURES}


def detect_schema(columns, file_name):
    """Return ``"v39"`` or ``"v45"`` for a CSV header, ignoring column order and outer spaces.

    Raises:
        IdsEdgeError: The header matches neither schema; the message names what is missing or extra.
    """
    names = {str(column).strip() for column in columns}
    for schema, features in SCHEMA_FEATURES.items():
        if names == set(features):
            return schema

    closest = min(SCHEMA_FEATURES, key=lambda s: len(names ^ set(SCHEMA_FEATURES[s])))
    expected = set(SCHEMA_FEATURES[closest])
    missing = sorted(expected - names)
    extra = sorted(names - expected)
    raise IdsEdgeError(
        f"{file_name}: the header matches neither CICIoMT2024 schema (closest: {closest} with "
        f"{len(expected)} features; missing {missing[:5]}, unexpected {extra[:5]}). "
        "Use the official CSV files unchanged, or --label-column for your own captures."
    )
