"""Write the synthetic two-sensor sample scene (hyperspectral-like cube + DSM, labels, vector truth)."""

import sys
from pathlib import Path

from mamol_core.synthetic import write_scene

if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "sample_data/scene")
    write_scene(folder, 160, 160, bands=24, fields=60, per_field=12, seed=7, vector=True)
    print(f"sample scene written to {folder}")
