"""`istd predict` as a library function: many inputs in, masks, CSV files and a summary out.

Per image: `<key>_mask.png` (0/255), with `save_prob` `<key>_prob.png` (16-bit), with `overlay`
`<key>_overlay.png`; all image detections go to `detections.csv`. Per video or frame sequence:
`<key>_detections.csv` (plus `track_id`) and with `overlay` `<key>_overlay.mp4`; frames are
streamed in batches, so memory does not grow with the video's length. `summary.json` closes the
run. Every file is written atomically, and an existing file is never replaced unless
`overwrite` is set. Each image's detections are also kept in `.istd-parts/<key>.csv`: an image
is complete when all its files exist, which is what `resume` checks, and `detections.csv` is
rebuilt from the parts so a resumed run still lists every image; `resume` also deletes the
temporary files a killed run left. A video that ends early (truncated) or whose overlay cannot
be written keeps the detections of its decoded frames but is reported as failed.
"""

from __future__ import annotations

import csv
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np
import pandas as pd

from istd._atomic import remove_stale_temps, temp_destination
from istd.data.io import read_image, write_png_atomic
from istd.data.video import (
    AtomicVideoWriter,
    TruncatedVideoError,
    iter_frame_folder,
    iter_video_frames,
    video_info,
)
from istd.engine.detections import DETECTION_COLUMNS
from istd.engine.predict import Prediction, Predictor
from istd.engine.predict_inputs import (
    InputItem,
    assign_keys,
    atomic_text,
    draw_overlay,
    expand_inputs,
    parse_shard,
    select_shard,
)
from istd.engine.tracking import Tracker, TrackerConfig
from istd.errors import DataError, IstdError

__all__ = [
    "CSV_COLUMNS",
    "PredictOptions",
    "PredictSummary",
    "outputs_for",
    "predict_paths",
    "run_predict",
]

#: Columns of `detections.csv`; video CSV files add `track_id`.
CSV_COLUMNS = ["source", "frame", *DETECTION_COLUMNS]
PARTS = ".istd-parts"
# What one input's failure may raise; the run records it and goes on with the next input.
_INPUT_ERRORS = (IstdError, OSError, RuntimeError, cv2.error)
# Media files this tool writes (folder scans find only media files).
_OWN_MEDIA = re.compile(r".+_(?:mask|prob|overlay)\.png|.+_overlay\.mp4")


@dataclass
class PredictOptions:
    """Switches of a prediction run (see `istd predict --help`)."""

    save_prob: bool = False
    overlay: bool = False
    track: bool = False
    resume: bool = False
    overwrite: bool = False
    tracker: TrackerConfig = field(default_factory=TrackerConfig)


@dataclass
class PredictSummary:
    """What `summary.json` holds."""

    inputs: int
    processed: int
    skipped: int
    failures: list[dict[str, str]]
    frames: int
    seconds: float
    frames_per_second: float
    weights: str
    threshold: float
    shard: str
    conv_dtype: str  # the dense convolutions' dtype (`istd.models.precision`)
    input_scale: float | None  # the network's (`MiMConfig.input_scale`); None: no network
    tta: bool  # probabilities averaged over flips (`istd.models.tta`)


def outputs_for(item: InputItem, out: Path, options: PredictOptions) -> list[Path]:
    """The files an input produces; all of them existing means the input is complete."""
    if item.kind == "image":
        names = [f"{item.key}_mask.png"]
        if options.save_prob:
            names.append(f"{item.key}_prob.png")
        if options.overlay:
            names.append(f"{item.key}_overlay.png")
        return [out / n for n in names] + [out / PARTS / f"{item.key}.csv"]
    names = [f"{item.key}_detections.csv"]
    if options.overlay:
        names.append(f"{item.key}_overlay.mp4")
    return [out / n for n in names]


