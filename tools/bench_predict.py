"""Prediction speed: frames/s on the 320 x 256 Drone-detection-IR videos, images/s on NUAA-SIRST.

Times `istd.Predictor` end to end (frame decoding excluded for videos: frames are decoded first,
then predicted in batches; thresholding and connected components included), on `--threads`
CPU threads (2 by default, the project's CI machines), after one warm-up batch.

Model: the default weights when they exist, else a **randomly initialised** `mim-istd` (same
architecture and cost, meaningless masks); `--model NAME` times a registered model instead
(random init for networks, e.g. `mim-istd-test`; weight-free detectors such as `tophat`), and
`--weights DIR` a trained folder. The line `model:` of the output says which was timed.
`--precision` (one or several, comma-separated, timed one after the other in the same run) sets
the dense convolutions' precision as `istd predict --precision` does; `auto` is its default.

Usage:
    python tools/bench_predict.py [--threads 2] [--videos 2] [--frames 32] [--images 20]
                                  [--batch 8] [--model NAME | --weights DIR] [--device cpu]
                                  [--precision auto,float32]
                                  [--data-root ../shared/datasets] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from itertools import islice
from pathlib import Path

# before torch: istd sets OMP_WAIT_POLICY=PASSIVE, which OpenMP reads when torch loads, so the
# timings are those of `istd` and its CLI (torch first would time torch's spinning default)
import istd  # noqa: F401

# isort: split
import numpy as np
import torch

from istd.data.io import read_image
from istd.data.video import iter_video_frames
from istd.engine.predict import Predictor
from istd.engine.predict_inputs import atomic_text
from istd.models import DEFAULT_WEIGHTS, build_model, list_models, weights_dir
from istd.ops._threads import openmp_wait


def _predictor(args: argparse.Namespace, precision: str) -> tuple[Predictor, str]:
    common = {"device": args.device, "batch_size": args.batch, "precision": precision}
    if args.weights:
        return Predictor(weights=args.weights, **common), f"weights {args.weights}"
    if args.model:
        model = build_model(args.model)
        trained = getattr(model, "requires_weights", True)
        label = f"{args.model} (randomly initialised)" if trained else f"{args.model} (weight-free)"
        return Predictor(model=model, **common), label
    if (weights_dir() / DEFAULT_WEIGHTS).is_dir():
        return Predictor(**common), f"default weights {DEFAULT_WEIGHTS}"
    model = build_model("mim-istd")
    return (
        Predictor(model=model, **common),
        f"mim-istd RANDOMLY INITIALISED (default weights {DEFAULT_WEIGHTS} not found)",
    )


def _time(predictor: Predictor, frames: list[np.ndarray], batch: int) -> list[float]:
    """Seconds per frame of each batch, predicting `frames` (same size) in batches."""
    per_frame = []
    for i in range(0, len(frames), batch):
        start = time.perf_counter()
        chunk = frames[i : i + batch]
        predictor.predict_batch(chunk)
        if predictor.device.type == "cuda":
            torch.cuda.synchronize()
        per_frame.append((time.perf_counter() - start) / len(chunk))
    return per_frame


def _measure(args: argparse.Namespace, predictor: Predictor) -> dict[str, float]:
    """Frames/s on the drone videos and images/s on NUAA-SIRST with one predictor."""
    results: dict[str, float | str] = {
        "conv_dtype": str(predictor.conv_dtype).removeprefix("torch.")
    }

    videos = sorted((args.data_root / "Drone-detection-IR" / "Video_IR").glob("IR_DRONE_*.mp4"))
    frames_done = seconds = 0.0
    batch_times: list[float] = []  # seconds per frame of each batch
    for video in videos[: args.videos]:
        frames = list(islice(iter_video_frames(video), args.frames + args.batch))
        warm, timed = frames[: args.batch], frames[args.batch :]
        predictor.predict_batch(warm)  # warm-up: first-call allocations and JIT
        per_frame = _time(predictor, timed, args.batch) if timed else []
        elapsed = sum(
            t * min(args.batch, len(timed) - i * args.batch) for i, t in enumerate(per_frame)
        )
        batch_times += per_frame
        frames_done += len(timed)
        seconds += elapsed
        print(
            f"  {video.name}: {len(timed)} frames {timed[0].shape[1]}x{timed[0].shape[0]} in {elapsed:.2f} s"
        )
    if frames_done:
        fps = frames_done / seconds
        # the median batch: what the machine does between bursts of other work on a shared host
        median_fps = 1.0 / float(np.median(batch_times))
        results["video_fps_320x256"] = round(fps, 3)
        results["video_fps_320x256_median_batch"] = round(median_fps, 3)
        print(
            f"videos: {fps:.2f} frames/s at 320x256 over all frames, {median_fps:.2f} in the "
            f"median batch of {args.batch} (target >= 30)"
        )

    images = sorted((args.data_root / "NUAA-SIRST" / "images").glob("*.png"))[: args.images]
    if images:
        loaded = [read_image(p) for p in images]
        predictor(loaded[0])  # warm-up
        start = time.perf_counter()
        for image in loaded:
            predictor(image)  # sizes differ: one image per call
        elapsed = time.perf_counter() - start
        ips = len(loaded) / elapsed
        results["nuaa_images_per_s"] = round(ips, 3)
        print(
            f"NUAA-SIRST: {len(loaded)} images (sizes vary) in {elapsed:.2f} s: {ips:.2f} images/s"
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--videos", type=int, default=2, help="drone videos timed")
    parser.add_argument("--frames", type=int, default=32, help="frames timed per video")
    parser.add_argument("--images", type=int, default=20, help="NUAA-SIRST images timed")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--model", choices=list_models())
    parser.add_argument("--weights")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto", help="auto, float32, bfloat16; a list")
    parser.add_argument(
        "--data-root",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared" / "datasets",
    )
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, object] = {"threads": args.threads, "batch": args.batch}
    for precision in args.precision.split(","):
        predictor, label = _predictor(args, precision)
        convs = str(predictor.conv_dtype).removeprefix("torch.")
        print(f"model: {label}; --precision {precision}: {convs} dense convolutions")
        print(
            f"device: {args.device}, threads: {torch.get_num_threads()}, batch: {args.batch}, "
            f"torch {torch.__version__}, {platform.processor() or platform.machine()}; "
            f"{openmp_wait()}"
        )
        results["model"] = label
        results[precision] = _measure(args, predictor)
    if args.json:
        with atomic_text(args.json) as handle:
            handle.write(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
