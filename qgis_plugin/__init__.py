"""MaMOL QGIS plugin: land-cover maps from whichever sensor layers an analyst has."""


def classFactory(iface):  # noqa: N802 (QGIS API)
    from .plugin import MamolPlugin

    return MamolPlugin(iface)
