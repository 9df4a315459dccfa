"""The benchmarks' process meter (``benchmarks/parts/meter.py``): a process tree's memory and CPU
read from /proc, so that a benchmark can say what shared the cores with the work it timed."""

import subprocess
import sys

from benchmarks.parts.meter import Meter, cpu_seconds, rss_mb, tree

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass\ntime.sleep(30)"


def test_a_child_that_burns_cpu_is_counted_in_its_parents_tree_and_not_in_this_process():
    child = subprocess.Popen([sys.executable, "-c", BURN])
    try:
        meter = Meter(child.pid, {"child": child.pid}, every=1.0)
        assert child.pid in tree(child.pid) and child.pid in tree(__import__("os").getpid())
        for _ in range(100):  # until the child has burnt its 0.6 s
            if cpu_seconds(child.pid) >= 0.6:
                break
            subprocess.run(["sleep", "0.05"])
        meter.mark("burnt")
        cores = meter.cpu_between("start", "burnt")
        assert set(cores) == {"child", "this process", "machine", "other", "wall_s"}
        used = cores["child"] * cores["wall_s"]  # CPU seconds of the child between the marks
        assert 0.3 < used < 1.5 and cores["this process"] * cores["wall_s"] < 0.3
        assert cores["machine"] >= cores["child"] - 0.05  # the machine's count includes the child
        assert meter.stop() > 1 and rss_mb(child.pid) > 1  # MB: a Python interpreter
    finally:
        child.kill()
        child.wait()
    assert cpu_seconds(child.pid) == 0 and rss_mb(child.pid) == 0  # gone: nothing counted
