"""How a job runs: the UNet compiled or eager (UNetChoice), in which precision (set_precision), in batches
of at most how many (BatchLimit, halved on out-of-memory by run_splitting_on_oom), and what its stages
share (JobRun: notes, progress with its preview, cancel, timer, the batches).

One skeleton for every job (editor.edit, latent/edit.py's latent_edit, extend.extend) and every stage
that calls a UNet (the model-size pass, the detail pass, the extension's windows, the latent loop).
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, List, Optional, Sequence, TypeVar

from engine.editing.shared.params import EditParams
from engine.errors import Cancelled, EngineError
from engine.models.devices import free_memory, is_out_of_memory

T = TypeVar("T")

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


def run_splitting_on_oom(
    run: Callable[[Sequence[int], int], Any],
    seeds: Sequence[int],
    offset: int,
    notes: List[str],
    limit: Optional[BatchLimit] = None,
):
    """run(seeds, offset) -> tensor [len(seeds), ...], in batches of at most ``limit.size``; on
    out-of-memory the limit is halved (for this call and every later one sharing ``limit``) and the
    failed batch is run again in smaller ones.

    Each candidate's randomness comes from its own seed, so a split batch makes the same candidates.
    """
    import torch

    limit = limit if limit is not None else BatchLimit(len(seeds))
    outputs = []
    done = 0
    while done < len(seeds):
        batch = seeds[done : done + limit.size]
        try:
            outputs.append(run(batch, offset + done))
            done += len(batch)
            continue
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled, everything else re-raised
            if not is_out_of_memory(exc):
                raise
            if len(batch) == 1:
                raise EngineError(
                    "out of memory even for a single candidate: use a smaller model preset, another device "
                    "(--device cpu) or close other programs using the GPU"
                ) from None
        # out of the except block: the failed batch's tensors (held by the traceback) are gone now
        free_memory()
        limit.size = len(batch) // 2
        notes.append(
            f"out of memory with {len(batch)} candidates at once: the rest of the job ran in batches of "
            f"{limit.size}"
        )
    return torch.cat(outputs, dim=0)


def composited(background, mask, image):
    """``image`` [3, S, S] inside the model-size ``mask`` over the first ``background`` row: a preview."""
    return background[0] * (1 - mask[0]) + image * mask[0]


@dataclass
class JobRun:
    """What the stages of one job share: made once by editor.edit(), latent_edit() or extend()."""

    models: Any
    params: EditParams
    notes: List[str]
    unet: UNetChoice
    amp_dtype: Any  # the autocast dtype still needed (set_precision), None for none
    progress: ProgressCounter
    cancel: Optional[threading.Event] = None
    timer: Optional[Any] = None  # engine.editing.timing.StepTimer

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled()

    def step_done(self, guided: bool, batch: int, x0: bool = False) -> None:
        """After each diffusion step: the timer's record, then a cancel ends the run here."""
        if self.timer is not None:
            self.timer.step(guided, batch, x0=x0)
        self.check_cancel()

    def report(self, step: int, offset: int, at: Optional[tuple] = None, preview=None) -> None:
        """Progress at ``step`` of the job's work; ``at`` = (step, steps) of the run: every
        ``preview_every``-th and its last carry ``preview()`` (a [3, S, S] image in [-1, 1]) as a thumbnail,
        made only then."""
        if not self.progress.is_news(step):
            return  # a batch rerun after out-of-memory: nothing new until it passes what was shown
        image = None
        every = int(self.params.preview_every)
        if preview is not None and at is not None and every and (at[0] % every == 0 or at[0] == at[1]):
            from engine.editing.shared.prepare import to_pil

            image = to_pil(preview())
            image.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
        self.progress.report(step, offset, image)

    def split(self, run: Callable[[Any, Sequence[int], int], Any], seeds: Sequence[int], offset: int, limit):
        """run(unet, seeds, offset) through the UNet choice, split on out-of-memory (``limit`` shared)."""
        return run_splitting_on_oom(partial(self.unet.run, run), seeds, offset, self.notes, limit)

    def run_batches(self, run: Callable[[Any, Sequence[int], int], Any], seeds: Sequence[int], size: int):
        """run(unet, batch_seeds, offset) -> tensor [len(batch_seeds), ...] over ``seeds`` in batches of
        ``size``, each split further on out-of-memory (the smaller size kept for the rest of the job);
        a cancel is seen between batches. The results concatenated in seed order."""
        import torch

        limit = BatchLimit(size)
        outputs = []
        for offset in range(0, len(seeds), size):
            self.check_cancel()
            outputs.append(self.split(run, seeds[offset : offset + size], offset, limit))
        return torch.cat(outputs, dim=0)

    def guarded(self, work: Callable[[], T]) -> T:
        """``work()``; on a cancel the memory its frames held returns to the device before Cancelled goes
        on up (outside the except block: the traceback, and the tensors its frames hold, are gone)."""
        try:
            return work()
        except Cancelled:
            pass  # handled below the except block
        free_memory()
        raise Cancelled()


