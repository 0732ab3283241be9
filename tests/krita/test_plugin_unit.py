"""The plugin's plain-Python parts (no Krita): pixel conversions, PNG codec, masks, parameters, naming,
settings, configuration, the workflow and the edit request/reply handling."""

import io
import json
import math
import random
import struct

import pytest
from blended_diffusion import config, editing, errors, naming, params, pixels, settings, workflow
from blended_diffusion.engine_manager import job_error
from PIL import Image


def rgba_image(w=7, h=5, seed=0) -> bytes:
    rng = random.Random(seed)
    return bytes(rng.randrange(256) for _ in range(w * h * 4))


# ------------------------------------------------------------------ pixels


def test_bgra_u8_round_trip_and_channel_order():
    fmt = pixels.pixel_format("RGBA", "U8", "sRGB-elle-V2-srgbtrc.icc")
    assert not fmt.linear
    assert pixels.to_rgba8(bytes([1, 2, 3, 4]), fmt) == bytes([3, 2, 1, 4])
    data = rgba_image()
    assert pixels.to_rgba8(pixels.from_rgba8(data, fmt), fmt) == data


def test_u16_linear_matches_srgb_and_round_trips():
    fmt = pixels.pixel_format("RGBA", "U16", "sRGB-elle-V2-g10.icc")
    assert fmt.linear
    # Linear 0.2159 is sRGB 128/255; alpha is never curved: 32768/65535 -> 128.
    raw = struct.pack("<4H", 0, 0, round(0.2159 * 65535), 32768)  # B, G, R, A
    assert pixels.to_rgba8(raw, fmt) == bytes([128, 0, 0, 128])
    data = rgba_image(seed=1)
    assert pixels.to_rgba8(pixels.from_rgba8(data, fmt), fmt) == data
    assert len(pixels.from_rgba8(data, fmt)) == 2 * len(data)


def test_float_formats_round_trip_in_rgba_order():
    for depth in ("F16", "F32"):
        fmt = pixels.pixel_format("RGBA", depth, "sRGB-elle-V2-g10.icc")
        data = rgba_image(seed=2)
        assert pixels.to_rgba8(pixels.from_rgba8(data, fmt), fmt) == data
    fmt = pixels.pixel_format("RGBA", "F32", "")
    assert pixels.to_rgba8(struct.pack("<4f", 1.0, 0.0, 2.0, float("nan")), fmt) == bytes([255, 0, 255, 0])


@pytest.mark.parametrize("model,depth", [("CMYKA", "U8"), ("LABA", "U16"), ("GRAYA", "U8"), ("RGBA", "F64")])
def test_unsupported_colour_spaces_are_refused(model, depth):
    with pytest.raises(errors.UnsupportedColorSpaceError, match=model):
        pixels.pixel_format(model, depth)


@pytest.mark.parametrize("mode", ["RGBA", "RGB", "L", "LA"])
def test_png_decode_matches_pillow(mode):
    rng = random.Random(3)
    # Smooth + noisy content makes Pillow pick every filter type.
    img = Image.new("RGBA", (37, 23))
    img.putdata(
        [
            ((x * 7 + rng.randrange(9)) % 256, y * 11 % 256, (x * y) % 256, (x + y * 3) % 256)
            for y in range(23)
            for x in range(37)
        ]
    )
    img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    w, h, data = pixels.decode_png(buf.getvalue())
    assert (w, h) == (37, 23)
    assert data == img.convert("RGBA").tobytes()


def test_png_encode_is_read_by_pillow():
    data = rgba_image(9, 4, seed=4)
    img = Image.open(io.BytesIO(pixels.encode_png(9, 4, data, 4)))
    assert img.mode == "RGBA" and img.tobytes() == data
    mask = bytes(range(36))
    assert Image.open(io.BytesIO(pixels.encode_png(9, 4, mask, 1))).tobytes() == mask
    with pytest.raises(ValueError):
        pixels.encode_png(9, 4, data[:-1], 4)
    with pytest.raises(ValueError, match="not a PNG"):
        pixels.decode_png(b"GIF89a")


