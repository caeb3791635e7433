#!/usr/bin/env bash
# Re-measure every published model and regenerate the model cards (venv active, repo root).
# Latency figures are machine-dependent; the environment is recorded in each result file.
set -euo pipefail
for model in $(python -c "import json; print(' '.join(json.load(open('eval/specs.json'))['published']))"); do
    disco-zoo eval "$model" --json "eval/results/$model.json"
done
disco-zoo cards
