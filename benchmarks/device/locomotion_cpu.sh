#!/usr/bin/env bash
# Paper-profile locomotion training on a lent machine's CPU cores: one process per run, one torch and one simulation
# thread each (the paper profile's, so the run ids are the ones made here and the checkpoints travel both ways), for
# $STOP seconds, then Ctrl-C (each run checkpoints the iteration it is in) and a hard stop at $HARD seconds.
# Run by the `device` tool in the root of a copy of the checkout, with two folders (in .git/info/exclude) carried:
#   .whl     the wheels its image lacks, for its Python (3.12):
#            mujoco mujoco-core mujoco-studio websockets glfw PyOpenGL gymnasium Farama-Notifications
#            (`pip download --no-deps --only-binary=:all: --python-version 3.12 ...`, as the device README says);
#   .devgit  head.bundle (`git bundle create .devgit/head.bundle HEAD`), so that runs record the commit they ran.
# Every run starts from its checkpoint in results/store (which travels with the tree) when it has one.
# Back come $OUT/ckpts.tar (<run-id>/train-checkpoint.pt of every run it trained) and $OUT/logs.tar. Here, copy each
# checkpoint into results/store/<run-id>/ - only for runs that no process here is training meanwhile - and the
# runs resume from them (each process's share is in the checkpoint's segments, host included).
# A run that finishes there is not brought back: leave out runs that can finish within $STOP (`scratch`).
#   RUNS="ant-direction:maml ant-velocity:oracle ..." STOP=390 HARD=550 bash benchmarks/device/locomotion_cpu.sh
set -u
STOP=${STOP:-390}; HARD=${HARD:-550}
RUNS=${RUNS:?name the runs, as suite:learner separated by spaces}
start=$SECONDS
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "cannot install the carried wheels in .whl"; exit 1; }
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
git fetch -q .devgit/head.bundle HEAD && git reset -q FETCH_HEAD || { echo "no usable .devgit/head.bundle"; exit 1; }
mkdir -p "$OUT/logs"
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >"$OUT/logs/install.log" 2>&1 \
  || { cat "$OUT/logs/install.log"; exit 1; }
echo "$(nproc) cores, $(lscpu | sed -n 's/Model name: *//p'); runs record commit $(git rev-parse HEAD)"
store=/tmp/store; mkdir -p $store
for ckpt in results/store/*/train-checkpoint.pt; do  # the unfinished runs' checkpoints; a run not named ignores its own
  [ -e "$ckpt" ] && mkdir -p "$store/$(basename "$(dirname "$ckpt")")" && cp "$ckpt" "$store/$(basename "$(dirname "$ckpt")")/"
done
touch $store/.copied  # what is newer was written there
pids=()  # this script's runs only: a pattern would also stop other runs on the machine
for unit in $RUNS; do
  python3 -m harness run --suite "${unit%%:*}" --learners "${unit##*:}" --profile paper --out $store \
    >"$OUT/logs/${unit%%:*}-${unit##*:}.log" 2>&1 &
  pids+=($!)
done
running() { for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && return 0; done; return 1; }
while [ $(( SECONDS - start )) -lt "$STOP" ]; do sleep 5; done
kill -INT "${pids[@]}" 2>/dev/null
while running && [ $(( SECONDS - start )) -lt "$HARD" ]; do sleep 2; done
kill -9 "${pids[@]}" 2>/dev/null
cd $store && find . -name train-checkpoint.pt -newer .copied | sort >written && python3 - <<'PY'
import sqlite3, torch
for path in open("written").read().split():
    state = torch.load(path, weights_only=True)
    seconds = sum(s["seconds"] for s in state.get("harness_segments", []))
    print(path.split("/")[1], "iteration", state.get("iteration"), f"{seconds:.0f} s of training")
for (run_id,) in sqlite3.connect("results.sqlite").execute("SELECT run_id FROM runs WHERE status = 'done'"):
    print(run_id, "finished there: its scores are not brought back")
PY
tar cf "$OUT/ckpts.tar" -T written
cd "$OUT" && tar cf logs.tar logs && rm -r logs
echo "done in $(( SECONDS - start )) s"
