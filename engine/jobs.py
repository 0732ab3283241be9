"""The job kinds the engine serves over the bridge, each a :class:`bridge.jobqueue.JobRunner`.

``edit``: :class:`EditRunner` runs :func:`engine.editing.editor.edit` on the models loaded once at start-up.
``extend``: :class:`ExtendRunner` runs :func:`engine.editing.extend.extend` (text-guided extrapolation).
It checks a request's parameters against :class:`engine.editing.shared.params.EditParams` before it is
queued, so a bad request is refused at once, and maps the engine's errors to the bridge's error codes.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import re
import threading
import traceback
from typing import Any, Dict, List, Optional, Tuple

from bridge import errors
from bridge.jobqueue import Job, JobRunner, RunnerOutput
from bridge.limits import DEFAULT_LIMITS, SIDES, JobLimits
from bridge.png import CHANNELS as PNG_CHANNELS
from bridge.png import encode_png
from bridge.protocol import Limits, png_info
from engine import job_regions, runner_status
from engine.editing.shared.params import REMOVED_PARAMS, removed_param_message

log = logging.getLogger("engine.jobs")


def _png_bytes(image: Any, level: int = 1) -> bytes:
    """PNG of a PIL image with bridge.png (no per-row filter search: fast for large patches)."""
    mode = image.mode if image.mode in PNG_CHANNELS else ("RGBA" if "A" in image.getbands() else "RGB")
    if image.mode != mode:
        image = image.convert(mode)
    return encode_png(image.width, image.height, mode, image.tobytes(), level)


def _field_kind(spec: dataclasses.Field) -> Tuple[type, bool]:
    """The scalar type of an EditParams field and whether it may be None (from its annotation or default)."""
    annotation = spec.type if isinstance(spec.type, str) else getattr(spec.type, "__name__", str(spec.type))
    optional = "None" in annotation or "Optional" in annotation
    for kind in (bool, int, float, str):
        if re.search(rf"\b{kind.__name__}\b", annotation):
            return kind, optional
    default = spec.default if spec.default is not dataclasses.MISSING else None
    return (type(default) if default is not None else object), optional or default is None


def _reporter(job: Job):
    """The editor's progress callback, forwarded to the job's client."""

    def on_progress(progress: Any) -> None:
        preview = getattr(progress, "preview", None)
        job.progress(
            progress.step,
            progress.total,
            getattr(progress, "candidate_offset", 0),
            _png_bytes(preview) if preview is not None else None,
        )

    return on_progress


# zlib level of result patches when the client does not say (bridge.jobqueue.Job.png_level): level 1
# compresses photos well for a remote engine; the plugin asks for 0 from the engine it started itself.
DEFAULT_PATCH_PNG_LEVEL = 1


def _patch_png(candidate: Any, level: int) -> bytes:
    """The candidate's RGBA patch as PNG, from its pixel array (Candidate.patch_rgba: no PIL copy)."""
    rgba = candidate.patch_rgba()
    return encode_png(rgba.shape[1], rgba.shape[0], "RGBA", rgba, level)


def _candidates_out(result_candidates: Any, level: Optional[int] = None) -> RunnerOutput:
    """(candidate entries, attachments): each candidate's patch as the PNG attachment it names."""
    level = DEFAULT_PATCH_PNG_LEVEL if level is None else level
    candidates = []
    attachments = []
    for index, candidate in enumerate(result_candidates):
        name = f"candidate{index}"
        attachments.append((name, _patch_png(candidate, level)))
        candidates.append(
            {
                "rank": candidate.rank,
                "seed": candidate.seed,
                "scores": dict(candidate.scores),
                "box": list(candidate.box),
                "attachment": name,
            }
        )
    return candidates, attachments  # type: ignore[return-value]