def test_mask_helpers():
    w, h = 6, 4
    mask = bytearray(w * h)
    mask[1 * w + 2] = 10
    mask[2 * w + 4] = 255
    assert pixels.mask_bbox(bytes(mask), w, h) == (2, 1, 5, 3)
    assert pixels.mask_bbox(bytes(w * h), w, h) is None
    assert pixels.invert_mask(b"\x00\xff\x10") == b"\xff\x00\xef"
    assert pixels.crop(bytes(range(24)), 6, 4, 1, (1, 1, 2, 2)) == bytes([7, 8, 13, 14])
    with pytest.raises(ValueError):
        pixels.crop(bytes(24), 6, 4, 1, (5, 0, 2, 1))
    assert pixels.limit_alpha(bytes([9, 9, 9, 200, 9, 9, 9, 50]), bytes([100, 255])) == bytes(
        [9, 9, 9, 100, 9, 9, 9, 50]
    )


# ------------------------------------------------------------------ parameters, names, settings


def test_strength_maps_to_skip_timesteps():
    assert params.strength_to_skip(0.75, 100) == 25  # the reference default
    assert params.strength_to_skip(1.0, 100) == 0
    assert params.strength_to_skip(0.01, 10) == 9  # at least one step runs
    assert params.strength_to_skip(0.5, 10) == 5
    with pytest.raises(ValueError):
        params.strength_to_skip(0.0, 100)


def test_candidates_split_into_batches_exactly():
    for n in range(1, 17):
        batch, iterations = params.split_candidates(n)
        assert batch * iterations == n and batch <= params.MAX_BATCH
    assert params.split_candidates(8) == (4, 2)


def test_engine_params_uses_reference_names():
    p = params.engine_params(
        params.EditOptions(prompt=" a hat ", candidates=6, steps=10, strength=0.5, seed=7)
    )
    assert p["prompt"] == "a hat" and p["skip_timesteps"] == 5 and p["timestep_respacing"] == "10"
    assert p["batch_size"] * p["iterations_num"] == 6 and p["seed"] == 7 and p["invert_mask"] is False
    baseline = params.engine_params(params.EditOptions(baseline=True, seed=1))
    assert baseline["background_preservation_loss"] and baseline["local_clip_guided_diffusion"]
    assert 0 <= params.engine_params(params.EditOptions())["seed"] < 2**31  # random seed chosen here
    with pytest.raises(ValueError, match="candidates"):
        params.engine_params(params.EditOptions(candidates=0))
    with pytest.raises(ValueError, match="skip_timesteps"):
        params.engine_params(params.EditOptions(steps=10, skip_timesteps=10))


def test_layer_names():
    assert naming.group_name("  a  red hat ") == "BD: a red hat"
    assert naming.group_name("") == "BD: Removal"
    # match = cosine similarity: distance theta^2 / 2 at angle theta; 0.294 is 72%, 0.81234 is 29%
    assert naming.candidate_name(1, {"combined": 0.294}) == "#1 match 72%"
    assert naming.candidate_name(1, {"combined": 0.81234}) == "#1 match 29%"
    assert naming.candidate_name(2, {}) == "#2"
    assert naming.match_percent(0.0) == 100 and naming.match_percent(math.pi**2 / 8) == 0  # 90 degrees
    assert naming.match_percent(4.0) == 0 and naming.match_percent(None) is None  # clamped, not negative
    # higher is better: a smaller distance never shows a smaller match, so rank 1 shows the highest
    distances = [i / 100 for i in range(0, 494)]
    matches = [naming.match_percent(d) for d in distances]
    assert matches == sorted(matches, reverse=True)
    tip = naming.candidate_tooltip(1, {"masked_clip": 0.25, "full_clip": 0.35, "combined": 0.3})
    assert "inside the selection: match 76% (CLIP distance 0.250)" in tip
    assert "with its surroundings: match 67% (CLIP distance 0.350)" in tip and "match 71%" in tip
    assert "no prompt" in naming.candidate_tooltip(3, {})
    names = [naming.candidate_name(r, {"combined": d}) for r, d in ((1, 0.0), (16, 4.9))]
    assert names == ["#1 match 100%", "#16 match 0%"] and max(map(len, names)) <= 14  # short for the panel
    assert len(naming.prompt_label("x" * 200)) == naming.MAX_PROMPT_IN_NAME


