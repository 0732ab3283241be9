"""The edits follow the text: Algorithm 2 with the toy models on held-out scenes, judged without CLIP.

Each of 30 held-out scenes has an empty square region and a target "a {colour} {shape}". The engine's
``edit`` (unchanged) runs with the prompt and, with the same seeds, with an empty prompt. The edited region's
colour is classified by the pixel rule ``toyworld.scenes.classify_colour`` and its shape by fitting the
outline of that colour's pixels (``toyworld.judge``); neither uses the toy CLIP. The full report (120
trials per condition, per colour and per shape) is ``python -m toyworld.evaluate``, in docs/toyworld.md.
"""

from __future__ import annotations

from toyworld.evaluate import DEFAULT_MODELS, evaluate, preset_edit_defaults

SCENES = 30
# The issue-12 targets. The shipped files do better on these 30 scenes (colour 94.2%, colour and shape
# 66.7%, every colour >= 90%; docs/toyworld.md): the margin absorbs floating-point order, a regression fails.
GUIDED_COLOUR = 0.9
GUIDED_COLOUR_EACH = 0.8
GUIDED_BOTH = 0.6


def test_guided_edits_hit_the_prompted_colour_and_shape(toy_models, capsys):
    params = preset_edit_defaults(DEFAULT_MODELS)
    result = evaluate(toy_models, SCENES, params=params, log=lambda _: None)
    with capsys.disabled():
        print("\n" + result.summary())
    guided, unguided = result.guided.rates(), result.unguided.rates()
    assert result.scenes == SCENES and guided.trials == unguided.trials >= SCENES * 4
    assert result.guided.background_exact and result.unguided.background_exact
    assert guided.rate("colour") >= GUIDED_COLOUR, result.summary()
    assert guided.rate("both") >= GUIDED_BOTH, result.summary()
    for colour, rates in result.guided.table()["per_colour"].items():
        assert rates["colour"] >= GUIDED_COLOUR_EACH * rates["trials"], (colour, result.summary())
    assert unguided.rate("colour") <= 0.4, result.summary()
    assert unguided.rate("both") <= 0.15, result.summary()
    # ranking picks a hit at least as often as a random candidate does (colour; both within one scene)
    assert result.guided.top_hit_rate >= guided.rate("colour"), result.summary()
