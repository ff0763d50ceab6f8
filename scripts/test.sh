#!/usr/bin/env bash
# Set up .venv with every extra and run the checks CI runs: ruff, mypy, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev,server,ray
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
ruff check promptclf tests bench
ruff format --check promptclf tests bench
mypy promptclf
# Both tiers: the default one (what `python -m pytest` runs) and the slow one (real models, servers, kills).
python -m pytest -q -m "slow or not slow" "$@"
