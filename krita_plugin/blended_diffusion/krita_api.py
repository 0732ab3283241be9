"""Everything that touches Krita's Python API (libkis). The rest of the plugin works on plain data."""

from typing import Any, Iterator, List, Optional, Sequence, Tuple

from krita import DockWidget, DockWidgetFactory, DockWidgetFactoryBase, Extension, Krita, Selection

from . import errors, naming, pixels
from .regions import RegionSpec

Box = Tuple[int, int, int, int]
EDITABLE_TYPES = ("paintlayer",)
_KIND_NAMES = {
    "grouplayer": "group layer",
    "vectorlayer": "vector layer",
    "filelayer": "file layer",
    "filterlayer": "filter layer",
    "filllayer": "fill layer",
    "clonelayer": "clone layer",
    "transparencymask": "mask",
    "filtermask": "mask",
    "transformmask": "mask",
    "selectionmask": "mask",
    "colorizemask": "mask",
}

__all__ = ["DockWidget", "DockWidgetFactory", "DockWidgetFactoryBase", "Extension", "Krita", "Selection"]


def instance() -> Any:
    return Krita.instance()


def active_document() -> Any:
    doc = Krita.instance().activeDocument()
    if doc is None:
        raise errors.NoDocumentError()
    return doc


def active_node(doc: Any) -> Any:
    """The active node; None without a view (kritarunner, scripts)."""
    try:
        return doc.activeNode()
    except Exception:  # noqa: BLE001 - libkis may fail without a view
        return None


def walk(node: Any) -> Iterator[Any]:
    """All nodes below ``node``, topmost first (childNodes lists bottom to top)."""
    for child in reversed(node.childNodes()):
        yield child
        yield from walk(child)


def check_editable(node: Any) -> None:
    kind = node.type()
    if kind not in EDITABLE_TYPES:
        raise errors.UnsupportedLayerError(node.name(), _KIND_NAMES.get(kind, kind))


def find_source_layer(doc: Any, layer: Any = None, layer_name: Optional[str] = None) -> Any:
    """The layer to edit: the one given, the one named, the active one, else the topmost paint layer."""
    if layer is None and layer_name:
        layer = doc.nodeByName(layer_name)
        if layer is None:
            raise errors.NoPaintLayerError(f"no layer named '{layer_name}'")
    if layer is None:
        layer = active_node(doc)
        if layer is not None and layer.type() == "selectionmask":  # painting a region: edit its layer
            layer = layer.parentNode()
    if layer is None:
        layer = next((n for n in walk(doc.rootNode()) if n.type() == "paintlayer"), None)
        if layer is None:
            raise errors.NoPaintLayerError("the document has no paint layer")
    check_editable(layer)
    return layer


def layer_format(node: Any) -> pixels.PixelFormat:
    return pixels.pixel_format(node.colorModel(), node.colorDepth(), node.colorProfile())


def document_format(doc: Any) -> pixels.PixelFormat:
    return pixels.pixel_format(doc.colorModel(), doc.colorDepth(), doc.colorProfile())


def read_layer_rgba(node: Any, region: Box) -> bytes:
    x, y, w, h = region
    return pixels.to_rgba8(bytes(node.pixelData(x, y, w, h)), layer_format(node))


def read_visible_rgba(doc: Any, region: Box) -> bytes:
    """The image as shown (the projection), as scribble mode needs it."""
    doc.refreshProjection()
    x, y, w, h = region
    return pixels.to_rgba8(bytes(doc.pixelData(x, y, w, h)), document_format(doc))


def read_selection(doc: Any) -> Optional[bytes]:
    """One byte a pixel over the whole image (soft values kept), or None when nothing is selected."""
    selection = doc.selection()
    if selection is None:
        return None
    return bytes(selection.pixelData(0, 0, doc.width(), doc.height()))


def region_masks(layer: Any) -> List[Any]:
    """The layer's selection masks (its regions, issue 39), bottom to top as Krita lists them."""
    return [child for child in layer.childNodes() if child.type() == "selectionmask"]


def region_specs(layer: Any) -> List[RegionSpec]:
    """What the docker lists of the layer's regions: each mask's id, name and visibility."""
    return [RegionSpec(str(m.uniqueId()), m.name(), bool(m.visible())) for m in region_masks(layer)]


