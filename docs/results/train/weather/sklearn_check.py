"""The issue's Weather anchors with scikit-learn, for docs/benchmarks.md.

Windows of 500 days; at each trigger a fresh StandardScaler + MLPClassifier
(hidden 32, scikit-learn's defaults) is fitted on the chosen days and scored
on the next window before it is trained on. Cost = samples per trigger.

    pip install scikit-learn
    python3 docs/results/train/weather/sklearn_check.py \
        "strategy='all'" "strategy='last'" "strategy='uniform'" \
        "strategy='all',every=4" "strategy='all',maxage=7300" \
        "strategy='all',model='lr'"

Each argument is keyword arguments of run(): strategy all|last|uniform|fresh,
frac (0.25), maxage (days kept, None = all), every (retrain every N windows),
seed, model mlp|lr, plus MLPClassifier keywords (e.g. alpha=1.0).
"""
import os
import sys
import time
import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

warnings.filterwarnings("ignore")
HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.environ.get(
    "WEATHER_CSV", os.path.join(HERE, "../../../../data/drift/weather.csv")
)
d = np.loadtxt(DATA, delimiter=",", skiprows=1)
X, y = d[:, :-1], d[:, -1].astype(int)
W = 500
NW = (len(y) + W - 1) // W


def run(strategy, model="mlp", frac=0.25, maxage=None, every=1, seed=0, **kw):
    accs, cost, fitted = [], 0, None
    rng = np.random.default_rng(seed)
    for k in range(1, NW):
        end = k * W
        if fitted is None or (k - 1) % every == 0:
            start = 0 if maxage is None else max(0, end - maxage)
            if strategy == "all":
                idx = np.arange(start, end)
            elif strategy == "last":
                idx = np.arange(end - W, end)
            elif strategy == "uniform":
                m = int(round(frac * (end - start)))
                idx = np.sort(rng.choice(np.arange(start, end), m, replace=False))
            elif strategy == "fresh":
                idx = np.arange(end - int(round(frac * (end - start))), end)
            else:
                raise SystemExit(f"unknown strategy {strategy}")
            scaler = StandardScaler().fit(X[idx])
            if model == "mlp":
                clf = MLPClassifier(hidden_layer_sizes=(32,), random_state=seed, **kw)
            else:
                clf = LogisticRegression(max_iter=1000)
            clf.fit(scaler.transform(X[idx]), y[idx])
            fitted = (scaler, clf)
            cost += len(idx)
        scaler, clf = fitted
        xe, ye = X[end : end + W], y[end : end + W]
        accs.append((clf.predict(scaler.transform(xe)) == ye).mean())
    return np.mean(accs), cost


for spec in sys.argv[1:]:
    t = time.time()
    acc, cost = run(**eval("dict(" + spec + ")"))
    print(f"{spec:45s} acc={acc:.4f} cost={cost} ({time.time() - t:.0f}s)", flush=True)
