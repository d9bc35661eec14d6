"""mamol: Missing-aware Mixture-of-LoRAs for multi-sensor land-cover mapping."""

__version__ = "0.2.0"

#: Version of the model-file layout. A model file with another format version is refused.
FORMAT_VERSION = 2
