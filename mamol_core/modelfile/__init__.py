"""Model files: the embedded config read without torch (header), weights saved and loaded (weights)."""
