"""mamol: Missing-aware Mixture-of-LoRAs for multi-sensor land-cover mapping."""

__version__ = "0.3.0"

#: The newest model-file layout this mamol writes: 3 adds per-band quantile tables, 4 reads bands
#: as the rasters declare them (scale and offset applied, alpha bands as masks). A model file is
#: written in the oldest format that holds it, so that an older mamol maps what it can and refuses,
#: asking for an upgrade, what it would misread.
FORMAT_VERSION = 4

#: Model-file layouts this mamol reads; any other is refused in one line.
FORMATS_READ = (2, 3, 4)
