"""Public scripting API: run an edit on a document and wait, then choose / accept / discard candidates.

Works with or without a Krita window (kritarunner, the Scripter): pass the layer explicitly or by name
when there is no view. Example::

    from blended_diffusion import api
    outcome = api.run_edit_and_wait(doc, "a red hat", candidates=2, steps=10, skip_timesteps=5)
    api.choose(outcome, 1)        # show the second candidate
    api.more(outcome)             # the same edit with the next seeds, into the same group, re-ranked
    api.vary(outcome, 0)          # variations of the best one (its pixels start a lower-strength round)
    layer = api.accept(outcome)   # keep it as a normal layer named after the prompt
"""

import atexit
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import errors, extending, iterating, krita_api, naming, recommended, rounds, settings
from .backend.manager import EngineManager, job_error, saved_engine_settings
from .editing import EditRequest, EditResponse, context_box_of, execute, plan_region, request_label
from .model.document import EditOutcome
from .params import EditOptions, engine_params
from .regions import plan_regions, region_prompt

_default_engine: Optional[EngineManager] = None
_engine_lock = threading.Lock()


def default_engine() -> EngineManager:
    """The engine shared by the docker and scripts in this Krita session (stopped when Krita exits), set
    up as the docker's saved engine settings say (local, or remote with host, port, token, fingerprint)."""
    global _default_engine
    with _engine_lock:
        if _default_engine is None:
            _default_engine = EngineManager(saved_engine_settings(settings.shared_store()))
            atexit.register(_default_engine.stop)
        return _default_engine


def prepare(
    doc: Any,
    options: EditOptions,
    layer: Any = None,
    layer_name: Optional[str] = None,
    whole_layer: bool = False,
) -> "tuple[EditRequest, Any, Any]":
    """Read what the edit needs from Krita (GUI thread). Returns (request, source layer, layer to put the
    group above). Raises a PluginError and changes nothing when the document cannot be edited."""
    if doc is None:
        raise errors.NoDocumentError()
    source = krita_api.find_source_layer(doc, layer, layer_name)
    krita_api.layer_format(source)  # refuses CMYK, Lab, grey… before anything else
    krita_api.document_format(doc)
    above = source
    if options.scribble:
        above = krita_api.node_above(source)
        if above is None or above.type() != "paintlayer":
            raise errors.NoScribbleLayerError(source.name())
    params = engine_params(options)
    shown = [m for m in krita_api.region_masks(source) if m.visible()]  # regions: hidden masks are skipped
    parts: List[Tuple[str, bytes]] = []
    if shown:
        if options.background:
            raise errors.RegionsModeError("Editing outside the selection")
        masks = [
            (m.name(), region_prompt(m.name(), options.prompt), krita_api.read_region(doc, m)) for m in shown
        ]
        region, mask, parts = plan_regions(masks, doc.width(), doc.height(), context_box_of)
    else:
        region, mask = plan_region(
            krita_api.read_selection(doc), doc.width(), doc.height(), options.background, whole_layer
        )
    request = EditRequest(
        region=region,
        image_rgba=krita_api.read_layer_rgba(source, region),
        mask=mask,
        params=params,
        init_rgba=krita_api.read_visible_rgba(doc, region) if options.scribble else None,
        regions=parts,
    )
    return request, source, above


def apply(
    doc: Any, source: Any, above: Any, request: EditRequest, response: EditResponse, prompt: str
) -> EditOutcome:
    """Put the candidates into the document (GUI thread): a group above ``above``, best candidate visible."""
    if not krita_api.document_open(doc):
        raise errors.DocumentClosedError()
    if not krita_api.node_alive(doc, above):
        raise errors.StaleResultError("the edited layer was deleted while the engine worked")
    layers = [(naming.candidate_name(c.rank, c.scores), c.box, c.rgba) for c in response.candidates]
    group, nodes = krita_api.add_candidate_group(doc, above, naming.group_name(prompt), layers)
    outcome = EditOutcome(doc, source, group, nodes, response, request, prompt, notes=list(response.notes))
    regions = [prompt for prompt, _mask in request.regions]
    outcome.rounds.append(rounds.Round.from_params(1, rounds.EDIT, request.params, regions=regions))
    outcome.doc_size = (doc.width(), doc.height())
    return outcome