def active_regions() -> Tuple[Any, List[RegionSpec]]:
    """(the layer an edit would take, its regions) for the docker's list; (None, []) without one."""
    try:
        layer = active_node(active_document())
    except Exception:  # noqa: BLE001 - no document, or a window closing mid-poll: nothing to list
        return None, []
    if layer is not None and layer.type() == "selectionmask":
        layer = layer.parentNode()
    group = _candidate_group_of(layer)
    if group is not None:  # after an edit its group is active: list the regions of the layer it edited
        layer = node_below(group)
    if layer is None or layer.type() not in EDITABLE_TYPES:
        return None, []
    return layer, region_specs(layer)


def _candidate_group_of(node: Any) -> Optional[Any]:
    """The plugin's candidate group ``node`` is, or is a candidate of; None otherwise."""
    for candidate in (node, node.parentNode() if node is not None else None):
        if (
            candidate is not None
            and candidate.type() == "grouplayer"
            and candidate.name().startswith(naming.GROUP_PREFIX)
        ):
            return candidate
    return None


def read_region(doc: Any, mask: Any) -> bytes:
    """A selection mask's pixels over the whole image, one byte a pixel (soft values kept)."""
    return bytes(mask.selection().pixelData(0, 0, doc.width(), doc.height()))


def rename_region(layer: Any, uid: str, name: str) -> bool:
    """Rename the layer's selection mask ``uid`` (its prompt); False when it is gone."""
    for mask in region_masks(layer):
        if str(mask.uniqueId()) == uid:
            mask.setName(name)
            return True
    return False


def selection_extent(doc: Any = None) -> Optional[Tuple[Box, int, int]]:
    """((left, top, right, bottom) of the selection of ``doc`` (the active document by default), its width,
    its height), for the docker's time estimate; None without a document or a selection. Bounds only: no
    pixels are read."""
    if doc is None:
        try:
            doc = active_document()
        except errors.NoDocumentError:
            return None
    selection = doc.selection()
    if selection is None or selection.width() <= 0 or selection.height() <= 0:
        return None
    x, y = selection.x(), selection.y()
    return (x, y, x + selection.width(), y + selection.height()), doc.width(), doc.height()


def _sibling(node: Any, step: int) -> Optional[Any]:
    """The sibling ``step`` places up the layer stack from ``node`` (childNodes lists bottom to top)."""
    parent = node.parentNode()
    if parent is None:
        return None
    siblings = parent.childNodes()
    index = [s.uniqueId() for s in siblings].index(node.uniqueId()) + step
    return siblings[index] if 0 <= index < len(siblings) else None


def node_above(node: Any) -> Optional[Any]:
    """The sibling directly above ``node`` in the layer stack, or None."""
    return _sibling(node, 1)


def node_below(node: Any) -> Optional[Any]:
    """The sibling directly below ``node`` in the layer stack, or None."""
    return _sibling(node, -1)


def document_open(doc: Any) -> bool:
    """Whether ``doc`` is still open in Krita: a closed document's wrapper has no root node."""
    try:
        return doc is not None and doc.rootNode() is not None
    except Exception:  # noqa: BLE001 - a closed document's wrapper may fail instead
        return False


def node_alive(doc: Any, node: Any) -> bool:
    """Whether ``node`` is still in the document (the user may have deleted or undone it)."""
    try:
        uid = node.uniqueId()
        return any(n.uniqueId() == uid for n in walk(doc.rootNode()))
    except Exception:  # noqa: BLE001 - a deleted node's wrapper may fail
        return False


def add_candidate_group(
    doc: Any, above: Any, name: str, layers: Sequence[Tuple[str, Box, bytes]], visible_index: int = 0
) -> Tuple[Any, List[Any]]:
    """A group named ``name`` directly above ``above`` holding one paint layer per (name, box, RGBA8 data),
    the first of ``layers`` on top; only ``visible_index`` is visible. One undo step (see _filled_group)."""
    entries = [(n, box, rgba, None) for n, box, rgba in layers]
    group, nodes = _filled_group(doc, name, entries, visible_index)
    above.parentNode().addChildNode(group, above)
    doc.refreshProjection()
    return group, nodes


