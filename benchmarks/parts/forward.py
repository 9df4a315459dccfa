"""The physical limit a photo benchmark is held against: the default backbone's plain forward pass
on in-memory tensors (no I/O), at the fastest of several batch sizes, and what a photo costs in CPU
time on either side of it."""

from __future__ import annotations

import time

import torch

CPU_BATCHES = (4, 8, 16, 32, 64)
GPU_BATCHES = (16, 32, 64, 128, 256)


def rate(fn, n: int, seconds: float, device: str) -> tuple[float, float]:
    """(items/s, process CPU seconds per item) of ``fn()`` (``n`` items a call) over about
    ``seconds``, after one warm-up call."""
    with torch.inference_mode():
        fn()  # warm-up
        done, started, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - started < seconds:
            fn()
            done += n
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        took, cpu = time.perf_counter() - started, time.process_time() - cpu
    return done / took, cpu / done


def forward_throughput(
    device: str, backend_batch: int, photos: list, seconds: float = 4.0, batches: tuple[int, ...] | None = None
) -> dict:
    """The default backbone's whole forward pass, images/s, at each batch size of ``batches`` (by
    default the device's sweep; ``()``: none but the backend's) and at ``backend_batch`` (the
    backend's BATCH_SIZE), each twice, interleaved, the better kept: the fastest is
    ``images_per_s``, the physical limit (``best_batch``). Also what a photo costs in CPU time: the
    forward pass (process CPU per image, all its threads, at the fastest batch) and the backend's
    decoding and preprocessing of ``photos`` (``images.decode`` with its JPEG draft, then
    ``Preprocess``; one thread). On a machine whose cores run the forward pass, scoring can reach at
    most forward / (forward + decoding) of that rate (``cpu_ceiling``); a GPU takes the forward pass
    off the cores."""
    from ml_backend.core.backbones import load_backbone
    from ml_backend.service.images import decode
    from ml_backend.service.settings import Settings

    defaults = Settings()
    base = load_backbone(defaults.backbone, defaults.weights, 0, defaults.freeze, defaults.image_size)
    model = base.model.eval().to(device)
    side = base.preprocess.crop
    batches = (GPU_BATCHES if device.startswith("cuda") else CPU_BATCHES) if batches is None else batches
    sweep = sorted(set(batches) | {backend_batch})
    rates: dict[int, tuple[float, float]] = {}
    for _ in range(2):
        for batch in sweep:
            x = torch.randn(batch, 3, side, side, device=device)
            measured = rate(lambda: model(x), batch, seconds, device)
            rates[batch] = max(rates.get(batch, measured), measured)
    best = max(rates, key=lambda b: rates[b][0])
    cpu_started = time.process_time()
    for data, _ in photos:
        image = decode(data, "photo", defaults.image_max_bytes, defaults.image_max_pixels, base.preprocess.resize)
        base.preprocess(image)
    decode_ms = 1000 * (time.process_time() - cpu_started) / len(photos)
    forward_ms = 1000 * rates[best][1]
    return {
        "backbone": defaults.backbone,
        "input_px": side,
        "images_per_s": round(rates[best][0], 1),
        "best_batch": best,
        "images_per_s_by_batch": {str(b): round(r[0], 1) for b, r in sorted(rates.items())},
        "backend_batch": backend_batch,
        "forward_cpu_ms_per_image": round(forward_ms, 1),
        "decode_cpu_ms_per_photo": round(decode_ms, 1),
        "cpu_ceiling": round(forward_ms / (forward_ms + decode_ms), 2) if device == "cpu" else None,
    }
