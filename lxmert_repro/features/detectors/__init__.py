"""Region detectors (one RegionDetector class; families differ by builder) and their weight formats."""

from lxmert_repro.features.detectors.build import build_detector, load_detector, save_detector
from lxmert_repro.features.detectors.detector import Detections, RegionDetector

__all__ = ["Detections", "RegionDetector", "build_detector", "load_detector", "save_detector"]
