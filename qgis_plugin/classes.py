"""Class codes, names, colours and order for training, taken from the ground truth's own style: a
categorized renderer on the class field of a vector layer, or a paletted renderer of a label raster
(the layer's, or one loaded from a QML file)."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

from qgis.core import QgsProcessingException


def class_table(layer, field: str, qml: str | None = None) -> dict | None:
    """mamol's class table (``{"code": {"name", "color"}}``, in the style's order) from the categorized
    style of ``layer`` on ``field``, or from the QML file ``qml`` applied to a copy of the layer;
    ``None`` when that style does not categorize ``field``. Numeric fields keep their codes (names from
    the category labels); text fields are numbered 1, 2, ... in the style's order."""
    layer = styled(layer, qml)
    renderer = layer.renderer()
    if renderer is None or renderer.type() != "categorizedSymbol" or renderer.classAttribute() != field:
        if qml:
            raise QgsProcessingException(f"{qml}: does not categorize the field {field!r}; save a categorized style of that field")
        return None
    numeric = layer.fields().field(field).isNumeric()
    table: dict[str, dict] = {}
    for category in renderer.categories():
        value = category.value()
        if value is None or value == "" or isinstance(value, list) or (hasattr(value, "isNull") and value.isNull()):
            continue  # "all other values" and merged categories name no single class
        colour = category.symbol().color().name() if category.symbol() is not None else "#808080"
        if numeric:
            if int(value) == 0:
                continue  # 0 is unlabelled to mamol, as in a label raster: a category of it (Classify adds one) is no class
            table[str(int(value))] = {"name": category.label().strip() or str(value), "color": colour}
        elif compared(str(value)) not in {compared(c["name"]) for c in table.values()}:  # values mamol reads as one class, once
            table[str(len(table) + 1)] = {"name": str(value).strip(), "color": colour}
    check_names_once([c["name"] for c in table.values()], qml or f"the style of {layer.name()!r}")
    return table or None


def raster_class_table(layer, qml: str | None = None) -> dict | None:
    """mamol's class table from the paletted (unique values) style of the label raster ``layer``, or of the QML file
    ``qml`` applied to a copy of it: each code with its label and colour; ``None`` when the style is not paletted."""
    layer = styled(layer, qml)
    renderer = layer.renderer()
    if renderer is None or renderer.type() != "paletted":
        if qml:
            raise QgsProcessingException(f"{qml}: is no paletted (unique values) style of a label raster; save one from the "
                                         "label raster's Symbology")
        return None
    # a raster's own colour table gives all 256 entries, labelled with their numbers: only entries named otherwise are classes
    named = [c for c in renderer.classes() if 1 <= c.value <= 255 and float(c.value).is_integer()
             and c.label.strip() not in ("", str(int(c.value)), f"{c.value:g}")]
    table = {str(int(c.value)): {"name": c.label.strip(), "color": c.color.name()} for c in named}
    check_names_once([c["name"] for c in table.values()], qml or f"the style of {layer.name()!r}")
    return table or None


def styled(layer, qml: str | None):
    """``layer``, or a copy of it with the QML style file ``qml`` applied (a one-line error where QGIS cannot read it)."""
    if not qml:
        return layer
    layer = layer.clone()
    message, loaded = layer.loadNamedStyle(qml)
    if not loaded:
        raise QgsProcessingException(f"{qml}: not a style QGIS can read ({message})")
    return layer


def check_names_once(names: list[str], style: str) -> None:
    """Stop where a style gives two classes one name, as mamol compares names: without surrounding spaces,
    accents composed (it would refuse the class table made from it)."""
    forms = [compared(name) for name in names]
    repeated = next((i for i, form in enumerate(forms) if forms.count(form) > 1), None)
    if repeated is not None:
        originals = list(dict.fromkeys(n for n, f in zip(names, forms) if f == forms[repeated]))
        decomposed = any(unicodedata.normalize("NFC", n) != n for n in originals)  # they look alike: show their code points
        spellings = [ascii(n) if decomposed else repr(n) for n in originals]
        alike = "" if len(spellings) == 1 else ", which differ only in spaces or in how their accents are stored"
        raise QgsProcessingException(f"{style}: names two classes {' and '.join(spellings)}{alike}; give each category its own label")


def compared(name: str) -> str:
    """A class name as mamol compares names: without surrounding spaces, accents composed."""
    return unicodedata.normalize("NFC", name.strip())


def write_class_table(table: dict, path: str) -> str:
    """Write ``table`` as the JSON ``mamol-train --classes`` reads; returns ``path``."""
    Path(path).write_text(json.dumps(table, indent=1))
    return path
