"""Regions (issue 39) over the bridge: a real in-process BridgeServer with the real EditRunner on the tiny
models, the engine's own client, and the refusals of a bad regions request before anything is queued."""

from __future__ import annotations

import io
from typing import Any, Dict, Iterator, List, Tuple

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bridge import errors
from bridge.client import EngineClient
from bridge.limits import DEFAULT_LIMITS, JobLimits
from bridge.protocol import Limits
from bridge.server import BridgeServer
from engine.jobs import EditRunner, ExtendRunner
from tests.bridge.helpers import TOKEN, RawConnection

QUICK = {"timestep_respacing": "10", "skip_timesteps": 7, "aug_num": 2, "batch_size": 2, "iterations_num": 1}


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def scene() -> Tuple[Image.Image, Image.Image, Image.Image]:
    """A noisy 48x40 source (every pixel distinct enough that a changed one shows) and two regions."""
    rng = np.random.default_rng(3)
    source = Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    left, right = Image.new("L", (48, 40), 0), Image.new("L", (48, 40), 0)
    ImageDraw.Draw(left).rectangle((4, 8, 18, 30), fill=255)
    ImageDraw.Draw(right).ellipse((26, 6, 44, 26), fill=180)  # soft: a value below 255
    return source, left, right


SOURCE, LEFT, RIGHT = scene()
IMAGE_PNG, LEFT_PNG, RIGHT_PNG = png(SOURCE), png(LEFT), png(RIGHT)


