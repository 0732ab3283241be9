"""More, Vary, the prompt history and nothing modal, inside real Krita (iterate/scenarios.py).

One Krita session (tests/krita_session.py) runs the API rounds on the real engine with the toy models
(8-step schedules, 1-2 candidates a round), the docker with a slow fake engine and the first half of the
history check; a second session (a Krita restart, same settings file) reads the history back."""

import re

import pytest

from tests.krita_env import scenario_environment
from tests.krita_session import Scenario, run_session

HERE = "tests.krita.iterate.scenarios"
FIRST = [
    Scenario("rounds", f"{HERE}:scenario_rounds", "real"),
    Scenario("docker", f"{HERE}:scenario_docker"),  # its own slow fake engine
    Scenario("history_write", f"{HERE}:scenario_history_write"),
]
AFTER_RESTART = [Scenario("history_read", f"{HERE}:scenario_history_read")]


@pytest.fixture(scope="module")
def sessions(tmp_path_factory, krita):
    """Krita 5.1 and Krita 6 (tests/conftest.py), each its own home: a first Krita session, then a second
    (a restart) that reads the history back."""
    home = tmp_path_factory.mktemp(f"krita-iterate-{krita.label}")
    env = scenario_environment(home, "toy", BD_ENGINE_LOG=str(home / "engine.log"), OMP_NUM_THREADS="1")
    first = run_session(krita, env, home, FIRST, tag="first")
    return first.merged(run_session(krita, env, home, AFTER_RESTART, tag="restart"))


def ranked_right(view) -> None:
    """Names '#k match p%' top to bottom with k = 1..n, distances ascending, matches not increasing."""
    names = view["names"]
    assert [int(re.match(r"#(\d+) match (\d+)%$", n).group(1)) for n in names] == list(
        range(1, len(names) + 1)
    )
    assert view["distances"] == sorted(view["distances"]), view
    matches = [int(re.match(r"#\d+ match (\d+)%$", n).group(1)) for n in names]
    assert matches == sorted(matches, reverse=True), names
    assert view["same_order"] and view["ranks"] == list(range(1, len(names) + 1))
    assert view["visible"].count(True) == 1 and view["visible"][view["chosen"]]


def test_more_adds_to_the_same_group_ranked_over_the_whole_group(sessions):
    r = sessions["rounds"]
    assert r["more_added"] == 2 and len(r["more"]["names"]) == 4
    ranked_right(r["first"])
    ranked_right(r["more"])
    assert sorted(r["more"]["seeds"]) == [11, 12, 13, 14], "More takes the next seeds"
    assert sorted(r["more"]["rounds"]) == [1, 1, 2, 2]
    assert r["more_shown_kept"], "the candidate the user was looking at stays shown"
    groups = [entry for entry in r["stack_after_more"] if entry[1] == "grouplayer"]
    assert len(groups) == 1 and len(groups[0][3]) == 4, "one group holds every round"
    assert r["outside_bad_more"] == [0, 0, 0, 0], "More used the group's selection, not the new one"


def test_vary_from_candidate_2_stays_closer_to_it_than_a_fresh_edit(sessions):
    """Measure: mean absolute difference per channel (0..255) over the fully selected pixels between a
    candidate and #2, each composited over the source. Every variation (strength 0.3) is closer to #2 than
    every fresh candidate (the first edit's and More's, strength 0.75)."""
    r = sessions["rounds"]
    assert r["vary_added"] == 2 and len(r["vary"]["names"]) == 6
    ranked_right(r["vary"])
    assert max(r["vary_diffs"]) < min(r["fresh_diffs"]), (r["vary_diffs"], r["fresh_diffs"])
    assert all("variation of #2 match" in line for line in r["vary_round_of"]), r["vary_round_of"]
    assert all(line.startswith("Round 3 (vary)") and "strength 0.25" in line for line in r["vary_round_of"])
    assert r["vary_shown_is_new"]
    assert r["outside_bad_vary"] == [0, 0] and r["projection_outside_bad"] == 0
    assert r["preexisting_identical"]
    assert [x[0] for x in r["rounds"]] == ["edit", "more", "vary"]
    assert r["rounds"][2][1] == "a red hot air balloon" and r["rounds"][2][2] == 15


def test_bad_moments_give_a_message_and_change_nothing(sessions):
    r = sessions["rounds"]
    assert r["busy"][0] == "BusyError" and r["busy_unchanged"]
    assert r["resized"][0] == "GroupSourceError" and "resized" in r["resized"][1] and r["resized_unchanged"]
    assert r["accepted_name"] == "a red hot air balloon"
    assert r["after_accept"][0] == "NoGroupError" and "accepted or discarded" in r["after_accept"][1]
    assert r["no_group"][0] == "NoGroupError"
    assert r["group_deleted"][0] == "StaleResultError" and r["group_deleted_unchanged"]
    assert r["source_deleted"][0] == "GroupSourceError" and "was deleted" in r["source_deleted"][1]
    assert r["source_deleted_unchanged"]
    assert r["doc_closed"][0] == "GroupSourceError" and "closed" in r["doc_closed"][1]


def test_docker_more_vary_keys_and_nothing_modal(sessions):
    r = sessions["docker"]
    assert r["modal_calls"] == [], "no modal dialog (exec_, static QMessageBox, QInputDialog) was opened"
    assert not r["more_without_group"] and "no candidate group" in r["more_without_group_message"]
    assert r["list_first"] == 2 and r["more_enabled"]
    assert r["busy_buttons"] == [False, False]
    assert "A job is running" in r["busy_more_message"] and "A job is running" in r["busy_accept_message"]
    assert r["busy_unchanged"]
    assert len(r["list_after_more"]) == 4 and r["shown_kept"] and r["more_mask_same"]
    assert r["round_line_more"].startswith("Round 1 (edit), prompt 'a yellow kite'")
    assert r["vary_init_sent"] and r["vary_skip"][0] == r["vary_skip"][1] == 6
    assert r["list_after_vary"] == 6 and "variation of #2" in r["vary_tooltip"]
    assert r["round_line_vary"].startswith("Round 3 (vary)")
    assert r["next"][0] == r["next"][1] and r["previous"][0] == r["previous"][1]
    assert r["visible"].count(True) == 1
    assert r["failed_round"][0] == "review" and r["failed_round"][2] == 6 and r["status_red"]
    assert r["after_accept"] == [0, False]
    assert r["history_items"][:2] == ["a yellow kite", "a white cloud"]


def test_prompt_history_survives_a_restart_and_clears(sessions):
    assert sessions["history_write"]["history"][:2] == ["a green hill", "a blue lake"]
    r = sessions["history_read"]
    assert r["items"][:4] == ["a green hill", "a blue lake", "a yellow kite", "a white cloud"], r["items"]
    assert r["picked"] == ["a blue lake", "a blue lake"], "a prompt picked from the list is the prompt"
    assert r["after_clear"] == [0, [], []]
