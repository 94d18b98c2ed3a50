#!/usr/bin/env bash
# Issue 42's GPU session for MiniImagenet, run by the `device` tool in the root of a copy of a clean checkout.
#
# The data does not fit one call: a call carries at most 64 MiB with the working tree (about 33 MB), and the 60,000
# JPEGs are 266 MB. A warm machine keeps the ignored files earlier calls brought, so the JPEGs travel as parts of
# under 30 MB, one part per call, in calls made back to back (a machine goes back 30 s after a call); the last call
# runs this script. Prepare here, in a clean checkout:
#   printf '/.devdata/\n/.devgit/\n' >> .git/info/exclude
#   mkdir -p .devdata .devgit && git bundle create .devgit/head.bundle HEAD
#   tar cf - -C ../shared/data miniimagenet | split -b 29m - .devdata/miniimagenet.tar.part-
# then call the device once per part with carry [".devdata/miniimagenet.tar.part-aa"] (then -ab, ...) and the
# command `ls .devdata`, and in the last call carry [the last part, ".devgit"] with
#   DEADLINE=420 bash benchmarks/device/miniimagenet_gpu.sh
# (DEVICE=cpu STORE=/tmp/dry DEADLINE=120 OUT=/tmp/dry-out, in a clean clone with the parts, is a dry run of the
# plumbing on the CPU). Within $DEADLINE seconds it:
#   1. joins the parts (refusing an incomplete set: the tar stream ends early) and prepares the data (the manifest's
#      sha256 of every JPEG is checked);
#   2. times the second-order 1-shot meta-iteration (benchmarks/test_miniimagenet_iteration.py on the GPU, 90 s at
#      most);
#   3. trains the paper profile of $LEARNERS (default maml) in $SETTING (default 5way-1shot) into the committed store,
#      one process per learner, checkpointing every 2 minutes; SIGINT at the deadline leaves each a checkpoint that a
#      later call (here or on the CPU, with --resume-from) goes on from. Each stretch's device, commit and seconds
#      are kept in the run's segments.
# Everything comes back as $OUT/store.tgz (results/store: the store and run folders), $OUT/logs/ and
# $OUT/benchmark.log: unpack store.tgz over results/store/ (nothing else may have written that store meanwhile) and
# commit it.
set -u
DEADLINE=${DEADLINE:-420}
DEVICE=${DEVICE:-cuda}
start=$SECONDS
left() { echo $(( DEADLINE - (SECONDS - start) )); }
export HARNESS_CACHE=$PWD/.devcache HARNESS_DATA=$PWD/.devdata/data PYTHONUNBUFFERED=1
STORE=${STORE:-results/store}
mkdir -p "$OUT/logs" "$STORE" "$HARNESS_DATA"
if [ -f .devgit/head.bundle ]; then
  git fetch -q .devgit/head.bundle HEAD && git reset -q FETCH_HEAD || { echo "no usable .devgit/head.bundle"; exit 1; }
fi
echo "runs record commit $(git describe --always --dirty --abbrev=40)"
if [ ! -d "$HARNESS_CACHE/miniimagenet" ]; then
  cat .devdata/miniimagenet.tar.part-* | tar xf - -C "$HARNESS_DATA" \
    || { echo "the parts in .devdata do not make a whole miniimagenet: $(ls .devdata)"; exit 1; }
fi
python -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/logs/install.log" 2>&1 \
  || { cat "$OUT/logs/install.log"; exit 1; }
python -m harness data prepare miniimagenet || exit 1
if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  HARNESS_BENCH_DEVICE=cuda timeout 90 python -m pytest benchmarks/test_miniimagenet_iteration.py -o addopts= -s -q \
    -p no:cacheprovider -k "1 and second" 2>&1 | tail -3 | tee "$OUT/benchmark.log"
fi
echo "paper runs of ${LEARNERS:-maml} in ${SETTING:-5way-1shot} on $DEVICE; $(left) s left"
for learner in $(echo "${LEARNERS:-maml}" | tr , ' '); do
  timeout -s INT -k 30 "$(left)" python -m harness run --suite miniimagenet --setting "${SETTING:-5way-1shot}" \
    --learners "$learner" --profile paper --device "$DEVICE" --out "$STORE" --set checkpoint_seconds=120 \
    --quiet >"$OUT/logs/paper-$learner.log" 2>&1 &
done
wait
tail -n 3 "$OUT"/logs/*.log
python -m harness status --out "$STORE" --all 2>&1 | grep miniimagenet
tar czf "$OUT/store.tgz" "$STORE"
ls -la "$OUT"
