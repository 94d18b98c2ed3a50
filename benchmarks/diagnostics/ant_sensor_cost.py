"""What rllab's ant observation costs on `mujoco.batch`: the time of today's step (sensors on, so each substep's
forward pass computes the contact forces, and a forward pass after the step) against stepping with the sensors
disabled and no forward pass after, interleaved in one process, as a ratio. A diagnostic; it writes nothing.

    python benchmarks/diagnostics/ant_sensor_cost.py [ants] [rounds]
"""
from __future__ import annotations

import sys
import time

import mujoco
import mujoco.batch
import numpy as np

from plugins.rl.locomotion.tasks import ANT, load_model


def batch(size: int, sensors: bool) -> mujoco.batch.Batch:
    """`size` rllab ants on one thread, with or without their sensors."""
    model = load_model(ANT, rllab_sensors=True)
    if not sensors:
        model.opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_SENSOR
    ants = mujoco.batch.Batch(model, size, nthread=1)
    ants.forward()
    return ants


def main(size: int = 400, rounds: int = 6, steps: int = 50) -> None:
    ctrl = np.random.default_rng(0).uniform(-1, 1, (size, ANT.action_size))
    ways = {"today (sensors, forward after)": (batch(size, True), mujoco.mjtStage.mjSTAGE_ACC),
            "no sensors, no forward after": (batch(size, False), mujoco.mjtStage.mjSTAGE_NONE)}
    seconds = dict.fromkeys(ways, 0.0)
    for _ in range(rounds):
        for name, (ants, stage) in ways.items():
            start = time.perf_counter()
            for _ in range(steps):
                ants.bind("ctrl")[:] = ctrl
                ants.step(None, nstep=ANT.frame_skip, stage=stage)
            seconds[name] += time.perf_counter() - start
    today, bare = seconds.values()
    print(", ".join(f"{name}: {s:.2f} s" for name, s in seconds.items()) + f"; ratio {bare / today:.2f}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