class CountingRunner(EditRunner):
    """The real runner, counting the jobs it ran (a refused request must never get here)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ran: List[str] = []

    def run(self, job: Any) -> Any:
        self.ran.append(job.id)
        return super().run(job)


@pytest.fixture
def served(tiny_models) -> Iterator[Tuple[BridgeServer, CountingRunner]]:
    limits = Limits()
    job_limits = JobLimits(max_regions=3)  # lowered, as ``engine serve`` could: the runner's limit applies
    runner = CountingRunner(tiny_models, limits, job_limits=job_limits)
    extend = ExtendRunner(tiny_models, limits, job_limits=job_limits)
    server = BridgeServer({"edit": runner, "extend": extend}, TOKEN, "127.0.0.1", 0, job_limits=job_limits)
    server.start()
    try:
        yield server, runner
    finally:
        server.close()


def client_of(server: BridgeServer) -> EngineClient:
    return EngineClient("127.0.0.1", server.port, TOKEN, timeout=120.0)


def composite(candidate: Dict[str, Any]) -> Tuple[np.ndarray, np.ndarray]:
    """(the source with the candidate's patch pasted in, the patch's alpha over the whole image)."""
    patch = np.asarray(Image.open(io.BytesIO(candidate["png"])))
    x, y, w, h = candidate["box"]
    assert patch.shape == (h, w, 4)
    out = np.asarray(SOURCE).copy()
    out[y : y + h, x : x + w] = patch[..., :3]
    alpha = np.zeros(out.shape[:2], np.uint8)
    alpha[y : y + h, x : x + w] = patch[..., 3]
    return out, alpha


def test_two_regions_through_the_bridge_leave_every_pixel_outside_their_union_as_it_was(served):
    server, runner = served
    regions = [(LEFT_PNG, "a red square"), (RIGHT_PNG, "a blue ball: shiny")]
    with client_of(server) as client:
        result = client.edit(dict(QUICK, prompt="a lawn", seed=9), IMAGE_PNG, None, regions=regions)
    assert runner.ran == ["j1"]
    candidates = result["candidates"]
    assert [c["rank"] for c in candidates] == [1, 2] and sorted(c["seed"] for c in candidates) == [9, 10]
    union = np.maximum(np.asarray(LEFT), np.asarray(RIGHT))
    outside = union == 0
    source = np.asarray(SOURCE)
    bx, by, bw, bh = result["box"]  # the job's box covers both regions
    ys, xs = np.nonzero(union)
    assert bx <= xs.min() and xs.max() < bx + bw and by <= ys.min() and ys.max() < by + bh
    for candidate in candidates:
        image, alpha = composite(candidate)
        assert np.array_equal(image[outside], source[outside])  # byte for byte
        assert not alpha[outside].any()  # and the patch leaves them to the layer below
        assert (alpha[union == 255] == 255).all() and (alpha[union == 180] == 180).all()
        for mask in (LEFT, RIGHT):  # each region was edited
            inside = np.asarray(mask) > 0
            assert not np.array_equal(image[inside], source[inside])


def test_one_region_is_a_plain_edit_of_its_mask_and_prompt(served):
    server, _runner = served
    params = dict(QUICK, prompt="ignored background", seed=4)
    with client_of(server) as client:
        region = client.edit(params, IMAGE_PNG, None, regions=[(LEFT_PNG, "a red square")])
        plain = client.edit(dict(params, prompt="a red square"), IMAGE_PNG, LEFT_PNG)
    assert region["box"] == plain["box"]
    assert [c["png"] for c in region["candidates"]] == [c["png"] for c in plain["candidates"]]


def refusal(server: BridgeServer, params: Dict[str, Any], attachments: List[Tuple[str, bytes]]) -> str:
    raw = RawConnection(server.port)
    try:
        assert raw.hello().type == "welcome"
        raw.send("edit", {"id": 1, "params": params}, attachments)
        reply = raw.recv(60)
    finally:
        raw.close()
    assert reply.type == "error" and reply.get("code") == errors.INVALID_INPUT, reply.header
    return reply.get("message")


def regions(count: int) -> List[Tuple[str, bytes]]:
    return [(f"region{index}", LEFT_PNG if index % 2 == 0 else RIGHT_PNG) for index in range(count)]


@pytest.mark.parametrize(
    "params, attachments, message",
    [
        (
            {"region_prompts": ["a", "b", "c", "d"]},
            regions(4),
            "4 regions is over the limit of 3 regions per job",
        ),
        (
            {"region_prompts": ["a", "b", "c"]},
            regions(2),
            "region_prompts has 3 prompt(s) but the request carries 2",
        ),
        ({"region_prompts": ["a"]}, regions(2), "region_prompts has 1 prompt(s) but the request carries 2"),
        ({}, regions(1), "region_prompts has 0 prompt(s) but the request carries 1"),
        (
            {"region_prompts": ["a", "b"]},
            [("region0", LEFT_PNG), ("region2", RIGHT_PNG)],
            "without gaps, got region0, region2",
        ),
        ({"region_prompts": ["a"]}, regions(1) + [("mask", LEFT_PNG)], "either a mask or regions, not both"),
        ({}, [], "an edit needs a mask attachment, or regions"),
        ({"region_prompts": []}, [], "an edit needs a mask attachment, or regions"),
        ({"region_prompts": ["a", 5]}, regions(2), "region 2's prompt is 5"),
        ({"region_prompts": "a, b"}, regions(2), "region_prompts must be a list of strings"),
        ({"region_prompts": ["a", "b"], "invert_mask": True}, regions(2), "invert_mask does not apply"),
        ({"region_prompts": ["a", "word " * 80]}, regions(2), "the prompt of region 2 is"),
        ({"region_prompts": ["a", "b"], "no_such": 1}, regions(2), "unknown edit parameter 'no_such'"),
    ],
)
def test_a_bad_regions_request_is_refused_with_its_reason_and_nothing_is_queued(
    served, params, attachments, message
):
    server, runner = served
    got = refusal(server, dict(QUICK, prompt="x", **params), [("image", IMAGE_PNG), *attachments])
    assert message in got, got
    assert runner.ran == [] and server.jobs.snapshot()["length"] == 0
    assert server.next_job_id() == "j1"  # no job was ever made


def test_the_built_in_limit_applies_and_extend_takes_no_regions(tiny_models):
    runner = EditRunner(tiny_models, Limits())
    many = {name: data for name, data in regions(9)}
    with pytest.raises(errors.JobFailed) as info:
        runner.validate({"prompt": "x", "region_prompts": ["p"] * 9}, {"image": IMAGE_PNG, **many})
    assert info.value.code == errors.INVALID_INPUT
    assert (
        info.value.message == f"9 regions is over the limit of {DEFAULT_LIMITS.max_regions} regions per job"
    )
    assert runner.accepts_image("region7") and runner.accepts_image("region12")  # counted by validate
    assert not runner.accepts_image("region01") and not runner.accepts_image("regionx")
    assert not ExtendRunner(tiny_models, Limits()).accepts_image("region0")
    checked = runner.validate(
        {"prompt": "", "region_prompts": ["a cat", "sky"]}, {"image": IMAGE_PNG, **dict(regions(2))}
    )
    assert checked["region_prompts"] == ["a cat", "sky"] and checked["prompt"] == ""


def test_extend_refuses_region_attachments_and_params(served):
    server, _runner = served
    raw = RawConnection(server.port)
    try:
        assert raw.hello().type == "welcome"
        raw.send("extend", {"id": 1, "params": {"right": 8}}, [("image", IMAGE_PNG), ("region0", LEFT_PNG)])
        assert "unexpected attachment(s): region0" in raw.recv(60).get("message")
        raw.send("extend", {"id": 2, "params": {"right": 8, "region_prompts": ["a"]}}, [("image", IMAGE_PNG)])
        assert "unknown edit parameter 'region_prompts'" in raw.recv(60).get("message")
    finally:
        raw.close()


def test_admission_counts_a_paper_regions_job_as_one_edit_per_guided_region(tiny_models, monkeypatch):
    from engine import job_regions

    assert job_regions.time_factor("paper", ["a cat", "sky", ""]) == 2
    assert job_regions.time_factor("paper", ["a cat"]) == 1  # one region: a plain edit
    assert job_regions.time_factor("latent", ["a cat", "sky"]) == 1  # one UNet pass a step either way
    runner = EditRunner(tiny_models, Limits())
    seen = []
    real = runner._admit
    monkeypatch.setattr(
        runner, "_admit", lambda checked, pixels, **kw: seen.append(kw) or real(checked, pixels, **kw)
    )
    runner.validate(
        {"prompt": "", "region_prompts": ["a cat", "sky"]}, {"image": IMAGE_PNG, **dict(regions(2))}
    )
    assert seen[-1]["windows"] == 2
