"""Where to map, from QGIS: a polygon layer or an extent (the canvas's, a layer's, typed), as the
polygon file ``mamol-map --aoi`` reads."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsCoordinateTransformContext,
    QgsFeature,
    QgsGeometry,
    QgsProcessingException,
    QgsProcessingUtils,
    QgsVectorFileWriter,
    QgsVectorLayer,
)


def polygon_file(layer: QgsVectorLayer) -> str:
    """The file of a polygon layer; layers that are not one file (memory, database, a filtered or
    multi-layer source) are saved as a GeoPackage first."""
    source = layer.source()
    path = source.split("|")[0]
    if Path(path).is_file() and "|" not in source and not layer.subsetString():
        return path
    return save_layer(layer)


def save_layer(layer: QgsVectorLayer) -> str:
    target = QgsProcessingUtils.generateTempFilename("area.gpkg")
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    error, message, *_ = QgsVectorFileWriter.writeAsVectorFormatV2(layer, target, QgsCoordinateTransformContext(), options)
    if error != QgsVectorFileWriter.NoError:
        raise QgsProcessingException(f"{layer.name()}: cannot be saved as the area to map ({message})")
    return target


def extent_file(extent, crs) -> str:
    """A GeoPackage holding the rectangle ``extent`` (a QgsRectangle in ``crs``) as one polygon."""
    layer = QgsVectorLayer(f"Polygon?crs={crs.authid() or 'wkt:' + crs.toWkt()}", "extent", "memory")
    feature = QgsFeature()
    feature.setGeometry(QgsGeometry.fromRect(extent))
    layer.dataProvider().addFeatures([feature])
    return save_layer(layer)
