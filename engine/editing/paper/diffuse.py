"""The model-size pass: every candidate of the job through Algorithm 2 (blended.py) at the model's size.

Candidates run in batches of ``batch_size``, each from its own seed, split further on out-of-memory by the
job's policy (``JobRun.split``); progress counts candidate-steps, so it only grows however the batches are
split.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, List, Sequence

from engine.editing.shared.params import EditParams
from engine.editing.shared.prepare import PreparedEdit, to_pil
from engine.editing.shared.running import PREVIEW_MAX_SIDE, BatchLimit, JobRun, candidate_seeds


def clip_guidance(models, params: EditParams, text_embed, augment, lpips_model, amp_dtype):
    """The job's blended.ClipGuidance for ``text_embed`` (None without a prompt: no guidance)."""
    from engine.editing.paper.blended import ClipGuidance, GuidanceSettings

    if text_embed is None:
        return None
    settings = GuidanceSettings.from_params(params)
    return ClipGuidance(models.clip, text_embed, augment, settings, lpips=lpips_model, amp_dtype=amp_dtype)


@dataclass
class ModelPass:
    """The plan of the model-size pass, known before its first step (the progress total needs it)."""

    seeds: List[int]  # every candidate
    batch_size: int  # candidates per batch
    num_steps: int

    @property
    def work(self) -> int:
        """Its candidate-steps: the progress it reports."""
        return self.num_steps * len(self.seeds)


def plan_model_pass(params: EditParams, diffusion) -> ModelPass:
    num_steps = diffusion.num_timesteps - int(params.skip_timesteps)
    return ModelPass(candidate_seeds(params), int(params.batch_size), num_steps)


def diffuse(job: JobRun, prepared: PreparedEdit, plan: ModelPass, text_embed, augment):
    """(results [kept, 3, size, size] in [-1, 1], their seeds in result order). Raises Cancelled."""
    import torch

    from engine.editing.paper import blended
    from engine.editing.paper.blended import GuidanceSettings

    models, params = job.models, job.params
    device = models.device
    background, model_mask = prepared.background, prepared.model_mask
    settings = GuidanceSettings.from_params(params)
    guidance = clip_guidance(models, params, text_embed, augment, prepared.lpips_model, job.amp_dtype)
    num_steps = plan.num_steps

    def run(unet, batch_seeds: Sequence[int], offset: int):
        labels = None
        if getattr(models, "class_cond", False):
            # the reference conditions the 512 model on class 0 for every candidate
            labels = torch.zeros(len(batch_seeds), dtype=torch.long, device=device)

        def on_step(info: blended.StepInfo) -> None:
            if job.timer is not None:
                job.timer.step(info.guided, info.batch, x0=info.x0)
            job.check_cancel()
            step = offset * num_steps + info.step * len(batch_seeds)
            if not job.progress.is_news(step):
                return  # a batch rerun after out-of-memory: nothing new until it passes what was shown
            preview = None
            if params.preview_every and (info.step % params.preview_every == 0 or info.step == info.total):
                composed = background[0] * (1 - model_mask[0]) + info.pred_x0[0] * model_mask[0]
                preview = to_pil(composed)
                preview.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
            job.progress.report(step, offset, preview)

        if job.timer is not None:
            job.timer.start()
        return blended.blended_diffusion(
            unet,
            prepared.diffusion,
            prepared.init,
            model_mask,
            batch_seeds,
            int(params.skip_timesteps),
            settings,
            guidance=guidance,
            background=background,
            class_labels=labels,
            on_step=on_step,
            amp_dtype=job.amp_dtype,
        ).detach()

    outputs: List[Any] = []
    limit = BatchLimit(plan.batch_size)
    for offset in range(0, len(plan.seeds), plan.batch_size):
        job.check_cancel()
        batch_seeds = plan.seeds[offset : offset + plan.batch_size]
        outputs.append(job.split(partial(job.unet.run, run), batch_seeds, offset, job.notes, limit))
    return torch.cat(outputs, dim=0), list(plan.seeds)
