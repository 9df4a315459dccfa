"""The parts of the soak harness (`python -m benchmarks.soak`): processes, annotators, checks, faults, report."""