def wait_for(work: Callable[[], Any], poll: float = 0.05) -> Any:
    """Run ``work`` on a worker thread while keeping Qt's event loop (and so Krita's GUI) alive."""
    from .qt import QCoreApplication

    box: dict = {}

    def target() -> None:
        try:
            box["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the calling thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="blended-diffusion-edit", daemon=True)
    thread.start()
    while thread.is_alive():
        QCoreApplication.processEvents()
        thread.join(poll)
    if "error" in box:
        raise box["error"]
    return box.get("value")


def run_edit_and_wait(
    doc: Any,
    prompt: str,
    *,
    layer: Any = None,
    layer_name: Optional[str] = None,
    whole_layer: bool = False,
    engine: Optional[EngineManager] = None,
    on_progress: Optional[Callable[[int, int, Optional[bytes]], None]] = None,
    cancel: Optional[threading.Event] = None,
    **options: Any,
) -> EditOutcome:
    """Edit the selected area of ``doc`` from a text prompt and wait for the candidates.

    ``options`` are :class:`EditOptions` fields: candidates, strength, steps, skip_timesteps, aug_num,
    guidance_scale, seed, scribble, background, baseline, ddim; of candidates, strength, steps,
    guidance_scale and aug_num, those left out take the engine preset's recommended values. An empty
    prompt removes the selected content. When the layer has visible selection masks they are the regions
    (issue 39): each named by its prompt, all edited in one job, ``prompt`` the background's; the selection
    is then not used. Raises :class:`errors.PluginError` subclasses with a message
    for the user; the document is only changed when candidates are added (a group layer named after the
    prompt)."""
    unknown = set(options) - set(EditOptions.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    edit_options = EditOptions(prompt=prompt, **options)
    request, source, above = prepare(doc, edit_options, layer, layer_name, whole_layer)
    manager = engine or default_engine()

    def work() -> EditResponse:
        def run(client: Any) -> EditResponse:
            # Options left out take the engine preset's recommended values, as in the docker.
            status = getattr(manager, "status", None) or {}
            if isinstance(status.get("models"), dict):
                _, edit_defaults = recommended.preset_of(status)
                request.params = recommended.resolve(
                    edit_options, edit_defaults, set(options), request.params["seed"]
                )
            return execute(request, client, on_progress, cancel)

        return _on_engine(manager, run)

    remember_prompt(prompt)
    response = wait_for(work)
    return apply(doc, source, above, request, response, request_label(request, prompt))


def _run_round(
    outcome: EditOutcome,
    request: EditRequest,
    kind: str,
    source: str,
    engine: Optional[EngineManager],
    on_progress: Optional[Callable[[int, int, Optional[bytes]], None]],
    cancel: Optional[threading.Event],
) -> int:
    manager = engine or default_engine()
    outcome.busy = True
    try:
        response = wait_for(lambda: _on_engine(manager, lambda c: execute(request, c, on_progress, cancel)))
    finally:
        outcome.busy = False
    return iterating.add_round(outcome, request, response, kind, source)


def more(
    outcome: EditOutcome,
    count: Optional[int] = None,
    *,
    seed: Optional[int] = None,
    engine: Optional[EngineManager] = None,
    on_progress: Optional[Callable[[int, int, Optional[bytes]], None]] = None,
    cancel: Optional[threading.Event] = None,
) -> int:
    """The same edit with the next seeds: ``count`` more candidates (default: as many as the first round)
    into the same group, the whole group re-ranked (names ``#rank match %``); the candidate shown stays
    shown. Uses the group's own selection and source pixels. Returns how many were added. Raises a
    PluginError and changes nothing when the group, its document or its source layer is gone."""
    request = iterating.prepare_more(outcome, count, seed)
    return _run_round(outcome, request, rounds.MORE, "", engine, on_progress, cancel)


def vary(
    outcome: EditOutcome,
    index: Optional[int] = None,
    strength: float = rounds.VARY_STRENGTH,
    *,
    prompt: Optional[str] = None,
    count: Optional[int] = None,
    seed: Optional[int] = None,
    engine: Optional[EngineManager] = None,
    on_progress: Optional[Callable[[int, int, Optional[bytes]], None]] = None,
    cancel: Optional[threading.Event] = None,
) -> int:
    """Variations of candidate ``index`` (default: the one shown): a round that starts from its pixels
    inside the group's selection at ``strength`` (lower keeps more of it), with the group's prompt or
    ``prompt``, into the same group, re-ranked; the best new candidate is shown, and each new candidate
    names its source (``outcome.round_of(i)``). Returns how many were added."""
    request, source = iterating.prepare_vary(outcome, index, strength, prompt, count, seed)
    if prompt is not None:
        remember_prompt(prompt)
    return _run_round(outcome, request, rounds.VARY, source, engine, on_progress, cancel)


def prompt_history() -> List[str]:
    """The prompts remembered for the docker's prompt field, newest first (kept with the settings)."""
    return list(settings.shared_store().prompt_history)


def remember_prompt(prompt: str) -> None:
    store = settings.shared_store()
    store.remember_prompt(prompt)
    try:
        store.save()
    except OSError:
        pass  # a history not saved loses nothing of the edit


def clear_prompt_history() -> None:
    """Forget the remembered prompts (the docker's Clear)."""
    store = settings.shared_store()
    store.prompt_history = []
    store.save()


def _on_engine(manager: EngineManager, run: Callable[[Any], EditResponse]) -> EditResponse:
    """``run(client)`` on a connection to the engine (started if needed); failures become messages."""
    client = manager.connect()
    try:
        return run(client)
    except errors.PluginError:
        raise
    except Exception as exc:  # noqa: BLE001 - mapped to a message for the user
        raise job_error(exc, manager.log_tail() if not manager.running else "") from exc
    finally:
        try:
            client.close()
        except Exception:  # noqa: BLE001
            pass


def _check_open(outcome: EditOutcome) -> None:
    if outcome.finished:
        raise errors.StaleResultError("this edit was already accepted or discarded")
    iterating.follow_undo(outcome)  # Undo may have taken a More or Vary round back
    if not krita_api.node_alive(outcome.doc, outcome.group):
        raise errors.StaleResultError()


def choose(outcome: EditOutcome, index: int) -> None:
    """Show candidate ``index`` (0 = best) and hide the others."""
    _check_open(outcome)
    if not 0 <= index < len(outcome.layers):
        raise IndexError(f"candidate index {index} out of range 0..{len(outcome.layers) - 1}")
    krita_api.show_only(outcome.layers, index)
    outcome.chosen = index
    krita_api.refresh(outcome.doc)


def accept(outcome: EditOutcome, index: Optional[int] = None) -> Any:
    """Keep the chosen candidate (or ``index``) as a normal paint layer named after the prompt, where the
    group was; remove the group. Returns the new layer."""
    _check_open(outcome)
    index = outcome.chosen if index is None else index
    if not 0 <= index < len(outcome.layers):
        raise IndexError(f"candidate index {index} out of range 0..{len(outcome.layers) - 1}")
    candidate = outcome.response.candidates[index]
    node = krita_api.add_paint_layer(
        outcome.doc, outcome.group, naming.accepted_name(outcome.prompt), candidate.box, candidate.rgba
    )
    krita_api.remove_node(outcome.group)
    outcome.finished = True
    krita_api.refresh(outcome.doc)
    return node


def discard(outcome: EditOutcome) -> None:
    """Remove the candidates' group; the document is as before the edit (an extension's canvas is
    returned to its old size)."""
    _check_open(outcome)
    krita_api.remove_node(outcome.group)
    if outcome.canvas_restore is not None:
        krita_api.resize_canvas(outcome.doc, *outcome.canvas_restore)
    outcome.finished = True
    krita_api.refresh(outcome.doc)


# ---------------------------------------------------------------- extend the canvas with text


def prepare_extend(
    doc: Any,
    options: EditOptions,
    sides: Dict[str, int],
    side_prompts: Optional[Dict[str, str]] = None,
    blend_band: int = 0,
) -> extending.ExtendRequest:
    """Read the visible image (GUI thread) and check the sides; raises a PluginError, changing nothing."""
    if doc is None:
        raise errors.NoDocumentError()
    krita_api.document_format(doc)  # refuses CMYK, Lab, grey… before anything else
    size = (doc.width(), doc.height())
    extending.check_sides(sides, side_prompts, image_size=size)  # bad sides fail before the pixels are read
    image = krita_api.read_visible_rgba(doc, (0, 0, size[0], size[1]))
    return extending.make_request(size, image, engine_params(options), sides, side_prompts, blend_band)


def apply_extend(
    doc: Any, request: extending.ExtendRequest, response: EditResponse, prompt: str
) -> EditOutcome:
    """Grow the canvas (one undoable step), then add the candidates as a group on top of the stack."""
    if (doc.width(), doc.height()) != request.size:
        raise errors.StaleResultError("the canvas size changed while the engine worked")
    krita_api.resize_canvas(doc, *request.resize_args())
    try:
        above = krita_api.top_layer(doc)
        layers = [(naming.candidate_name(c.rank, c.scores), c.box, c.rgba) for c in response.candidates]
        label = request.label(prompt)
        group, nodes = krita_api.add_candidate_group(doc, above, naming.group_name(label), layers)
    except Exception:
        krita_api.resize_canvas(doc, *request.restore_args())
        raise
    return EditOutcome(
        doc,
        None,
        group,
        nodes,
        response,
        request,  # type: ignore[arg-type]
        label,
        notes=list(response.notes),
        canvas_restore=request.restore_args(),
    )


def run_extend_and_wait(
    doc: Any,
    prompt: str,
    left: int = 0,
    right: int = 0,
    top: int = 0,
    bottom: int = 0,
    side_prompts: Optional[Dict[str, str]] = None,
    *,
    engine: Optional[EngineManager] = None,
    on_progress: Optional[Callable[[int, int, Optional[bytes]], None]] = None,
    cancel: Optional[threading.Event] = None,
    blend_band: int = 0,
    **options: Any,
) -> EditOutcome:
    """Grow the canvas of ``doc`` by the given pixels per side and fill the new area from text (each side
    from its own prompt in ``side_prompts``, else ``prompt``); wait for the candidates.

    ``options`` are :class:`EditOptions` fields as for :func:`run_edit_and_wait` (candidates, strength,
    steps, skip_timesteps, aug_num, guidance_scale, seed, ddim). The result works with :func:`choose`,
    :func:`accept` (keeps the grown canvas) and :func:`discard` (also returns the canvas to its old size).
    Nothing in the document changes before the candidates are there."""
    unknown = set(options) - set(EditOptions.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    edit_options = EditOptions(prompt=prompt, **options)
    sides = {"left": left, "right": right, "top": top, "bottom": bottom}
    request = prepare_extend(doc, edit_options, sides, side_prompts, blend_band)
    manager = engine or default_engine()

    def work() -> EditResponse:
        return _on_engine(manager, lambda client: extending.execute(request, client, on_progress, cancel))

    response = wait_for(work)
    return apply_extend(doc, request, response, prompt)
