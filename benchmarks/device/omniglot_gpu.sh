#!/usr/bin/env bash
# Issue 4's GPU session, run by the `device` tool in the root of a copy of a clean checkout, with two ignored
# folders carried beside it: .devcache/omniglot (a prepared cache: omniglot28.pt, characters.json) and
# .devgit/head.bundle (`git bundle create .devgit/head.bundle HEAD`: the copy's .git can be older than its files, so
# runs would record a wrong commit). Runs go to the committed store results/store/, which travels with the tree with
# the checkpoints of unfinished runs. Within $DEADLINE seconds:
#   1. GPU ms per meta-iteration of the paper's 5-way 1-shot conv MAML: vmap, loop, learn2learn style, compiled vmap;
#   2. the paper profile of conv MAML in setting $PAPER_SETTING (default 20way-1shot; 5way-1shot was finished on
#      2026-11-27: 54,428 iterations here, the rest on the CPU with `run --resume-from`), compiled if that was at
#      least twice as fast, and with
#      QUICK_CELLS=1 beside it the quick profile of the other settings' cells, as parallel processes on the one GPU
#      (they share it badly: on 2026-11-26 the eager quick runs kept the H100 98% busy and the compiled paper run went
#      at 51 ms per iteration instead of 7); what is interrupted resumes later from its checkpoint (SIGINT at the
#      deadline; checkpoints every 250 iterations).
# Everything comes back as $OUT/store.tgz (results/store: store and run folders), $OUT/logs/ and
# $OUT/benchmark.log.
#
# Prepare here, in a clean checkout (the folders are in .git/info/exclude):
#   mkdir -p .devcache/omniglot .devgit && git bundle create .devgit/head.bundle HEAD
#   cp ~/.cache/maml-harness/omniglot/{omniglot28.pt,characters.json} .devcache/omniglot/
# call the device with carry [.devcache, .devgit] and `PAPER_COMPILE=true DEADLINE=480 bash <this>`; then unpack
# store.tgz over results/store/ (nothing else may have written that store meanwhile) and commit it.
set -u
DEADLINE=${DEADLINE:-480}
start=$SECONDS
left() { echo $(( DEADLINE - (SECONDS - start) )); }
export HARNESS_CACHE=$PWD/.devcache PYTHONUNBUFFERED=1
git fetch -q .devgit/head.bundle HEAD && git reset -q FETCH_HEAD || { echo "no usable .devgit/head.bundle"; exit 1; }
echo "runs record commit $(git describe --always --dirty --abbrev=40)"
mkdir -p results/store "$OUT/logs"
python -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/logs/install.log" 2>&1 || { cat "$OUT/logs/install.log"; exit 1; }
python -m harness list | grep -q omniglot || { echo "the omniglot plugin is not installed"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python -c "import torch, sys; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"

bench() { timeout "$1" python -m pytest benchmarks/test_omniglot_iteration.py -o addopts= -s -q -p no:cacheprovider 2>&1; }
compiled=${PAPER_COMPILE:-}  # set to true/false to skip the benchmarks (measured in an earlier call)
if [ -z "$compiled" ]; then
  HARNESS_BENCH_DEVICE=cuda bench 90 | tee "$OUT/benchmark.log"
  HARNESS_BENCH_DEVICE=cuda HARNESS_BENCH_COMPILE=1 bench 150 | tee -a "$OUT/benchmark.log"
  compiled=$(python - "$OUT/benchmark.log" <<'PY'
import re, sys
line = [l for l in open(sys.argv[1]) if "compiled" in l]
ms = dict(re.findall(r"(harness vmap(?: compiled)?) (\d+)", line[-1])) if line else {}
print("true" if ms and 2 * int(ms["harness vmap compiled"]) <= int(ms["harness vmap"]) else "false")
PY
)
fi
echo "paper run with compile=$compiled; $(left) s left"

run() { timeout -s INT -k 20 "$(left)" python -m harness run --suite omniglot --device cuda --out results/store \
          --set checkpoint_every=250 "$@"; }
run --setting "${PAPER_SETTING:-20way-1shot}" --learners maml --profile paper --set compile="$compiled" >"$OUT/logs/paper.log" 2>&1 &
if [ "${QUICK_CELLS:-0}" = 1 ]; then
  for setting in 5way-5shot 20way-1shot 20way-5shot; do
    run --setting $setting --learners maml,context,fomaml,pretrain,scratch --quiet >"$OUT/logs/quick-$setting.log" 2>&1 &
  done
  run --setting 5way-5shot,20way-1shot,20way-5shot --learners maml --set model=fc --quiet >"$OUT/logs/quick-fc.log" 2>&1 &
fi
sleep 60; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv
wait
tail -n 3 "$OUT"/logs/*.log
tar czf "$OUT/store.tgz" results/store
ls -la "$OUT"
