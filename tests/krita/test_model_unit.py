"""The plugin's model (krita_plugin/blended_diffusion/model/): each document's state, the job in flight and
its pending action, rounds, refusals, messages and questions, driven with fake ports (model_fakes.py)."""

import threading

import pytest
from blended_diffusion import errors, rounds, workflow
from blended_diffusion.model.document import Documents, EditOutcome
from blended_diffusion.model.jobs import AddRound, Job, PlaceEdit, PlaceExtension
from blended_diffusion.model.options import edit_options, extend_sides

from tests.krita.model_fakes import FakeDoc, finish, make_model, request, response


def test_an_edit_is_a_job_in_flight_for_its_document_until_its_reply_is_placed(tmp_path):
    model, documents, jobs, _ = make_model(tmp_path)
    doc = documents.active
    changes = []
    model.changed.connect(lambda: changes.append(model.flow.state))
    assert model.start_edit(model.options_from_settings())
    state = model.states.find(doc)
    job = state.job
    assert isinstance(job, Job) and isinstance(job.pending, PlaceEdit)
    assert (job.pending.doc, job.pending.source, job.pending.prompt) == (doc, "source of a", "a red kite")
    assert job.pending.request is jobs.started[-1]["request"] and job.cancel is jobs.started[-1]["cancel"]
    assert model.worker is jobs.started[-1]["thread"] and model.flow.state == workflow.STARTING
    assert model.outcome is None and changes[-1] == workflow.STARTING
    assert model.settings.prompt_history == ["a red kite"]
    finish(jobs)
    assert documents.placed == [job.pending]
    assert model.outcome.doc is doc and model.outcome is state.outcome
    assert [c.rank for c in model.candidates()] == [1, 2]
    assert state.job is None and model.worker is None and model.flow.state == workflow.REVIEW
    assert model.flow.device == "fake device" and model.last_message == ""


def test_a_second_job_is_refused_while_one_runs_and_nothing_changes(tmp_path):
    model, _, jobs, _ = make_model(tmp_path)
    model.start_edit(model.options_from_settings())
    first = model.job
    assert not model.start_edit(model.options_from_settings())
    assert not model.more()
    assert not model.start_extend(model.options_from_settings(), {"left": 8}, {})
    assert model.job is first and len(jobs.started) == 1
    assert model.last_message == str(errors.BusyError()) and model.message_is_error


def test_each_document_keeps_its_own_group_and_the_docker_shows_the_last_placed(tmp_path):
    model, documents, jobs, _ = make_model(tmp_path)
    a, b = documents.active, FakeDoc("b")
    model.start_edit(model.options_from_settings())
    finish(jobs, response(2))
    group_a = model.outcome
    documents.active = b
    model.start_edit(model.options_from_settings())
    assert model.states.find(b).job is model.job and model.states.find(a).job is None
    assert model.outcome is group_a  # while b's job runs the docker still shows a's group
    finish(jobs, response(3))
    assert model.outcome.doc is b and len(model.outcome.layers) == 3
    assert model.states.find(a).outcome is group_a and len(model.states) == 2
    a.open = False  # a closed document's state goes when the next job starts
    model.discard()
    model.start_edit(model.options_from_settings())
    assert model.states.find(a) is None and model.states.find(b) is not None


def test_more_is_a_round_pending_on_its_group_which_is_busy_until_the_job_ends(tmp_path):
    model, documents, jobs, _ = make_model(tmp_path)
    model.start_edit(model.options_from_settings())
    finish(jobs)
    group = model.outcome
    assert model.more()
    pending = model.job.pending
    assert isinstance(pending, AddRound) and pending.outcome is group and pending.kind == rounds.MORE
    assert pending.doc is group.doc and pending.request.params["seed"] == 99
    assert group.busy and model.candidates() == group.response.candidates
    model.accept()  # changes the group: refused while the round runs
    assert model.last_message == str(errors.BusyError()) and not group.finished
    finish(jobs, response(2, seed=99))
    assert not group.busy and len(group.response.candidates) == 4 and model.outcome is group
    assert model.flow.state == workflow.REVIEW


