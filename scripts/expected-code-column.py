#!/usr/bin/env python3
"""Moves the MQTT reason code of corpus/*/expected.tsv rows from the sixth
column to the seventh, leaving `-` (no limits of the file's own) in the sixth.

Rows written before the limits column existed carried the code sixth; the row
format is now file, verdict, reason, offset, messages, then optionally limits
and code. A sixth field that reads as a code (`0x` and two hex digits, or `-`
in a directory whose header names a `code` column) is moved. Idempotent.
Usage: scripts/expected-code-column.py corpus/*/expected.tsv
"""
import re
import sys

CODE = re.compile(r"^0x[0-9a-fA-F]{2}$")


def convert(text):
    out = []
    header_has_code = False
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        end = line[len(body):]
        if body.startswith("#"):
            fields = body[1:].strip().split("\t")
            if fields[:5] == ["file", "verdict", "reason", "offset", "messages"]:
                header_has_code = fields[5:] == ["code"]
                if header_has_code:
                    body = "# file\tverdict\treason\toffset\tmessages\tlimits\tcode"
            out.append(body + end)
            continue
        fields = body.split("\t")
        if len(fields) == 6 and (CODE.match(fields[5]) or (fields[5] == "-" and header_has_code)):
            fields = fields[:5] + ["-", fields[5]]
        out.append("\t".join(fields) + end)
    return "".join(out)


for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as f:
        old = f.read()
    new = convert(old)
    if new != old:
        with open(path, "w", encoding="utf-8") as f:
            f.write(new)
        print(f"converted {path}")
