#!/usr/bin/env bash
# Re-measure every published DISCO model (what hub/ holds: disco_zoo.hub.list_pretrained())
# and regenerate the model cards and their figures (venv active, repo root).
# Latency figures are machine-dependent; the environment is recorded in each result file.
set -euo pipefail
models=$(python -c "
from disco_zoo.hub import get_pretrained_cfg, list_pretrained
print(' '.join(n for n in list_pretrained() if get_pretrained_cfg(n).kind == 'disco'))")
for model in $models; do
    disco-zoo eval "$model" --out "eval/results/$model.json"
done
disco-zoo plots   # eval/plots/*.png: latency against bandwidth, accuracy against traffic (eval/frontier/)
disco-zoo cards