def test_a_failed_round_leaves_its_group_open_for_review(tmp_path):
    model, _, jobs, notices = make_model(tmp_path)
    model.start_edit(model.options_from_settings())
    finish(jobs)
    group = model.outcome
    assert model.vary(strength=0.3)
    pending = model.job.pending
    assert pending.kind == rounds.VARY and pending.source == "variation at 0.3"
    finish(jobs, error=errors.EngineCrashedError("connection reset", "boom"))
    assert not group.busy and model.outcome is group and model.flow.state == workflow.REVIEW
    assert model.message_is_error and model.last_message.startswith("The engine stopped")
    assert notices.shown[-1][0] == "message"  # no docker shown: the error goes to a window


def test_an_extension_is_placed_as_an_extension(tmp_path):
    model, documents, jobs, _ = make_model(tmp_path)
    assert model.start_extend(model.options_from_settings(), {"left": 16, "top": 0}, {})
    assert isinstance(model.job.pending, PlaceExtension) and model.job.pending.prompt == "a red kite"
    finish(jobs)
    assert isinstance(documents.placed[-1], PlaceExtension) and model.outcome.source is None


def test_no_selection_asks_and_yes_edits_the_whole_layer(tmp_path):
    model, documents, jobs, notices = make_model(tmp_path)
    documents.selection = False
    shown = []
    model.attach_view(lambda: bool(shown))
    assert not model.start_edit(model.options_from_settings())
    assert model.question.text.endswith("Edit the whole layer instead?") and not jobs.started
    assert notices.shown == [("question", model.question.text)]  # the docker is not shown
    model.answer(False)
    assert model.question is None and not jobs.started
    shown.append(True)
    model.start_edit(model.options_from_settings())
    assert len(notices.shown) == 1  # asked in the docker this time
    model.answer(True)
    assert documents.calls[-1] == ("prepare_edit", True) and model.job is not None


def test_cancel_sets_the_jobs_event_and_a_cancelled_job_says_so(tmp_path):
    model, _, jobs, _ = make_model(tmp_path)
    model.start_edit(model.options_from_settings())
    event = model.job.cancel
    assert isinstance(event, threading.Event) and not event.is_set()
    model.cancel()
    assert event.is_set()
    finish(jobs, error=errors.CancelledError())
    assert model.flow.state == workflow.ERROR and model.flow.detail == "cancelled"
    assert model.last_message == str(errors.CancelledError()) and not model.message_is_error
    assert model.job is None and model.outcome is None


def test_a_reply_for_a_closed_document_or_a_deleted_layer_changes_nothing_shown(tmp_path):
    model, documents, jobs, _ = make_model(tmp_path)
    model.start_edit(model.options_from_settings())
    documents.fail_place = errors.DocumentClosedError()
    finish(jobs)
    assert model.outcome is None and model.flow.state == workflow.READY
    assert model.last_message == str(errors.DocumentClosedError()) and not model.message_is_error
    documents.fail_place = errors.StaleResultError("the edited layer was deleted while the engine worked")
    model.start_edit(model.options_from_settings())
    finish(jobs)
    assert model.outcome is None and model.flow.state == workflow.ERROR and model.message_is_error


def test_review_actions_follow_the_group_and_a_stale_group_is_dropped(tmp_path):
    model, documents, jobs, _ = make_model(tmp_path)
    model.more()  # no group yet: a message, no job
    assert model.last_message == str(errors.NoGroupError()) and not jobs.started
    model.start_edit(model.options_from_settings())
    finish(jobs, response(3))
    model.next_candidate()
    model.next_candidate()
    model.previous_candidate()
    assert model.outcome.chosen == 1
    assert len(model.candidates()) == 3 and documents.calls[-1] == ("follow_undo", documents.active)
    model.outcome.group = None  # deleted by the user
    model.choose(2)
    assert model.outcome is None and model.last_message == str(errors.StaleResultError())
    model.start_edit(model.options_from_settings())
    finish(jobs)
    model.accept()
    assert model.outcome is None and model.flow.state == workflow.IDLE  # the fake engine is not running


