"""The model-size pass: every candidate of the job through Algorithm 2 (blended.py) at the model's size.

Candidates run in batches of ``batch_size``, each from its own seed, split further on out-of-memory by the
job's runner (``JobRun.run_batches``); progress counts candidate-steps, so it only grows however the
batches are split.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import List, Sequence

from engine.editing.shared.params import EditParams
from engine.editing.shared.prepare import PreparedEdit
from engine.editing.shared.running import JobRun, candidate_seeds, composited


def clip_guidance(models, params: EditParams, text_embed, augment, lpips_model, amp_dtype, regions=None):
    """The job's blended.ClipGuidance for ``text_embed`` (None without a prompt: no guidance), or for the
    regions' prompts (paper/regional.py's RegionTargets.guided())."""
    from engine.editing.paper.blended import ClipGuidance, GuidanceSettings

    if text_embed is None:
        return None
    settings = GuidanceSettings.from_params(params)
    return ClipGuidance(
        models.clip, text_embed, augment, settings, lpips=lpips_model, amp_dtype=amp_dtype, regions=regions
    )


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


def diffuse(job: JobRun, prepared: PreparedEdit, plan: ModelPass, text_embed, augment, targets=None):
    """(results [candidates, 3, size, size] in [-1, 1], their seeds in result order). ``targets``: the
    regions' (paper/regional.py), guided by their own prompts. Raises Cancelled."""
    import torch

    from engine.editing.paper import blended
    from engine.editing.paper.blended import GuidanceSettings

    models, params = job.models, job.params
    background, model_mask = prepared.background, prepared.model_mask
    settings = GuidanceSettings.from_params(params)
    regions = targets.guided() if targets is not None else None
    guidance = clip_guidance(
        models, params, text_embed, augment, prepared.lpips_model, job.amp_dtype, regions=regions
    )

    def run(unet, batch_seeds: Sequence[int], offset: int):
        labels = None
        if models.class_cond:  # the reference conditions the 512 model on class 0 for every candidate
            labels = torch.zeros(len(batch_seeds), dtype=torch.long, device=models.device)

        def on_step(info: blended.StepInfo) -> None:
            job.step_done(info.guided, info.batch, x0=info.x0)
            step = offset * plan.num_steps + info.step * len(batch_seeds)
            preview = partial(composited, background, model_mask, info.pred_x0[0])
            job.report(step, offset, at=(info.step, info.total), preview=preview)

        if job.timer is not None:
            job.timer.start()
        return blended.blended_diffusion(
            unet,
            prepared.diffusion,
            prepared.init,
            model_mask,
            batch_seeds,
            int(params.skip_timesteps),
            settings=settings,
            guidance=guidance,
            background=background,
            class_labels=labels,
            on_step=on_step,
            amp_dtype=job.amp_dtype,
        ).detach()

    return job.run_batches(run, plan.seeds, plan.batch_size), list(plan.seeds)