def _filled_group(
    doc: Any, name: str, layers: Sequence[Tuple[str, Box, bytes, Any]], visible_index: int
) -> Tuple[Any, List[Any]]:
    """A group not yet in ``doc``'s layer stack, its layers top first: each entry is (name, box, RGBA8,
    node to copy or None); a copied node keeps whatever the user painted on it.

    Node.addChildNode is an undo step of its own, even into a group not yet in the stack (Undo would
    then walk through steps that change nothing visible). setChildNodes on the new, empty group adds
    its layers without undo steps, so the group joining the stack is the one step (on a group that has
    children, Krita 5.1's setChildNodes crashes: never used so)."""
    fmt = document_format(doc)
    group = doc.createGroupLayer(name)
    nodes: List[Any] = []
    for index, (layer_name, _box, _rgba, original) in enumerate(layers):
        node = original.duplicate() if original is not None else doc.createNode(layer_name, "paintlayer")
        node.setName(layer_name)
        node.setVisible(index == visible_index)
        nodes.append(node)
    group.setChildNodes(list(reversed(nodes)))  # bottom to top
    for node, (_name, (x, y, w, h), rgba, original) in zip(nodes, layers):
        if original is None:
            node.setPixelData(pixels.from_rgba8(rgba, fmt), x, y, w, h)
    return group, nodes


def replace_group(
    doc: Any, old: Any, layers: Sequence[Tuple[str, Box, bytes, Any]], visible_index: int
) -> Tuple[Any, List[Any]]:
    """The candidate group ``old`` replaced by a new one with the same name holding ``layers`` (as for
    _filled_group, top first): two undo steps (the new group added, the old one removed), so Krita's
    Undo takes a round back whole, names included (a rename or restack would be many steps, renames none)."""
    group, nodes = _filled_group(doc, old.name(), layers, visible_index)
    old.parentNode().addChildNode(group, old)
    old.remove()
    doc.refreshProjection()
    return group, nodes


def add_paint_layer(doc: Any, above: Any, name: str, box: Box, rgba: bytes) -> Any:
    node = doc.createNode(name, "paintlayer")
    above.parentNode().addChildNode(node, above)
    x, y, w, h = box
    node.setPixelData(pixels.from_rgba8(rgba, document_format(doc)), x, y, w, h)
    return node


def resize_canvas(doc: Any, x: int, y: int, width: int, height: int) -> None:
    """Krita's Image > Resize Canvas: one undoable step; every layer keeps its pixels, moved by (-x, -y)."""
    doc.resizeImage(int(x), int(y), int(width), int(height))
    doc.waitForDone()
    doc.refreshProjection()


def top_layer(doc: Any) -> Any:
    """The topmost layer of the stack that is not a mask (the selection mask may sit above the layers)."""
    for node in reversed(doc.rootNode().childNodes()):
        if not node.type().endswith("mask"):
            return node
    raise errors.NoPaintLayerError("the document has no layer")


def show_only(nodes: Sequence[Any], index: int) -> None:
    for i, node in enumerate(nodes):
        node.setVisible(i == index)


def remove_node(node: Any) -> None:
    node.remove()


def refresh(doc: Any) -> None:
    doc.refreshProjection()


def thumbnail_png(node: Any, size: int = 64) -> Optional[bytes]:
    """A PNG thumbnail of a node (for the docker's candidate list)."""
    from .qt import QBuffer, QByteArray, QIODevice

    image = node.thumbnail(size, size)
    if image is None or image.isNull():
        return None
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buffer, "PNG")
    return bytes(data)


def register(extension_cls: Any, docker_id: str, docker_cls: Any) -> None:
    app = Krita.instance()
    app.addExtension(extension_cls(app))
    app.addDockWidgetFactory(
        DockWidgetFactory(docker_id, DockWidgetFactoryBase.DockPosition.DockRight, docker_cls)
    )


def on_application_closing(callback: Any) -> None:
    """Run ``callback`` once when Krita quits (to end a job and stop the engine): on Krita's
    applicationClosing, on Qt's aboutToQuit, or at the latest when Python shuts down (kritarunner)."""
    import atexit

    from .qt import QCoreApplication

    done = []

    def once() -> None:
        if not done:
            done.append(True)
            callback()

    Krita.instance().notifier().applicationClosing.connect(once)
    app = QCoreApplication.instance()
    if app is not None:
        app.aboutToQuit.connect(once)
    atexit.register(once)
