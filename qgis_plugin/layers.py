"""Layers in and out: raster layers matched to a model's modalities by name, and result layers
loaded into one group named after the model and its inputs, each named and styled."""

from __future__ import annotations

import collections
import re
from pathlib import Path

from qgis.core import QgsProcessingLayerPostProcessorInterface, QgsProject, QgsRasterLayer

#: Post-processors must outlive the algorithm run that creates them (until its layers are loaded);
#: the most recent ones are kept.
_KEEP: collections.deque = collections.deque(maxlen=64)
ORDER_PROPERTY = "mamol/order"


def normalized(text: str) -> str:
    """A name compared without case, spaces or punctuation: ``LiDAR DSM`` -> ``lidardsm``."""
    return re.sub(r"[^a-z0-9]+", "", text.lower())


def layer_names(layer) -> set[str]:
    """What a layer may be matched by: its name and its file's name, normalised."""
    source = layer.source().split("|")[0]
    return {normalized(layer.name()), normalized(Path(source).stem)}


#: Other names of the standard modalities' rasters, tried after the modality's own name.
ALIASES = {"lidar": ("dsm", "ndsm", "chm", "als"), "hsi": ("hyperspectral", "hs"),
           "sar": ("radar", "s1", "sentinel1")}


def matching_layers(modalities: list[str], project: QgsProject | None = None) -> dict[str, QgsRasterLayer]:
    """For each modality, a raster layer of the project whose layer or file name is the modality's name
    (ignoring case and punctuation), else one of its :data:`ALIASES` (``dsm`` for ``lidar``), each layer
    used once; modalities without one are left out."""
    project = project or QgsProject.instance()
    rasters = [layer for layer in project.mapLayers().values() if isinstance(layer, QgsRasterLayer)]
    found, used = {}, set()
    for names in ([(m, m) for m in modalities], [(m, alias) for m in modalities for alias in ALIASES.get(normalized(m), ())]):
        for modality, name in names:
            layer = next((r for r in rasters if r.id() not in used and normalized(name) in layer_names(r)), None)
            if modality not in found and layer is not None:
                found[modality] = layer
                used.add(layer.id())
    return found


class RunGroup:
    """The layer-tree group of one run's results, made (with a name not yet used in the project) when
    the first result layer is loaded."""

    def __init__(self, name: str) -> None:
        self.name, self.group = name, None

    def node(self, project: QgsProject):
        if self.group is None:
            root = project.layerTreeRoot()
            name, count = self.name, 1
            while root.findGroup(name) is not None:
                count += 1
                name = f"{self.name} ({count})"
            self.group = root.insertGroup(0, name)
        return self.group


class ResultLayer(QgsProcessingLayerPostProcessorInterface):
    """Puts one loaded result layer into its run's group, at position ``order``, named ``name``, with
    the style mamol wrote beside it (``qml``), shown or hidden."""

    def __init__(self, run: RunGroup, name: str, qml: Path, order: int, visible: bool, style=None) -> None:
        super().__init__()
        self.run, self.name, self.qml, self.order, self.visible, self.style = run, name, qml, order, visible, style

    @classmethod
    def create(cls, run: RunGroup, name: str, qml: Path, order: int, visible: bool, style=None) -> "ResultLayer":
        """``style(layer)``, when given, styles the layer instead of the ``qml`` file."""
        processor = cls(run, name, qml, order, visible, style)
        _KEEP.append(processor)
        return processor

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802 (QGIS API)
        if self.style is not None:
            self.style(layer)
        elif self.qml.is_file():
            layer.loadNamedStyle(str(self.qml))
        layer.setName(self.name)
        project = context.project() or QgsProject.instance()
        root = project.layerTreeRoot()
        group = self.run.node(project)
        node = root.findLayer(layer.id())
        if node is None:
            return
        position = sum(1 for child in group.children() if (child.customProperty(ORDER_PROPERTY) or 0) < self.order)
        moved = node.clone()
        moved.setCustomProperty(ORDER_PROPERTY, self.order)
        group.insertChildNode(position, moved)
        node.parent().removeChildNode(node)
        moved.setItemVisibilityChecked(self.visible)
        layer.triggerRepaint()


def style_polygons(layer, classes: list[dict]) -> None:
    """Land-cover polygons drawn by class, with the model's colours and names."""
    from qgis.core import QgsCategorizedSymbolRenderer, QgsRendererCategory, QgsSymbol
    from qgis.PyQt.QtGui import QColor

    categories = []
    for item in classes:
        symbol = QgsSymbol.defaultSymbol(layer.geometryType())
        symbol.setColor(QColor(item["color"]))
        categories.append(QgsRendererCategory(item["value"], symbol, item["name"]))
    layer.setRenderer(QgsCategorizedSymbolRenderer("class", categories))
