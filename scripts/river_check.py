#!/usr/bin/env python3
"""Prequential (test-then-train) accuracy of river's stream learners on the
data/drift streams and on the generated drift streams, for stratus-learn's
agreement test and docs/benchmarks.md.

    python3 -m venv /tmp/rv && /tmp/rv/bin/pip install river==0.26.1
    /tmp/rv/bin/python scripts/river_check.py > data/river/prequential.csv
    # the four generated streams (100,000 samples each, fixed seeds; see
    # scripts/gen-streams.sh), appended:
    scripts/gen-streams.sh target/release/stratus /tmp/stratus-streams
    /tmp/rv/bin/python scripts/river_check.py --dir /tmp/stratus-streams \
        sea agrawal hyperplane rbf >> data/river/prequential.csv

Arguments: stream names (default: the data/drift streams); a name is read from
data/drift/NAME.csv, or from DIR/NAME.csv with --dir DIR. --models M,... runs
only those models (hoeffding_tree, hat, arf, logreg); --no-header leaves out
the header lines (for appending).

Every sample is predicted, then learned; a prediction of None (a model that
knows nothing yet) counts as wrong, and every sample counts (river's own
progressive_val_score skips None predictions; this loop does not, so the
figures compare with stratus_learn::prequential exactly). Defaults of each
model, fixed seeds. Learn speed is the wall time of the whole loop.
"""
import csv
import os
import platform
import sys
import time

import river
from river import forest, linear_model, preprocessing, tree

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
STREAMS = ["elec2", "weather", "digits8x8"]


def load(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    # digits8x8.csv has no header row: a first row of numbers is data.
    try:
        [float(v) for v in rows[0]]
        head, body = [f"x{i}" for i in range(len(rows[0]) - 1)], rows
    except ValueError:
        head, body = rows[0][:-1], rows[1:]
    return [({h: float(v) for h, v in zip(head, r[:-1])}, int(float(r[-1]))) for r in body]


def models(binary):
    out = [
        ("hoeffding_tree", lambda: tree.HoeffdingTreeClassifier()),
        ("hat", lambda: tree.HoeffdingAdaptiveTreeClassifier(seed=42)),
        ("arf", lambda: forest.ARFClassifier(n_models=10, seed=42)),
    ]
    if binary:
        out.append(("logreg", lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression()))
    else:
        # more than two classes: multinomial logistic (softmax) regression
        out.append(("logreg", lambda: preprocessing.StandardScaler() | linear_model.SoftmaxRegression()))
    return out


def main():
    args = sys.argv[1:]
    folder, wanted, header = os.path.join(ROOT, "data", "drift"), None, True
    names = []
    while args:
        a = args.pop(0)
        if a == "--dir":
            folder = args.pop(0)
        elif a == "--models":
            wanted = set(args.pop(0).split(","))
        elif a == "--no-header":
            header = False
        else:
            names.append(a)
    if header:
        print(f"# river {river.__version__}, python {platform.python_version()}, {platform.machine()}")
        print("# command: python3 scripts/river_check.py > data/river/prequential.csv")
        print("stream,model,n,accuracy,seconds")
    for name in names or STREAMS:
        data = load(os.path.join(folder, name + ".csv"))
        binary = len({y for _, y in data}) == 2
        for model_name, make in models(binary):
            if wanted is not None and model_name not in wanted:
                continue
            m = make()
            correct = 0
            t0 = time.perf_counter()
            for x, y in data:
                correct += m.predict_one(x) == y
                m.learn_one(x, y)
            dt = time.perf_counter() - t0
            print(f"{name},{model_name},{len(data)},{correct / len(data):.5f},{dt:.2f}", flush=True)


if __name__ == "__main__":
    main()
