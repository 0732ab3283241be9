"""installer.first_edit: which models and example the first edit uses, its command, and the mask it draws."""

from __future__ import annotations

from pathlib import Path

from installer import first_edit
from tests.installer.helpers import REPO


def test_first_edit_falls_back_to_toy_then_tiny(tmp_path):
    assert first_edit.first_edit_models(True, tmp_path)[0] == "default"
    toy = tmp_path / "resources" / "models" / "toy"
    toy.mkdir(parents=True)
    assert (
        first_edit.first_edit_models(False, tmp_path)[0] == "tiny"
    )  # a folder without its preset is not enough
    (toy / "preset.json").write_text("{}")
    preset, note = first_edit.first_edit_models(False, tmp_path)
    assert preset == str(toy) and "toy" in note and "absent" in note
    (tmp_path / "engine" / "models" / "presets").mkdir(parents=True)
    (tmp_path / "engine" / "models" / "presets" / "toy.json").write_text("{}")
    assert first_edit.first_edit_models(False, tmp_path)[0] == "toy"
    command = first_edit.first_edit_command(
        "py", Path("i.png"), Path("m.png"), "a cat", "toy", Path("out"), ["--x"]
    )
    assert command[:4] == ["py", "-m", "engine", "edit"]
    assert command[command.index("--models") + 1] == "toy" and command[-1] == "--x"
    # the toy preset's own edit_defaults decide the schedule and candidates, for its folder form too
    for toy_models in ("toy", str(toy)):
        toy_command = first_edit.first_edit_command("py", Path("i"), Path("m"), "a", toy_models, Path("o"))
        assert "--timestep_respacing" not in toy_command and "--batch_size" not in toy_command
    tiny = first_edit.first_edit_command("py", Path("i.png"), Path("m.png"), "a cat", "tiny", Path("out"))
    assert tiny[tiny.index("--timestep_respacing") + 1] == "25"  # a short schedule for random weights
    default = first_edit.first_edit_command(
        "py", Path("i.png"), Path("m.png"), "a cat", "default", Path("out")
    )
    assert "--timestep_respacing" not in default  # the reference's schedule with the real weights


def test_first_edit_example_is_the_toy_scene_for_the_toy_models():
    examples = REPO / "resources" / "examples"
    image, mask, prompt = first_edit.pick_example(toy=True)
    assert (image, mask) == (examples / "toy_scene.png", examples / "toy_scene_mask.png")
    assert prompt == (examples / "toy_scene.txt").read_text().strip() and prompt
    image, mask, prompt = first_edit.pick_example()  # default and tiny: a natural photo, never the toy scene
    assert image == examples / "lakeside.png" and prompt == first_edit.DEFAULT_PROMPT


def test_box_mask_is_a_valid_png(tmp_path):
    path = tmp_path / "mask.png"
    first_edit.write_box_mask(path, (40, 20), (0.25, 0.5, 0.75, 1.0))
    assert first_edit.png_size(path) == (40, 20)
    from PIL import Image

    with Image.open(path) as mask:
        assert mask.mode == "L" and mask.size == (40, 20)
        assert mask.getpixel((20, 15)) == 255 and mask.getpixel((5, 15)) == 0 and mask.getpixel((20, 5)) == 0