class AutocastUNet:
    """A diffusers UNet whose weights stay fp32, run under ``dtype`` autocast (matmuls and convolutions in
    it, norms and softmax in fp32), its prediction handed back in fp32: a latent preset on a CPU with native
    bf16, where the weights load in fp32 (engine.models.latent.weights_dtype)."""

    def __init__(self, unet, dtype: Any, weights: Any) -> None:
        self.unet, self.dtype, self.weights = unet, dtype, weights

    def parameters(self):
        return self.weights.parameters()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import torch

        device = next(self.weights.parameters()).device
        with torch.autocast(device_type=device.type, dtype=self.dtype):
            output = self.unet(*args, **kwargs)
        output.sample = output.sample.float()  # the guidance combination and the scheduler step stay fp32
        return output


class UNetChoice:
    """The UNet a job runs: compiled when asked and compiling works, else eager (with a note).

    Compiling happens lazily, at the first forward or backward, so a failure shows up while a batch runs
    (e.g. no Triton on Windows): ``run`` then reruns that batch eagerly, and if that works the failure was
    the compiler's: it is recorded on the models and the job goes on eagerly.
    """

    def __init__(self, models, params: EditParams, notes: List[str], autocast: Any = None) -> None:
        self.models, self.notes = models, notes
        self.state = _compiled_unet(models) if params.compile else None
        if self.state is not None and self.state.error is not None:
            notes.append(f"torch.compile is unavailable ({self.state.error}): the UNet ran eagerly")
        self.autocast = autocast  # a dtype: every UNet handed out runs under it (AutocastUNet)
        self.unet = self._wrapped(models.unet if self.compiled is None else _dynamic_batch(self.compiled))

    def _wrapped(self, unet):
        return unet if self.autocast is None else AutocastUNet(unet, self.autocast, self.models.unet)

    @property
    def compiled(self):
        return None if self.state is None or self.state.error is not None else self.state.module

    def run(self, run: Callable[[Any, Sequence[int], int], Any], seeds: Sequence[int], offset: int):
        if self.compiled is None:
            return run(self._wrapped(self.models.unet), seeds, offset)
        try:
            return run(self.unet, seeds, offset)
        except Exception as exc:  # noqa: BLE001 - out-of-memory and cancels go on up; others get an eager try
            if is_out_of_memory(exc) or isinstance(exc, (Cancelled, EngineError)):
                raise
            error = _describe(exc)
        eager = self._wrapped(self.models.unet)
        result = run(eager, seeds, offset)  # raises the model's own error if it was not compiling
        self.state.error = error
        self.unet = eager
        self.notes.append(f"torch.compile failed ({error}): the UNet ran eagerly")
        return result


def set_precision(models, dtype, notes: List[str]):
    """Put the UNet's inner blocks and CLIP in the job's precision (None: fp32), converting their weights
    once rather than re-casting them in every forward under autocast; on a CPU CLIP stays in fp32
    (devices.clip_dtype_for). Returns the autocast dtype still needed: None, unless the models cannot
    convert (then autocast as before)."""
    import torch

    from engine.models.devices import clip_dtype_for

    unet, clip = models.unet, models.clip
    if not (hasattr(unet, "set_inner_dtype") and hasattr(clip, "set_dtype")):
        if dtype is not None:
            notes.append(f"UNet and CLIP ran under {str(dtype).replace('torch.', '')} autocast")
        return dtype
    clip_dtype = clip_dtype_for(dtype, models.device)
    unet.set_inner_dtype(dtype or torch.float32)
    clip.set_dtype(clip_dtype or torch.float32)
    if dtype is not None:
        parts = "UNet blocks and CLIP" if clip_dtype == dtype else "UNet blocks"
        notes.append(
            f"{parts} ran in {str(dtype).replace('torch.', '')} (timestep embedding, output layer and norms "
            "in float32)"
        )
    return None
