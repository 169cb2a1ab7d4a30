#!/usr/bin/env python3
"""Where a training step's time goes, op by op: qat against the PyTorch eager reference (issue 17).

  launch/profile_ops.py QAT_TRACE.json [REF_TRACE.json] [--top N]

The traces come from `qat bench train ... --profile QAT_TRACE.json` (libtorch's autograd profiler)
and `launch/bench_train_ref.py ... --profile REF_TRACE.json` (torch.profiler); both put each step
under a "qat_step" range. The first step is warm-up and is left out. For every op name: its self
time (its duration less that of the ops it called, on the same thread) per step, summed over the
steady steps' ranges, and its calls per step; with two traces, side by side with the difference.
Autograd's backward nodes (MmBackward0, ...) count as ops: their self time is the glue between
the ops they call. Python is for comparison scripts only (DEVELOPERS.md); this is not part of qat.
"""
import argparse
import collections
import json
import sys


def load_events(path):
    with open(path) as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    out = []
    for e in events:
        if e.get("ph") != "X" or "dur" not in e:
            continue
        if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset", "cuda_runtime", "cuda_driver"):
            continue  # device activity: only the host ops are compared
        out.append((str(e.get("tid")), float(e["ts"]), float(e["dur"]), e["name"]))
    return out


def profile(path):
    """(self microseconds per step by name, calls per step by name, steady steps, step µs)."""
    events = load_events(path)
    steps = sorted((ts, ts + dur) for _, ts, dur, name in events if name == "qat_step")
    if len(steps) < 2:
        sys.exit(f"profile_ops: {path}: {len(steps)} 'qat_step' range(s); need 2 or more")
    steady = steps[1:]

    def in_steady(ts):
        return any(lo <= ts < hi for lo, hi in steady)

    by_thread = collections.defaultdict(list)
    for tid, ts, dur, name in events:
        if name != "qat_step" and in_steady(ts):
            by_thread[tid].append((ts, -dur, name))
    self_us = collections.Counter()
    calls = collections.Counter()
    for evs in by_thread.values():
        evs.sort()  # by start; of two that start together, the longer (the caller) first
        stack = []  # [end, name, time of its children, duration]
        for ts, neg_dur, name in evs:
            dur = -neg_dur
            while stack and ts >= stack[-1][0] - 1e-3:
                end, n, child, d = stack.pop()
                self_us[n] += d - child
            if stack:
                stack[-1][2] += dur
            stack.append([ts + dur, name, 0.0, dur])
            calls[name] += 1
        while stack:
            end, n, child, d = stack.pop()
            self_us[n] += d - child
    k = len(steady)
    step_us = sum(hi - lo for lo, hi in steady) / k
    return ({n: v / k for n, v in self_us.items()}, {n: c / k for n, c in calls.items()}, k, step_us)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("qat")
    ap.add_argument("ref", nargs="?")
    ap.add_argument("--top", type=int, default=30)
    a = ap.parse_args()
    q, qc, qk, qstep = profile(a.qat)
    if a.ref is None:
        total = sum(q.values())
        print(f"{a.qat}: {qk} steady steps, {qstep / 1e3:.1f} ms/step under the profiler, ops' self time {total / 1e3:.1f} ms")
        print(f"{'op':48} {'ms/step':>9} {'share':>7} {'calls':>7}")
        for name, us in sorted(q.items(), key=lambda x: -x[1])[: a.top]:
            print(f"{name[:48]:48} {us / 1e3:9.2f} {100 * us / total:6.1f}% {qc[name]:7.0f}")
        return
    r, rc, rk, rstep = profile(a.ref)
    print(f"qat: {qk} steady steps, {qstep / 1e3:.1f} ms/step under the profiler (ops' self time {sum(q.values()) / 1e3:.1f} ms); "
          f"reference: {rk} steps, {rstep / 1e3:.1f} ms/step ({sum(r.values()) / 1e3:.1f} ms)")
    print(f"{'op':44} {'qat ms':>8} {'ref ms':>8} {'qat-ref':>8} {'qat calls':>9} {'ref calls':>9}")
    names = set(q) | set(r)
    for name in sorted(names, key=lambda n: -max(q.get(n, 0), r.get(n, 0)))[: a.top]:
        print(f"{name[:44]:44} {q.get(name, 0) / 1e3:8.2f} {r.get(name, 0) / 1e3:8.2f} "
              f"{(q.get(name, 0) - r.get(name, 0)) / 1e3:+8.2f} {qc.get(name, 0):9.0f} {rc.get(name, 0):9.0f}")
    print("largest differences (qat - reference, ms/step):")
    for name in sorted(names, key=lambda n: -abs(q.get(n, 0) - r.get(n, 0)))[: a.top // 2]:
        print(f"  {name[:60]:60} {(q.get(name, 0) - r.get(name, 0)) / 1e3:+8.2f}")


if __name__ == "__main__":
    main()
