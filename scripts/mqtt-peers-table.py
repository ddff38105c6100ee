#!/usr/bin/env python3
"""Turn one run of `cargo bench -p sessionwire-bench --bench mqtt_peers` into
the Markdown tables of BENCHMARKS.md ("MQTT peers"): packets per second from
criterion's mean estimate, and the ratio to the split-only floor of the same
input and version.

    python3 scripts/mqtt-peers-table.py [target/criterion]
"""

import json
import os
import sys

PACKETS = {"publish_qos1_90B": 100_000, "session": 31_000}
PEERS = [
    "floor",
    "floor-split",
    "sessionwire",
    "sessionwire-bytes",
    "mqttrs",
    "mqttbytes",
    "rumqttc",
]


def mean_ns(root, group, peer, version):
    path = os.path.join(root, group, peer, version, "new", "estimates.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)["mean"]["point_estimate"]


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
    for direction in ("decode", "encode"):
        print(f"\n{direction.capitalize()}, M packets/s (ratio to the floor):\n")
        print("| input | version | " + " | ".join(PEERS) + " |")
        print("|---|---|" + "---|" * len(PEERS))
        for what, packets in PACKETS.items():
            group = f"mqtt_{direction}_{what}"
            for version in ("3.1.1", "5"):
                floor = mean_ns(root, group, "floor", version)
                cells = []
                for peer in PEERS:
                    ns = mean_ns(root, group, peer, version)
                    if ns is None:
                        cells.append("-")
                        continue
                    rate = packets / ns * 1e3
                    cells.append(f"{rate:.1f} ({floor / ns:.2f})" if floor else f"{rate:.1f}")
                print(f"| {what} | {version} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