def test_status_reads_and_checks_run_one_at_a_time_and_report(tmp_path):
    model, _, jobs, notices = make_model(tmp_path)
    assert model.check_engine()
    assert jobs.started[-1]["check"] and model.last_message == "Reading the engine's status…"
    assert not model.read_engine_status() and not model.start_edit(model.options_from_settings())
    events = jobs.events
    events.engine_status({"limits": {"max_candidates": 3}})
    events.reported("engine report")
    events.finished()
    assert model.engine_limits.max_candidates == 3 and model.last_report == "engine report"
    assert notices.shown[-1] == ("message", "engine report") and model.status_worker is None
    assert model.last_message == str(errors.BusyError())  # the refused edit's message stays


def test_shutdown_cancels_stops_the_engine_and_waits_for_the_thread(tmp_path):
    model, documents, jobs, _ = make_model(tmp_path)
    model.connect_application_closing()
    model.connect_application_closing()
    assert [c for c in documents.calls if c[0] == "on_application_closing"] == [
        ("on_application_closing", model.shutdown)
    ]
    model.start_edit(model.options_from_settings())
    model.shutdown()
    assert model.job.cancel.is_set() and model.manager.stopped == 1
    assert jobs.started[-1]["thread"].waited == [10000]


def test_documents_find_a_document_by_equality_and_prune_closed_ones():
    class Wrapper:  # Krita hands out a new wrapper for the same document each time
        def __init__(self, key):
            self.key, self.open = key, True

        def __eq__(self, other):
            return isinstance(other, Wrapper) and other.key == self.key

    states = Documents()
    first = states.state_for(Wrapper(1))
    assert states.state_for(Wrapper(1)) is first and states.find(Wrapper(2)) is None
    second = states.state_for(Wrapper(2))
    second.job = Job(PlaceEdit(second.doc, None, None, request(), "p"))
    third = states.state_for(Wrapper(3))
    for state in (first, second, third):
        state.doc.open = False
    states.prune(lambda doc: doc.open, keep=third)
    assert list(states) == [second, third]  # a job in flight, the one shown
    assert states.running() is second


def test_the_docker_settings_as_typed_options(tmp_path):
    model, _, _, _ = make_model(tmp_path)
    store = model.settings
    store.set("seed_mode", "fixed")
    store.set("seed", 12)
    store.set("live_preview", True)
    options = edit_options(store)
    assert (options.prompt, options.seed, options.preview_every) == ("a red kite", 12, 5)
    store.set("removal", True)
    assert edit_options(store).prompt == ""
    store.set("extend_left", 64)
    store.set("extend_prompt_left", "  a meadow ")
    store.set("extend_prompt_top", "ignored: the top does not grow")
    sides, prompts = extend_sides(store)
    assert sides["left"] == 64 and sides["top"] == 0 and prompts == {"left": "a meadow"}


def test_a_round_of_an_outcome_names_its_document():
    outcome = EditOutcome("doc", "src", "group", [], response(), request(), "p")
    pending = AddRound(outcome, request(), rounds.MORE)
    assert Job(pending).doc == "doc"
    with pytest.raises(AttributeError):
        pending.kind = rounds.VARY  # a pending action is a value: frozen


def test_the_edit_action_asks_for_a_prompt_only_without_regions(tmp_path):
    model, documents, jobs, notices = make_model(tmp_path)
    model.settings.set("prompt", "")
    model.edit_from_action()
    assert notices.shown == [("ask_text", "Describe what the selection should show:")] and not jobs.started
    documents.regions = True  # the layer's selection masks carry the prompts: the docker's may be empty
    model.edit_from_action()
    assert len(notices.shown) == 1 and len(jobs.started) == 1
