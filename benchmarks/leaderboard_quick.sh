#!/usr/bin/env bash
# Train every offline model's quick preset one after another, evaluate it (NLL in its units;
# FID/KID against genzoo's own chapter-2 CNN for image models), time it with `zoo bench RUN`, and
# gather the leaderboard. Usage: bash benchmarks/leaderboard_quick.sh [OUT] (default runs/quick).
# Wall time per `zoo train` is written to OUT/walltime.tsv.
set -u
OUT=${1:-runs/quick}
ZOO=${ZOO:-zoo}
mkdir -p "$OUT"
cd "$OUT" || exit 1
train() {  # name [extra args]: trains into ./NAME, records the wall time
  local name=$1; shift
  [ -f "$name/trainer.json" ] && grep -q '"complete": true' "$name/trainer.json" && return 0
  rm -rf "$name"
  local t0=$(date +%s)
  if $ZOO train "$name" --out "$name" --no-progress "$@" > "$name.log" 2>&1; then
    printf '%s\t%s\n' "$name" "$(( $(date +%s) - t0 ))" >> walltime.tsv
  else
    printf '%s\tFAILED\n' "$name" >> walltime.tsv
  fi
}
# the feature networks for FID/KID first: `zoo eval --features auto` finds them beside each run
for m in cnn-fashion cnn-mnist cnn-twemoji; do train $m; $ZOO eval $m > $m.eval.txt 2>&1; done
for m in pixelcnn pixelcnn-mnist pixelcnn-md pixelcnn-md-mnist autoencoder vae-fashion vae-faces \
         dcgan dcgan-mnist wgan-gp wgan-gp-fashion cgan ebm ddm ddm-mnist; do
  train $m
  metrics=fid,kid; grep -q '"likelihood_unit"\|pixelcnn\|vae' $m/config.json 2>/dev/null && metrics=fid,kid,nll
  [ -d $m ] && $ZOO eval $m --metrics $metrics --n-samples 100 > $m.eval.txt 2>&1
  # issue 23's figure: 200 samples judged by the quick chapter-2 CNN of the same data (merged
  # into the run's eval.json beside FID/KID)
  [ -d $m ] && $ZOO eval $m --metrics recognisable --n-samples 200 >> $m.eval.txt 2>&1
done
for m in lstm gpt gpt-shakespeare realnvp realnvp-deep musegan music-transformer; do
  train $m
  [ -d $m ] && $ZOO eval $m > $m.eval.txt 2>&1
done
$ZOO bench $(ls -d */ | tr -d /) --repeats 3 --steps 5 --n 8 --preset quick > bench.txt 2>&1
$ZOO leaderboard . --markdown > leaderboard.md 2>&1
