#!/usr/bin/env python3
"""Derives Elec2 with elecNormNew's `day` (and an approximate `date`) from
data/drift/elec2.csv, which lacks them (it is scikit-multiflow's elec.csv,
byte for byte; see data/README.md).

    python3 scripts/elec2_day.py /tmp/elec2-day.csv            # day, period, ...
    python3 scripts/elec2_day.py --date /tmp/elec2-date-day.csv  # date, day, period, ...

The file is 944 whole days of 48 half-hours in time order (`period` runs
0..1 in every block of 48 rows, checked below), so the day of a row is
row // 48. elecNormNew's first row reads `0,2,0,0.056443,...` (date 0,
day 2: 7 May 1996, a Tuesday, with 1 = Monday), so `day` = (row // 48 + 1)
mod 7 + 1: exact under that contiguity. elecNormNew's `date` is a min-max
normalised calendar date that this file cannot recover; `--date` writes
the day index scaled to [0, 1] instead (monotone in time like it, not equal
to it). A derived file, not elecNormNew.
"""
import csv
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def main():
    args = sys.argv[1:]
    with_date = "--date" in args
    args = [a for a in args if a != "--date"]
    if len(args) != 1:
        sys.exit("usage: elec2_day.py [--date] OUT.csv")
    with open(os.path.join(ROOT, "data", "drift", "elec2.csv"), newline="") as f:
        rows = list(csv.reader(f))
    head, body = rows[0], rows[1:]
    if len(body) % 48:
        sys.exit(f"{len(body)} rows is not a whole number of days")
    days = len(body) // 48
    for i, r in enumerate(body):
        if abs(float(r[0]) - (i % 48) / 47) > 1e-3:
            sys.exit(f"row {i + 2}: period {r[0]} breaks the 48-a-day order")
    with open(args[0], "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow((["date"] if with_date else []) + ["day"] + head)
        for i, r in enumerate(body):
            d = i // 48
            lead = ([f"{d / (days - 1):.6f}"] if with_date else []) + [str((d + 1) % 7 + 1)]
            w.writerow(lead + r)


if __name__ == "__main__":
    main()
