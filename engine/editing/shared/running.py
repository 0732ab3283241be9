"""How a job runs the UNet: compiled or eager (UNetChoice), in which precision (set_precision), in batches
of at most how many (BatchLimit), and what its stages share (JobRun: notes, progress, cancel, timer).

Shared by every stage that calls the UNet (the model-size pass, the detail pass, extend()).
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence

from engine.editing.shared.params import EditParams
from engine.errors import Cancelled, EngineError
from engine.models.devices import is_out_of_memory

PREVIEW_MAX_SIDE = 256  # a progress preview's longest side


def candidate_seeds(params: EditParams) -> List[int]:
    """Seeds of every candidate: batch_size per iteration."""
    base = int(params.seed) if params.seed is not None else secrets.randbelow(2**31)
    count = int(params.batch_size) * int(params.iterations_num)
    return [base + index for index in range(count)]


@dataclass
class CompiledUNet:
    """A models object's torch.compile'd UNet (kept on the models, ``compiled_unet``: it lives as long as
    they do), or why compiling failed: later jobs then run eagerly at once."""

    module: Any = None
    error: Optional[str] = None


def _compiled_unet(models) -> CompiledUNet:
    import torch

    state = getattr(models, "compiled_unet", None)
    if state is None:
        try:
            state = CompiledUNet(module=torch.compile(models.unet))
        except Exception as exc:  # noqa: BLE001 - e.g. a Python version torch.compile does not support
            state = CompiledUNet(error=_describe(exc))
        models.compiled_unet = state
    return state


def _describe(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def _dynamic_batch(module):
    """Call ``module`` with the batch dimension marked dynamic: an out-of-memory split (4 -> 2 -> 1) or a
    smaller last batch reuses the compiled graph instead of compiling another."""
    import torch

    def call(x, timesteps, y=None):
        for tensor in (x, timesteps, y):
            if tensor is not None:
                torch._dynamo.maybe_mark_dynamic(tensor, 0)
        return module(x, timesteps, y)

    return call


@dataclass
class BatchLimit:
    """How many candidates run at once; halved on out-of-memory and kept so for the rest of the job."""

    size: int


@dataclass
class Progress:
    step: int  # work done so far: candidate-steps of the model-size pass, then tile-steps of the detail
    total: int  # all of it, known before the first step
    candidate_offset: int  # index of the first candidate of the batch being made
    preview: Optional[Any] = None  # a PIL image


class ProgressCounter:
    """Reports progress to the caller's callback, never going back: a batch rerun after out-of-memory
    reports nothing until it passes what was shown, and a later stage counts on from the earlier ones."""

    def __init__(self, callback: Optional[Callable[[Progress], None]], total: int) -> None:
        self.callback, self.total = callback, int(total)
        self.reported = 0

    def is_news(self, step: int) -> bool:
        return self.callback is not None and step > self.reported

    def report(self, step: int, candidate_offset: int, preview: Optional[Any] = None) -> None:
        if not self.is_news(step):
            return
        self.reported = step
        self.callback(Progress(step, self.total, candidate_offset, preview))


@dataclass
class JobRun:
    """What the stages of one edit share, made once by editor.edit()."""

    models: Any
    params: EditParams
    notes: List[str]
    unet: UNetChoice
    amp_dtype: Any  # the autocast dtype still needed (set_precision), None for none
    split: Callable[..., Any]  # editor.run_splitting_on_oom: the job's out-of-memory policy
    progress: ProgressCounter
    cancel: Optional[threading.Event] = None
    timer: Optional[Any] = None  # engine.editing.timing.StepTimer

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled()


class UNetChoice:
    """The UNet a job runs: compiled when asked and compiling works, else eager (with a note).

    Compiling happens lazily, at the first forward or backward, so a failure shows up while a batch runs
    (e.g. no Triton on Windows): ``run`` then reruns that batch eagerly, and if that works the failure was
    the compiler's: it is recorded on the models and the job goes on eagerly.
    """

    def __init__(self, models, params: EditParams, notes: List[str]) -> None:
        self.models, self.notes = models, notes
        self.state = _compiled_unet(models) if params.compile else None
        if self.state is not None and self.state.error is not None:
            notes.append(f"torch.compile is unavailable ({self.state.error}): the UNet ran eagerly")
        self.unet = models.unet if self.compiled is None else _dynamic_batch(self.compiled)

    @property
    def compiled(self):
        return None if self.state is None or self.state.error is not None else self.state.module

    def run(self, run: Callable[[Any, Sequence[int], int], Any], seeds: Sequence[int], offset: int):
        if self.compiled is None:
            return run(self.models.unet, seeds, offset)
        try:
            return run(self.unet, seeds, offset)
        except Exception as exc:  # noqa: BLE001 - out-of-memory and cancels go on up; others get an eager try
            if is_out_of_memory(exc) or isinstance(exc, (Cancelled, EngineError)):
                raise
            error = _describe(exc)
        result = run(self.models.unet, seeds, offset)  # raises the model's own error if it was not compiling
        self.state.error = error
        self.unet = self.models.unet
        self.notes.append(f"torch.compile failed ({error}): the UNet ran eagerly")
        return result


def set_precision(models, dtype, notes: List[str]):
    """Put the UNet's inner blocks and CLIP in the job's precision (None: fp32), converting their weights
    once rather than re-casting them in every forward under autocast. Returns the autocast dtype still
    needed: None, unless the models cannot convert (then autocast as before)."""
    import torch

    unet, clip = models.unet, models.clip
    if not (hasattr(unet, "set_inner_dtype") and hasattr(clip, "set_dtype")):
        if dtype is not None:
            notes.append(f"UNet and CLIP ran under {str(dtype).replace('torch.', '')} autocast")
        return dtype
    unet.set_inner_dtype(dtype or torch.float32)
    clip.set_dtype(dtype or torch.float32)
    if dtype is not None:
        notes.append(
            f"UNet blocks and CLIP ran in {str(dtype).replace('torch.', '')} (timestep embedding, output "
            "layer and norms in float32)"
        )
    return None
