"""The photo benchmark's physical limit (``benchmarks/parts/forward.py``): the plain forward pass at
the fastest batch size of its sweep, and what a photo costs in CPU on either side."""

import io

from PIL import Image

from benchmarks.parts.forward import forward_throughput


def test_the_limit_is_the_fastest_batch_of_the_sweep_and_the_backends_batch_is_in_it():
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), (120, 30, 200)).save(buffer, format="JPEG")
    out = forward_throughput("cpu", 2, [(buffer.getvalue(), 0)], seconds=0.05, batches=(1,))
    by_batch = out["images_per_s_by_batch"]
    assert set(by_batch) == {"1", "2"} and out["backend_batch"] == 2
    assert out["images_per_s"] == max(by_batch.values()) == by_batch[str(out["best_batch"])] > 0
    assert out["forward_cpu_ms_per_image"] > 0 and out["decode_cpu_ms_per_photo"] > 0
    assert 0 < out["cpu_ceiling"] <= 1
