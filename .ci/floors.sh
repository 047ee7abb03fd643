#!/usr/bin/env bash
# CI, after the main suite: the declared floors are true. A second virtual environment gets exactly the lowest
# versions pyproject allows (.ci/constraints-floor.txt; the CPU build of torch first, as in .ci/run), and runs the
# tests marked `floors`: the pages (AppTest), the figures, the shipped weights' identity, one short run on each
# shipped backbone whose accuracy matrix must equal the pinned environment's bit for bit
# (tests/backbones/data/pinned_matrix.json), and the store's migrations. They need no service.
# Usage: bash .ci/floors.sh   (from .ci/run, or by hand from anywhere in the checkout)
set -euo pipefail
cd "$(dirname "$0")/.."

floors=.ci/constraints-floor.txt
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
python3 -m venv "$scratch/venv"
py="$scratch/venv/bin/python"
start=$SECONDS
"$py" -m pip install --quiet torch==2.13.0
"$py" -m pip install --quiet -c "$floors" -e ".[test]"
echo "floors: installed in $((SECONDS - start)) s"
# a cache of its own: backbones pre-trained by the main suite's transformers are not this one's
CLDASH_CACHE="$scratch/cache" "$py" -m pytest -m floors -p no:cacheprovider
echo "floors: done in $((SECONDS - start)) s"
