"""The model-size pass: every candidate of the job through Algorithm 2 (blended.py) at the model's size.

Candidates run in batches of ``batch_size`` (x ``prune_factor`` when a quality mode prunes), each from its
own seed, split further on out-of-memory by the job's policy (``JobRun.split``); progress counts
candidate-steps (a pruned candidate's as if it ran on), so it only grows however the batches are split.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, List, Sequence

from engine.editing.shared.params import EditParams
from engine.editing.shared.prepare import PreparedEdit, to_pil
from engine.editing.shared.running import PREVIEW_MAX_SIDE, BatchLimit, JobRun, candidate_seeds


def guidance_settings(params: EditParams):
    """The blended.GuidanceSettings of these parameters (shared by edit() and the extend job)."""
    from engine.editing.paper.blended import GuidanceSettings

    return GuidanceSettings(
        clip_guidance_lambda=float(params.clip_guidance_lambda),
        range_lambda=float(params.range_lambda),
        lpips_sim_lambda=float(params.lpips_sim_lambda),
        l2_sim_lambda=float(params.l2_sim_lambda),
        background_preservation_loss=bool(params.background_preservation_loss),
        local_clip_guided_diffusion=bool(params.local_clip_guided_diffusion),
        enforce_background=bool(params.enforce_background),
        ddim=bool(params.ddim),
        guidance_grad=str(params.guidance_grad),
    )


def _pruner(models, background, model_mask, text_embed, keep: int, chosen: List[int]):
    """choose(pred_x0) for blended.Prune: the ``keep`` best by the final ranking's score of the composite.

    The chosen indices (in generation order) also replace the contents of ``chosen``.
    """
    from engine.editing.shared.ranking import rank_order, score_candidates

    def choose(pred_x0):
        composed = background * (1 - model_mask) + pred_x0 * model_mask
        best = sorted(rank_order(score_candidates(models.clip, composed, model_mask, text_embed))[:keep])
        chosen[:] = best
        return best

    return choose


@dataclass
class ModelPass:
    """The plan of the model-size pass, known before its first step (the progress total needs it)."""

    seeds: List[int]  # every candidate started
    batch_size: int  # candidates started per batch
    num_steps: int
    prune_factor: int
    prune_after: int

    @property
    def work(self) -> int:
        """Its candidate-steps: the progress it reports."""
        return self.num_steps * len(self.seeds)

    @property
    def kept(self) -> int:
        return len(self.seeds) // self.prune_factor


def plan_model_pass(params: EditParams, diffusion, guided: bool, notes: List[str]) -> ModelPass:
    from engine.editing.paper.modes import prune_step

    num_steps = diffusion.num_timesteps - int(params.skip_timesteps)
    prune_factor = int(params.prune_factor) if guided else 1  # nothing to rank by without a prompt
    prune_after = prune_step(num_steps, prune_factor, float(params.prune_at))
    if not prune_after:
        prune_factor = 1
    seeds = candidate_seeds(params, prune_factor)
    if prune_factor > 1:
        notes.append(
            f"started {len(seeds)} candidates and kept the best {len(seeds) // prune_factor} after step "
            f"{prune_after} of {num_steps} (ranked on their predicted result)"
        )
    return ModelPass(seeds, int(params.batch_size) * prune_factor, num_steps, prune_factor, prune_after)


def diffuse(job: JobRun, prepared: PreparedEdit, plan: ModelPass, text_embed, augment):
    """(results [kept, 3, size, size] in [-1, 1], their seeds in result order). Raises Cancelled."""
    import torch

    from engine.editing.paper import blended

    models, params = job.models, job.params
    device = models.device
    background, model_mask = prepared.background, prepared.model_mask
    settings = guidance_settings(params)
    num_steps = plan.num_steps
    kept_seeds: List[int] = []  # the candidates' seeds in result order (pruning drops some)

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

        chosen: List[int] = list(range(len(batch_seeds)))
        prune = None
        if plan.prune_factor > 1:
            keep = max(1, len(batch_seeds) // plan.prune_factor)
            choose = _pruner(models, background, model_mask, text_embed, keep, chosen)
            prune = blended.Prune(plan.prune_after, choose)
        if job.timer is not None:
            job.timer.start()
        result = blended.blended_diffusion(
            unet,
            prepared.diffusion,
            prepared.init,
            model_mask,
            batch_seeds,
            int(params.skip_timesteps),
            settings,
            background=background,
            clip_model=models.clip if text_embed is not None else None,
            text_embed=text_embed,
            augment=augment,
            lpips_model=prepared.lpips_model,
            class_labels=labels,
            on_step=on_step,
            amp_dtype=job.amp_dtype,
            guidance_every=int(params.guidance_every),
            prune=prune,
            reuse_guidance=bool(params.reuse_guidance),
        ).detach()
        kept_seeds.extend(batch_seeds[i] for i in chosen)
        return result

    outputs: List[Any] = []
    limit = BatchLimit(plan.batch_size)
    for offset in range(0, len(plan.seeds), plan.batch_size):
        job.check_cancel()
        batch_seeds = plan.seeds[offset : offset + plan.batch_size]
        outputs.append(job.split(partial(job.unet.run, run), batch_seeds, offset, job.notes, limit))
    return torch.cat(outputs, dim=0), kept_seeds
