"""Places: great-circle (haversine) distances and the ``--near LAT,LON,KM`` filter."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from imgsim.metadata.fields import MetadataError
from imgsim.metadata.table import MetadataTable

#: The Earth's mean radius (IUGG), in kilometres.
EARTH_RADIUS_KM = 6371.0088
#: Half the Earth's circumference: every point is within this distance of any other.
MAX_KM = math.pi * EARTH_RADIUS_KM
_EXAMPLE = "e.g. --near 48.8584,2.2945,5 for 5 km around the Eiffel Tower"


def haversine_km(lat1: float | np.ndarray, lon1: float | np.ndarray,
                 lat2: float | np.ndarray, lon2: float | np.ndarray) -> np.ndarray:
    """Great-circle distance in km between points given in decimal degrees (NaN where a coordinate is NaN)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(np.asarray(lon2) - np.asarray(lon1))
    h = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


@dataclass(frozen=True)
class Near:
    """Images taken within ``km`` kilometres of (``lat``, ``lon``)."""

    lat: float
    lon: float
    km: float

    @property
    def text(self) -> str:
        """The ``LAT,LON,KM`` form (for the CLI and the URL)."""
        return f"{self.lat:g},{self.lon:g},{self.km:g}"

    def distances(self, table: MetadataTable) -> np.ndarray:
        """Each image's distance in km from the centre; NaN for an image without a position."""
        lat = table.column("lat").to_numpy(zero_copy_only=False)
        lon = table.column("lon").to_numpy(zero_copy_only=False)
        return haversine_km(self.lat, self.lon, lat.astype(np.float64), lon.astype(np.float64))

    def mask(self, table: MetadataTable) -> np.ndarray:
        """True for the images with a position within the radius."""
        with np.errstate(invalid="ignore"):
            return self.distances(table) <= self.km


def near(lat: float, lon: float, km: float) -> Near:
    """A checked :class:`Near` filter: latitude in [-90, 90], longitude in [-180, 180], a radius above 0."""
    values = (lat, lon, km)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise MetadataError(f"--near takes three numbers LAT,LON,KM ({_EXAMPLE}).")
    if not -90 <= lat <= 90:
        raise MetadataError(f"--near: latitude {lat:g} is outside -90..90 ({_EXAMPLE}).")
    if not -180 <= lon <= 180:
        raise MetadataError(f"--near: longitude {lon:g} is outside -180..180 ({_EXAMPLE}).")
    if not 0 < km:
        raise MetadataError(f"--near: the radius must be above 0 km, not {km:g} ({_EXAMPLE}).")
    return Near(float(lat), float(lon), float(min(km, MAX_KM)))


def parse_near(text: str) -> Near:
    """``LAT,LON,KM`` (decimal degrees and kilometres) as a checked :class:`Near`."""
    parts = text.split(",") if isinstance(text, str) and len(text) <= 100 else []
    try:
        if len(parts) != 3:
            raise ValueError
        lat, lon, km = (float(p) for p in parts)
    except ValueError:
        raise MetadataError(f"--near takes LAT,LON,KM, not {text[:100]!r} ({_EXAMPLE}).") from None
    return near(lat, lon, km)
