#!/bin/bash
# Repeat tests/test_distributed.py's two-process launch N times and count the runs that fail
# (benchmarks/distributed.md, "How a rank leaves"). Keeps the stderr of each failure in DIR.
#   bash benchmarks/distributed_exit.sh [N=40] [DIR=a new temporary folder]
set -u
N=${1:-40}
DIR=${2:-$(mktemp -d)}
mkdir -p "$DIR" && cd "$DIR" || exit 2
fails=0
for i in $(seq 1 "$N"); do
  rm -rf "run$i"
  OMP_NUM_THREADS=1 PYTHONFAULTHANDLER=1 python -m genzoo train pixelcnn --nproc 2 --steps 4 \
    --set train.sample_every=0 --set train.log_every=2 --set model.filters=8 \
    --set model.blocks=1 --set train.batch_size=16 --set train.checkpoint_every=2 \
    --out "run$i" --no-progress > /dev/null 2> "err$i.txt"
  rc=$?
  if [ "$rc" -ne 0 ]; then
    fails=$((fails + 1))
    echo "run $i: exit code $rc (stderr: $DIR/err$i.txt)"
  else
    rm -rf "run$i" "err$i.txt"
  fi
done
echo "$fails of $N runs failed ($DIR)"
