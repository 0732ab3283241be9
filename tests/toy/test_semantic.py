"""The edits follow the text: Algorithm 2 with the toy models on held-out scenes, judged by a pixel rule.

Each of 30 held-out scenes has an empty square region and a target "a {colour} {shape}". The engine's
``edit`` (unchanged) runs with the prompt and, with the same seeds, with an empty prompt; the edited
region's colour is classified by ``toyworld.scenes.classify_colour`` (never by CLIP).
"""

from __future__ import annotations

from toyworld.evaluate import DEFAULT_MODELS, evaluate, preset_edit_defaults

SCENES = 30


def test_guided_edits_hit_the_prompted_colour(toy_models, capsys):
    params = preset_edit_defaults(DEFAULT_MODELS)
    result = evaluate(toy_models, SCENES, params=params, log=lambda _: None)
    with capsys.disabled():
        print("\n" + result.summary())
    guided, unguided = result.guided, result.unguided
    assert result.scenes == SCENES and guided.candidates == unguided.candidates >= SCENES * 4
    assert guided.background_exact and unguided.background_exact
    assert guided.hit_rate >= 0.8, result.summary()
    assert unguided.hit_rate <= 0.4, result.summary()
    # ranking by the masked CLIP score picks a hit at least as often as a random candidate does
    assert guided.top_hit_rate >= guided.hit_rate, result.summary()