def test_settings_persist_and_validate(tmp_path):
    path = tmp_path / "s" / "plugin-settings.json"
    store = settings.SettingsStore(str(path))
    assert store.get("candidates") == 4
    store.set("candidates", "6")
    store.set("remote_token", "secret")
    with pytest.raises(ValueError, match="candidates"):
        store.set("candidates", 99)
    with pytest.raises(ValueError, match="seed_mode"):
        store.set("seed_mode", "sometimes")
    store.save()
    again = settings.SettingsStore(str(path))
    assert again.get("candidates") == 6 and again.get("remote_token") == "secret"
    path.write_text(json.dumps({"candidates": "lots", "strength": 0.5, "unknown": 1}))
    bad = settings.SettingsStore(str(path))
    assert bad.get("candidates") == 4 and bad.get("strength") == 0.5  # bad values fall back to defaults


def test_engine_config_path_and_loading(tmp_path):
    assert config.engine_config_path({"BLENDED_DIFFUSION_CONFIG": "/x/e.json"}) == "/x/e.json"
    assert (
        config.engine_config_path({"HOME": "/home/u"}, "linux")
        == "/home/u/.config/blended-diffusion/engine.json"
    )
    assert config.engine_config_path({"HOME": "/Users/u"}, "darwin").endswith(
        "Library/Application Support/blended-diffusion/engine.json"
    )
    assert config.engine_config_path({"APPDATA": "C:/AD", "HOME": "C:/u"}, "win32").startswith("C:/AD")
    with pytest.raises(errors.EngineNotInstalledError, match="install.py"):
        config.load_engine_config(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"python": "/nope/python"}')
    with pytest.raises(errors.EngineNotInstalledError, match="engine_root"):
        config.load_engine_config(str(bad))
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"python": "/bin/sh", "engine_root": str(tmp_path), "models": "tiny"}))
    assert config.load_engine_config(str(good), check_files=False).models == "tiny"
    with pytest.raises(errors.EngineNotInstalledError, match="no 'engine' package"):
        config.load_engine_config(str(good))


def test_workflow_transitions_and_status():
    flow = workflow.Workflow()
    assert flow.can_edit and "not started" in flow.status_text()
    flow.move(workflow.STARTING)
    assert flow.can_cancel and not flow.can_edit
    flow.move(workflow.READY, device="cpu")
    assert flow.status_text() == "Engine: ready (cpu)"
    flow.move(workflow.BUSY, "step 3/10")
    assert flow.status_text() == "Engine: busy: step 3/10"
    with pytest.raises(workflow.InvalidTransition):
        flow.move(workflow.IDLE)
    flow.move(workflow.REVIEW)
    assert flow.can_review and flow.can_edit


# ------------------------------------------------------------------ edit request / reply


def test_plan_region_soft_selection_background_and_refusals():
    w, h = 40, 30
    sel = bytearray(w * h)
    for y in range(10, 14):
        for x in range(20, 26):
            sel[y * w + x] = 128
    region, mask = editing.plan_region(bytes(sel), w, h)
    rx, ry, rw, rh = region
    assert rx <= 20 and ry <= 10 and rx + rw >= 26 and ry + rh >= 14
    assert len(mask) == rw * rh and max(mask) == 128  # soft values are kept
    region_bg, mask_bg = editing.plan_region(bytes(sel), w, h, background=True)
    assert region_bg == (0, 0, 40, 30)  # inverted: the area to edit reaches every border
    assert min(mask_bg) == 127 and max(mask_bg) == 255
    with pytest.raises(errors.NoSelectionError):
        editing.plan_region(None, w, h)
    region_all, mask_all = editing.plan_region(None, w, h, whole_layer=True)
    assert region_all == (0, 0, 40, 30) and set(mask_all) == {255}
    with pytest.raises(errors.EmptySelectionError):
        editing.plan_region(bytes(w * h), w, h)


class ReplyClient:
    def __init__(self, reply):
        self.reply = reply
        self.sent = None

    def edit(self, params, image_png, mask_png, init_png=None, on_progress=None, cancel=None):
        self.sent = (params, image_png, mask_png, init_png)
        on_progress({"state": "running", "step": 2, "total": 5}, None)
        return self.reply


