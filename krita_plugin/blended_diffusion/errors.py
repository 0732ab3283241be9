"""Errors the plugin shows to the user as they are: every message says what happened and what to do."""

from typing import Optional


class PluginError(Exception):
    """A problem the user can act on; ``str(error)`` is the message shown in the docker or message box."""

    title = "Blended Diffusion"


class NoDocumentError(PluginError):
    def __init__(self) -> None:
        super().__init__("No document is open: open or create an image first.")


class NoSelectionError(PluginError):
    def __init__(self) -> None:
        super().__init__(
            "Nothing is selected: select the area to edit (a soft selection is fine), "
            "or choose to edit the whole layer."
        )


class EmptySelectionError(PluginError):
    def __init__(self) -> None:
        super().__init__("The selection does not cover any pixel of the image: select the area to edit.")


class EmptyRegionError(PluginError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"The selection mask {name!r} does not cover any pixel: paint the area it should edit, "
            "or hide it to leave it out of the edit."
        )


class TooManyRegionsError(PluginError):
    def __init__(self, count: int, limit: int) -> None:
        super().__init__(
            f"The layer has {count} visible selection masks: one edit takes at most {limit} regions. "
            "Hide the ones to leave out."
        )


class RegionsModeError(PluginError):
    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} does not apply to regions: hide the layer's selection masks to edit the selection."
        )


class UnsupportedColorSpaceError(PluginError):
    def __init__(self, model: str, depth: str) -> None:
        super().__init__(
            f"The layer's colour model {model} / {depth} is not supported: Blended Diffusion edits "
            "RGBA images (8-bit, 16-bit or float). Convert the image with "
            "Image > Convert Image Color Space… to RGB/Alpha."
        )


class UnsupportedLayerError(PluginError):
    def __init__(self, name: str, kind: str) -> None:
        super().__init__(
            f"The active layer '{name}' is a {kind}: choose a paint layer to edit "
            "(group, vector, file and filter layers cannot be edited)."
        )


class NoPaintLayerError(PluginError):
    def __init__(self, detail: str = "") -> None:
        super().__init__(f"No paint layer to edit{(': ' + detail) if detail else ''}.")


class NoScribbleLayerError(PluginError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"Scribble mode needs a paint layer with your strokes directly above '{name}': "
            "add a layer above it, paint the rough shapes and colours there, then try again."
        )


class EngineNotInstalledError(PluginError):
    def __init__(self, detail: str) -> None:
        super().__init__(
            f"The Blended Diffusion engine is not installed ({detail}). Run `python3 install.py` from the "
            "plugin's source folder, or set a remote engine in the docker's engine settings."
        )


class WeightsMissingError(PluginError):
    def __init__(self, detail: str) -> None:
        super().__init__(
            f"The engine's model weights are missing. {detail.strip()}\nRun `python3 install.py` again "
            "(it downloads them), or `python -m engine download`, or choose another models preset."
        )


class EngineStartError(PluginError):
    def __init__(self, detail: str, log_tail: str = "") -> None:
        text = f"The engine could not start: {detail}"
        if log_tail.strip():
            text += f"\nLast lines of its log:\n{log_tail.rstrip()}"
        super().__init__(text)
        self.log_tail = log_tail


class EngineCrashedError(PluginError):
    def __init__(self, detail: str, log_tail: str = "") -> None:
        text = f"The engine stopped unexpectedly ({detail}). It will be restarted on the next edit."
        if log_tail.strip():
            text += f"\nLast lines of its log:\n{log_tail.rstrip()}"
        super().__init__(text)
        self.log_tail = log_tail


class EngineJobFailed(PluginError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"The engine refused the edit ({code}): {message}")
        self.code = code


class CancelledError(PluginError):
    def __init__(self) -> None:
        super().__init__("The edit was cancelled: nothing was changed.")


class StaleResultError(PluginError):
    def __init__(self, detail: Optional[str] = None) -> None:
        super().__init__(
            "The candidate layers are gone (deleted or undone)" + (f": {detail}" if detail else "") + "."
        )


class DocumentClosedError(PluginError):
    def __init__(self) -> None:
        super().__init__(
            "The document was closed while the engine worked: its result was dropped (nothing was changed)."
        )


class NoGroupError(PluginError):
    """More or Vary without a candidate group to work on."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(
            "There is no candidate group for More or Vary"
            + (f" ({detail})" if detail else "")
            + ": press Edit with text first."
        )


class BusyError(PluginError):
    def __init__(self) -> None:
        super().__init__("A job is running: wait for its candidates or press Cancel, then try again.")


class GroupSourceError(PluginError):
    """The group's document, size or source layer changed so that another round cannot be placed."""
