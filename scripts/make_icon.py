"""Draw the plugin icon (qgis_plugin/icon.png): three sensor layers, one missing, over a class map."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Polygon, Rectangle  # noqa: E402

fig = plt.figure(figsize=(0.64, 0.64), dpi=100)
ax = fig.add_axes([0, 0, 1, 1])
ax.set_xlim(0, 64)
ax.set_ylim(0, 64)
ax.set_axis_off()
for x, y, color in [(4, 4, "#9be564"), (20, 4, "#1b7837"), (36, 4, "#c8a165"), (4, 16, "#2166ac"), (20, 16, "#b2182b"), (36, 16, "#9be564")]:
    ax.add_patch(Rectangle((x + 8, y), 16, 12, color=color))
for offset, color, style in [(28, "#4363d8", "-"), (40, "#f58231", "--"), (52, "#911eb4", "-")]:
    ax.add_patch(Polygon([(8, offset - 6), (40, offset - 6), (56, offset + 4), (24, offset + 4)], closed=True,
                         facecolor="none" if style == "--" else color, edgecolor=color, linestyle=style, linewidth=1.5, alpha=0.9))
fig.savefig(Path(__file__).resolve().parents[1] / "qgis_plugin" / "icon.png", transparent=True)
