"""The plain-Python parts of More, Vary and the history (no Krita): ranking over a group, the next seeds,
round records, the prompt history and its file, Vary's init image; and a source check that the plugin
opens no modal dialog."""

import ast
import json
import random
from pathlib import Path

import pytest
from blended_diffusion import pixels, rounds, settings

PLUGIN = Path(__file__).resolve().parents[2] / "krita_plugin" / "blended_diffusion"


def test_rank_order_over_a_group_puts_lower_distances_first_and_unscored_last():
    scores = [{"combined": 0.7}, {}, {"combined": 0.4}, {"masked_clip": 0.5}, {"combined": 0.4}]
    assert rounds.rank_order(scores) == [2, 4, 3, 0, 1]  # ties keep their order of arrival


def test_next_seed_is_past_every_candidate():
    assert rounds.next_seed([11, 14, 12]) == 15
    assert rounds.next_seed([2**31 - 1]) == 0
    assert rounds.next_seed([]) == 0


def test_round_from_params_and_its_line():
    params = {"prompt": "a red hat", "seed": 7, "timestep_respacing": "8", "skip_timesteps": 6}
    r = rounds.Round.from_params(3, rounds.VARY, params, "variation of #2 match 61% (round 1, seed 4)")
    assert (r.strength, r.steps, r.mode) == (0.25, 8, "paper")
    line = r.describe(seed=8)
    assert line.startswith("Round 3 (vary), prompt 'a red hat', seed 8, strength 0.25, 8 steps, paper mode")
    assert line.endswith("; variation of #2 match 61% (round 1, seed 4)")
    fast = rounds.Round.from_params(1, rounds.EDIT, {"prompt": "", "seed": 1, "quality": "fast"})
    assert fast.strength is None and "strength" not in fast.describe() and "'Removal'" in fast.describe()


def test_prompt_history_moves_repeats_up_drops_empty_and_is_bounded():
    history = []
    for prompt in ("a", "b", "  a  ", "", "c"):
        history = rounds.remember_prompt(history, prompt)
    assert history == ["c", "a", "b"]
    many = rounds.remember_prompt([str(i) for i in range(30)], "new")
    assert len(many) == rounds.HISTORY_LIMIT and many[0] == "new"
    assert rounds.clean_history(["x", 3, "", "y"]) == ["x", "y"] and rounds.clean_history("x") == []


def test_history_persists_in_the_settings_file(tmp_path):
    path = tmp_path / "plugin-settings.json"
    store = settings.SettingsStore(str(path))
    store.remember_prompt("a red hat")
    store.remember_prompt("a blue boat")
    store.save()
    assert settings.SettingsStore(str(path)).prompt_history == ["a blue boat", "a red hat"]
    data = json.loads(path.read_text())
    data["prompt_history"] = "not a list"
    path.write_text(json.dumps(data))
    assert settings.SettingsStore(str(path)).prompt_history == []


def test_composite_over_is_straight_alpha_source_over():
    rng = random.Random(1)
    w, h = 6, 5
    base = bytes(rng.randrange(256) for _ in range(w * h * 4))
    patch = bytearray(rng.randrange(256) for _ in range(3 * 2 * 4))
    patch[3::4] = bytes([0, 255, 128, 255, 255, 255])  # transparent, opaque and half pixels, a full row
    out = pixels.composite_over(base, w, h, bytes(patch), (2, 1, 3, 2))
    for y in range(h):
        for x in range(w):
            i = 4 * (y * w + x)
            if not (2 <= x < 5 and 1 <= y < 3):
                assert out[i : i + 4] == base[i : i + 4]
                continue
            j = 4 * ((y - 1) * 3 + (x - 2))
            a, under = patch[j + 3] / 255, base[i + 3] / 255
            alpha = a + under * (1 - a)
            assert abs(out[i + 3] - 255 * alpha) <= 1
            for c in range(3):
                want = (patch[j + c] * a + base[i + c] * under * (1 - a)) / alpha
                assert abs(out[i + c] - want) <= 1, (x, y, c)
    with pytest.raises(ValueError, match="outside"):
        pixels.composite_over(base, w, h, bytes(patch), (4, 0, 3, 2))


MODAL_CALLS = {"exec_", "exec", "getText", "getItem", "getInt", "getDouble", "getMultiLineText"}
STATIC_BOXES = {"warning", "question", "information", "critical", "about"}


def test_the_plugin_source_opens_no_modal_dialog():
    """No exec_() and no static QMessageBox / QInputDialog call anywhere in the plugin: each runs a nested
    event loop on Krita's GUI thread (the real-Krita tests also record any such call at run time)."""
    found = []
    for path in sorted(PLUGIN.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                name, owner = node.func.attr, node.func.value
                owner_name = owner.id if isinstance(owner, ast.Name) else ""
                if name in MODAL_CALLS or (owner_name == "QMessageBox" and name in STATIC_BOXES):
                    found.append(f"{path.relative_to(PLUGIN)}:{node.lineno} {owner_name}.{name}")
    assert found == []