def test_execute_offsets_patches_and_clamps_alpha_to_the_mask():
    mask = bytes([0, 255, 255, 0] * 4)  # 4x4 region
    request = editing.EditRequest((10, 20, 4, 4), bytes(64), mask, {"seed": 1})
    patch = bytes([200, 100, 50, 255]) * 4  # 2x2 patch fully opaque
    reply = {
        "candidates": [
            {
                "rank": 1,
                "seed": 5,
                "scores": {"combined": 0.3},
                "box": [1, 1, 2, 2],
                "png": pixels.encode_png(2, 2, patch, 4),
            }
        ],
        "notes": ["n"],
    }
    steps = []
    client = ReplyClient(reply)
    response = editing.execute(request, client, lambda s, t, p: steps.append((s, t)))
    assert steps == [(2, 5)]
    cand = response.candidates[0]
    assert cand.box == (11, 21, 2, 2)
    assert cand.rgba[3::4] == bytes([255, 255, 255, 255])  # mask is 255 at columns 1-2
    assert Image.open(io.BytesIO(client.sent[2])).tobytes() == mask
    bad = {"candidates": [dict(reply["candidates"][0], box=[3, 3, 2, 2])]}
    with pytest.raises(errors.EngineJobFailed, match="does not fit"):
        editing.execute(request, ReplyClient(bad))
    off = {"candidates": [dict(reply["candidates"][0], box=[0, 0, 2, 2])]}
    assert editing.execute(request, ReplyClient(off)).candidates[0].rgba[3::4] == bytes([0, 255, 0, 255])


def test_job_errors_become_user_messages():
    class Coded(Exception):
        def __init__(self, code, message):
            super().__init__(message)
            self.code, self.message = code, message

    assert isinstance(job_error(Coded("cancelled", "x")), errors.CancelledError)
    missing = job_error(Coded("engine_error", "weights missing: 256x256_diffusion_uncond.pt"))
    assert isinstance(missing, errors.WeightsMissingError) and "install.py" in str(missing)
    crash = job_error(Coded("connection_failed", "reset"), "Traceback\nOOM")
    assert isinstance(crash, errors.EngineCrashedError) and "OOM" in str(crash)
    assert isinstance(job_error(Coded("invalid_input", "bad mask")), errors.EngineJobFailed)


def test_remote_engine_unreachable_is_a_clear_error():
    import socket

    from blended_diffusion.engine_manager import EngineManager, EngineSettings

    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    manager = EngineManager(EngineSettings(mode="remote", host="127.0.0.1", port=port, token="x" * 20))
    with pytest.raises(errors.EngineStartError, match=f"remote engine at 127.0.0.1:{port}"):
        manager.connect()
    assert not manager.running


def test_a_patch_over_part_of_the_region_is_placed_by_its_box_and_clamped_to_the_mask():
    # engines since issue 16 send patches over the mask's bounding box, not the whole region
    width, height = 8, 6
    mask = bytearray(width * height)
    for y in range(1, 4):
        for x in range(2, 6):
            mask[y * width + x] = 255 if x < 5 else 100
    request = editing.EditRequest((10, 20, width, height), bytes(4 * width * height), bytes(mask), {})
    patch = bytes([9, 8, 7, 255]) * 12  # 4x3, opaque: the plugin clamps alpha to its own mask
    for level in (0, 1):
        png = pixels.encode_png(4, 3, patch, 4, level)
        reply = {"candidates": [{"rank": 1, "box": [2, 1, 4, 3], "png": png}]}
        placed = editing.place_candidates(request, reply).candidates[0]
        assert placed.box == (12, 21, 4, 3)
        assert placed.rgba[3::4] == bytes([255, 255, 255, 100]) * 3
        assert placed.rgba[0::4] == bytes([9]) * 12
    outside = {"candidates": [{"box": [6, 1, 4, 3], "png": pixels.encode_png(4, 3, patch, 4)}]}
    with pytest.raises(errors.EngineJobFailed, match="does not fit"):
        editing.place_candidates(request, outside)


