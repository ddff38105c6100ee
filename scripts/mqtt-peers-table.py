#!/usr/bin/env python3
"""Turn one run of `cargo bench -p sessionwire-bench --bench mqtt_peers` into
the Markdown tables of BENCHMARKS.md ("MQTT peers"): packets per second from
criterion's mean estimate, and the ratio to the split-only floor of the same
input and version; then, for decoding, our two columns against each aim of
issue 10 (mqttrs, 3x mqttbytes, 0.85 of either floor).

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
    aims(root)


def aims(root):
    """Our decode rate divided by each reference's: the aims are >= 1 against
    mqttrs, >= 3 against mqttbytes, >= 0.85 against a floor."""
    refs = ["mqttrs", "mqttbytes", "rumqttc", "floor", "floor-split"]
    print("\nDecode, ours divided by each (aims: mqttrs >= 1, mqttbytes >= 3, a floor >= 0.85):\n")
    print("| ours | input | version | " + " | ".join(f"vs {r}" for r in refs) + " |")
    print("|---|---|---|" + "---|" * len(refs))
    for ours in ("sessionwire", "sessionwire-bytes"):
        for what in PACKETS:
            group = f"mqtt_decode_{what}"
            for version in ("3.1.1", "5"):
                ns = mean_ns(root, group, ours, version)
                if ns is None:
                    continue
                cells = []
                for ref in refs:
                    other = mean_ns(root, group, ref, version)
                    cells.append(f"{other / ns:.2f}" if other else "-")
                print(f"| {ours} | {what} | {version} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
