"""Region features: detectors, box selection, extraction, the memory-mapped feature store."""