class EditRunner(JobRunner):
    """The ``edit`` job: engine.editing.editor.edit on the models loaded once at start-up.

    Its attachments: ``image``, then ``mask`` or regions (``region0``... with the ``region_prompts``
    param, engine/job_regions.py), and optionally ``init``.
    """

    required_images = ("image",)
    optional_images = ("mask", "init")
    numbered_images = (job_regions.PREFIX,)

    def __init__(
        self,
        models: Any,
        limits: Limits,
        edit_defaults: Optional[Dict[str, Any]] = None,
        log_path: Optional[str] = None,
        preset_ref: Optional[str] = None,
        job_limits: Optional[JobLimits] = None,
    ) -> None:
        from engine.editing import editor

        self.models = models
        self.limits = limits
        self.job_limits = job_limits or DEFAULT_LIMITS  # bridge/limits.py: what one job may ask for
        # The preset's recommended settings: used for the parameters a request leaves out.
        self.edit_defaults: Dict[str, Any] = dict(edit_defaults or {})
        self.log_path = log_path
        self.preset_ref = preset_ref  # the name or folder the models were loaded from, for the doctor
        self._editor = editor
        self._param_fields = {f.name: f for f in dataclasses.fields(editor.EditParams)}

    def validate(self, params: Dict[str, Any], images: Dict[str, bytes]) -> Dict[str, Any]:
        rest, prompts = job_regions.split_request(params, images, self.job_limits)
        checked = self._check_params(rest)
        width, height = _png_size(images.get("image"))
        detail = self._detail_work(checked, images)
        if prompts is None:
            return self._admit(checked, width * height, detail=detail)
        job_regions.check_job(checked, prompts, self._check_prompt)
        # estimated as guided when a region's prompt is, whatever the background prompt
        estimate = dict(checked, prompt=job_regions.estimate_prompt(prompts))
        windows = job_regions.time_factor(str(getattr(self.models, "method", "paper")), prompts)
        checked = job_regions.admitted(
            checked, self._admit(estimate, width * height, windows=windows, detail=detail)
        )
        return {**checked, job_regions.PROMPTS: prompts}

    def _detail_work(self, checked: Dict[str, Any], images: Dict[str, bytes]) -> Tuple[int, int]:
        """(tile-steps, box pixels) of the detail stage on this job's mask (engine/editing/paper/detail.py),
        for admission; (0, 0) when it is off, not needed, or the mask is not readable yet (the job says
        why). A single region is that region's plain edit; several are never detailed."""
        name = job_regions.detail_mask_name(images)
        if checked.get("detail", "off") == "off" or name is None:
            return (0, 0)
        from engine.editing.paper import detail
        from engine.editing.shared import imaging

        try:
            params = self._editor.EditParams(**checked)
            mask = self._decode(name, images[name])
            soft = imaging.mask_array(mask, mask.size)
            soft = 255 - soft if params.invert_mask else soft
            return tuple(detail.planned_work(params, soft, int(self.models.image_size)))  # type: ignore
        except Exception:  # noqa: BLE001 - the job itself refuses a bad mask, with its own message
            log.warning("detail stage not estimated:\n%s", traceback.format_exc())
            return (0, 0)

    def _check_params(self, params: Dict[str, Any]) -> Dict[str, Any]:
        """The request's edit parameters (the preset's for those left out), typed and within the limits."""
        checked: Dict[str, Any] = {}
        for name, value in {**self.edit_defaults, **params}.items():
            spec = self._param_fields.get(name)
            if name in REMOVED_PARAMS:
                raise errors.JobFailed(errors.INVALID_INPUT, removed_param_message(name))
            if spec is None:
                raise errors.JobFailed(errors.INVALID_INPUT, f"unknown edit parameter {name!r}")
            kind, optional = _field_kind(spec)
            if value is None and optional:
                checked[name] = None
                continue
            if kind is bool:
                ok = isinstance(value, bool)
            elif kind is int:
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif kind is float:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
                value = float(value) if ok else value
            elif kind is str:
                ok = isinstance(value, str)
            else:
                ok = isinstance(value, (str, int, float, bool))
            if not ok:
                raise errors.JobFailed(
                    errors.INVALID_INPUT,
                    "edit parameter {!r} must be {}{}, not {!r}".format(
                        name, kind.__name__, " or null" if optional else "", value
                    ),
                )
            checked[name] = value
        try:
            edit_params = self._editor.EditParams(**checked)
            quality = checked.get("quality", "paper")
            if quality != "paper":
                # the mode sets the levers the request did not name (engine/editing/paper/modes.py)
                from engine.editing.paper.modes import apply_mode

                edit_params = apply_mode(edit_params, quality, set(params) - {"quality"})
                checked = edit_params.to_dict()
            self._editor.validate_params(edit_params, self.job_limits)
            self._check_prompt(edit_params.prompt, "prompt")
        except Exception as exc:
            raise errors.JobFailed(errors.INVALID_INPUT, str(exc)) from None
        return checked

    def _check_prompt(self, prompt: str, what: str) -> None:
        from engine.editing.shared.limits import check_prompt_tokens

        clip = getattr(self.models, "clip", None)
        check_prompt_tokens(prompt, what, int(getattr(clip, "context_length", 77)), self.job_limits)

    def _admit(
        self,
        checked: Dict[str, Any],
        image_pixels: int,
        canvas_pixels: int = 0,
        windows: int = 1,
        detail: Tuple[int, int] = (0, 0),
    ) -> Dict[str, Any]:
        """Admission by estimate (engine/editing/admission.py): the params to run with (a smaller batch
        when only that fits), or JobFailed(too_large) with the figures. ``detail``: the detail stage's
        (tile-steps, box pixels) (:meth:`_detail_work`), counted when it will run."""
        from engine.editing.admission import AdmissionError, admit, split_batch
        from engine.editing.paper.detail import work_seconds
        from engine.editing.timing import StepTimes, estimate_seconds, has_step_times

        params = self._editor.EditParams(**checked)
        seconds, detail_seconds = None, 0.0
        try:
            times = StepTimes().get(self._timing_key())
            seconds = estimate_seconds(params, times, guided=bool(params.prompt))
            detail_seconds = work_seconds(params, detail[0], times)
            if params.detail == "auto" and has_step_times(times) and not detail_seconds:
                detail = (0, 0)  # auto will leave the stage off: it costs more than the first pass
        except Exception:  # noqa: BLE001 - no estimate: admitted by memory alone
            log.warning("no time estimate for admission:\n%s", traceback.format_exc())
        try:
            cap = self.job_limits.max_job_seconds
            admission = admit(
                self.models,
                params,
                image_pixels,
                canvas_pixels,
                windows,
                seconds,
                cap,
                detail=detail,
                detail_seconds=detail_seconds,
            )
        except AdmissionError as exc:
            raise errors.JobFailed(errors.TOO_LARGE, str(exc)) from None
        log.info(
            "admitted: about %.2f GB at %d candidates at once (free: %s), %s s",
            admission.need_bytes / 1e9,
            admission.batch_size,
            "?" if admission.free_bytes is None else f"{admission.free_bytes / 1e9:.2f} GB",
            "?" if admission.seconds is None else f"{admission.seconds:.0f}",
        )
        if admission.batch_size < int(params.batch_size):
            smaller = split_batch(params, admission.batch_size)
            log.info("%d candidates at once instead of %d, to fit", smaller.batch_size, params.batch_size)
            checked = dict(checked, batch_size=smaller.batch_size, iterations_num=smaller.iterations_num)
        return checked

    def _timing_key(self) -> str:
        return runner_status.timing_key(self.models)

    def timing(self) -> Dict[str, Any]:
        return runner_status.timing(self.models, self.edit_defaults)

    def status(self) -> Dict[str, Any]:
        return runner_status.status(self.models, self.edit_defaults, self.preset_ref, self.log_path)

    def _decode(self, name: str, data: bytes, mode: Optional[str] = None) -> Any:
        from PIL import Image

        try:
            image = Image.open(io.BytesIO(data))
            image.load()
        except Exception as exc:
            raise errors.JobFailed(
                errors.INVALID_INPUT, f"{name} is not a readable PNG image: {exc}"
            ) from None
        return image

    def _work(self, job: Job) -> RunnerOutput:
        """The job itself; run() maps its errors to the bridge's codes."""
        from engine.editing.timing import StepTimer, StepTimes

        timer = StepTimer(StepTimes(), self._timing_key())
        timer.begin()  # the decoding and the PNG encoding below are part of the time the user waits
        image = self._decode("image", job.images["image"])
        mask = self._decode("mask", job.images["mask"]) if "mask" in job.images else None
        init = self._decode("init", job.images["init"]) if "init" in job.images else None
        values = dict(job.params)
        prompts = values.pop(job_regions.PROMPTS, None)
        params = self._editor.EditParams(**values)
        extra: Dict[str, Any] = {}  # a mask edit calls edit() as before regions existed
        if prompts is not None:
            from engine.editing.shared.regions import Region

            names = [job_regions.region_name(index) for index in range(len(prompts))]
            regions = [Region(self._decode(n, job.images[n]), p) for n, p in zip(names, prompts)]
            extra["regions"] = regions
        result = self._editor.edit(
            image,
            mask,
            self.models,
            params,
            init_image=init,
            progress=_reporter(job),
            cancel=job.cancel,
            timer=timer,
            **extra,
        )
        candidates, attachments = _candidates_out(result.candidates, job.png_level)
        _save_times(timer)
        fields = {
            "candidates": candidates,
            "box": list(result.box),
            "notes": list(result.notes),
            **self.timing(),  # updated by this job's step times
        }
        return fields, attachments

    def run(self, job: Job) -> RunnerOutput:
        from PIL import Image

        from engine.errors import Cancelled, EngineError, InputError
        from engine.models.devices import is_out_of_memory

        Image.MAX_IMAGE_PIXELS = self.limits.max_image_pixels  # PIL's bomb check, at our own limit
        failure: Optional[Tuple[str, str]] = None
        # --max-job-seconds also bounds a job whose time could not be estimated (like a statement timeout)
        cap, overtime = self.job_limits.max_job_seconds, threading.Event()
        watchdog = threading.Timer(cap, lambda: (overtime.set(), job.cancel.set())) if cap else None
        if watchdog is not None:
            watchdog.daemon = True
            watchdog.start()
        try:
            return self._work(job)
        except errors.JobFailed:
            raise
        except Cancelled as exc:
            failure = (errors.CANCELLED, str(exc) or "the job was cancelled")
            if overtime.is_set():
                failure = (
                    errors.TOO_LARGE,
                    f"the job ran past this engine's limit of {cap:g} s per job "
                    "(max_job_seconds) and was stopped: ask for fewer candidates or steps",
                )
        except InputError as exc:
            failure = (errors.INVALID_INPUT, str(exc))
        except EngineError as exc:
            failure = (getattr(exc, "code", errors.ENGINE_ERROR), str(exc))
        except Exception as exc:
            if is_out_of_memory(exc):
                detail = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
                failure = (
                    errors.OUT_OF_MEMORY,
                    f"the engine ran out of memory ({detail}); try a smaller selection, fewer candidates "
                    "(batch_size) or a smaller model",
                )
            else:
                log.error("job %s failed:\n%s", job.id, traceback.format_exc())
                failure = (errors.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
        finally:
            job.images = {}  # the PNGs are not needed any more
            if watchdog is not None:
                watchdog.cancel()
        # Outside the except blocks, so the traceback (holding tensors) is gone before memory is released.
        release_memory()
        raise errors.JobFailed(*failure)


def _png_size(data: Optional[bytes]) -> Tuple[int, int]:
    """(width, height) from a PNG's header (the server checked it is one before validate); (0, 0)
    without one (a runner asked directly)."""
    if data is None:
        return 0, 0
    try:
        info = png_info(data)
    except ValueError as exc:
        raise errors.JobFailed(errors.INVALID_INPUT, f"image: {exc}") from None
    return info.width, info.height


def _save_times(timer: Any) -> None:
    try:
        timer.save()
    except Exception:  # noqa: BLE001 - a step-times file that cannot be written must not fail the edit
        log.warning("step times not saved:\n%s", traceback.format_exc())


def release_memory() -> None:
    """Free what a failed job left behind (Python garbage, the GPU allocator's caches)."""
    from engine.models.devices import free_memory

    free_memory()


class ExtendRunner(EditRunner):
    """The ``extend`` job: engine.editing.extend.extend (text-guided extrapolation) on the same models.

    Its params are the edit parameters plus ``left``/``right``/``top``/``bottom`` (pixels),
    ``side_prompts`` ({side: prompt}), ``blend_band`` and ``window``; one attachment, ``image``. Each
    candidate's attachment is the whole new canvas as RGBA, alpha 255 on the new pixels and 0 on the
    original (a ramp inside it only with ``blend_band``).
    """

    required_images = ("image",)
    optional_images = ()
    numbered_images = ()
    EXTENSION_KEYS = ("left", "right", "top", "bottom", "side_prompts", "blend_band", "window")

    def validate(self, params: Dict[str, Any], images: Dict[str, bytes]) -> Dict[str, Any]:
        from engine.editing.extend import ExtendSpec, validate_spec
        from engine.editing.shared.limits import check_extend

        extension = {key: params[key] for key in self.EXTENSION_KEYS if key in params}
        side_prompts = extension.get("side_prompts", {})
        if not isinstance(side_prompts, dict):
            raise errors.JobFailed(errors.INVALID_INPUT, "side_prompts must be an object {side: prompt}")
        for key in ("left", "right", "top", "bottom", "blend_band", "window"):
            value = extension.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int):
                raise errors.JobFailed(errors.INVALID_INPUT, f"{key} must be a whole number, not {value!r}")
        size = _png_size(images.get("image"))
        spec = ExtendSpec(**extension)
        try:
            validate_spec(spec)
            # before anything is planned: the sides, the canvas and its number of windows
            sides = {side: spec.amount(side) for side in SIDES}
            model_size = int(getattr(self.models, "image_size", 256))
            windows = check_extend(
                size, sides, model_size, self.job_limits, int(spec.blend_band), int(spec.window)
            )
            for side, prompt in spec.side_prompts.items():
                self._check_prompt(prompt, f"{side} prompt")
        except Exception as exc:
            raise errors.JobFailed(errors.INVALID_INPUT, str(exc)) from None
        rest = {key: value for key, value in params.items() if key not in self.EXTENSION_KEYS}
        checked = self._check_params(rest)
        if checked.get("invert_mask"):
            raise errors.JobFailed(errors.INVALID_INPUT, "invert_mask has no meaning when extending")
        width = size[0] + spec.left + spec.right
        height = size[1] + spec.top + spec.bottom
        checked = self._admit(checked, size[0] * size[1], width * height, windows)
        return {**checked, **extension}

    def _work(self, job: Job) -> RunnerOutput:
        from engine.editing.extend import ExtendSpec, extend

        image = self._decode("image", job.images["image"])
        params = dict(job.params)
        spec = ExtendSpec(**{key: params.pop(key) for key in self.EXTENSION_KEYS if key in params})
        edit_params = self._editor.EditParams(**params)
        result = extend(image, spec, self.models, edit_params, progress=_reporter(job), cancel=job.cancel)
        candidates, attachments = _candidates_out(result.candidates, job.png_level)
        width, height = result.canvas_size
        fields = {
            "candidates": candidates,
            "box": [0, 0, width, height],
            "canvas_size": [width, height],
            "offset": list(result.offset),
            "windows": result.windows,
            "notes": list(result.notes),
        }
        return fields, attachments


def job_runners(
    models: Any,
    limits: Limits,
    edit_defaults: Optional[Dict[str, Any]] = None,
    log_path: Optional[str] = None,
    preset_ref: Optional[str] = None,
    job_limits: Optional[JobLimits] = None,
) -> Dict[str, JobRunner]:
    """The runners ``python -m engine serve`` hands the bridge server, by job kind (``edit`` first: the
    server reports device and models from the first)."""
    return {
        "edit": EditRunner(models, limits, edit_defaults, log_path, preset_ref, job_limits),
        "extend": ExtendRunner(models, limits, edit_defaults, log_path, preset_ref, job_limits),
    }


edit_runners = job_runners  # the earlier name


__all__: List[str] = ["EditRunner", "ExtendRunner", "edit_runners", "job_runners"]
