#!/usr/bin/env python3
"""The cost per message of each path of benches/instructions.rs, from the last run's output
(target/instructions/run.log, which scripts/instructions.sh writes).

A Tokio path is counted over MESSAGES messages (`base`) and over twice as many (`twice`): the
difference divided by MESSAGES is what one more message costs, everything done once per count
cancelling out (RustStream's method). Each spa-dat path is set against the raw Tokio channel
doing the same decoding (an MQTT path: against raw rumqttc reading the same replayed
stream), counted in the same run.

    python3 scripts/instructions-table.py [target/instructions]
"""

import re
import sys
from pathlib import Path

MESSAGES = 1000

# spa-dat path -> the raw path it is measured against.
AGAINST = {
    "memory_consumer": "raw_channel_consumer",
    "memory_consumer_metrics": "raw_channel_consumer",
    "memory_consumer_unsampled_traces": "raw_channel_consumer",
    "memory_request_reply": "raw_channel_request_reply",
    "mqtt_qos0_consumer": "raw_mqtt_qos0_consumer",
    "mqtt_qos1_consumer": "raw_mqtt_qos1_consumer",
}

HEADER = re.compile(r"^\S+::(\w+)::(\w+) (\w+):")
VALUE = re.compile(r"^\s+(Instructions|Total blocks):\s+(\d+)")


def read(log):
    """{(function, id): {"Instructions": n, "Total blocks": n}} of the run in `log`."""
    counts = {}
    current = None
    for line in log.read_text(errors="replace").splitlines():
        header = HEADER.match(line)
        if header:
            current = counts.setdefault((header.group(2), header.group(3)), {})
            continue
        value = VALUE.match(line)
        if value and current is not None and value.group(1) not in current:
            current[value.group(1)] = int(value.group(2))
    return counts


def per_message(counts, function, metric):
    base = counts.get((function, "base"), {}).get(metric)
    twice = counts.get((function, "twice"), {}).get(metric)
    if base is None or twice is None:
        return None
    return (twice - base) / MESSAGES


def main():
    work = Path(sys.argv[1] if len(sys.argv) > 1 else "target/instructions")
    log = work / "run.log"
    if not log.exists():
        sys.exit(f"no run to read: {log} (run scripts/instructions.sh first)")
    counts = read(log)
    functions = sorted({f for (f, i) in counts if i == "base"})
    if not functions:
        sys.exit(f"no per-message path in {log}")
    print(f"{'path (per message)':<36} {'instructions':>12} {'allocations':>11} {'raw':>11} {'ratio':>6}")
    for function in functions:
        instructions = per_message(counts, function, "Instructions")
        allocations = per_message(counts, function, "Total blocks")
        raw = AGAINST.get(function)
        raw_instructions = per_message(counts, raw, "Instructions") if raw else None
        ratio = (
            f"{instructions / raw_instructions:.2f}x"
            if instructions and raw_instructions
            else ""
        )
        print(
            f"{function:<36} {instructions or 0:>12,.0f} "
            f"{'' if allocations is None else f'{allocations:.1f}':>11} "
            f"{'' if raw_instructions is None else f'{raw_instructions:,.0f}':>11} {ratio:>6}"
        )
    for (function, id_), metrics in sorted(counts.items()):
        if id_ not in ("base", "twice"):
            print(
                f"{function + ' ' + id_:<36} {metrics.get('Instructions', 0):>12,} "
                f"{metrics.get('Total blocks', ''):>11}  (one call)"
            )


if __name__ == "__main__":
    main()