def _failure_message(item: InputItem, error: BaseException | str) -> str:
    """One line that starts with the input's path."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if text.startswith(str(item.path)) else f"{item.path}: {text}"


def _is_own_output(path: Path, out_dir: Path) -> bool:
    """Whether a file found in a folder is one this tool wrote into `out_dir` (resolved), or a
    temporary file of one."""
    path = path.resolve()
    if path.parent == out_dir / PARTS:
        return True
    name = temp_destination(path.name) or path.name
    return path.parent == out_dir and _OWN_MEDIA.fullmatch(name) is not None


def _rows(source: str, frame: int, prediction: Prediction) -> list[list[object]]:
    return [
        [
            source,
            frame,
            d.target_id,
            round(d.cx, 3),
            round(d.cy, 3),
            d.area,
            d.x,
            d.y,
            d.w,
            d.h,
            round(d.score, 5),
        ]
        for d in prediction.detections
    ]


def _write_image_outputs(
    item: InputItem, image: np.ndarray, pred: Prediction, out: Path, options: PredictOptions
) -> None:
    overwrite = options.overwrite
    if options.save_prob:
        prob16 = np.rint(pred.prob * 65535.0).astype(np.uint16)
        write_png_atomic(out / f"{item.key}_prob.png", prob16, overwrite=overwrite)
    if options.overlay:
        canvas = draw_overlay(image, pred.mask, pred.detections)
        write_png_atomic(out / f"{item.key}_overlay.png", canvas, overwrite=overwrite)
    with atomic_text(out / PARTS / f"{item.key}.csv", overwrite=overwrite) as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(_rows(str(item.path), 0, pred))
    # The mask goes last: its presence marks the image as done for --resume.
    write_png_atomic(out / f"{item.key}_mask.png", pred.mask, overwrite=overwrite)


def _frames(item: InputItem) -> Iterator[np.ndarray]:
    return iter_frame_folder(item.path) if item.kind == "sequence" else iter_video_frames(item.path)


def _batches(frames: Iterator[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    batch: list[np.ndarray] = []
    for frame in frames:
        if batch and (len(batch) == size or frame.shape != batch[0].shape):
            yield batch
            batch = []
        batch.append(frame)
    if batch:
        yield batch


def _run_video(
    item: InputItem,
    predictor: Predictor,
    out: Path,
    options: PredictOptions,
    on_frames: Callable[[int], None],
) -> tuple[int, list[str]]:
    """Stream one video or frame sequence.

    Returns:
        The number of frames processed, and the problems that did not stop it (a video that
        ends before its reported frame count, an overlay video that cannot be written): the
        detections CSV of the decoded frames is written either way.
    """
    fps = video_info(item.path).fps if item.kind == "video" else 0.0
    tracker = Tracker(options.tracker) if options.track else None
    writer: AtomicVideoWriter | None = None
    overlay = options.overlay
    problems: list[str] = []
    count = 0
    csv_path = out / f"{item.key}_detections.csv"
    overlay_path = out / f"{item.key}_overlay.mp4"

    def frames() -> Iterator[np.ndarray]:
        try:
            yield from _frames(item)
        except TruncatedVideoError as exc:
            problems.append(str(exc))  # the frames before the damage are kept

    try:
        with atomic_text(csv_path, overwrite=options.overwrite) as handle:
            rows = csv.writer(handle)
            rows.writerow([*CSV_COLUMNS, "track_id"])
            for batch in _batches(frames(), predictor.batch_size):
                for frame, pred in zip(batch, predictor.predict_batch(batch), strict=True):
                    ids = tracker.update(pred.detections) if tracker else None
                    for k, row in enumerate(_rows(str(item.path), count, pred)):
                        rows.writerow([*row, ids[k] if ids is not None else ""])
                    # A failing overlay writer must not cost the detections: the overlay is
                    # dropped and reported, and the CSV goes on.
                    if overlay:
                        try:
                            if writer is None:
                                if not options.overwrite and overlay_path.exists():
                                    raise DataError(
                                        f"{overlay_path}: already exists; not overwritten"
                                    )
                                size = (frame.shape[1], frame.shape[0])
                                writer = AtomicVideoWriter(overlay_path, fps, size)
                            writer.write(draw_overlay(frame, pred.mask, pred.detections, ids))
                        except _INPUT_ERRORS as exc:
                            problems.append(str(exc))
                            overlay = False
                            if writer is not None:
                                writer.abort()
                                writer = None
                    count += 1
                on_frames(len(batch))
            if writer is not None:
                try:
                    writer.close()
                except _INPUT_ERRORS as exc:
                    problems.append(str(exc))
                writer = None
    finally:
        if writer is not None:
            writer.abort()
    return count, problems


def run_predict(
    items: list[InputItem],
    predictor: Predictor,
    out: str | Path,
    options: PredictOptions | None = None,
    *,
    shard: tuple[int, int] = (1, 1),
    on_input: Callable[[InputItem], None] | None = None,
    on_frames: Callable[[int], None] | None = None,
    on_failure: Callable[[InputItem, str], None] | None = None,
) -> PredictSummary:
    """Predict every input, write its outputs, `detections.csv` and `summary.json`.

    A broken input (missing, empty, truncated, not an image, a video with no decodable frame)
    or any error while processing one (a file that cannot be written, out of memory) is
    recorded as that input's failure, with a message starting with its path, and the run goes
    on. A truncated video keeps the outputs of the frames that decoded.

    Args:
        items: inputs with output keys (`expand_inputs` + `assign_keys` + `select_shard`).
        predictor: the model wrapper.
        out: output folder (created).
        options: output switches.
        shard: (K, N) of this run; with N > 1 the run files are `detections.K-of-N.csv` and
            `summary.K-of-N.json` so that shards can share one folder.
        on_input: called when an input starts (progress display).
        on_frames: called with the number of frames just finished.
        on_failure: called with an input and its one-line error.

    Returns:
        The summary that was written to `summary.json`.

    Raises:
        DataError: the folder already holds a run and neither `resume` nor `overwrite` is set.
    """
    options = options or PredictOptions()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / PARTS).mkdir(exist_ok=True)
    suffix = "" if shard == (1, 1) else f".{shard[0]}-of-{shard[1]}"
    summary_path, detections_path = out / f"summary{suffix}.json", out / f"detections{suffix}.csv"
    if summary_path.exists() and not (options.resume or options.overwrite):
        raise DataError(
            f"{out} already holds a run ({summary_path.name}); pass --resume to continue it or --overwrite"
        )
    inputs = {item.path.resolve(): item.path for item in items}
    if options.resume:
        every_output = PredictOptions(save_prob=True, overlay=True)
        targets = [t for item in items for t in outputs_for(item, out, every_output)]
        targets += [summary_path, detections_path]
        # only these outputs' temporaries: shards sharing the folder may be writing their own
        for folder in (out, out / PARTS):
            remove_stale_temps(folder, *(t.name for t in targets if t.parent == folder))
    failures: list[dict[str, str]] = []
    processed = skipped = frames = 0
    start = time.perf_counter()
    batch: list[tuple[InputItem, np.ndarray, PredictOptions]] = []

    def fail(item: InputItem, error: BaseException | str) -> None:
        message = _failure_message(item, error)
        failures.append({"path": str(item.path), "error": message})
        if on_failure:
            on_failure(item, message)

    def flush() -> None:
        nonlocal processed, frames
        if not batch:
            return
        try:
            preds = predictor.predict_batch([image for _, image, _ in batch])
        except _INPUT_ERRORS as exc:
            for item, _, _ in batch:
                fail(item, exc)
            preds = []
        for (item, image, item_options), pred in zip(batch, preds, strict=False):
            try:
                _write_image_outputs(item, image, pred, out, item_options)
                processed += 1
                frames += 1
            except _INPUT_ERRORS as exc:
                fail(item, exc)
        if on_frames:
            on_frames(len(batch))
        batch.clear()

    for item in items:
        if on_input:
            on_input(item)
        targets = outputs_for(item, out, options)
        if item.kind == "missing":
            fail(item, f"{item.path}: no such file or folder")
            continue
        clash = next((t for t in targets if t.resolve() in inputs), None)
        if clash is not None:
            fail(
                item,
                f"{item.path}: its output would overwrite an input "
                f"({inputs[clash.resolve()]}); choose another --out",
            )
            continue
        if options.resume and all(t.exists() for t in targets):
            skipped += 1
            continue
        existing = [t for t in targets if t.exists()]
        if existing and not (options.overwrite or options.resume):
            fail(item, f"{existing[0]}: already exists; pass --resume or --overwrite")
            continue
        # An input left incomplete by a killed run is redone, replacing its partial outputs.
        item_options = replace(options, overwrite=True) if existing else options
        try:
            if item.kind == "image":
                image = read_image(item.path)
                if batch and (
                    image.shape != batch[0][1].shape or len(batch) >= predictor.batch_size
                ):
                    flush()
                batch.append((item, image, item_options))
                continue
            flush()
            done, problems = _run_video(
                item, predictor, out, item_options, on_frames or (lambda n: None)
            )
            frames += done
            if problems:
                fail(item, "; ".join(problems))
            else:
                processed += 1
        except _INPUT_ERRORS as exc:
            fail(item, exc)
    flush()
    _write_detections(items, out, detections_path)
    seconds = time.perf_counter() - start
    summary = PredictSummary(
        inputs=len(items),
        processed=processed,
        skipped=skipped,
        failures=failures,
        frames=frames,
        seconds=round(seconds, 3),
        frames_per_second=round(frames / seconds, 3) if seconds > 0 else 0.0,
        weights=predictor.weights_id,
        threshold=predictor.threshold,
        shard=f"{shard[0]}/{shard[1]}",
        conv_dtype=str(predictor.conv_dtype).removeprefix("torch."),
        input_scale=predictor.input_scale,
        tta=predictor.tta,
    )
    with atomic_text(summary_path) as handle:
        json.dump(asdict(summary), handle, indent=2)
        handle.write("\n")
    return summary


def _write_detections(items: list[InputItem], out: Path, path: Path) -> None:
    """Join the per-image parts, in input order, into one CSV."""
    parts = [out / PARTS / f"{item.key}.csv" for item in items if item.kind == "image"]
    frames = [pd.read_csv(p) for p in parts if p.exists()]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CSV_COLUMNS)
    with atomic_text(path) as handle:
        table.to_csv(handle, index=False, lineterminator="\n")


def predict_paths(
    paths: list[str],
    out: str | Path,
    *,
    weights: str | Path | None = None,
    model: str | None = None,
    device: str = "cpu",
    threshold: float = 0.5,
    tile: int = 1024,
    batch_size: int = 8,
    precision: str = "auto",
    input_scale: float | None = None,
    tta: bool = False,
    options: PredictOptions | None = None,
    recursive: bool = False,
    glob: str = "*",
    sequence: bool = False,
    shard: str = "1/1",
    stdin: TextIO | None = None,
    on_start: Callable[[list[InputItem]], None] | None = None,
    on_input: Callable[[InputItem], None] | None = None,
    on_frames: Callable[[int], None] | None = None,
    on_failure: Callable[[InputItem, str], None] | None = None,
) -> PredictSummary:
    """Everything `istd predict` does: expand inputs, build the predictor, run, summarise.

    Args:
        paths: files, folders or `-` (see `expand_inputs`).
        out: output folder.
        weights: weights folder or name; the default weights when neither this nor `model`.
        model: a weight-free detector name instead of weights.
        device: torch device.
        threshold: probability threshold.
        tile: tile size for large frames.
        batch_size: frames per forward pass.
        precision: dense-convolution precision (`istd.Predictor`).
        input_scale: the network's input scale; None: the weights' own (`istd.Predictor`).
        tta: average over each frame's flips (`istd.Predictor`).
        options: output switches.
        recursive: search folders recursively.
        glob: file pattern in folders.
        sequence: read folders as frame sequences.
        shard: `"K/N"`, this process's slice of the inputs.
        stdin: stream for `-`.
        on_start: called with this shard's inputs before any work (progress display).
        on_input: see `run_predict`.
        on_frames: see `run_predict`.
        on_failure: see `run_predict`.

    Returns:
        The run's summary (also written to `summary.json`).

    Raises:
        IstdError: no inputs, bad options, or missing weights (before any input is read).
    """
    k_of_n = parse_shard(shard)
    found = expand_inputs(paths, recursive=recursive, glob=glob, sequence=sequence, stdin=stdin)
    # Outputs of an earlier run found in a scanned folder are not inputs; files the user named
    # always are (an input whose output would replace another is refused by run_predict).
    out_dir = Path(out).resolve()
    items = assign_keys([i for i in found if i.explicit or not _is_own_output(i.path, out_dir)])
    if not items:
        raise DataError(
            f"no images or videos found in {', '.join(map(str, paths)) or 'the inputs'}"
        )
    items = select_shard(items, k_of_n)
    predictor = Predictor(
        weights=weights,
        model=model,
        device=device,
        threshold=threshold,
        tile=tile,
        batch_size=batch_size,
        precision=precision,
        input_scale=input_scale,
        tta=tta,
    )
    if on_start:
        on_start(items)
    return run_predict(
        items,
        predictor,
        out,
        options,
        shard=k_of_n,
        on_input=on_input,
        on_frames=on_frames,
        on_failure=on_failure,
    )