def test_the_engine_the_plugin_started_is_asked_for_uncompressed_results(monkeypatch):
    from types import SimpleNamespace

    from blended_diffusion.engine_manager import EngineManager, EngineSettings

    from bridge import client as client_mod

    levels = []

    class Recorder:
        def __init__(self, host, port, token, fingerprint=None, png_level=None):
            levels.append(png_level)

        def status(self):
            return {"device": "cpu"}

    monkeypatch.setattr(client_mod, "EngineClient", Recorder)
    EngineManager(EngineSettings(mode="remote", token="x" * 20)).connect()
    local = EngineManager(EngineSettings())
    local._process = SimpleNamespace(alive=lambda: True)  # as if started: connect() only connects
    local._address = ("127.0.0.1", 7860, "t" * 20)
    local.connect()
    assert levels == [None, 0]  # a remote engine keeps its own default (compressed)


def test_local_engine_not_installed_names_the_config(tmp_path):
    from blended_diffusion.engine_manager import EngineManager, EngineSettings

    manager = EngineManager(
        EngineSettings(config_path=str(tmp_path / "engine.json")), log_path=str(tmp_path / "l")
    )
    with pytest.raises(errors.EngineNotInstalledError, match="engine.json"):
        manager.connect()


# ------------------------------------------------------------------ extend the canvas


def test_extend_sides_are_checked_before_anything():
    from blended_diffusion import extending

    assert extending.check_sides({"right": 5}) == {"left": 0, "right": 5, "top": 0, "bottom": 0}
    for sides, prompts, message in (
        ({}, None, "at least one side"),
        ({"left": -1, "right": 3}, None, "left size must be between 0"),
        ({"right": 2.5}, None, "whole number"),
        ({"up": 3}, None, "unknown side"),
        ({"right": 3}, {"top": "sky"}, "prompt for the top side"),
    ):
        with pytest.raises(extending.BadExtensionError, match=message):
            extending.check_sides(sides, prompts)


def test_extend_request_geometry_params_and_label():
    from blended_diffusion import extending

    image = rgba_image(7, 5)
    request = extending.make_request(
        (7, 5), image, {"prompt": "a"}, {"left": 2, "bottom": 3}, {"left": " b "}
    )
    assert request.canvas_size == (9, 8) and request.offset == (2, 0)
    assert request.resize_args() == (-2, 0, 9, 8) and request.restore_args() == (2, 0, 7, 5)
    assert request.params == {
        "prompt": "a",
        "left": 2,
        "right": 0,
        "top": 0,
        "bottom": 3,
        "side_prompts": {"left": "b"},
        "blend_band": 0,
    }
    mask = request.original_mask()
    assert len(mask) == 9 * 8 and mask[0] == 255 and mask[2] == 0 and mask[9 * 5 + 2] == 255
    assert sum(1 for v in mask if v == 0) == 7 * 5
    assert request.label("a") == "a"  # the bottom side has no prompt of its own
    both = extending.make_request((7, 5), image, {}, {"left": 2, "right": 1}, {"left": "x", "right": "y"})
    assert both.label("a") == "left: x | right: y"


def test_extend_reply_is_checked_and_alpha_clamped_to_the_new_area():
    from blended_diffusion import extending

    request = extending.make_request((3, 2), rgba_image(3, 2), {}, {"right": 2})
    opaque = bytes([9, 8, 7, 255]) * (5 * 2)
    reply = {
        "canvas_size": [5, 2],
        "offset": [0, 0],
        "candidates": [
            {
                "rank": 1,
                "seed": 4,
                "scores": {"combined": 0.3},
                "box": [0, 0, 5, 2],
                "png": pixels.encode_png(5, 2, opaque, 4),
            }
        ],
    }
    response = extending.place_candidates(request, reply)
    rgba = response.candidates[0].rgba
    assert response.candidates[0].box == (0, 0, 5, 2)
    assert list(rgba[3::4]) == [0, 0, 0, 255, 255] * 2  # the old pixels always show through
    with pytest.raises(errors.EngineJobFailed, match="expected"):
        extending.place_candidates(request, dict(reply, canvas_size=[6, 2]))

    class Client:
        def extend(self, params, image_png, on_progress=None, cancel=None):
            self.params = params
            on_progress({"step": 1, "total": 2}, None)
            return reply

    seen = []
    client = Client()
    assert extending.execute(request, client, lambda s, t, p: seen.append((s, t))).candidates
    assert seen == [(1, 2)] and client.params["right"] == 2
