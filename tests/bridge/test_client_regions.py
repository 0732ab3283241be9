"""EngineClient.edit with regions (issue 39): what goes on the wire, and the ValueErrors raised before it."""

from __future__ import annotations

from typing import Any, Dict

import pytest

from bridge.client import EngineClient
from bridge.jobqueue import Job
from tests.bridge.helpers import TOKEN, FakeRunner, make_png

IMAGE, MASK = make_png(8, 6, 4), make_png(8, 6, 1, fill=255)
LEFT, RIGHT = make_png(8, 6, 1, fill=200), make_png(8, 6, 1, fill=90)


class Recording(FakeRunner):
    """The fake runner, keeping what each job arrived with."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: Dict[str, Any] = {}

    def run(self, job: Job) -> Any:
        self.seen = {"params": dict(job.params), "images": dict(job.images)}
        return super().run(job)


@pytest.fixture
def server():
    from bridge.server import BridgeServer

    runner = Recording()
    # a runner that takes regions like engine.jobs.EditRunner: mask optional, region<N> numbered
    runner.required_images, runner.optional_images = ("image",), ("mask", "init")
    runner.numbered_images = ("region",)
    bridge = BridgeServer(runner, TOKEN, "127.0.0.1", 0)
    bridge.start()
    try:
        yield bridge, runner
    finally:
        bridge.close()


def test_regions_travel_as_numbered_attachments_and_prompts_in_order(server):
    bridge, runner = server
    params = {"prompt": "a lawn", "steps": 1}
    with EngineClient("127.0.0.1", bridge.port, TOKEN) as client:
        client.edit(params, IMAGE, None, regions=[(LEFT, "a cat: sitting"), (RIGHT, "")])
        assert runner.seen["params"] == {
            "prompt": "a lawn",
            "steps": 1,
            "region_prompts": ["a cat: sitting", ""],
        }
        assert runner.seen["images"] == {"image": IMAGE, "region0": LEFT, "region1": RIGHT}
        assert params == {"prompt": "a lawn", "steps": 1}  # the caller's dict is left as it was
        client.edit(params, IMAGE, MASK, init_png=RIGHT)  # a mask edit is sent as before
        assert runner.seen["images"] == {"image": IMAGE, "mask": MASK, "init": RIGHT}
        assert "region_prompts" not in runner.seen["params"]


@pytest.mark.parametrize(
    "mask, regions, params, message",
    [
        (MASK, [(LEFT, "a cat")], {}, "a mask or regions, not both"),
        (None, None, {}, "an edit needs a mask or regions"),
        (None, [], {}, "an edit needs a mask or regions"),
        (None, [(LEFT, 5)], {}, "region 1 must be a (mask PNG bytes, prompt) pair"),
        (None, [(LEFT, "a"), ("not bytes", "b")], {}, "region 2 must be a (mask PNG bytes, prompt) pair"),
        (None, [(LEFT,)], {}, "region 1 must be a (mask PNG bytes, prompt) pair"),
        (None, [(LEFT, "a")], {"region_prompts": ["a"]}, "not as params['region_prompts']"),
    ],
)
def test_a_mask_and_regions_or_neither_is_a_value_error_before_anything_is_sent(
    server, mask, regions, params, message
):
    bridge, runner = server
    with EngineClient("127.0.0.1", bridge.port, TOKEN) as client:
        with pytest.raises(ValueError) as info:
            client.edit({"steps": 1, **params}, IMAGE, mask, regions=regions)
        assert message in str(info.value)
        assert client.status()["queue"]["length"] == 0  # the connection is still good: nothing was sent
    assert runner.started == [] and bridge.next_job_id() == "j1"
