"""Vector inputs as files for the mamol commands: the area to map (a polygon layer, its selected
features, or an extent) and the ground truth. A layer that is one plain file is passed as it is;
anything else (a memory sketch, a sublayer of a GeoPackage, a filter, a selection, unsaved edits, a
CRS set on the layer rather than in its file) is read through
Processing's feature source, which is safe in the algorithm's thread, and saved as a GeoPackage."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsFeature,
    QgsFeatureRequest,
    QgsGeometry,
    QgsProcessingException,
    QgsProcessingFeatureSourceDefinition,
    QgsProcessingUtils,
    QgsVectorFileWriter,
    QgsVectorLayer,
)


def vector_file(algorithm, parameters: dict, name: str, context, feedback) -> str | None:
    """A file holding the features of the vector parameter ``name`` (``None`` when it is not given)."""
    value = parameters.get(name)
    if not value:
        return None
    layer = algorithm.parameterAsVectorLayer(parameters, name, context)
    selected = isinstance(value, QgsProcessingFeatureSourceDefinition) and value.selectedFeaturesOnly
    if layer is not None and not selected:
        source = layer.source()
        path = source.split("|")[0]
        as_saved = not layer.isModified() and layer.crs() == layer.dataProvider().crs()  # no unsaved edits, no CRS set on the layer
        if "|" not in source and not layer.subsetString() and as_saved and Path(path).is_file():
            return path
    source = algorithm.parameterAsSource(parameters, name, context)
    if source is None:
        raise QgsProcessingException(f"{name}: the layer cannot be read")
    return save_layer(source.materialize(QgsFeatureRequest(), feedback), context)


def named_vector_file(algorithm, parameters: dict, name: str, context, feedback, what: str) -> tuple[str | None, dict[str, str]]:
    """:func:`vector_file`, with ``{path: how messages name it}``: ``<what> (layer 'NAME', path)`` where the file
    is the layer's own, ``<what> (layer 'NAME')`` where it is a copy the plugin saved (a layer of a
    GeoPackage, a selection, a memory layer), whose temporary path means nothing to the analyst."""
    path = vector_file(algorithm, parameters, name, context, feedback)
    layer = algorithm.parameterAsVectorLayer(parameters, name, context)
    if path is None or layer is None:
        return path, {}
    own = Path(path).resolve() == Path(layer.source().split("|")[0]).resolve()
    return path, {path: f"{what} (layer {layer.name()!r}{', ' + path if own else ''})"}


def save_layer(layer: QgsVectorLayer, context) -> str:
    """``layer`` (one this thread owns) saved as a temporary GeoPackage."""
    target = QgsProcessingUtils.generateTempFilename("features.gpkg")
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    error, message, *_ = QgsVectorFileWriter.writeAsVectorFormatV3(layer, target, context.transformContext(), options)
    if error != QgsVectorFileWriter.NoError:
        raise QgsProcessingException(f"{layer.name()}: cannot be saved for mamol ({message})")
    return target


def extent_file(extent, crs, context) -> str:
    """A GeoPackage holding the rectangle ``extent`` (a QgsRectangle in ``crs``) as one polygon."""
    layer = QgsVectorLayer(f"Polygon?crs={crs.authid() or 'wkt:' + crs.toWkt()}", "extent", "memory")
    feature = QgsFeature()
    feature.setGeometry(QgsGeometry.fromRect(extent))
    layer.dataProvider().addFeatures([feature])
    return save_layer(layer, context)
